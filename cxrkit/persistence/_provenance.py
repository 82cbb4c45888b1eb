"""What a model was trained on, and the operating threshold chosen for it.

Both travel in the model file (see [`cxrkit.persistence`][cxrkit.persistence]),
so that a report, ``cxrkit evaluate`` or ``cxrkit predict`` on another
machine can say which data the model saw and use the threshold chosen on
validation data:

* ``clf.training_data_``, set by ``fit``: where the images came from, how
  many images and patients of each class, and how many were held out to
  score epochs ([`training_data_summary`][cxrkit.persistence.training_data_summary]);
* ``clf.operating_threshold_``: ``None`` until a threshold is chosen, then
  a dict made by [`operating_threshold`][cxrkit.persistence.operating_threshold]
  (``clf.save(path, threshold=...)`` records it).

[`decision_rule`][cxrkit.persistence.decision_rule] says which threshold and
positive class a fitted model decides with (a threshold given, else the
recorded one, else the most probable class); ``predict``, the report, the
command line, the server and the ONNX export all ask it.

[`model_card`][cxrkit.persistence.model_card] gathers what is known about a
fitted model (what it is, what it was trained on, when, its decision rule,
its identity) into one dict: the report's Model section, the server's
``GET /model``, the ONNX metadata and the DICOM results of ``cxrkit.pacs``
each show a part of it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from cxrkit._version import __version__
from cxrkit.images._cache import DecodedImages
from cxrkit.images._folders import patient_id
from cxrkit.images._inputs import is_path_like_sequence
from cxrkit.metrics import positive_label
from cxrkit.metrics._inputs import check_threshold

__all__ = [
    "DecisionRule",
    "decision_rule",
    "file_sha256",
    "operating_threshold",
    "training_data_summary",
    "weights_sha256",
]


def _source(paths: Sequence[str | os.PathLike] | None) -> str:
    if paths is None:
        return "images given as an array"
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    try:
        return os.path.commonpath(paths)
    except ValueError:  # paths on different drives
        return "several folders"


def training_data_summary(
    X: Sequence[str | os.PathLike] | np.ndarray | DecodedImages,
    y: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    *,
    n_validation: int = 0,
) -> dict[str, Any]:
    """Plain, JSON-ready description of a training set.

    Parameters
    ----------
    X : sequence of paths, ndarray of images, or DecodedImages
        The images trained on (after unreadable files were left out).
    y : array-like of shape (n,)
    groups : array-like of shape (n,), optional
        Patient ids. By default parsed from Kermany-style file names; when a
        name cannot be parsed, patients are not counted.
    n_validation : int, default=0
        Images held out of training to score epochs.

    Returns
    -------
    dict
        ``source`` (the folder the paths share), ``n_images``,
        ``n_validation``, ``classes``: for each class (as text),
        ``{"images": k, "patients": m or None}``, and the ``cxrkit_version``
        and ``torch_version`` trained with.

    Examples
    --------
    >>> X = ["d/NORMAL/IM-0001-0001.jpeg", "d/NORMAL/IM-0001-0002.jpeg",
    ...      "d/PNEUMONIA/person3_virus_7.jpeg"]
    >>> summary = training_data_summary(X, ["NORMAL", "NORMAL", "PNEUMONIA"])
    >>> summary["classes"]
    {'NORMAL': {'images': 2, 'patients': 1}, 'PNEUMONIA': {'images': 1, 'patients': 1}}
    """
    if isinstance(X, DecodedImages):
        paths = X.paths
    else:
        paths = list(X) if is_path_like_sequence(X) else None
    y = np.asarray(y)
    if groups is None and paths is not None:
        parsed = [patient_id(os.fspath(p)) for p in paths]
        groups = None if any(g is None for g in parsed) else np.asarray(parsed)
    elif groups is not None:
        groups = np.asarray(groups)
    classes = {}
    for label in np.unique(y):
        mine = y == label
        patients = None if groups is None else len(np.unique(groups[mine]))
        classes[str(label)] = {"images": int(mine.sum()), "patients": patients}
    return {
        "source": _source(paths),
        "n_images": len(y),
        "n_validation": int(n_validation),
        "classes": classes,
        "cxrkit_version": __version__,
        "torch_version": torch.__version__,
    }


def operating_threshold(
    threshold: Any, *, pos_label: Any, source: str | None = None
) -> dict[str, Any]:
    """The record of a chosen threshold: a float, or an ``OperatingPoint``.

    Parameters
    ----------
    threshold : float in [0, 1] or OperatingPoint
        An [`OperatingPoint`][cxrkit.metrics.OperatingPoint] from
        [`select_threshold`][cxrkit.metrics.select_threshold] also records
        its criterion and the sensitivity and specificity it reached.
    pos_label : label
        The class the threshold applies to (its probability).
    source : str, optional
        Where it was chosen, e.g. ``"validation: 112 images of 60 patients"``.

    Returns
    -------
    dict
        ``threshold``, ``pos_label`` (text), and, when known, ``criterion``,
        ``sensitivity``, ``specificity``, ``source``.

    Examples
    --------
    >>> operating_threshold(0.3, pos_label="PNEUMONIA")
    {'threshold': 0.3, 'pos_label': 'PNEUMONIA'}
    """
    record: dict[str, Any] = {}
    if hasattr(threshold, "_asdict"):  # an OperatingPoint
        record.update(threshold._asdict())
    else:
        record["threshold"] = threshold
    value = float(record["threshold"])
    if not 0 <= value <= 1:
        raise ValueError(
            f"the operating threshold must be a probability in [0, 1], got {value}"
        )
    record["threshold"] = value
    record["pos_label"] = str(pos_label)
    if source is not None:
        record["source"] = source
    order = ("threshold", "pos_label", "criterion", "sensitivity", "specificity")
    return {k: record[k] for k in (*order, "source") if k in record}


class DecisionRule(NamedTuple):
    """How a fitted classifier turns probabilities into classes.

    With a ``threshold``, an image is called ``pos_label`` when the
    probability of ``pos_label`` is ``>= threshold``, else the other class
    (the convention of scikit-learn's ``FixedThresholdClassifier``); with
    ``threshold=None``, it is given its most probable class.
    """

    threshold: float | None
    pos_label: Any


def _recorded_class(classes: list, recorded: dict[str, Any]) -> Any:
    """The class a recorded threshold is on (records name it as text)."""
    for label in classes:
        if str(label) == recorded["pos_label"]:
            return label
    raise ValueError(
        f"the operating threshold recorded with this model is on the probability "
        f"of {recorded['pos_label']!r}, which is not one of its classes {classes}: "
        "the model file is damaged or was edited; save it again with "
        "clf.save(path, threshold=...)"
    )


def decision_rule(
    clf: Any, threshold: float | None = None, *, pos_label: Any = None
) -> DecisionRule:
    """The threshold and positive class a fitted classifier decides with.

    The one place that resolves the operating point: ``threshold`` when
    given; else the threshold recorded with the model
    (``clf.operating_threshold_``, see
    [`operating_threshold`][cxrkit.persistence.operating_threshold]); else
    the estimator's default, the most probable class (for two classes the
    same calls as a threshold of 0.5, but for a tie at exactly 0.5).
    ``PneumoniaClassifier.predict``, ``cxrkit predict``, ``evaluate`` and
    ``explain``, [`evaluation_report`][cxrkit.report.evaluation_report],
    ``cxrkit serve`` and [`export_onnx`][cxrkit.persistence.export_onnx] all use
    it.

    Parameters
    ----------
    clf : fitted classifier
        Anything with ``classes_``; a ``PneumoniaClassifier`` loaded from a
        model file may have an ``operating_threshold_``.
    threshold : float in [0, 1], optional
        Two classes: call ``pos_label`` at probability ``>= threshold``,
        instead of the recorded threshold.
    pos_label : label, optional
        The positive class of two. Default: the class of the recorded
        threshold, else ``"PNEUMONIA"`` when it is a class, 1 for 0/1
        labels (see [`positive_label`][cxrkit.metrics.positive_label]). A
        recorded threshold is on the probability of its own class: with
        another ``pos_label`` it does not apply, and the most probable
        class is called. Refused with more than two classes.

    Returns
    -------
    DecisionRule
        ``threshold`` (None: the most probable class) and ``pos_label``
        (None with more than two classes, or with two classes that have no
        default positive class when no threshold applies).

    Raises
    ------
    ValueError
        A threshold outside [0, 1] or for more than two classes, a
        ``pos_label`` that is not a class or for more than two classes, or
        a threshold for two classes
        without a default positive class and no ``pos_label``.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> clf = DummyClassifier().fit([[0], [1]], ["NORMAL", "PNEUMONIA"])
    >>> decision_rule(clf)
    DecisionRule(threshold=None, pos_label='PNEUMONIA')
    >>> clf.operating_threshold_ = operating_threshold(0.3, pos_label="PNEUMONIA")
    >>> decision_rule(clf)
    DecisionRule(threshold=0.3, pos_label='PNEUMONIA')
    >>> decision_rule(clf, 0.7)
    DecisionRule(threshold=0.7, pos_label='PNEUMONIA')
    >>> decision_rule(clf, pos_label="NORMAL")  # the record is on P(PNEUMONIA)
    DecisionRule(threshold=None, pos_label='NORMAL')
    """
    classes = np.asarray(clf.classes_).tolist()
    if len(classes) != 2:
        if threshold is not None:
            raise ValueError(
                f"a threshold applies to two classes; this model has "
                f"{len(classes)} ({classes}) and predicts the most probable one: "
                "leave the threshold out"
            )
        if pos_label is not None:  # refused, not ignored
            raise ValueError(
                f"a positive class applies to two classes; this model has "
                f"{len(classes)} ({classes}) and predicts the most probable one: "
                "leave pos_label out"
            )
        return DecisionRule(None, None)
    recorded = getattr(clf, "operating_threshold_", None)
    if pos_label is None and recorded is not None:
        pos_label = _recorded_class(classes, recorded)
    if threshold is not None:
        threshold = check_threshold(threshold)
        return DecisionRule(threshold, positive_label(classes, pos_label))
    if pos_label is None:
        try:
            pos_label = positive_label(classes)
        except ValueError:  # no default positive class: none is needed
            return DecisionRule(None, None)
    pos_label = positive_label(classes, pos_label)
    if recorded is not None and str(pos_label) == recorded["pos_label"]:
        return DecisionRule(float(recorded["threshold"]), pos_label)
    return DecisionRule(None, pos_label)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, in hex: a model file's identity.

    ``cxrkit serve`` shows it on the model card; ``cxrkit listen`` writes it
    into every report.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/empty"
    >>> open(path, "wb").close()
    >>> file_sha256(path)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(clf: Any) -> str:
    """The SHA-256 of a fitted classifier's network weights, in hex.

    The identity of a model that was never saved to a file (names and
    values of its ``state_dict``, in order).
    """
    digest = hashlib.sha256()
    for name, tensor in clf.net_.module_.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()

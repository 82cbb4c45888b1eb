"""What a model was trained on, and the operating threshold chosen for it.

Both travel in the model file (see [`cxrkit.persistence`][cxrkit.persistence]),
so that a report, ``cxrkit evaluate`` or ``cxrkit predict`` on another
machine can say which data the model saw and use the threshold chosen on
validation data:

* ``clf.training_data_``, set by ``fit``: where the images came from, how
  many images and patients of each class, and how many were held out to
  score epochs ([`training_data_summary`][cxrkit.provenance.training_data_summary]);
* ``clf.operating_threshold_``: ``None`` until a threshold is chosen, then
  a dict made by [`operating_threshold`][cxrkit.provenance.operating_threshold]
  (``clf.save(path, threshold=...)`` records it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cxrkit._version import __version__
from cxrkit.data import patient_id
from cxrkit.inputs import is_path_like_sequence

__all__ = ["operating_threshold", "training_data_summary"]


def _source(X: Any) -> str:
    if not is_path_like_sequence(X):
        return "images given as an array"
    paths = [os.path.abspath(os.fspath(p)) for p in X]
    try:
        return os.path.commonpath(paths)
    except ValueError:  # paths on different drives
        return "several folders"


def training_data_summary(
    X: Sequence[str | os.PathLike] | np.ndarray,
    y: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    *,
    n_validation: int = 0,
) -> dict[str, Any]:
    """Plain, JSON-ready description of a training set.

    Parameters
    ----------
    X : sequence of paths, or ndarray of images
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
    y = np.asarray(y)
    if groups is None and is_path_like_sequence(X):
        parsed = [patient_id(os.fspath(p)) for p in X]
        groups = None if any(g is None for g in parsed) else np.asarray(parsed)
    elif groups is not None:
        groups = np.asarray(groups)
    classes = {}
    for label in np.unique(y):
        mine = y == label
        patients = None if groups is None else len(np.unique(groups[mine]))
        classes[str(label)] = {"images": int(mine.sum()), "patients": patients}
    return {
        "source": _source(X),
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

"""ONNX export of a fitted classifier, for deployment without cxrkit or torch.

The exported graph maps a batch of preprocessed images, float32 of shape
``(batch, 1, image_size, image_size)`` (input ``"image"``; the batch axis is
dynamic), to class probabilities of shape ``(batch, n_classes)`` (output
``"probabilities"``, what ``predict_proba`` returns: the softmax, and a
site adaptation of ``cxrkit.adaptation`` where the model has one). Decoding,
resizing and normalising stay outside the graph, as they depend on the file
format; the model's metadata (``metadata_props``, read with onnxruntime's
``session.get_modelmeta().custom_metadata_map``) says how to do them:

``image_size``, ``channels`` (1), ``input_name``, ``input_layout`` (NCHW),
``input_dtype`` (float32), ``mean`` and ``std`` (``x = (grey / 255 - mean) /
std``), ``preprocessing`` (the whole recipe in words), ``output_name``,
``classes`` (JSON list, in column order), ``decision_rule`` (``"argmax"`` or
``"threshold"``, then with ``threshold``, ``positive_class`` and
``positive_column``; the threshold given, else the one recorded with the
model, as [`decision_rule`][cxrkit.persistence.decision_rule] resolves it),
``preprocess`` (cxrkit's deterministic preprocessing steps after resizing,
joined by ``+``, or ``"none"``; ``preprocessing`` says exactly what each
does), ``test_time_augmentation`` (``"none"``, or what the graph averages),
``model`` and ``cxrkit_version``; all values are strings.
The user guide's *Deployment with ONNX* page has a complete onnxruntime
script that reads them.

The exporter is torch's ``torch.export``-based one (``dynamo=True``): it is
torch's default since 2.9 and the maintained path, while the TorchScript-based
exporter warns that it will be removed. How closely onnxruntime matches
torch's probabilities, and for which models, is on the docs' *Benchmarks*
page *Inference*.

Needs the optional extra ``pip install "cxrkit[onnx]"`` (onnx and onnxscript
to export; onnxruntime to run the model).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from cxrkit._version import __version__
from cxrkit.images._normalize import MEAN, STD, normalize
from cxrkit.persistence._model_files import model_card
from cxrkit.training._tta import TestTimeViews, shared_views

# This module sits above the estimator (``PneumoniaClassifier.export_onnx``
# imports it), so it never imports ``cxrkit.classifier``: a fitted cxrkit
# estimator is recognised by what it has (see ``_is_cxrkit_estimator``).
PneumoniaClassifier = Any  # for the annotations below

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_metadata"]

#: Name of the ONNX graph's input: float32 ``(batch, 1, image_size, image_size)``.
INPUT_NAME = "image"
#: Name of the ONNX graph's output: float32 ``(batch, n_classes)`` probabilities.
OUTPUT_NAME = "probabilities"

_INSTALL_HINT = 'pip install "cxrkit[onnx]"'

_PREPROCESSING = (
    "Read the image as 8-bit grey levels (colour: ITU-R 601 luma, Pillow's 'L'; "
    "16-bit: min-max stretched to 0-255 unless every value lies within 0-255; "
    "DICOM: windowed; EXIF orientation "
    "applied; JPEG decoded with Pillow's draft('L', (image_size, image_size))), "
    "resize it to image_size x image_size (aspect ratio squashed; Pillow "
    "BILINEAR, reducing_gap=3.0), divide by 255, subtract mean, divide by std. "
    "Feed float32 of shape (batch, 1, image_size, image_size)."
)


#: What each of cxrkit's preprocess steps does, for a runtime without cxrkit.
_STEP_TEXT = {
    "equalize": "global histogram equalisation of the 256 grey levels "
    "(Pillow's ImageOps.equalize)",
    "clahe": "OpenCV's CLAHE, clipLimit 2.0, tileGridSize (8, 8), or (2, 2) "
    "when the image is smaller than 64 px",
    "stretch": "the 1st and 99th percentiles (numpy.percentile, linear) mapped "
    "to 0 and 255, rounded and clipped; unchanged when they are equal",
    "crop": "an 8% band (rounded to pixels) cut off every side, then resized "
    "back to image_size (Pillow BILINEAR)",
}


class _Probabilities(nn.Module):
    """Logits to the probabilities ``predict_proba`` returns: the softmax, then
    the model's site adaptation if it has one (``cxrkit.adaptation``:
    ``softmax(log p / temperature + bias)``, with log p clipped at log 1e-12
    as ``adjust_probabilities`` does), so that a threshold chosen on adapted
    probabilities applies to the graph's output."""

    def __init__(self, adaptation: dict | None) -> None:
        super().__init__()
        self.adapted = adaptation is not None
        if self.adapted:
            self.temperature = float(adaptation["temperature"])
            self.register_buffer(
                "bias", torch.tensor(adaptation["bias"], dtype=torch.float32)
            )

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.adapted:
            return torch.softmax(logits, dim=1)
        log_p = torch.log_softmax(logits, dim=1).clamp(min=_LOG_TINY)
        return torch.softmax(log_p / self.temperature + self.bias, dim=1)


_LOG_TINY = float(torch.log(torch.tensor(1e-12, dtype=torch.float64)))


class _TestTimeAveraged(nn.Module):
    """The network over the image and its test-time views (``tta``).

    Outputs the log of the mean softmax over the image and its copies, what
    ``predict_proba`` averages (``cxrkit.training._fit.predict_proba``): its
    softmax is that mean, so `_Probabilities` applies to it unchanged. The
    input is normalised; the views act on grey levels in [0, 1], so they are
    taken between an un-normalisation and the normalisation again.
    """

    def __init__(self, network: nn.Module, views: TestTimeViews) -> None:
        super().__init__()
        self.network, self.views = network, views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proba = torch.softmax(self.network(x), dim=1)
        grey = x * STD + MEAN
        for k in range(len(self.views)):
            view = normalize(self.views.view(grey, k))
            proba = proba + torch.softmax(self.network(view), dim=1)
        mean = proba / (1 + len(self.views))
        return torch.log(mean.clamp(min=torch.finfo(mean.dtype).tiny))


def export_onnx(
    estimator: Any,
    path: str | os.PathLike,
    *,
    threshold: float | None = None,
    pos_label: Any = None,
) -> Path:
    """Write a fitted classifier's network as an ONNX model with a dynamic batch.

    Parameters
    ----------
    estimator : PneumoniaClassifier, or a fitted scikit-learn wrapper of one
        A fitted [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier]; or a
        ``FixedThresholdClassifier`` / ``TunedThresholdClassifierCV`` around
        one (its threshold and positive class go into the metadata), or a
        fitted search (``GridSearchCV``; its ``best_estimator_`` is exported).
    path : str or path-like
        The ``.onnx`` file to write (one self-contained file).
    threshold : float, optional
        Two classes: an operating threshold on the probability of
        ``pos_label``, recorded in the metadata (the graph itself always
        outputs probabilities). Default: the threshold of a wrapping
        threshold classifier, else the one recorded with the model
        (``clf.save(path, threshold=...)``, see
        [`decision_rule`][cxrkit.persistence.decision_rule]), else none
        (``decision_rule`` ``"argmax"``).
    pos_label : class label, optional
        The class ``threshold`` applies to; defaults to the class of the
        recorded threshold, else ``"PNEUMONIA"`` when it is a class, 1 for
        0/1 labels (a threshold classifier's default: its last class).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ImportError
        onnx or onnxscript is missing: ``pip install "cxrkit[onnx]"``.

    Notes
    -----
    A site adaptation (``cxrkit.adaptation``: recalibration, a re-estimated
    class prior) is part of the graph, so its output is what
    ``predict_proba`` returns. So is test-time augmentation (``tta``): the
    graph runs the network on the image and on its ``tta`` fixed views
    (shifts, rotations, zooms, brightness and contrast, the same as
    ``predict_proba``'s) and averages their probabilities, at ``1 + tta``
    times the cost of one pass.

    Examples
    --------
    >>> import tempfile
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           validation_fraction=None, random_state=0).fit(X, y)
    >>> path = export_onnx(clf, tempfile.mkdtemp() + "/model.onnx")
    >>> import onnxruntime as ort
    >>> session = ort.InferenceSession(path)
    >>> session.get_modelmeta().custom_metadata_map["classes"]
    '["NORMAL", "PNEUMONIA"]'
    """
    _require_exporter()
    clf, wrapped_threshold, wrapped_pos_label = _unwrap(estimator)
    clf._validate_params()  # tta, ... may be set after fit
    if threshold is None:
        threshold = wrapped_threshold
    if pos_label is None:
        pos_label = wrapped_pos_label
    metadata = onnx_metadata(clf, threshold=threshold, pos_label=pos_label)
    path = _check_destination(path)
    # A CPU copy in eval mode: exporting must not move or change the fitted net.
    network = copy.deepcopy(clf.net_.module_).cpu().eval()
    if clf.tta:
        views = shared_views(clf.image_size, clf.tta, clf.random_state)
        network = _TestTimeAveraged(network, views)
    network = nn.Sequential(
        network, _Probabilities(getattr(clf, "adaptation_", None))
    ).eval()
    example = torch.zeros(2, 1, clf.image_size, clf.image_size)
    program = torch.onnx.export(
        network,
        (example,),
        dynamo=True,
        verbose=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.model.metadata_props.update(metadata)
    program.model.doc_string = (
        f"cxrkit {metadata['model']} chest X-ray classifier; for research and "
        "education, not a medical device. Preprocessing: see metadata_props."
    )
    partial = path.with_name(path.name + ".partial")
    try:
        program.save(partial, external_data=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def onnx_metadata(
    clf: PneumoniaClassifier, *, threshold: float | None = None, pos_label: Any = None
) -> dict[str, str]:
    """The ``metadata_props`` that
    [`export_onnx`][cxrkit.persistence.export_onnx] writes.

    The decision rule is ``clf``'s (see
    [`decision_rule`][cxrkit.persistence.decision_rule]): ``threshold`` and
    ``pos_label`` when given, else the threshold recorded with the model,
    else ``"argmax"``.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           validation_fraction=None, random_state=0).fit(X, y)
    >>> meta = onnx_metadata(clf, threshold=0.3)
    >>> meta["image_size"], meta["positive_class"], meta["threshold"]
    ('32', 'PNEUMONIA', '0.3')
    """
    check_is_fitted(clf, "net_")
    card = model_card(clf, threshold=threshold, pos_label=pos_label)
    classes = card["classes"]
    metadata = {
        "cxrkit_version": __version__,
        "model": str(card["parameters"]["model"]),
        "input_name": INPUT_NAME,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "image_size": str(card["parameters"]["image_size"]),
        "channels": "1",
        "mean": repr(float(MEAN)),
        "std": repr(float(STD)),
        "preprocess": "+".join(_preprocess_steps(clf)) or "none",
        "preprocessing": _PREPROCESSING,
        "output_name": OUTPUT_NAME,
        "output": "class probabilities (softmax), columns in the order of classes",
        "test_time_augmentation": _tta_text(int(clf.tta)),
        "classes": json.dumps(classes),
        "decision_rule": "argmax",
        "intended_use": card["intended_use"],
    }
    if metadata["preprocess"] != "none":
        steps = metadata["preprocess"].split("+")
        metadata["preprocessing"] += (
            f" Before dividing by 255, apply cxrkit's preprocess steps "
            f"{metadata['preprocess']!r}, in this order, to the resized uint8 "
            "image (cxrkit.images.preprocess_images; "
            "examples/onnx_inference.py does it with numpy and Pillow): "
            + "; ".join(f"{step}: {_STEP_TEXT[step]}" for step in steps)
            + "."
        )
    if card["threshold"] is None:
        return metadata
    metadata.update(
        decision_rule="threshold",
        threshold=repr(card["threshold"]),
        positive_class=str(card["positive_class"]),
        positive_column=str(classes.index(card["positive_class"])),
        decision="positive_class when probabilities[:, positive_column] >= "
        "threshold, else the other class",
    )
    return metadata


def _tta_text(copies: int) -> str:
    """What the graph does with test-time augmentation, for the metadata."""
    if not copies:
        return "none"
    return (
        f"inside the graph: the probabilities of the image and of {copies} fixed "
        "views of it (shift, rotation, zoom, brightness and contrast), averaged; "
        "feed the image alone"
    )


def _preprocess_steps(clf: PneumoniaClassifier) -> tuple[str, ...]:
    """The names of the deterministic preprocessing steps the model applies."""
    steps = getattr(clf, "preprocess", None)  # absent from older model files
    if not steps:
        return ()
    return tuple(steps.split("+")) if isinstance(steps, str) else tuple(steps)


def _require_exporter() -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {' and '.join(missing)}, not installed. Install "
            f"the optional extra: {_INSTALL_HINT}"
        )


def _is_cxrkit_estimator(obj: Any) -> bool:
    """A fitted-or-not ``PneumoniaClassifier``, known by its export method and net."""
    return callable(getattr(obj, "export_onnx", None)) and hasattr(obj, "image_size")


def _unwrap(estimator: Any) -> tuple[PneumoniaClassifier, float | None, Any]:
    """The ``PneumoniaClassifier`` inside ``estimator``, and its threshold if any."""
    from sklearn.frozen import FrozenEstimator

    threshold, pos_label = None, None
    current = estimator
    for _ in range(8):  # a search around a threshold classifier around a frozen ...
        if _is_cxrkit_estimator(current):
            if threshold is not None and pos_label is None:
                pos_label = current.classes_[-1]  # scikit-learn's default
            return current, threshold, pos_label
        if isinstance(current, FrozenEstimator):
            current = current.estimator
        elif hasattr(current, "best_estimator_"):
            current = current.best_estimator_
        elif hasattr(current, "estimator_") and hasattr(current, "pos_label"):
            # FixedThresholdClassifier or TunedThresholdClassifierCV
            if getattr(current, "response_method", "auto") not in (
                "auto",
                "predict_proba",
            ):
                raise ValueError(
                    f"{type(current).__name__} thresholds "
                    f"{current.response_method}, not probabilities; use "
                    "response_method='predict_proba' to export its threshold"
                )
            threshold = getattr(current, "best_threshold_", None)
            if threshold is None:
                threshold = current.threshold
                threshold = 0.5 if threshold == "auto" else threshold
            pos_label = current.pos_label
            current = current.estimator_
        else:
            break
    raise TypeError(
        f"cannot export a {type(estimator).__name__}: pass a fitted "
        "PneumoniaClassifier (or a fitted FixedThresholdClassifier, "
        "TunedThresholdClassifierCV or search around one)"
    )


def _check_destination(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name, e.g. model.onnx")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"folder {path.parent} does not exist; create it first to write {path}"
        )
    return path

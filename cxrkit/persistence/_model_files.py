"""Model files without pickle: weights as tensors, everything else as JSON.

A ``.cxr`` model file is written with ``torch.save`` of a dict holding only
tensors and a JSON string, and read back with ``torch.load(...,
weights_only=True)``, which refuses any object that would need code to be
run. Writes go to a temporary file that is renamed over the target, so an
interrupted save never leaves a half-written model behind.

What a file holds, and what ``load_model`` gives back:

* the estimator's parameters, all of them: ``get_params()`` of the loaded
  model equals the saved one's. ``pretrained`` is kept as it was, though the
  weights come from the file (nothing is downloaded or read from
  ``pretrained`` on load). A ``random_state`` that is a ``RandomState`` is
  saved as its state at the time of saving, as ``pickle`` would: the loaded
  model has a new ``RandomState`` in that state. An ``accelerator`` that is
  an ``accelerate.Accelerator`` is saved as None: it is the devices and
  processes of the run that trained the model, not a setting (None, True and
  False are kept);
* the fitted attributes, as [`FITTED_ATTRIBUTES`][cxrkit.persistence.FITTED_ATTRIBUTES]
  declares them (one table: ``fit`` sets each, ``save_model`` writes each,
  ``load_model`` reads each back, with its default for files written before
  it existed): ``classes_``, ``history_`` (every epoch-level entry),
  ``skipped_files_``, ``training_data_`` (what the model was trained on),
  ``mean_image_``, ``operating_threshold_`` (the threshold chosen for it, if
  any), ``adaptation_`` (its adaptation to a site, if any), ``conformal_``
  (its conformal prediction sets, if any), ``ood_detector_`` (the
  out-of-distribution detector: its settings and threshold as JSON, its
  arrays as tensors; None when a file has none), what the net was built for
  (``net_spec_``: class weights, training size), and the weights of
  ``net_``, which is built by the same
  builder as in ``fit`` (loss with the class weights of the fit, optimizer,
  LR schedule and other callbacks); it has no training data, so a
  ``sampler="balanced"`` net shuffles instead, and there is no validation
  split;
* ``device_``: chosen when loading (``"auto"``: CUDA if present), as for
  ``fit``; a model trained on a GPU loads on a CPU-only machine.

The module never imports the estimator: ``load_model`` builds the class
named in the file among those registered with ``model_file_class``.

(``pickle``/``joblib.dump`` of a fitted classifier works too, and is what
scikit-learn tools use, but loading a pickle runs code from the file: only do
it with files you trust.)
"""

from __future__ import annotations

import copy
import datetime
import io
import json
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from skorch.history import History

from cxrkit._version import __version__
from cxrkit.metrics import positive_label
from cxrkit.ood import FeatureDistanceDetector
from cxrkit.persistence._provenance import (
    decision_rule,
    file_sha256,
    operating_threshold,
    weights_sha256,
)
from cxrkit.training._checkpoint import jsonable, write_atomic
from cxrkit.training._fit import NetSpec, build_net, resolve_device

__all__ = [
    "FITTED_ATTRIBUTES",
    "FORMAT_VERSION",
    "INTENDED_USE",
    "FittedAttribute",
    "fitted_model",
    "load_model",
    "model_card",
    "model_file_class",
    "read_model_metadata",
    "reset_chosen_attributes",
    "save_model",
]

#: Version of the model-file layout; files of a newer version are refused.
#: 2: all parameters (``pretrained``, a ``RandomState``'s state), the whole
#: history, ``skipped_files_`` and the net's class weights and training size.
FORMAT_VERSION = 2
_MAGIC = "cxrkit-model"
_DEFAULT_ESTIMATOR = "PneumoniaClassifier"  # files of format 1 name none
_ESTIMATORS: dict[str, type[BaseEstimator]] = {}


@dataclass(frozen=True)
class FittedAttribute:
    """One fitted attribute of a classifier, and how a model file keeps it.

    Attributes
    ----------
    name : str
        The attribute of the fitted estimator, e.g. ``"conformal_"``.
    storage : {"json", "array", "state", "core"}
        ``"json"``: the value, made JSON-able, under ``key`` in the file's
        metadata; ``"array"``: a numpy array as a tensor under ``key``
        (absent when None); ``"state"``: an object with ``to_state()`` and
        ``from_state(meta, tensors)`` (its JSON in the metadata, its tensors
        in the payload, both under ``key``); ``"core"``: written and read by
        ``save_model``/``load_model`` themselves (classes, weights, history,
        the net's build record, the device).
    key : str
        Where the file keeps it.
    default : Any
        The value in files written before the attribute existed, and the
        value ``fit`` gives it when ``learnt`` is False.
    learnt : bool
        True: ``fit`` computes it. False: ``fit`` resets it to ``default``;
        it is chosen later (a threshold, an adaptation to a site).
    what : str
        What it is, in words, for messages (default: its name).
    """

    name: str
    storage: str
    key: str
    default: Any = None
    learnt: bool = True
    what: str = ""


FITTED_ATTRIBUTES: tuple[FittedAttribute, ...] = (
    FittedAttribute("classes_", "core", "classes"),
    FittedAttribute("net_", "core", "state_dict"),
    FittedAttribute("history_", "core", "history"),
    FittedAttribute("device_", "core", ""),  # chosen when loading
    FittedAttribute("_net_spec", "core", "net"),  # read as net_spec_
    FittedAttribute("skipped_files_", "json", "skipped_files", default=[]),
    FittedAttribute("training_data_", "json", "training_data"),
    FittedAttribute("mean_image_", "array", "mean_image"),
    FittedAttribute(
        "ood_detector_", "state", "ood_detector", what="out-of-distribution detector"
    ),
    FittedAttribute(
        "operating_threshold_", "json", "operating_threshold", learnt=False
    ),
    FittedAttribute("adaptation_", "json", "adaptation", learnt=False),
    FittedAttribute("conformal_", "json", "conformal", learnt=False),
)
"""The fitted state of a classifier, declared once: ``fit`` sets every
attribute listed (those not ``learnt`` to their default), ``save_model``
writes every one and ``load_model`` reads every one back. A new fitted
attribute is one more row here, and the round-trip test then checks it."""

#: The classes a ``"state"`` attribute is read back with, by key.
_STATE_CLASSES: dict[str, Any] = {"ood_detector": FeatureDistanceDetector}


def reset_chosen_attributes(clf: BaseEstimator) -> None:
    """Give ``clf`` the default of every fitted attribute that ``fit`` does
    not learn (a new fit: no threshold chosen, not adapted to a site)."""
    for attribute in FITTED_ATTRIBUTES:
        if not attribute.learnt:
            setattr(clf, attribute.name, copy.deepcopy(attribute.default))


def model_file_class(cls: type[BaseEstimator]) -> type[BaseEstimator]:
    """Class decorator: an estimator that ``load_model`` may build.

    Only registered classes are built from a file (by the name the file
    records), so a file cannot make ``load_model`` import anything.
    """
    _ESTIMATORS[cls.__name__] = cls
    return cls


#: What every model card says a cxrkit model is for.
INTENDED_USE = (
    "For research and education only; not a medical device. Not for diagnosis "
    "or any clinical decision."
)

#: The parameters a model card names: they say what the model is.
CARD_PARAMETERS = (
    "model",
    "pretrained",
    "image_size",
    "class_weight",
    "max_epochs",
    "lr",
)


# ------------------------------------------------------------------- saving
def _encode_random_state(value: Any) -> Any:
    if isinstance(value, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = value.get_state()
        return {
            "RandomState": {
                "kind": kind,
                "keys": keys.tolist(),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            }
        }
    return value


def _decode_random_state(value: Any) -> Any:
    if isinstance(value, dict) and "RandomState" in value:
        s = value["RandomState"]
        state = np.random.RandomState()
        state.set_state(
            (
                s["kind"],
                np.array(s["keys"], dtype=np.uint32),
                s["pos"],
                s["has_gauss"],
                s["cached_gaussian"],
            )
        )
        return state
    return value


def _history_rows(history: History) -> list[dict]:
    """Every entry of every epoch that JSON can hold (all of skorch's)."""
    rows = []
    for row in history:
        kept = {}
        for key, value in row.items():
            value = jsonable(value)
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            kept[key] = value
        rows.append(kept)
    return rows


def save_model(
    clf: BaseEstimator,
    path: str | os.PathLike,
    *,
    threshold: Any = None,
    pos_label: Any = None,
) -> Path:
    """Write a fitted classifier to ``path`` (atomically, without pickle).

    The file's permissions follow the umask, as for any new file (or stay
    those of the file it replaces).

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    path : str or path-like
        Target file; conventionally ending in ``.cxr``.
    threshold : float or OperatingPoint, optional
        Two classes: the operating threshold to record (see
        [`operating_threshold`][cxrkit.persistence.operating_threshold]);
        default: ``clf.operating_threshold_``, if any.
    pos_label : class label, optional
        The class ``threshold`` applies to: ``"PNEUMONIA"`` when it is a
        class, 1 for 0/1 labels; any other pair of classes needs it.

    Returns
    -------
    pathlib.Path
    """
    check_is_fitted(clf, "net_")
    chosen = getattr(clf, "operating_threshold_", None)
    if threshold is not None:
        if len(clf.classes_) != 2:
            raise ValueError(
                f"an operating threshold applies to two classes; this model has "
                f"{len(clf.classes_)} and predicts the most probable one"
            )
        chosen = operating_threshold(
            threshold, pos_label=positive_label(clf.classes_, pos_label)
        )
    params = clf.get_params()
    params["random_state"] = _encode_random_state(params["random_state"])
    if not isinstance(params.get("accelerator"), bool | np.bool_ | None):
        params["accelerator"] = None  # an Accelerator: this run's processes
    meta = {
        "magic": _MAGIC,
        "format_version": FORMAT_VERSION,
        "cxrkit_version": __version__,
        "torch_version": torch.__version__,
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "estimator": type(clf).__name__,
        "params": jsonable(params),
        "classes": jsonable(list(clf.classes_)),
        "classes_dtype": str(clf.classes_.dtype),
        "history": _history_rows(clf.history_),
        "net": jsonable(asdict(clf._net_spec)),
    }
    state = {k: v.detach().cpu() for k, v in clf.net_.module_.state_dict().items()}
    payload = {"state_dict": state}
    chosen_values = {"operating_threshold_": chosen}
    for attribute in FITTED_ATTRIBUTES:
        value = chosen_values.get(attribute.name, getattr(clf, attribute.name, None))
        if attribute.storage == "json":
            meta[attribute.key] = jsonable(value)
        elif attribute.storage == "array" and value is not None:
            payload[attribute.key] = torch.from_numpy(np.asarray(value))
        elif attribute.storage == "state" and value is not None:
            meta[attribute.key], payload[attribute.key] = value.to_state()
    payload["meta"] = json.dumps(meta)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(path, buffer.getvalue())


# ------------------------------------------------------------------ loading
def _read_meta(payload: Any, path: Path) -> dict:
    if not isinstance(payload, dict) or not isinstance(payload.get("meta"), str):
        raise ValueError(f"{path} is not a cxrkit model file (no metadata)")
    try:
        meta = json.loads(payload["meta"])
    except json.JSONDecodeError:
        raise ValueError(f"{path} is a damaged cxrkit model file") from None
    if not isinstance(meta, dict) or meta.get("magic") != _MAGIC:
        raise ValueError(f"{path} is not a cxrkit model file")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{path} is not a cxrkit model file (no format version)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by cxrkit {meta.get('cxrkit_version')} in model-file "
            f"format {version}; this cxrkit ({__version__}) reads format "
            f"{FORMAT_VERSION} or older. Upgrade cxrkit: pip install -U cxrkit"
        )
    return meta


def _read_payload(path: Path) -> Any:
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.cxr"))[:3]
        raise IsADirectoryError(
            f"{path} is a folder, not a model file; give the file that "
            "`cxrkit train --out` or clf.save(path) wrote"
            + (f", e.g. {path / found[0]} (in it: {', '.join(found)})" if found else "")
        )
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        with path.open("rb") as fh:
            kind = _file_kind(fh.read(16))
        raise ValueError(
            f"{path} is not a cxrkit model file{kind}. Model files are written by "
            "clf.save(path) or `cxrkit train --out`; nothing in the file was executed."
        )
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses.
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        # torch's own message explains weights_only at length; the first line
        # says what was refused.
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ValueError(
            f"{path} is not a cxrkit model file, or it is damaged "
            f"({type(exc).__name__}: {first}). Model files are written "
            "by clf.save(path) or `cxrkit train`; nothing in the file was executed."
        ) from None


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What a model file says about its model, without building it.

    Parameters
    ----------
    path : str or path-like
        A ``.cxr`` file written by ``save_model``.

    Returns
    -------
    dict
        The file's metadata: ``cxrkit_version`` and ``torch_version`` that
        wrote it, ``saved_at`` (UTC, ISO 8601; files from before this key
        existed lack it), ``estimator``, ``params``, ``classes``, ``history``
        (one dict per epoch), ``skipped_files``, ``net`` (``n_train``: the
        images the weights were trained on, without the internal validation
        part) and ``format_version``.

    Raises
    ------
    FileNotFoundError, ValueError
        As ``load_model``; nothing in the file is executed.

    Examples
    --------
    >>> import tempfile
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
    ...                           max_epochs=1, random_state=0).fit(X, y)
    >>> meta = read_model_metadata(clf.save(tempfile.mkdtemp() + "/m.cxr"))
    >>> meta["classes"], meta["params"]["model"], len(meta["history"])
    (['NORMAL', 'PNEUMONIA'], 'simple_cnn', 1)
    """
    path = Path(path)
    return _read_meta(_read_payload(path), path)


def _file_kind(head: bytes) -> str:
    """What the first bytes of a file say it is, for an error message."""
    kinds = {
        b"\xff\xd8\xff": "JPEG image",
        b"\x89PNG": "PNG image",
        b"%PDF": "PDF document",
        b"\x80": "pickle",
    }
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return f" (it is a {kind})"
    return ""


def _estimator_class(
    meta: dict, path: Path, estimator_class: type[BaseEstimator] | None
) -> type[BaseEstimator]:
    name = meta.get("estimator", _DEFAULT_ESTIMATOR)
    if estimator_class is not None:
        if not issubclass(estimator_class, _ESTIMATORS.get(name, estimator_class)):
            raise ValueError(
                f"{path} holds a {name}, not a {estimator_class.__name__}; load it "
                f"with {name}.load(path)"
            )
        return estimator_class
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"{path} holds a {name!r}, which this cxrkit cannot build (it builds "
            f"{sorted(_ESTIMATORS)}); upgrading cxrkit may be needed"
        ) from None


def _known_params(meta: dict, known: dict, path: Path) -> dict:
    params = dict(meta["params"])
    unknown = sorted(set(params) - set(known))
    if unknown:
        warnings.warn(
            f"{path} sets parameters this cxrkit does not know ({unknown}); they "
            "are ignored. It was written by cxrkit "
            f"{meta.get('cxrkit_version')}; upgrading cxrkit may be needed.",
            UserWarning,
            stacklevel=3,
        )
    params = {k: v for k, v in params.items() if k in known}
    if "random_state" in params:
        params["random_state"] = _decode_random_state(params["random_state"])
    return params


def _net_spec(meta: dict, n_classes: int) -> NetSpec:
    if "net" not in meta:  # format 1 did not record it
        return NetSpec(n_classes, (1.0,) * n_classes)
    net = dict(meta["net"])
    spec = NetSpec(**{**net, "class_weights": tuple(net["class_weights"])})
    if spec.n_classes != n_classes or len(spec.class_weights) != n_classes:
        raise ValueError(f"the net is recorded for {spec.n_classes} classes")
    return spec


def fitted_model(
    model_or_path: Any,
    device: str = "auto",
    *,
    estimator_class: type[BaseEstimator] | None = None,
) -> tuple[BaseEstimator, Path | None]:
    """A fitted classifier, read from a model file or as given, and the file.

    What the server and the DICOM node take as their model.

    Parameters
    ----------
    model_or_path : str, path-like or fitted estimator
        A ``.cxr`` file (read with ``load_model``) or a fitted classifier.
    device : str, default="auto"
        Where a model file's weights go.
    estimator_class : type, optional
        As for ``load_model``.

    Returns
    -------
    (estimator, Path or None)
        The classifier, and the path it was read from (None when given).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        return load_model(path, device, estimator_class=estimator_class), path
    if not hasattr(model_or_path, "net_"):
        raise ValueError(
            "the model is not fitted; give a fitted PneumoniaClassifier or "
            "a model file written by clf.save(path) or `cxrkit train`"
        )
    return model_or_path, None


def load_model(
    path: str | os.PathLike,
    device: str = "auto",
    *,
    estimator_class: type[BaseEstimator] | None = None,
) -> BaseEstimator:
    """Read a classifier written by ``save_model``.

    Parameters
    ----------
    path : str or path-like
        A ``.cxr`` file.
    device : str, default="auto"
        Where to put the weights, with the same meaning as the estimator's
        ``device``: ``"auto"`` uses CUDA when available, else the CPU (so a
        model trained on a GPU loads on a CPU-only machine).
    estimator_class : class, optional
        The class to build (``PneumoniaClassifier.load`` passes its own); by
        default the registered class named in the file.

    Returns
    -------
    PneumoniaClassifier
        Fitted, ready for ``predict``; its ``get_params()`` equals the saved
        model's.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a cxrkit model file, a file from a newer cxrkit, or a file that
        would need code to run (a pickle): nothing in it is executed.
    """
    path = Path(path)
    device_ = resolve_device(device)
    payload = _read_payload(path)
    meta = _read_meta(payload, path)
    cls = _estimator_class(meta, path, estimator_class)
    try:
        params = _known_params(meta, cls().get_params(), path)
        classes = np.array(meta["classes"], dtype=meta["classes_dtype"])
        state_dict = payload["state_dict"]
        spec = _net_spec(meta, len(classes))
        clf = cls(**params)
        clf._validate_params()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path} is a damaged cxrkit model file ({type(exc).__name__}: {exc})"
        ) from None
    net = build_net(clf.get_params(), spec, device=device_, initial_weights=False)
    net.initialize()
    try:
        net.module_.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"the weights in {path} do not fit a {params.get('model')!r} model with "
            f"{len(classes)} classes; the file is damaged or was edited "
            f"({str(exc)[:300]})"
        ) from None
    net.history = History(meta.get("history", []))
    clf.classes_ = classes
    clf.net_ = net
    clf.history_ = net.history
    clf.device_ = device_
    clf._net_spec = spec
    for attribute in FITTED_ATTRIBUTES:
        if attribute.storage != "core":
            setattr(
                clf, attribute.name, _read_attribute(attribute, meta, payload, path)
            )
    return clf


def _read_attribute(
    attribute: FittedAttribute, meta: dict, payload: dict, path: Path
) -> Any:
    """One declared fitted attribute from a file; its default when the file
    was written before it existed."""
    if attribute.storage == "json":
        return meta.get(attribute.key, copy.deepcopy(attribute.default))
    if attribute.storage == "array":
        value = payload.get(attribute.key)
        return value.numpy() if isinstance(value, torch.Tensor) else attribute.default
    if meta.get(attribute.key) is None:  # "state"
        return copy.deepcopy(attribute.default)
    try:
        return _STATE_CLASSES[attribute.key].from_state(
            meta[attribute.key], payload[attribute.key]
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"{path} is a damaged cxrkit model file (its "
            f"{attribute.what or attribute.name}: "
            f"{type(exc).__name__}: {exc})"
        ) from None


def model_card(
    clf: Any,
    path: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    pos_label: Any = None,
) -> dict[str, Any]:
    """What is known about a fitted model, in one JSON-able dict.

    The one builder of these facts: the report's Model section, the
    server's model card (``GET /model``), the ONNX metadata and the DICOM
    results of ``cxrkit.pacs`` (``ReportingModel.identity``) each show a
    part of it.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier (a wrapping estimator gives what it has, e.g.
        ``classes_``; a ``FrozenEstimator`` passes everything through).
    path : str or path-like, optional
        The model file ``clf`` was loaded from: the card gives its name,
        SHA-256 and what it records about when and with what it was saved.
        Without it, the SHA-256 of the weights identifies the model.
    threshold, pos_label : optional
        As for [`decision_rule`][cxrkit.persistence.decision_rule], which
        gives the card's ``threshold`` and ``positive_class``.

    Returns
    -------
    dict
        ``estimator``; ``parameters`` (those of ``CARD_PARAMETERS`` the
        estimator has; a ``pretrained`` path as a string); ``classes``;
        ``positive_class`` and ``threshold`` (the decision rule: None, None
        for the most probable class); ``operating_threshold`` (the record,
        or None); ``trained`` (``images`` and ``internal_validation`` of the
        fit, ``epochs``, ``skipped_files`` (how many), ``data`` (the
        ``training_data_`` summary), ``saved_at``, ``cxrkit_version``,
        ``torch_version``); ``file`` and ``sha256``; ``ood`` (the detector's
        ``method``, ``threshold`` and ``alarm_rate``, or None);
        ``explanation`` and ``explanation_caption`` (the recommended heatmap
        method); ``last_epoch`` (the last epoch's losses and scores);
        ``intended_use``.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> card = model_card(clf, threshold=0.3)
    >>> card["parameters"]["model"], card["classes"], card["threshold"]
    ('simple_cnn', ['NORMAL', 'PNEUMONIA'], 0.3)
    >>> card["trained"]["epochs"], card["file"]
    (1, None)
    """
    from cxrkit.explain import DEFAULT_METHOD, method_caption

    # attributes, not get_params(): a FrozenEstimator passes them through
    values = {k: getattr(clf, k) for k in CARD_PARAMETERS if hasattr(clf, k)}
    parameters = {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()
    }
    rule = decision_rule(clf, threshold, pos_label=pos_label)
    history = getattr(clf, "history_", None)
    spec = getattr(clf, "net_spec_", None)
    if path is not None:
        meta = read_model_metadata(path)
        saved = {
            k: meta.get(k) for k in ("saved_at", "cxrkit_version", "torch_version")
        }
        identity = {"file": os.path.basename(path), "sha256": file_sha256(path)}
    else:
        saved = {
            "saved_at": None,
            "cxrkit_version": __version__,
            "torch_version": torch.__version__,
        }
        identity = {
            "file": None,
            "sha256": weights_sha256(clf) if hasattr(clf, "net_") else None,
        }
    last = history[-1] if history is not None and len(history) else {}
    detector = getattr(clf, "ood_detector_", None)
    return {
        "estimator": type(clf).__name__,
        "parameters": parameters,
        "classes": np.asarray(clf.classes_).tolist(),
        "positive_class": None
        if rule.pos_label is None
        else np.asarray(rule.pos_label).tolist(),
        "threshold": rule.threshold,
        "operating_threshold": getattr(clf, "operating_threshold_", None),
        "trained": {
            "images": getattr(spec, "n_train", None),
            "internal_validation": getattr(spec, "validation", None),
            "epochs": None if history is None else len(history),
            "skipped_files": len(getattr(clf, "skipped_files_", [])),
            "data": getattr(clf, "training_data_", None),
            **saved,
        },
        **identity,
        "ood": None
        if detector is None
        else {
            "method": detector.method,
            "threshold": round(detector.threshold_, 4),
            "alarm_rate": detector.alarm_rate,
        },
        "explanation": DEFAULT_METHOD,
        "explanation_caption": method_caption(DEFAULT_METHOD, getattr(clf, "tta", 0)),
        "last_epoch": {
            k: last[k]
            for k in ("train_loss", "valid_loss", "valid_acc", "roc_auc")
            if k in last and isinstance(last[k], (int, float))
        },
        "intended_use": INTENDED_USE,
    }

"""Model files without pickle: weights as tensors, everything else as JSON.

A ``.cxr`` model file is written with ``torch.save`` of a dict holding only
tensors, strings and numbers, and read back with ``torch.load(...,
weights_only=True)``, which refuses any object that would need code to be
run. Writes go to a temporary file that is renamed over the target, so an
interrupted save never leaves a half-written model behind.

(``pickle``/``joblib.dump`` of a fitted classifier works too, and is what
scikit-learn tools use, but loading a pickle runs code from the file: only do
it with files you trust.)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from cxrkit.classifier import PneumoniaClassifier

__all__ = ["FORMAT_VERSION", "load_model", "save_model"]

#: Version of the model-file layout; files of a newer version are refused.
FORMAT_VERSION = 1
_MAGIC = "cxrkit-model"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_model(clf: PneumoniaClassifier, path: str | os.PathLike) -> Path:
    """Write a fitted classifier to ``path`` (atomically, without pickle).

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    path : str or path-like
        Target file; conventionally ending in ``.cxr``.

    Returns
    -------
    pathlib.Path
    """
    from sklearn.utils.validation import check_is_fitted

    import cxrkit

    check_is_fitted(clf, "net_")
    params = clf.get_params()
    if params.get("random_state") is not None and not isinstance(
        params["random_state"], (int, np.integer)
    ):
        params["random_state"] = None  # a RandomState object is not JSON
    meta = {
        "magic": _MAGIC,
        "format_version": FORMAT_VERSION,
        "cxrkit_version": cxrkit.__version__,
        "torch_version": torch.__version__,
        "params": _jsonable(params),
        "classes": _jsonable(list(clf.classes_)),
        "classes_dtype": str(clf.classes_.dtype),
        "history": _jsonable(_history_rows(clf)),
    }
    state = {k: v.detach().cpu() for k, v in clf.net_.module_.state_dict().items()}
    payload = {"meta": json.dumps(meta), "state_dict": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _history_rows(clf: PneumoniaClassifier) -> list[dict]:
    keep = ("epoch", "train_loss", "valid_loss", "valid_acc", "valid_auc", "lr", "dur")
    return [{k: row[k] for k in keep if k in row} for row in clf.history_]


def load_model(path: str | os.PathLike, device: str = "cpu") -> PneumoniaClassifier:
    """Read a classifier written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like
        A ``.cxr`` file.
    device : str
        Where to put the weights (``"cpu"`` works for models trained on GPU).

    Returns
    -------
    PneumoniaClassifier
        Fitted, ready for ``predict``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a cxrkit model file, a file from a newer cxrkit, or a file that
        would need code to run (a pickle): nothing in it is executed.
    """
    from skorch import NeuralNetClassifier
    from skorch.history import History
    from torch import nn

    from cxrkit.classifier import PneumoniaClassifier
    from cxrkit.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(
            f"{path} is not a cxrkit model file, or it is damaged "
            f"({type(exc).__name__}: {str(exc)[:200]}). Model files are written "
            "by clf.save(path) or `cxrkit train`; nothing in the file was executed."
        ) from None
    if not isinstance(payload, dict) or "meta" not in payload:
        raise ValueError(f"{path} is not a cxrkit model file (no metadata)")
    meta = json.loads(payload["meta"])
    if meta.get("magic") != _MAGIC:
        raise ValueError(f"{path} is not a cxrkit model file")
    if meta["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by cxrkit {meta.get('cxrkit_version')} in model-file "
            f"format {meta['format_version']}; this cxrkit reads format "
            f"{FORMAT_VERSION} or older. Upgrade cxrkit: pip install -U cxrkit"
        )
    params = dict(meta["params"])
    params["pretrained"] = None  # the saved weights replace any initial ones
    clf = PneumoniaClassifier(**params)
    classes = np.array(meta["classes"], dtype=meta["classes_dtype"])
    module = build_model(params["model"], len(classes), image_size=params["image_size"])
    module.load_state_dict(payload["state_dict"])
    net = NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        classes=list(range(len(classes))),
        batch_size=params["batch_size"],
        device=device,
    ).initialize()
    net.history = History(meta.get("history", []))
    clf.classes_ = classes
    clf.net_ = net
    clf.history_ = net.history
    clf.device_ = device
    return clf

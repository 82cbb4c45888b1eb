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

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from cxrkit.classifier import PneumoniaClassifier

__all__ = ["FORMAT_VERSION", "load_model", "save_model", "training_checkpoint"]

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


def cxrkit_version() -> str:
    """The installed cxrkit version."""
    import cxrkit

    return cxrkit.__version__


def _read_meta(payload: Any, path: Path) -> dict:
    if not isinstance(payload, dict) or not isinstance(payload.get("meta"), str):
        raise ValueError(f"{path} is not a cxrkit model file (no metadata)")
    try:
        meta = json.loads(payload["meta"])
    except json.JSONDecodeError:
        raise ValueError(f"{path} is a damaged cxrkit model file") from None
    if not isinstance(meta, dict) or meta.get("magic") != _MAGIC:
        raise ValueError(f"{path} is not a cxrkit model file")
    return meta


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
    from skorch.history import History
    from torch import nn

    from cxrkit.classifier import PneumoniaClassifier
    from cxrkit.models import build_model
    from cxrkit.net import ImageClassifierNet

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses.
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(
            f"{path} is not a cxrkit model file, or it is damaged "
            f"({type(exc).__name__}: {str(exc)[:200]}). Model files are written "
            "by clf.save(path) or `cxrkit train`; nothing in the file was executed."
        ) from None
    meta = _read_meta(payload, path)
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{path} is not a cxrkit model file (no format version)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by cxrkit {meta.get('cxrkit_version')} in model-file "
            f"format {version}; this cxrkit ({cxrkit_version()}) reads format "
            f"{FORMAT_VERSION} or older. Upgrade cxrkit: pip install -U cxrkit"
        )
    try:
        params = dict(meta["params"])
        classes = np.array(meta["classes"], dtype=meta["classes_dtype"])
        state_dict = payload["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path} is a damaged cxrkit model file ({type(exc).__name__}: {exc})"
        ) from None
    known = PneumoniaClassifier().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        warnings.warn(
            f"{path} sets parameters this cxrkit does not know ({unknown}); they "
            "are ignored. It was written by cxrkit "
            f"{meta.get('cxrkit_version')}; upgrading cxrkit may be needed.",
            UserWarning,
            stacklevel=2,
        )
    params = {k: v for k, v in params.items() if k in known}
    params["pretrained"] = None  # the saved weights replace any initial ones
    clf = PneumoniaClassifier(**params)
    model_name = clf.get_params()["model"]
    module = build_model(model_name, len(classes), image_size=clf.image_size)
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"the weights in {path} do not fit a {model_name!r} model with "
            f"{len(classes)} classes; the file is damaged or was edited "
            f"({str(exc)[:300]})"
        ) from None
    net = ImageClassifierNet(
        module,
        criterion=nn.CrossEntropyLoss,
        classes=list(range(len(classes))),
        batch_size=params["batch_size"],
        device=device,
        precision=clf.precision,
    ).initialize()
    net.history = History(meta.get("history", []))
    clf.classes_ = classes
    clf.net_ = net
    clf.history_ = net.history
    clf.device_ = device
    return clf


# ----------------------------------------------------------- training checkpoints
_RUN_FILE = "cxrkit_run.json"


def training_checkpoint(
    dirname: str | os.PathLike, run: dict[str, Any]
) -> tuple[list, int]:
    """skorch callbacks that checkpoint every epoch and resume from the last.

    ``PneumoniaClassifier(checkpoint_dir=...)`` uses this: skorch's
    ``Checkpoint`` (``monitor=None``) writes the weights, optimizer state and
    history after every epoch, and ``LoadInitState`` loads them when ``fit``
    starts again, so a run stopped by Ctrl-C or a crash continues from its
    last finished epoch instead of starting over. skorch reads the files back
    with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    dirname : str or path-like
        Folder for the checkpoint files (created when missing).
    run : dict
        JSON-able description of the training run (parameters, classes, a
        fingerprint of the data). A checkpoint of a different run in
        ``dirname`` raises an error rather than being resumed.

    Returns
    -------
    callbacks : list
        ``[LoadInitState, Checkpoint]``: the first must come before any LR
        scheduler, the second after the scoring callbacks.
    epochs_done : int
        Epochs already finished in ``dirname`` (0 for a new run).

    Raises
    ------
    ValueError
        ``dirname`` holds a checkpoint of another run.

    Examples
    --------
    >>> import tempfile
    >>> callbacks, done = training_checkpoint(tempfile.mkdtemp(), {"lr": 0.1})
    >>> [type(c).__name__ for c in callbacks], done
    (['LoadInitState', 'Checkpoint'], 0)
    """
    from skorch.callbacks import Checkpoint, LoadInitState

    folder = Path(dirname)
    folder.mkdir(parents=True, exist_ok=True)
    # A JSON round trip, so that the run compares equal to its saved copy.
    run = json.loads(json.dumps(_jsonable(run), sort_keys=True, default=repr))
    run_file = folder / _RUN_FILE
    history_file = folder / "history.json"
    epochs_done = 0
    if history_file.exists():
        saved = json.loads(run_file.read_text()) if run_file.exists() else None
        if saved != run:
            raise ValueError(
                f"checkpoint_dir {folder} holds a checkpoint of a different training "
                "run (other parameters or data); use a new, empty folder for each "
                "run, or delete that one to start over"
            )
        try:
            epochs_done = len(json.loads(history_file.read_text()))
        except (OSError, json.JSONDecodeError):
            raise ValueError(
                f"the checkpoint in {folder} is damaged (history.json); delete the "
                "folder to start over"
            ) from None
    else:
        _write_atomic(run_file, json.dumps(run, sort_keys=True).encode())
    checkpoint = Checkpoint(monitor=None, dirname=os.fspath(folder))
    return [LoadInitState(checkpoint), checkpoint], epochs_done


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the training data, to tell runs apart.

    Examples
    --------
    >>> import numpy as np
    >>> a = data_fingerprint(np.zeros((2, 4, 4), np.uint8), np.array([0, 1]))
    >>> a == data_fingerprint(np.zeros((2, 4, 4), np.uint8), np.array([1, 0]))
    False
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(
            array.tobytes() if array.dtype != object else repr(array).encode()
        )
    return digest.hexdigest()[:16]


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

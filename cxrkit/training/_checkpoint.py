"""Resumable training: a checkpoint after every epoch, and atomic file writes.

``PneumoniaClassifier(checkpoint_dir=...)`` uses ``training_checkpoint``:
skorch's ``Checkpoint`` writes the weights, optimizer state and history after
every epoch, and ``LoadInitState`` loads them when ``fit`` starts again, so a
run stopped by Ctrl-C or a crash continues from its last finished epoch
instead of starting over. A JSON description of the run (parameters, classes,
a fingerprint of the data, the seed it drew) is kept beside the checkpoint, so
that a checkpoint is never resumed by a different run, and a run resumed with
``random_state=None`` keeps its seed (``recorded_seed``).

``write_atomic`` (a temporary file renamed over the target) is also how
model files are written (``cxrkit.persistence``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "data_fingerprint",
    "jsonable",
    "recorded_seed",
    "training_checkpoint",
    "write_atomic",
]

_RUN_FILE = "cxrkit_run.json"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, paths and tuples made JSON-friendly.

    Examples
    --------
    >>> from pathlib import Path
    >>> jsonable({"lr": np.float64(0.1), "dir": Path("a"), "pair": (1, 2)})
    {'lr': 0.1, 'dir': 'a', 'pair': [1, 2]}
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file renamed over it.

    An interrupted write (Ctrl-C, a full disk, a crash) leaves the old file,
    if any, untouched and no temporary file behind.

    Parameters
    ----------
    path : str or path-like
        Target file; its folder is created when missing.
    data : bytes

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> path = write_atomic(tempfile.mkdtemp() + "/a/b.txt", b"hello")
    >>> path.read_bytes()
    b'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file for its owner only (0600); give it the mode
        # a plain open() would have.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what the umask allows."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)  # the only way to read it; set back at once
        os.umask(umask)
        return 0o666 & ~umask


def training_checkpoint(
    dirname: str | os.PathLike, run: dict[str, Any]
) -> tuple[list, int]:
    """skorch callbacks that checkpoint every epoch and resume from the last.

    skorch reads the files back with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    dirname : str or path-like
        Folder for the checkpoint files (created when missing).
    run : dict
        JSON-able description of the training run (parameters, classes, a
        fingerprint of the data, the seed). A checkpoint of a different run in
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
    run = json.loads(json.dumps(jsonable(run), sort_keys=True, default=repr))
    run_file = folder / _RUN_FILE
    history_file = folder / "history.json"
    epochs_done = 0
    if history_file.exists():
        saved = json.loads(run_file.read_text()) if run_file.exists() else None
        if isinstance(saved, dict) and "seed" not in saved:
            # written before runs recorded their seed: resumed as then
            run = {k: v for k, v in run.items() if k != "seed"}
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
        write_atomic(run_file, json.dumps(run, sort_keys=True).encode())
    checkpoint = Checkpoint(monitor=None, dirname=os.fspath(folder))
    return [LoadInitState(checkpoint), checkpoint], epochs_done


def recorded_seed(dirname: str | os.PathLike) -> int | None:
    """The seed recorded in the run file of the checkpoint in ``dirname``.

    A fit with ``random_state=None`` draws a seed (validation split, weight
    initialisation) and records it with the run (``"seed"``); the fit that
    resumes the run takes it from here, so that it keeps the same
    validation split.

    Parameters
    ----------
    dirname : str or path-like
        A ``checkpoint_dir``.

    Returns
    -------
    int or None
        None when ``dirname`` holds no checkpoint (no finished epoch) or its
        run file records no seed.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> recorded_seed(folder) is None
    True
    >>> _ = training_checkpoint(folder, {"seed": 7})
    >>> _ = write_atomic(folder + "/history.json", b"[{}]")  # one epoch done
    >>> recorded_seed(folder)
    7
    """
    folder = Path(dirname)
    if not (folder / "history.json").exists():
        return None
    try:
        run = json.loads((folder / _RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None  # training_checkpoint tells what is wrong
    seed = run.get("seed") if isinstance(run, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the training data, to tell runs apart.

    Examples
    --------
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

"""skorch callbacks that cxrkit adds to training.

skorch has no weight-averaging callback (skorch-dev/skorch#700 is open), so
[`WeightAveraging`][cxrkit.training.WeightAveraging] wraps PyTorch's own
``torch.optim.swa_utils``
(``AveragedModel`` with ``get_ema_multi_avg_fn``) in one: the arithmetic is
PyTorch's, only the hooks are written here.
"""

from __future__ import annotations

import io
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from skorch.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cxrkit.training._checkpoint import write_atomic

__all__ = ["WeightAveraging", "print_epoch_table"]

#: The weight average's file in a ``checkpoint_dir``.
AVERAGE_FILE = "weight_average.pt"

_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


def print_epoch_table(text: str) -> None:
    r"""Print skorch's table of epochs; colour codes only on a terminal.

    skorch colours the best scores with ANSI codes, which land as
    ``\x1b[32m`` in a redirected log; cxrkit gives this function to skorch's
    ``PrintLog`` as its ``sink``.

    Examples
    --------
    >>> print_epoch_table("\x1b[32m0.9000\x1b[0m")  # not a terminal here
    0.9000
    """
    isatty = getattr(sys.stdout, "isatty", None)
    if not (isatty and isatty()):
        text = _ANSI_CODE.sub("", text)
    print(text, flush=True)


class WeightAveraging(Callback):
    """Exponential moving average (EMA) of the weights, used after training.

    After every training step the average is updated,
    ``avg = decay * avg + (1 - decay) * weights``, batch-norm statistics
    included; when training ends the averaged weights replace the module's.
    With ``decay=0.99`` the average spans about the last 100 steps.

    Parameters
    ----------
    decay : float
        In (0, 1).
    dirname : str, path-like or None, default=None
        The folder of a resumable training run (``checkpoint_dir``): the
        average is saved there (``weight_average.pt``) after every epoch, and
        a ``fit`` that resumes the run (its history loaded, e.g. by skorch's
        ``LoadInitState``) goes on averaging from it, rather than from the
        weights it resumes with. An average saved for another number of
        epochs than the history's is not used (with a warning).

    Examples
    --------
    >>> import numpy as np
    >>> from skorch import NeuralNetClassifier
    >>> X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = NeuralNetClassifier(torch.nn.Sequential(torch.nn.Linear(4, 2)),
    ...     max_epochs=2, train_split=None, verbose=0,
    ...     callbacks=[WeightAveraging(0.9)]).fit(X, y)
    >>> net.predict_proba(X).shape
    (64, 2)
    """

    def __init__(self, decay: float, dirname: str | os.PathLike | None = None) -> None:
        self.decay = decay
        self.dirname = dirname

    def initialize(self) -> WeightAveraging:
        if not 0.0 < float(self.decay) < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {self.decay!r}")
        self.averaged_ = None
        return self

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.averaged_ = AveragedModel(
            net.module_,
            multi_avg_fn=get_ema_multi_avg_fn(float(self.decay)),
            use_buffers=True,
        )
        if self.dirname is not None and len(net.history):
            self._restore(len(net.history))

    def on_batch_end(self, net: Any, training: bool = False, **kwargs: Any) -> None:
        if training and self.averaged_ is not None:
            self.averaged_.update_parameters(net.module_)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if self.dirname is None or self.averaged_ is None:
            return
        buffer = io.BytesIO()
        state = {"epochs": len(net.history), "average": self.averaged_.state_dict()}
        torch.save(state, buffer)
        write_atomic(Path(self.dirname) / AVERAGE_FILE, buffer.getvalue())

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        if self.averaged_ is None:
            return
        with torch.no_grad():
            net.module_.load_state_dict(self.averaged_.module.state_dict())
        self.averaged_ = None  # the copy is not needed any more, nor pickled

    def _restore(self, epochs: int) -> None:
        """Load the average saved after ``epochs`` epochs into ``averaged_``."""
        path = Path(self.dirname) / AVERAGE_FILE
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # missing, or damaged (torch raises many kinds)
            saved = None
        if not isinstance(saved, dict) or saved.get("epochs") != epochs:
            warnings.warn(
                f"{path} holds no readable weight average for the {epochs} "
                "epoch(s) being resumed: the average restarts from the resumed "
                "weights",
                UserWarning,
                stacklevel=2,
            )
            return
        self.averaged_.load_state_dict(saved["average"])

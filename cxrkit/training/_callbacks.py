"""skorch callbacks that cxrkit adds to training.

skorch has no weight-averaging callback (skorch-dev/skorch#700 is open), so
[`WeightAveraging`][cxrkit.training.WeightAveraging] wraps PyTorch's own
``torch.optim.swa_utils``
(``AveragedModel`` with ``get_ema_multi_avg_fn``) in one: the arithmetic is
PyTorch's, only the hooks are written here.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import torch
from skorch.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAveraging", "print_epoch_table"]

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

    def __init__(self, decay: float) -> None:
        self.decay = decay

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

    def on_batch_end(self, net: Any, training: bool = False, **kwargs: Any) -> None:
        if training and self.averaged_ is not None:
            self.averaged_.update_parameters(net.module_)

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        if self.averaged_ is None:
            return
        with torch.no_grad():
            net.module_.load_state_dict(self.averaged_.module.state_dict())
        self.averaged_ = None  # the copy is not needed any more, nor pickled

"""Training on several GPUs through Hugging Face Accelerate (``accelerator=``).

``PneumoniaClassifier(accelerator=...)`` trains its skorch net through
skorch's [`AccelerateMixin`](https://skorch.readthedocs.io/en/stable/hf.html):
the net, its loss, optimizer, LR schedule and data loaders are handed to an
``accelerate.Accelerator``, which runs the same training on every process of
an ``accelerate launch`` (one per GPU, as PyTorch DDP), each process on its
share of every batch, gradients averaged between them. Nothing here is a
home-made distribution loop: cxrkit only builds the net with skorch's mixin
(``AcceleratedImageClassifierNet``) and resolves the parameter
(``resolve_accelerator``).

Division of labour:

* **devices**: the accelerator places the model and the batches (one GPU per
  process); the estimator's ``device`` must stay ``"auto"``, and ``device_``
  is the accelerator's device;
* **mixed precision**: the accelerator's (``Accelerator(mixed_precision=
  "bf16")`` or ``accelerate launch --mixed_precision bf16``, with its own
  gradient scaler for ``"fp16"``); the estimator's ``precision`` must stay
  ``"32"``, so that the two never autocast or scale the same step;
* **data**: every process decodes and caches the whole ``X`` itself (the
  decoded ``uint8`` images, 16 KB each at 128 px), and the accelerator's
  data loader gives each process a different share of each epoch's batches.

Needs ``pip install "cxrkit[accelerate]"``. Experimental in skorch, and
tested here on one CPU process only (``Accelerator(cpu=True)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.hf import AccelerateMixin

from cxrkit.models._net import ImageClassifierNet

__all__ = ["AcceleratedImageClassifierNet", "resolve_accelerator"]

_INSTALL_HINT = 'pip install "cxrkit[accelerate]"'


class AcceleratedImageClassifierNet(AccelerateMixin, ImageClassifierNet):
    """cxrkit's skorch net (``ImageClassifierNet``), through Accelerate.

    skorch's ``AccelerateMixin`` on cxrkit's net: takes every parameter of
    ``ImageClassifierNet`` plus ``accelerator`` (an ``accelerate.Accelerator``)
    and ``unwrap_after_train``; ``device`` must be None (the accelerator
    places the model and the batches). Mixed precision is the accelerator's
    (its ``mixed_precision``): ``precision`` must be ``"32"``.

    Once trained, the net is unwrapped (skorch's default): ``module_`` is the
    bare model again, in float32. It cannot be pickled (as in skorch): save
    the classifier with ``clf.save(path)`` instead. In a multi-process run,
    ``predict_proba`` is distributed too (each process scores its share,
    results are gathered to every process), so call it on every process.

    Examples
    --------
    >>> import numpy as np
    >>> from accelerate import Accelerator
    >>> from torch import nn
    >>> from cxrkit.images import ImageBatches
    >>> module = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    >>> net = AcceleratedImageClassifierNet(
    ...     module, accelerator=Accelerator(cpu=True), criterion=nn.CrossEntropyLoss,
    ...     max_epochs=1, train_split=None, verbose=0)
    >>> data = ImageBatches(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]))
    >>> net.fit(data, y=None).predict_proba(data).shape
    (4, 2)
    """

    def compute_device(self) -> torch.device:
        return self.accelerator.device

    def _initialize_callbacks(self) -> AcceleratedImageClassifierNet:
        # skorch's print log prints to any sink but ``print`` whatever
        # ``verbose``; the accelerator's sink (main process only) only when
        # there is something to print.
        if self.callbacks__print_log__sink == "auto" and not self.verbose:
            self.callbacks__print_log__sink = print
        return super()._initialize_callbacks()

    def _initialize_accelerator(self) -> AcceleratedImageClassifierNet:
        # skorch prepares every criterion; in several processes Accelerate
        # wraps each in DDP, which refuses a module without trainable
        # parameters (CrossEntropyLoss): such a loss is only moved to the
        # device, and hidden from skorch's loop (it prepares modules only).
        if self._wrapped_with_accelerator:
            return self
        plain = {
            name: getattr(self, name + "_")
            for name in self._criteria
            if isinstance(getattr(self, name + "_"), torch.nn.Module)
            and not any(p.requires_grad for p in getattr(self, name + "_").parameters())
        }
        for name in plain:
            setattr(self, name + "_", None)
        try:
            super()._initialize_accelerator()
        finally:
            for name, criterion in plain.items():
                setattr(self, name + "_", criterion.to(self.accelerator.device))
        return self

    def __getstate__(self) -> dict:
        # skorch: "models accelerated this way cannot be pickled" (the
        # accelerator, optimizer and LR schedule hold patched methods); say
        # so instead of pickle's error about AcceleratedOptimizer.step.
        raise TypeError(
            "a net trained through an accelerate.Accelerator cannot be pickled; "
            "write the classifier with clf.save(path) and read it with "
            "PneumoniaClassifier.load(path) (a model file holds the weights)"
        )

    def initialize_module(self) -> AcceleratedImageClassifierNet:
        if self.precision != "32":
            raise ValueError(
                f"precision={self.precision!r} with an accelerator: mixed precision "
                "is the accelerator's (Accelerator(mixed_precision='bf16') or "
                "`accelerate launch --mixed_precision bf16`); use precision='32'"
            )
        return super().initialize_module()


def resolve_accelerator(accelerator: Any) -> Any:
    """The ``accelerate.Accelerator`` for an ``accelerator`` parameter, or None.

    Parameters
    ----------
    accelerator : None, bool or accelerate.Accelerator
        None or False: no accelerator. True: a new ``Accelerator()``,
        configured by ``accelerate launch`` (or ``accelerate config``), as in a
        multi-GPU script. An ``Accelerator`` is returned as it is.

    Returns
    -------
    accelerate.Accelerator or None

    Raises
    ------
    ImportError
        ``accelerator=True`` without Hugging Face Accelerate installed
        (``pip install "cxrkit[accelerate]"``).

    Examples
    --------
    >>> resolve_accelerator(None) is None
    True
    >>> type(resolve_accelerator(True)).__name__
    'Accelerator'
    """
    if not accelerator:  # None or False (an Accelerator is always true)
        return None
    if isinstance(accelerator, bool | np.bool_):
        try:
            from accelerate import Accelerator
        except ImportError as exc:
            raise ImportError(
                "accelerator=True needs Hugging Face Accelerate, which is not "
                f"installed: {_INSTALL_HINT}"
            ) from exc
        return Accelerator()
    return accelerator

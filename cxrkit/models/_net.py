"""The skorch net inside `PneumoniaClassifier` (``clf.net_``).

[`ImageClassifierNet`][cxrkit.models._net.ImageClassifierNet] is skorch's
``NeuralNetClassifier`` fed with
``uint8`` image batches ([`ImageBatches`][cxrkit.images.ImageBatches]). It moves a
batch to the training device, turns it into floats, augments it while
training (whole batch at once, parameters per image) and normalises it, then
runs the model, in mixed precision if asked.

Why ``infer``: skorch sends every forward pass through ``NeuralNet.infer``
(training steps, validation steps and ``predict_proba`` alike), and sets the
module to training mode only in its training step. Overriding ``infer`` is
therefore the one place where a batch becomes the model's input, and the
module's ``training`` flag says whether to augment: validation and prediction
never are. (A module wrapper would change ``net_.module_``, which
explanations, feature extraction and model files use as the bare model.)
Float batches (normalised inputs, or features of a frozen backbone) pass
through unchanged. Predictions (skorch's ``evaluation_step``) run a copy of
the module with batch norm folded into its convolutions, made once per set
of weights; training and validation steps run the module itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator, to_tensor
from torch.utils.data import default_collate

from cxrkit.images._normalize import normalize
from cxrkit.models._inference_model import copy_is_watched_alike, inference_model

__all__ = ["PRECISIONS", "ImageClassifierNet", "collate_batches", "data_device"]

#: Accepted ``precision`` values: float32, bfloat16 autocast, float16 autocast
#: with a gradient scaler (CUDA only).
PRECISIONS = ("32", "bf16", "16")


def collate_batches(batch: Any) -> Any:
    """``DataLoader`` ``collate_fn``: pass whole batches through, stack samples.

    A dataset with ``__getitems__`` ([`ImageBatches`][cxrkit.images.ImageBatches])
    already returns the batch as a tuple of tensors; a list of samples from
    any other dataset is stacked by torch's ``default_collate``.

    Examples
    --------
    >>> x = torch.zeros(2, 3)
    >>> collate_batches((x, x)) [0] is x
    True
    >>> collate_batches([(torch.zeros(3), 0), (torch.ones(3), 1)])[1]
    tensor([0, 1])
    """
    return batch if isinstance(batch, tuple) else default_collate(batch)


class ImageClassifierNet(NeuralNetClassifier):
    """skorch ``NeuralNetClassifier`` for ``uint8`` image batches.

    Takes every parameter of ``skorch.NeuralNetClassifier``, plus:

    Parameters
    ----------
    augmentation : callable or None, default=None
        Applied to float ``(B, 1, H, W)`` batches in [0, 1], on the device,
        in training steps only (e.g.
        [`BatchAugmentation`][cxrkit.training.BatchAugmentation]).
    precision : {"32", "bf16", "16"}, default="32"
        ``"bf16"``/``"16"`` run the forward passes under ``torch.autocast``
        in bfloat16/float16; ``"16"`` also scales the loss (a
        ``torch.amp.GradScaler``). float16 autocast is used on CUDA only:
        elsewhere ``"16"`` computes in float32.
    channels_last : bool, default=True
        Keep the model's weights and the input batches in channels-last
        memory order: faster convolutions on GPUs with tensor cores, and on
        CPUs too (oneDNN works in that order; a ``resnet18`` training step at
        128 px took about 12% less CPU time, ``efficientnet_b0`` 30% less).
        The numbers differ from the default order only by rounding.
    mixup : float or None, default=None
        Mixup (Zhang et al. 2018) in training steps: each batch's model
        inputs are mixed with a shuffled copy of the batch by a weight
        ``lam`` drawn from ``Beta(mixup, mixup)``, and the loss is
        ``lam * loss(y) + (1 - lam) * loss(y_shuffled)``. Inputs are mixed
        after augmentation and normalisation, so it is image mixup for
        images and, for the feature vectors of a frozen backbone, mixup of
        the features (manifold mixup at the last layer, Verma et al. 2019).
        None or 0: no mixup.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from cxrkit.images import ImageBatches
    >>> module = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    >>> net = ImageClassifierNet(module, criterion=nn.CrossEntropyLoss,
    ...                          max_epochs=1, train_split=None, verbose=0)
    >>> data = ImageBatches(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]))
    >>> net.fit(data, y=None).predict_proba(data).shape
    (4, 2)
    """

    def __init__(
        self,
        *args: Any,
        augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        precision: str = "32",
        channels_last: bool = True,
        mixup: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("iterator_train__collate_fn", collate_batches)
        kwargs.setdefault("iterator_valid__collate_fn", collate_batches)
        super().__init__(*args, **kwargs)
        self.augmentation = augmentation
        self.precision = precision
        self.channels_last = channels_last
        self.mixup = mixup

    # ------------------------------------------------------------- set-up
    def initialize_module(self) -> ImageClassifierNet:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )
        super().initialize_module()
        if self.channels_last:
            self.module_.to(memory_format=torch.channels_last)
        return self

    def compute_device(self) -> torch.device:
        """The device the model runs on (``device``; an accelerator's device)."""
        return torch.device(self.device)

    def _autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype for this device and precision (None: float32)."""
        device_type = self.compute_device().type
        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "16" and device_type == "cuda":
            return torch.float16
        return None

    # ------------------------------------------------------ forward passes
    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """A ``uint8`` batch as the model's input, on the net's device.

        Floats in [0, 1], augmented when the module is in training mode,
        normalised ([`normalize`][cxrkit.images.normalize]); channels-last when
        ``channels_last``. Float batches are returned as they are (on the
        device): they are taken to be model inputs already.
        """
        x = x.to(self.compute_device(), non_blocking=True)
        if x.dtype != torch.uint8:
            return x
        if self.augmentation is not None and self.module_.training:
            x = normalize(self.augmentation(x.float().div_(255.0)))
        else:
            x = normalize(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        return self._infer(self.module_, x, **fit_params)

    def _infer(
        self, module: torch.nn.Module, x: Any, **fit_params: Any
    ) -> torch.Tensor:
        """``infer`` with ``module`` run in place of ``module_`` (the same
        function: ``module_`` itself, or its folded copy for prediction)."""
        if isinstance(x, torch.Tensor):
            x = self.model_input(x)
            if self.mixup and self.module_.training:
                x = self._mix(x)
        x = to_tensor(x, device=self.device)
        dtype = self._autocast_dtype()
        device_type = self.compute_device().type
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            if module is self.module_ or not isinstance(x, torch.Tensor):
                out = super().infer(x, **fit_params)
            else:
                out = module(x, **fit_params)
        # The loss and the probabilities in float32, whatever the autocast.
        return out.float() if dtype is not None else out

    def evaluation_step(self, batch: Any, training: bool = False) -> Any:
        """skorch's prediction step (``predict_proba``, ``forward``), run on
        a copy of the module with batch norm folded into its convolutions
        (``cxrkit.models._inference_model.inference_model``): the same
        outputs up to float rounding, and for EfficientNet-Lite0 about twice
        as fast on a CPU. The copy is made once per set of weights.
        Training steps and validation keep the module itself, and so does a
        prediction while a hook that the copy would not call is registered
        on the module (on the module itself, a block or a conv).
        """
        if training or not copy_is_watched_alike(self.module_):
            return super().evaluation_step(batch, training=training)
        self.check_is_fitted()
        Xi, _ = unpack_data(batch)
        with torch.no_grad():
            self._set_training(False)
            return self._infer(inference_model(self.module_), Xi)

    # -------------------------------------------------------------- mixup
    # Why two hooks and not a train step of our own: skorch's training step,
    # the float16 step above and skorch's AccelerateMixin step each call
    # ``infer`` then ``get_loss`` once; mixing in the one and weighing in the
    # other serves all three. ``infer`` runs with the module in training mode
    # only inside a training step, and its ``get_loss`` follows at once.
    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        """Mix a training batch with a shuffled copy; record the mix for the loss."""
        lam = float(torch.distributions.Beta(self.mixup, self.mixup).sample())
        order = torch.randperm(len(x), device=x.device)
        self.mixing_ = (lam, order)
        mixed = x.mul(lam).add_(x[order], alpha=1.0 - lam)
        if self.channels_last and mixed.dim() == 4:
            mixed = mixed.contiguous(memory_format=torch.channels_last)
        return mixed

    def get_loss(
        self, y_pred: torch.Tensor, y_true: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        mixing = getattr(self, "mixing_", None)
        if mixing is None or not kwargs.get("training", False):
            return super().get_loss(y_pred, y_true, *args, **kwargs)
        self.mixing_ = None
        lam, order = mixing
        y_true = to_tensor(y_true, device=y_pred.device)
        return lam * super().get_loss(y_pred, y_true, *args, **kwargs) + (
            1.0 - lam
        ) * super().get_loss(y_pred, y_true[order], *args, **kwargs)

    # ----------------------------------------------- float16 loss scaling
    def fit_loop(self, X: Any, y: Any = None, epochs: int | None = None, **fit_params):
        scale = self._autocast_dtype() == torch.float16
        self.grad_scaler_ = torch.amp.GradScaler("cuda") if scale else None
        try:
            with _cudnn_benchmark(self.compute_device().type == "cuda"):
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
        finally:
            self.grad_scaler_ = None

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict:
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch: Any, **fit_params: Any) -> dict:
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)
        # skorch steps the optimizer with a closure, which GradScaler.step
        # does not take: one scaled step, written out (skorch's advice for
        # "more fine-grained control").
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        for name in self._optimizers:
            scaler.unscale_(getattr(self, name + "_"))  # callbacks see true grads
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        for name in self._optimizers:
            scaler.step(getattr(self, name + "_"))
        scaler.update()
        return step


def data_device(images: Any, device: str) -> str:
    """Where to keep decoded training images: ``device`` if they fit, else the CPU.

    On a CUDA device the images (``uint8``, any array with ``nbytes``) are
    kept there when they take at most half of its free memory, so that
    batches are gathered on the GPU with no copy per step; otherwise, and for
    every other device, on the CPU.

    Examples
    --------
    >>> import numpy as np
    >>> data_device(np.zeros((10, 8, 8), np.uint8), "cpu")
    'cpu'
    """
    if not str(device).startswith("cuda"):
        return "cpu"
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return str(device) if images.nbytes <= free / 2 else "cpu"


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Let cuDNN pick the fastest convolution algorithms during a fit.

    The input size is fixed within a fit, so the search pays back; the
    global flag is restored afterwards.
    """
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous

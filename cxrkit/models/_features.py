"""Frozen-backbone features, computed once per fit instead of once per epoch.

With ``freeze="backbone"`` only a model's final linear layer learns. Running
the frozen backbone over every image in every epoch then repeats the same
computation ``max_epochs`` times;
[`backbone_features`][cxrkit.models._features.backbone_features] runs it once, and
the classifier trains the head on the stored feature vectors (skorch has no
such option, so this small piece is written here).

Two consequences, both the usual practice for feature extraction (Keras'
``trainable=False`` behaves the same): the backbone runs in evaluation mode
(batch-norm statistics are not updated), and training augmentation does not
apply, since each image's features are computed once from the image itself.
The same features then serve the out-of-distribution detector that ``fit``
fits (``cxrkit.ood``), so the backbone runs over the training images once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxrkit.models._inference_model import folded_copy
from cxrkit.models._registry import classifier_head

__all__ = ["backbone_features", "head_inputs", "headless"]


def _parent_and_name(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_name, _, child = dotted.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), child


@contextmanager
def headless(module: nn.Module, name: str) -> Iterator[tuple[nn.Module, nn.Linear]]:
    """Temporarily replace a registry model's head by ``nn.Identity``.

    Parameters
    ----------
    module : torch.nn.Module
        A model built by [`build_model`][cxrkit.models.build_model] as ``name``.
    name : str
        Its registry name.

    Yields
    ------
    (backbone, head)
        ``module`` itself, now returning the head's input features, and the
        removed linear head. The head is put back on exit, even on error.

    Examples
    --------
    >>> import torch
    >>> from cxrkit.models import build_model
    >>> model = build_model("cnn4", n_classes=2)
    >>> with headless(model, "cnn4") as (backbone, head):
    ...     backbone(torch.zeros(1, 1, 32, 32)).shape, head.in_features
    (torch.Size([1, 256]), 256)
    >>> model(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 2])
    """
    head = classifier_head(module, name)
    dotted = next(n for n, m in module.named_modules() if m is head)
    parent, child = _parent_and_name(module, dotted)
    setattr(parent, child, nn.Identity())
    try:
        yield module, head
    finally:
        setattr(parent, child, head)


@contextmanager
def head_inputs(module: nn.Module, name: str) -> Iterator[list[torch.Tensor]]:
    """Collect what a registry model's head receives, during forward passes.

    A forward hook on the final linear layer: the features of the images
    the model classifies, from the same pass that gives their scores (what
    ``headless`` gives from a second pass). Each batch's head input is
    appended to the yielded list, flattened, as float32 on the CPU. The hook
    is removed on exit, even on error.

    Parameters
    ----------
    module : torch.nn.Module
        A model built by [`build_model`][cxrkit.models.build_model] as ``name``.
    name : str
        Its registry name.

    Yields
    ------
    list of torch.Tensor
        One ``(batch, n_features)`` tensor per forward pass, in order.

    Examples
    --------
    >>> import torch
    >>> from cxrkit.models import build_model
    >>> model = build_model("cnn4", n_classes=2).eval()
    >>> with head_inputs(model, "cnn4") as seen:
    ...     logits = model(torch.zeros(3, 1, 32, 32))
    >>> len(seen), tuple(seen[0].shape), tuple(logits.shape)
    (1, (3, 256), (3, 2))
    """
    seen: list[torch.Tensor] = []

    def keep(_head: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        seen.append(args[0].detach().flatten(1).float().cpu())

    handle = classifier_head(module, name).register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def backbone_features(
    backbone: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    channels_last: bool = False,
) -> np.ndarray:
    """Run a frozen backbone once over a dataset, in evaluation mode.

    Batch norm is folded into the convolutions for the pass (a copy of the
    backbone; the backbone itself is left as it was): the same features up
    to float rounding, and for EfficientNet-Lite0 about twice as fast on a
    2-core CPU.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps a batch of images to ``(batch, n_features)``.
    dataset : torch Dataset
        Yields ``(image, target)`` pairs, e.g.
        [`ImageDataset`][cxrkit.images.ImageDataset].
    batch_size : int
    device : str
    channels_last : bool, default=False
        Give the backbone its input in the channels-last memory format, as
        the classifier's net does (``ImageClassifierNet(channels_last=True)``
        keeps its module in that format): the same arithmetic as its forward
        pass, and faster on CPUs for EfficientNet-Lite0's convolutions than
        the default format.

    Returns
    -------
    ndarray of shape (n, n_features), dtype float32

    Examples
    --------
    >>> import numpy as np
    >>> from cxrkit.models import build_model
    >>> from cxrkit.images import ImageDataset
    >>> model = build_model("cnn4", n_classes=2)
    >>> with headless(model, "cnn4") as (backbone, _):
    ...     images = ImageDataset(np.zeros((3, 32, 32), np.uint8))
    ...     f = backbone_features(backbone, images)
    >>> f.shape
    (3, 256)
    """
    was_training = backbone.training
    backbone.eval()
    backbone.to(device)
    # batch norm folded into the convs: the same features up to float
    # rounding, from a copy made for this pass only (not kept: the backbone
    # is headless here, and heatmaps fold the whole model)
    folded = folded_copy(backbone)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    try:
        out = [
            folded(x.to(device).contiguous(memory_format=layout))
            .flatten(1)
            .float()
            .cpu()
            for x, _ in DataLoader(dataset, batch_size=batch_size)
        ]
    finally:
        backbone.train(was_training)
    return torch.cat(out).numpy()

"""Logits of images with one patch hidden, their first layers run on a crop.

A patch changes a convolutional network's first feature maps only within
its receptive field; everywhere else they are the clean image's. Occlusion
runs the network once per patch position, and at the recommended recipe's
224 px EfficientNet-Lite0's first two stages (stride 4) cost 60% of a pass
(measured on 2 CPU cores). Here they run once on the clean image and, per
patch, only on a crop around it; the crop's features are pasted into the
clean image's and the rest of the network runs as usual. The logits are
occlusion's, up to float rounding: incremental inference for occlusion, as
in Krypton (Nakandala, Kumar and Papakonstantinou, "Incremental and
approximate inference for faster occlusion-based deep CNN explanations",
SIGMOD 2019). Written here because Captum's ``Occlusion`` and
pytorch-grad-cam's ablation run the whole network for every patch.

Only a network whose first layers are known to be local is split: timm's
EfficientNet, up to its first block that holds anything but convolutions,
batch norms and elementwise activations (a squeeze-and-excitation block
pools the whole image, so a patch would reach every cell). Any other
network runs whole for every patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from cxrkit.models._efficientnet_lite import Renormalize

__all__ = ["PatchScorer"]

#: modules whose output at a pixel reads the input within a conv's kernel
#: of it, or at that pixel only; and the containers that chain them
_LOCAL = (
    nn.Conv2d,  # cxrkit's folded _SameConv and timm's Conv2dSame among them
    nn.BatchNorm2d,  # timm's BatchNormAct2d among them
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.SiLU,
    nn.Identity,
    nn.Dropout,
    nn.Sequential,
    Renormalize,
)

#: prefix's stride at most: a 224 px image's features at 56 px. One stage
#: further (stride 8, 5 x 5 kernels) the receptive field outgrows the patch
#: and crops would cover most of the image.
_MAX_STRIDE = 4

#: split only when a crop is at most this share of the image's area: above
#: it, cropping and pasting cost about what they save
_MAX_CROP_AREA = 0.5


@dataclass
class _Split:
    prefix: Callable[[torch.Tensor], torch.Tensor]
    suffix: Callable[[torch.Tensor], torch.Tensor]
    stride: int  # of the prefix's features, in input pixels
    halo: int  # a feature cell at i * stride reads input pixels within this of it


def _grow(
    modules: Iterable[nn.Module], local: tuple[type, ...], reach: int, stride: int
) -> tuple[int, int] | None:
    """Receptive field and stride after ``modules``, chained in their order;
    None if any of them is not local or not square."""
    for module in modules:
        if not isinstance(module, local):
            return None
        if isinstance(module, nn.Conv2d):
            (k, k2), (s, s2), (d, d2) = (
                module.kernel_size,
                module.stride,
                module.dilation,
            )
            if (k, s, d) != (k2, s2, d2):
                return None
            reach += (k - 1) * d * stride
            stride *= s
    return reach, stride


def _efficientnet_split(model: nn.Module) -> _Split | None:
    """timm's EfficientNet split after its stem and the blocks that keep
    the stride at most ``_MAX_STRIDE`` and hold only local layers; None for
    any other network."""
    try:
        from timm.models._efficientnet_blocks import (
            DepthwiseSeparableConv,
            InvertedResidual,
        )
        from timm.models.efficientnet import EfficientNet
    except ImportError:  # timm is a dependency; without it there is no such model
        return None
    if type(model) is not EfficientNet:
        return None
    # these blocks chain their convs, with the identity as their skip (if
    # any): a skip reaches no further than the convs beside it
    local = (*_LOCAL, DepthwiseSeparableConv, InvertedResidual)
    grown = _grow([*model.conv_stem.modules(), *model.bn1.modules()], local, 1, 1)
    if grown is None:
        return None
    n_blocks = 0
    for block in model.blocks:
        deeper = _grow(block.modules(), local, *grown)
        if deeper is None or deeper[1] > _MAX_STRIDE:
            break
        grown, n_blocks = deeper, n_blocks + 1
    reach, stride = grown
    first, rest = model.blocks[:n_blocks], model.blocks[n_blocks:]

    def prefix(x: torch.Tensor) -> torch.Tensor:
        return first(model.bn1(model.conv_stem(x)))

    def suffix(features: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.bn2(model.conv_head(rest(features))))

    return _Split(prefix, suffix, stride, reach - 1)


class _Crops:
    """Where each patch's crop lies along one axis, and which feature cells
    it changes. One crop size for all, a multiple of the stride, as is each
    crop's start: every strided layer then samples the crop on the image's
    grid and pads an image edge alike (TensorFlow's "SAME" padding depends
    on the size's remainder)."""

    def __init__(
        self, starts: list[int], window: int, size: int, stride: int, halo: int
    ) -> None:
        cells = size // stride
        # cells whose receptive field meets the patch
        self.first = [max(0, math.ceil((t - halo) / stride)) for t in starts]
        self.last = [min(cells - 1, (t + window - 1 + halo) // stride) for t in starts]
        # a crop holding those cells' receptive fields, or ending at the
        # image's edge (padded there as the whole image is)
        begin = [max(0, (a * stride - halo) // stride * stride) for a in self.first]
        size_needed = max(
            b * stride + halo + 1 - c for b, c in zip(self.last, begin, strict=True)
        )
        self.size = math.ceil(size_needed / stride) * stride
        self.begin = [min(c, size - self.size) for c in begin]
        self.stride = stride

    def cells(self, i: int) -> tuple[slice, slice]:
        """Patch ``i``'s changed cells: in the image's features, in the crop's."""
        offset = self.begin[i] // self.stride
        first, last = self.first[i], self.last[i] + 1
        return slice(first, last), slice(first - offset, last - offset)


class PatchScorer:
    """The logits of images, clean and with one patch hidden at a time.

    Parameters
    ----------
    model : nn.Module
        In eval mode (occlusion runs its folded copy).
    masks : bool tensor of shape (positions, 1, size, size)
        The hidden pixels of each patch position.
    fill_with : tensor of shape (1, size, size)
        What replaces them.
    starts, window : list of int, int
        The patches' first row (and column) and side: position ``p`` hides
        rows (and columns) ``starts[p // n]`` (and ``starts[p % n]``) on,
        ``window`` of them, for ``n = len(starts)``.
    per_pass : int
        Images per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        masks: torch.Tensor,
        fill_with: torch.Tensor,
        starts: list[int],
        window: int,
        per_pass: int,
    ) -> None:
        self.model, self.masks, self.fill_with = model, masks, fill_with
        self.n, self.per_pass = len(starts), per_pass
        size = masks.shape[-1]
        split = _efficientnet_split(model)
        self.crops = None
        if split is not None and size % split.stride == 0:
            crops = _Crops(starts, window, size, split.stride, split.halo)
            if crops.size**2 <= _MAX_CROP_AREA * size**2:
                self.split, self.crops = split, crops

    @property
    def incremental(self) -> bool:
        """Whether patches run the first layers on crops only."""
        return self.crops is not None

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the clean images ``x``, remembered for ``hidden``."""
        self.x = x
        if self.crops is None:
            return self._passes(self.model, x)
        self.features = self.split.prefix(x)
        return self._passes(self.split.suffix, self.features)

    def hidden(self, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits of ``clean``'s image ``image[i]`` with patch ``position[i]``
        hidden, for each ``i``."""
        if self.crops is None:
            hidden = torch.where(self.masks[position], self.fill_with, self.x[image])
            return self._passes(self.model, hidden)
        return torch.cat(
            [
                self._hidden_pass(
                    image[i : i + self.per_pass], position[i : i + self.per_pass]
                )
                for i in range(0, len(image), self.per_pass)
            ]
        )

    def _hidden_pass(self, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        crops, n = self.crops, self.n
        inputs = []
        for i, p in zip(image.tolist(), position.tolist(), strict=True):
            top, left = crops.begin[p // n], crops.begin[p % n]
            area = (..., slice(top, top + crops.size), slice(left, left + crops.size))
            inputs.append(
                torch.where(self.masks[p][area], self.fill_with[area], self.x[i][area])
            )
        patched = self.split.prefix(torch.stack(inputs))
        features = self.features[image].clone()
        for k, p in enumerate(position.tolist()):
            (rows, crop_rows), (cols, crop_cols) = (
                crops.cells(p // n),
                crops.cells(p % n),
            )
            features[k, :, rows, cols] = patched[k, :, crop_rows, crop_cols]
        return self.split.suffix(features)

    def _passes(
        self, run: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor
    ) -> torch.Tensor:
        return torch.cat(
            [
                run(inputs[i : i + self.per_pass])
                for i in range(0, len(inputs), self.per_pass)
            ]
        )

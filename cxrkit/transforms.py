"""Augmentation and the torch ``Dataset`` that feeds decoded images to a model.

Augmentation is applied while training only, never in ``predict``. Horizontal
flips are off unless asked for: the heart and the lungs are not symmetric, and
a flipped radiograph is not a plausible patient.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = ["AUGMENT_PRESETS", "ImageDataset", "build_augmentation"]

# Grayscale statistics matching torchvision's ImageNet normalisation averaged
# over RGB, so pretrained backbones with summed first kernels see the scale
# they were trained on; harmless for models trained from scratch.
MEAN, STD = 0.449, 0.226

#: Strength presets: rotation (degrees), translation (fraction), scale range,
#: brightness and contrast jitter, and (``"blur"``) the largest sigma in pixels
#: of a Gaussian blur applied to half the images: radiographs from other
#: machines and resizing pipelines differ in sharpness.
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "light": {"degrees": 5, "translate": 0.05, "scale": 0.05, "jitter": 0.1},
    "default": {"degrees": 10, "translate": 0.1, "scale": 0.1, "jitter": 0.2},
    "strong": {"degrees": 15, "translate": 0.15, "scale": 0.2, "jitter": 0.3},
    "blur": {"degrees": 10, "translate": 0.1, "scale": 0.1, "jitter": 0.2, "blur": 1.5},
}


def build_augmentation(
    augment: str | bool | None, flip: bool = False
) -> v2.Compose | None:
    """The training-time transform for a preset name.

    Parameters
    ----------
    augment : {"light", "default", "strong", "blur"}, True, False or None
        ``True`` means ``"default"``; ``False``/``None``/``"none"`` none.
    flip : bool
        Add random horizontal flips (off by default: left and right lungs
        are not interchangeable).

    Returns
    -------
    torchvision.transforms.v2.Compose or None

    Examples
    --------
    >>> build_augmentation(None) is None
    True
    >>> t = build_augmentation("light")
    >>> t(torch.zeros(1, 32, 32)).shape
    torch.Size([1, 32, 32])
    """
    if augment is True:
        augment = "default"
    if augment in (None, False, "none"):
        return v2.Compose([v2.RandomHorizontalFlip()]) if flip else None
    if augment not in AUGMENT_PRESETS:
        raise ValueError(
            f"augment must be one of {sorted(AUGMENT_PRESETS)}, True, False or "
            f"None; got {augment!r}"
        )
    p = AUGMENT_PRESETS[augment]
    steps: list[v2.Transform] = [
        v2.RandomAffine(
            degrees=p["degrees"],
            translate=(p["translate"], p["translate"]),
            scale=(1 - p["scale"], 1 + p["scale"]),
        ),
        v2.ColorJitter(brightness=p["jitter"], contrast=p["jitter"]),
    ]
    if p.get("blur"):
        kernel = 2 * math.ceil(3 * p["blur"]) + 1
        blur = v2.GaussianBlur(kernel, sigma=(0.1, p["blur"]))
        steps.append(v2.RandomApply([blur], p=0.5))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """Decoded ``uint8`` images (and labels) as normalised float tensors.

    Parameters
    ----------
    images : ndarray of shape (n, H, W), dtype uint8
    y : ndarray of shape (n,) of int, optional
        Encoded labels; a dummy 0 is returned when None (prediction).
    transform : callable, optional
        Applied to each ``(1, H, W)`` float image in [0, 1] before
        normalisation (training augmentation).
    """

    def __init__(
        self,
        images: np.ndarray,
        y: np.ndarray | None = None,
        transform: v2.Transform | None = None,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.y = None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].unsqueeze(0).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x).clamp_(0.0, 1.0)
        x = x.sub_(MEAN).div_(STD)
        target = self.y[i] if self.y is not None else torch.tensor(0)
        return x, target

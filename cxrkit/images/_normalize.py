"""The model's input contract: how ``uint8`` images become network inputs.

Every network of cxrkit sees ``(image / 255 - MEAN) / STD``: training,
prediction, explanations, frozen-backbone features and the ONNX export all
normalise through this module, so that they cannot disagree.
"""

from __future__ import annotations

import torch

__all__ = ["MEAN", "STD", "normalize"]

# Grayscale statistics matching torchvision's ImageNet normalisation averaged
# over RGB, so pretrained backbones with summed first kernels see the scale
# they were trained on; harmless for models trained from scratch.
MEAN, STD = 0.449, 0.226


def normalize(images: torch.Tensor) -> torch.Tensor:
    """The model's input: ``uint8`` images, or floats in [0, 1], normalised.

    Parameters
    ----------
    images : Tensor of dtype uint8 (0-255) or float (0-1), any shape

    Returns
    -------
    Tensor of dtype float32
        ``(images / 255 - MEAN) / STD`` for ``uint8``, ``(images - MEAN) / STD``
        for floats.

    Examples
    --------
    >>> normalize(torch.tensor([0, 255], dtype=torch.uint8))
    tensor([-1.9867,  2.4381])
    """
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return x.sub(MEAN).div_(STD)

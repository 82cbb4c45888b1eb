"""Guided Grad-CAM: guided backpropagation times Grad-CAM, on Captum."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import GuidedGradCam
from torch import nn

from cxrkit.explain._base import (
    ImageInput,
    PredictedClassScore,
    explain_batches,
    resolve_layer,
)

__all__ = ["guided_grad_cam"]


def guided_grad_cam(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    layer: str | nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Guided Grad-CAM heatmaps: pixel-sharp detail inside the Grad-CAM region.

    Captum's ``GuidedGradCam``: guided backpropagation (gradients through
    ReLUs passed only where both the activation and the gradient are
    positive) multiplied by the rectified Grad-CAM map, upsampled bilinearly.
    The heatmap is the magnitude (absolute value) of that product, divided
    by its maximum, as saliency maps are usually shown: guided gradients are
    edge-like and signed, and their sign is not evidence for or against.

    Guided backpropagation acts on ``nn.ReLU`` modules (cxrkit's models use
    no in-place ReLUs); EfficientNet's SiLU activations are left as they are.
    For research and education; not a medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    layer : str, torch.nn.Module or None
        Grad-CAM's layer; None uses ``cxrkit.models.target_layer``.
    batch_size : int
        Images per forward and backward pass.

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1], at the resolution of the images as given (arrays)
        or of the model (paths).

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> guided_grad_cam(clf, X[:2]).shape
    (2, 32, 32)
    """
    explained = resolve_layer(clf, layer)

    def attribute(
        model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None
    ) -> torch.Tensor:
        forward = model if tb is not None else PredictedClassScore(model)
        method = GuidedGradCam(forward, explained)
        maps = method.attribute(
            xb, target=tb if tb is not None else 0, interpolate_mode="bilinear"
        )
        return maps.abs()

    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)

"""Grad-CAM++ (Chattopadhay et al., 2018) on Captum's layer gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cxrkit.explain._base import (
    ImageInput,
    cam_attribute,
    explain_batches,
    resolve_layer,
)

__all__ = ["grad_cam_plus_plus"]


def _grad_cam_plus_plus_map(grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    # closed form of the paper's eq. 19 for an exponential of the score, as in
    # pytorch-grad-cam: a_ij = g^2 / (2 g^2 + sum(A) g^3), zero where g is 0
    g2 = grads.pow(2)
    g3 = g2 * grads
    total = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g3 + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(dim=1, keepdim=True).clamp_min(0)


def grad_cam_plus_plus(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    layer: str | nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM++ heatmaps: channel weights from positive gradients only.

    Each channel's weight is a weighted sum of its positive gradients, the
    weights ``a = g^2 / (2 g^2 + sum(A) g^3)`` (the paper's closed form for
    an exponentiated class score), so a channel that matters in a small
    region is not diluted by the rest of the image, as Grad-CAM's plain mean
    is. The weighted activations are summed, rectified, upsampled bilinearly
    and divided by the maximum.

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
        The layer explained; None uses `cxrkit.models.target_layer`.
    batch_size : int
        Images per forward and backward pass.

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1], at the resolution of the images as given (arrays)
        or of the model (paths).

    See Also
    --------
    grad_cam, xgrad_cam, explain

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> grad_cam_plus_plus(clf, X[:2]).shape
    (2, 32, 32)
    """
    attribute = cam_attribute([resolve_layer(clf, layer)], _grad_cam_plus_plus_map)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)

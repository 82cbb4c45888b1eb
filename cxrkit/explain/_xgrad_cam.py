"""XGrad-CAM (Fu et al., 2020) on Captum's layer gradients."""

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

__all__ = ["xgrad_cam"]


def _xgrad_cam_map(grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    # channel weight: the gradient averaged with the activation as weight
    total = acts.sum(dim=(2, 3), keepdim=True)
    weights = (grads * acts).sum(dim=(2, 3), keepdim=True) / (total + 1e-7)
    return (weights * acts).sum(dim=1, keepdim=True).clamp_min(0)


def xgrad_cam(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    layer: str | nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """XGrad-CAM heatmaps: channel weights averaged where the channel is active.

    Grad-CAM weights a channel by its gradient averaged over all positions;
    XGrad-CAM averages it with the channel's activations as weights
    (``sum(g A) / sum(A)``), which makes the map satisfy the sensitivity and
    conservation axioms of Fu et al. for ReLU networks. The weighted
    activations are summed, rectified, upsampled bilinearly and divided by
    the maximum.

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
    grad_cam, grad_cam_plus_plus, explain

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> xgrad_cam(clf, X[:2]).shape
    (2, 32, 32)
    """
    attribute = cam_attribute([resolve_layer(clf, layer)], _xgrad_cam_map)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)

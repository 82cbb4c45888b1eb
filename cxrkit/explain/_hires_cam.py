"""HiResCAM (Draelos and Carin, 2020): gradient times activation, summed.

The map is Captum's ``LayerGradientXActivation`` summed over channels; it is
computed here on the shared class-activation-map path
(``cxrkit.explain._base.cam_attribute``) so that it runs, like Grad-CAM, on
the copy of the model with batch norm folded into its convolutions and
records gradients only from the explained layer on.
"""

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

__all__ = ["hires_cam"]


def hires_cam(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    layer: str | nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """HiResCAM heatmaps: gradient times activation at each position, summed.

    Grad-CAM first averages each channel's gradient over the image, then
    weights the whole channel; HiResCAM multiplies gradient and activation
    position by position (what Captum's ``LayerGradientXActivation``
    gives), sums over channels and rectifies. When only linear layers (and
    average pooling) follow ``layer``, the map is exactly each position's
    contribution to the class score, so it cannot move evidence to where the
    channel happens to be active for other reasons. Upsampled bilinearly
    and divided by the maximum, like [`grad_cam`][cxrkit.explain.grad_cam].

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
    grad_cam, layer_cam, explain

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> hires_cam(clf, X[:2]).shape
    (2, 32, 32)
    """
    attribute = cam_attribute([resolve_layer(clf, layer)], _hires_cam_map)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)


def _hires_cam_map(gradients: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """ReLU of gradient times activation, position by position, summed over
    the channels."""
    return torch.relu((gradients * activations).sum(dim=1, keepdim=True))

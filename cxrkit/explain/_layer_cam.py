"""LayerCAM (Jiang et al., 2021) on Captum's layer gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrkit.explain._base import (
    ImageInput,
    cam_attribute,
    explain_batches,
    resolve_layers,
    smoothed,
)
from cxrkit.explain._layer_scales import layers_by_scale

__all__ = ["layer_cam"]


def _layer_cam_map(grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    return (grads.clamp_min(0) * acts).sum(dim=1, keepdim=True).clamp_min(0)


def layer_cam(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    layer: str | nn.Module | Sequence[str | nn.Module] | None = None,
    scales: int = 1,
    smooth: float = 0.0,
    batch_size: int = 32,
) -> np.ndarray:
    """LayerCAM heatmaps: positive gradients times activations, position by position.

    Each position of each channel is weighted by its own positive gradient
    (not the channel's mean, as in Grad-CAM), then the channels are summed.
    Because the weights are local, the map stays meaningful at earlier, finer
    layers; given several layers, their maps are upsampled to the finest
    grid, divided by their maxima and averaged, so a coarse layer says which
    region and a fine one sharpens where in it. Upsampled bilinearly and
    divided by the maximum.

    For research and education; not a medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    layer : str, torch.nn.Module, a list of them, or None
        The layer explained, or several layers to fuse; None uses
        `cxrkit.models.target_layer`.
    scales : int
        With one layer: fuse it with the layers that end the next
        ``scales - 1`` finer feature grids of the network (a ResNet's
        ``layer3`` and ``layer2`` below ``layer4``), found by one forward
        pass; 1 explains the layer alone.
    smooth : float
        Standard deviation of a Gaussian blur of the map, as a fraction of
        the model's ``image_size`` (0: none). Maps of early layers are
        sharp and noisy; a blur of about ``1/16`` makes their peak a
        region's rather than a pixel's.
    batch_size : int
        Images per forward and backward pass.

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1], at the resolution of the images as given (arrays)
        or of the model (paths).

    See Also
    --------
    grad_cam, hires_cam, explain

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> layer_cam(clf, X[:2], layer=["features.4", "features.1"]).shape
    (2, 32, 32)
    """
    if not isinstance(scales, (int, np.integer)) or scales < 1:
        raise ValueError(f"scales must be a positive integer, got {scales!r}")
    layers = resolve_layers(clf, layer)
    if scales > 1:
        if len(layers) > 1:
            raise ValueError(
                "pass either a list of layers or scales > 1, not both; got "
                f"{len(layers)} layers and scales={scales}"
            )
        layers = layers_by_scale(
            clf.net_.module_, layers[0], clf.image_size, int(scales)
        )
    attribute = smoothed(cam_attribute(layers, _layer_cam_map), smooth)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)

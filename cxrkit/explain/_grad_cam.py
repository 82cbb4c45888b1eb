"""Grad-CAM (Selvaraju et al., 2017), as Captum's ``LayerGradCam`` computes it."""

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

__all__ = ["grad_cam"]


def grad_cam(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    layer: str | nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM heatmaps of a fitted classifier: where the evidence for a class is.

    The feature maps of ``layer`` are weighted by the spatial mean of the
    class score's gradient, summed over channels and rectified (as Captum's
    ``LayerGradCam`` with ``relu_attributions=True`` does, and the original
    method); the map is upsampled bilinearly (not in nearest-neighbour
    blocks) and divided by its maximum. The class score is the logit, before
    the softmax. The forward pass records gradients only from ``layer`` on
    (``cxrkit.explain._base.layer_gradients``): about the cost of one plain
    forward pass.

    A heatmap shows what the model used, not where disease is: it can point
    at text markers, devices or borders. For research and education; not a
    medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier, of any registry architecture.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain: None explains each image's predicted class;
        one label (e.g. ``"PNEUMONIA"``) explains that class for every image;
        a sequence gives one label per image.
    layer : str, torch.nn.Module or None
        The layer whose activations are weighted. None uses the architecture's
        last convolutional block (``cxrkit.models.target_layer``); a
        dotted name (``"layer3"``) or a module of ``clf.net_.module_``
        overrides it.
    batch_size : int
        Images per forward and backward pass.

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1] (1 at each map's maximum; all 0 where no region
        raises the class score). For arrays, ``(H, W)`` is the size of the
        images as given; for paths, the model's ``image_size``.

    See Also
    --------
    guided_grad_cam, occlusion, integrated_gradients, faithfulness_score

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> heatmaps = grad_cam(clf, X[:4], target="PNEUMONIA")
    >>> heatmaps.shape, bool(heatmaps.min() >= 0), bool(heatmaps.max() <= 1)
    ((4, 32, 32), True, True)
    """
    attribute = cam_attribute([resolve_layer(clf, layer)], _grad_cam_map)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)


def _grad_cam_map(gradients: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """ReLU of the channels weighted by their spatially averaged gradients."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1, keepdim=True))

"""Input times gradient (Shrikumar et al., 2016), smoothed, on Captum."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import InputXGradient
from torch import nn

from cxrkit.explain._base import (
    ImageInput,
    PredictedClassScore,
    explain_batches,
    smoothed,
)

__all__ = ["input_x_gradient"]


def input_x_gradient(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    smooth: float = 1 / 32,
    batch_size: int = 32,
) -> np.ndarray:
    """Input-times-gradient heatmaps, blurred: each pixel's share of the class score.

    Captum's ``InputXGradient``: the class logit's gradient with respect to
    each input pixel, times the pixel's (normalised) value, so the first-order
    contribution of the pixel's difference from mean gray. Positive
    contributions (evidence for the class) are kept, blurred with a Gaussian
    and divided by the maximum. This is the finest layer a CAM can use (the
    image itself): the map lies where the pixels are, not where a deep
    layer's grid cell is, and costs one forward and one backward pass. On
    synthetic lesions at 64 px it pointed inside the lesion, and moved with
    it pixel for pixel, where the CAMs of the last block did not; at 128 px
    it often missed the lesion (strict pointing 0.24-0.79 by model and
    lesion size, mean over 3 seeds; its heat lay on the edges of the lung
    field), so
    ``explain`` recommends
    [`adaptive_occlusion`][cxrkit.explain.adaptive_occlusion] instead, which
    costs tens of forward passes per image (the docs' *Benchmarks:
    explanations* page has the measurements).

    For research and education; not a medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    smooth : float
        Standard deviation of the Gaussian blur, as a fraction of the model's
        ``image_size`` (0: the raw, pixel-sharp and noisy map; the default
        1/32 is 2 px at 64 px, 7 px at 224 px).
    batch_size : int
        Images per forward and backward pass.

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1], at the resolution of the images as given (arrays)
        or of the model (paths).

    See Also
    --------
    occlusion, integrated_gradients, layer_cam, explain

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> input_x_gradient(clf, X[:2]).shape
    (2, 32, 32)
    """

    def attribute(
        model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None
    ) -> torch.Tensor:
        forward = model if tb is not None else PredictedClassScore(model)
        maps = InputXGradient(forward).attribute(xb, target=tb if tb is not None else 0)
        return maps.clamp_min(0)

    attribute = smoothed(attribute, smooth)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)

"""Integrated gradients (Sundararajan et al., 2017) on Captum."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn

from cxrkit.explain._base import ImageInput, explain_batches
from cxrkit.images._normalize import MEAN, STD

__all__ = ["integrated_gradients"]


def integrated_gradients(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    n_steps: int = 32,
    batch_size: int = 32,
) -> np.ndarray:
    """Integrated-gradients heatmaps, from a black image to the X-ray.

    Captum's ``IntegratedGradients``: gradients of the class logit averaged
    along the straight path from a black image to the input, times the
    input's difference from black. Positive attributions (evidence for the
    class) are kept and divided by their maximum. Pixel-level and noisy;
    compare it with Grad-CAM using
    [`faithfulness_score`][cxrkit.explain.faithfulness_score].

    For research and education; not a medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    n_steps : int
        Points on the path (Riemann sum); more is more exact and slower.
    batch_size : int
        Images per batch; the path points are evaluated ``batch_size``
        inputs at a time.

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
    >>> integrated_gradients(clf, X[:2], n_steps=8).shape
    (2, 32, 32)
    """
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    black = (0.0 - MEAN) / STD  # a black image, in the model's normalised units

    def attribute(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        maps = IntegratedGradients(model).attribute(
            xb,
            baselines=black,
            target=tb,
            n_steps=int(n_steps),
            internal_batch_size=batch_size,
        )
        return maps.clamp_min(0)

    return explain_batches(clf, X, target, batch_size, attribute, needs_target=True)

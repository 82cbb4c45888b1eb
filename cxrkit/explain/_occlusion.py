"""Occlusion sensitivity (Zeiler and Fergus, 2014; Kermany et al., 2018) on Captum."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from captum.attr import Occlusion
from torch import nn

from cxrkit.explain._base import ImageInput, explain_batches, smoothed

__all__ = ["occlusion"]


def patch_grid(
    size: int, window: int | None = None, stride: int | None = None
) -> tuple[int, int]:
    """``occlusion``'s patch side and step for a model of ``size`` px, checked.

    Defaults: a window of 1/8 of the side, a stride of half the window (225
    patch positions).
    """
    window = max(2, size // 8) if window is None else window
    stride = max(1, window // 2) if stride is None else stride
    for name, value in (("window", window), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or not 1 <= value <= size:
            raise ValueError(
                f"{name} must be an integer between 1 and the model's image_size "
                f"({size}), got {value!r}"
            )
    return window, stride


def occlusion(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    smooth: float = 1 / 32,
    batch_size: int = 32,
    progress: bool | None = None,
) -> np.ndarray:
    """Occlusion heatmaps: how much the class score drops when a patch is hidden.

    The method Kermany et al. (Cell, 2018) used to show which regions their
    chest X-ray model relied on. A square patch of mean gray slides over the
    image (Captum's ``Occlusion``); each pixel gets the mean drop of the
    class logit over the patches that covered it. Only drops count (a patch
    whose removal raises the score is not evidence for the class); the map
    is blurred and divided by its maximum.

    Needs one forward pass per patch position (225 with the default window
    and stride): much slower than the gradient methods, but it measures
    what the model does when a region is hidden, not a first-order
    sensitivity, so it has no choice of layer and no gradient noise. On
    synthetic lesions its peak lay inside the lesion in at least 90% of the
    images for cnn4 and ResNet-18 at 64 and 128 px, except large lesions on
    cnn4 at 128 px (0.74, mean over 3 seeds, where input x gradient scored
    0.81). Grad-CAM scored lower in every case, input x gradient in every
    other one (see the guide page *Explaining predictions*). The map is the
    model's reaction to a gray square as well as to what it hides: for one
    of those cnn4 models the gray patch alone raised the pneumonia score
    almost everywhere, and training it with random erasing in the same gray
    (the augmentation option ``erase_scale``) brought its pointing from
    0.43 to 0.97.

    Why the blur: Captum's map is constant on each ``stride`` x ``stride``
    cell (every pixel of a cell is covered by the same patches), so its
    maximum is a plateau, and taking its first pixel puts the peak up to a
    stride above and left of where the evidence is centred. The Gaussian
    blur centres the peak on the plateau.

    For research and education; not a medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class (of the
        image without occlusion).
    window : int, optional
        Side of the square patch in model pixels; default ``image_size // 8``.
    stride : int, optional
        Step between patches; default half the window.
    smooth : float
        Standard deviation of the Gaussian blur, as a fraction of the model's
        ``image_size`` (default 1/32: half the default stride; 0 returns
        Captum's blocky map).
    batch_size : int
        Images per batch; each batch evaluates several patch positions at
        once (up to ``batch_size`` images per forward pass in all).
    progress : bool, optional
        Show Captum's progress bar over the patch positions (one bar per
        batch); by default only when standard error is a terminal.

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
    >>> occlusion(clf, X[:2], window=8).shape
    (2, 32, 32)
    """
    window, stride = patch_grid(clf.image_size, window, stride)
    show_progress = sys.stderr.isatty() if progress is None else bool(progress)

    def attribute(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        maps = Occlusion(model).attribute(
            xb,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=0.0,  # inputs are normalised: 0 is the mean gray level
            target=tb,
            perturbations_per_eval=max(1, batch_size // len(xb)),
            show_progress=show_progress,
        )
        return maps.clamp_min(0)

    attribute = smoothed(attribute, smooth)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=True)

"""Occlusion sensitivity (Zeiler and Fergus, 2014; Kermany et al., 2018) on Captum."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import torch
from captum.attr import Occlusion
from torch import nn

from cxrkit.explain._base import ImageInput, explain_batches, smoothed
from cxrkit.images._normalize import normalize

__all__ = ["occlusion"]


#: ``fill`` values: where the hidden patch's pixels come from
FILLS = ("mean_image", "gray")


def patch_grid(
    size: int, window: int | None = None, stride: int | None = None
) -> tuple[int, int]:
    """``occlusion``'s patch side and step for a model of ``size`` px, checked.

    Defaults: a window of 1/4 of the side, a stride of a quarter of the
    window (169 patch positions). A stride larger than the window is
    refused: the pixels between patches would never be hidden, and would
    have no drop to show.
    """
    window = max(2, size // 4) if window is None else window
    stride = max(1, window // 4) if stride is None else stride
    for name, value in (("window", window), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or not 1 <= value <= size:
            raise ValueError(
                f"{name} must be an integer between 1 and the model's image_size "
                f"({size}), got {value!r}"
            )
    if stride > window:
        raise ValueError(
            f"stride ({stride}) must not exceed window ({window}): the pixels "
            "between patches would never be hidden; pass a stride <= window, "
            "or a larger window"
        )
    return window, stride


def fill_baseline(clf: Any, fill: str) -> float | torch.Tensor:
    """Captum's ``baselines`` for ``fill``: the normalised mean image, or 0.

    0 is the mean gray level, as inputs are normalised. A classifier without
    ``mean_image_`` (loaded from a file saved before cxrkit stored it) falls
    back to gray, with a warning.
    """
    if not (isinstance(fill, str) and fill in FILLS):
        raise ValueError(f"fill must be one of {list(FILLS)}, got {fill!r}")
    mean_image = getattr(clf, "mean_image_", None) if fill == "mean_image" else None
    size = (clf.image_size, clf.image_size)
    if mean_image is not None and np.shape(mean_image) != size:
        raise ValueError(
            f"clf.mean_image_ has shape {np.shape(mean_image)}, not the model's "
            f"image_size {size}; was image_size changed after fit? Fit again, "
            "or pass fill='gray'"
        )
    if fill == "mean_image" and mean_image is None:
        warnings.warn(
            "this classifier has no mean_image_ (a model file saved by an older "
            "cxrkit): occlusion fills its patches with mean gray instead. Fit "
            "the model again, or pass fill='gray' to silence this warning",
            UserWarning,
            stacklevel=3,
        )
    if mean_image is None:
        return 0.0
    return normalize(torch.as_tensor(mean_image, dtype=torch.float32))[None, None]


def occlusion(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    fill: str = "mean_image",
    smooth: float = 1 / 32,
    batch_size: int = 32,
    progress: bool | None = None,
) -> np.ndarray:
    """Occlusion heatmaps: how much the class score drops when a patch is hidden.

    The method Kermany et al. (Cell, 2018) used to show which regions their
    chest X-ray model relied on. A square patch slides over the image
    (Captum's ``Occlusion``); each pixel gets the mean drop of the class
    logit over the patches that covered it. Only drops count (a patch whose
    removal raises the score is not evidence for the class); the map is
    blurred and divided by its maximum.

    What fills the patch matters. By default it is the same place of the
    classifier's mean training image (``clf.mean_image_``): what a typical
    radiograph looks like there, so the patch hides a region without
    adding something the model never saw (the "mean of the data" baseline;
    Zintgraf et al., 2017, fill it from other images at the same place).
    The old fill, a square of mean gray (``fill="gray"``), was unfamiliar
    to the models: on synthetic lesions a gray patch alone raised the
    pneumonia score of some models almost everywhere, and their peaks
    missed the lesion (see the guide page *Explaining predictions*). The
    default patch, 1/4 of the side, is large enough to hide a large lesion
    whole; a patch that hides only part of one can leave a cut edge the
    model reads as more lesion.

    Needs one forward pass per patch position (169 with the default window
    and stride): much slower than the gradient methods, but it measures
    what the model does when a region is hidden, not a first-order
    sensitivity, so it has no choice of layer and no gradient noise. With
    the mean-image fill its peak pointed at synthetic lesions more often
    than a gray patch's; the price is that the peak follows a shifted image
    a little less exactly, because the fill stays in place (the docs'
    *Benchmarks: explanations* page has the measurements).

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
        Side of the square patch in model pixels; default ``image_size // 4``.
    stride : int, optional
        Step between patches, at most ``window``; default a quarter of the
        window.
    fill : {"mean_image", "gray"}
        What replaces the hidden pixels: the same pixels of
        ``clf.mean_image_`` (default; mean gray, with a warning, for a model
        without one), or mean gray (the earlier default).
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
    >>> occlusion(clf, X[:2]).shape
    (2, 32, 32)
    """
    window, stride = patch_grid(clf.image_size, window, stride)
    baseline = fill_baseline(clf, fill)
    show_progress = sys.stderr.isatty() if progress is None else bool(progress)

    def attribute(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        maps = Occlusion(model).attribute(
            xb,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=baseline if isinstance(baseline, float) else baseline.to(xb),
            target=tb,
            perturbations_per_eval=max(1, batch_size // len(xb)),
            show_progress=show_progress,
        )
        return maps.clamp_min(0)

    attribute = smoothed(attribute, smooth)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=True)

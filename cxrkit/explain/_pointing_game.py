"""The pointing game (Zhang et al., 2016): does a heatmap's peak fall on the lesion?"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["pointing_game"]


def pointing_game(
    heatmaps: np.ndarray, masks: np.ndarray, *, tolerance: float = 0
) -> np.ndarray:
    """Whether each heatmap's maximum lies inside its lesion mask.

    Strict about ties: an image counts as a hit only when every pixel that
    reaches the heatmap's maximum is inside the mask, so a flat (all-equal)
    heatmap cannot score by luck. Use the masks returned by
    [`make_synthetic_cxr`][cxrkit.datasets.make_synthetic_cxr], or expert annotations.

    Zhang et al. count a peak within 15 pixels of the object (on images of
    about 224 px) as a hit; ``tolerance`` does the same here. It matters for
    Grad-CAM, whose peak can only sit at the centre of a cell of the target
    layer's grid (8 px apart for a 64 px input to ``"cnn4"``).

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
    masks : ndarray of shape (n, H, W), bool
        The lesion of each image; each must mark at least one pixel.
    tolerance : float
        Distance in pixels from the mask within which a peak still counts
        (0: inside the mask). ``15 * H / 224`` follows Zhang et al.

    Returns
    -------
    ndarray of shape (n,), bool
        Hits; ``.mean()`` is the pointing-game score.

    Examples
    --------
    >>> heatmaps = np.zeros((2, 4, 4)); heatmaps[0, 1, 1] = heatmaps[1, 3, 3] = 1
    >>> masks = np.zeros((2, 4, 4), bool); masks[:, :2, :2] = True
    >>> pointing_game(heatmaps, masks).tolist()
    [True, False]
    >>> pointing_game(heatmaps, masks, tolerance=3).tolist()
    [True, True]
    """
    heatmaps = np.asarray(heatmaps)
    masks = np.asarray(masks, dtype=bool)
    if heatmaps.ndim != 3 or heatmaps.shape != masks.shape:
        raise ValueError(
            f"heatmaps {heatmaps.shape} and masks {masks.shape} must have the same "
            "shape (n, H, W); resize the masks to the heatmaps' resolution"
        )
    bad = np.flatnonzero(~np.isfinite(heatmaps).all(axis=(1, 2)))
    if len(bad):
        # a NaN maximum matches no pixel, which would count as a hit
        raise ValueError(
            f"heatmaps {bad[:10].tolist()} hold NaN or infinite values; the "
            "method that made them failed on those images"
        )
    empty = np.flatnonzero(~masks.any(axis=(1, 2)))
    if len(empty):
        raise ValueError(
            f"masks {empty[:10].tolist()} mark no pixel; the pointing game needs a "
            "lesion per image: keep images with masks.any(axis=(1, 2))"
        )
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if tolerance > 0:
        # Euclidean distance of every pixel to the nearest mask pixel
        masks = np.stack([distance_transform_edt(~m) <= tolerance for m in masks])
    peaks = heatmaps == heatmaps.max(axis=(1, 2), keepdims=True)
    return ~(peaks & ~masks).any(axis=(1, 2))

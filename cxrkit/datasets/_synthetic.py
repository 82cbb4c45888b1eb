"""Synthetic chest-like radiographs with known lesion masks, for demos and tests."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_synthetic_cxr"]


def make_synthetic_cxr(
    n_samples: int = 200,
    *,
    image_size: int = 64,
    positive_fraction: float = 0.5,
    lesion_size: tuple[float, float] = (0.07, 0.1),
    noise: float = 0.05,
    random_state: int | np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic chest-like radiographs, with the lesion mask of each.

    Each image has a bright body, two dark lung fields, ribs and noise, with
    random pose and exposure. A ``"PNEUMONIA"`` image also has a bright,
    blurry opacity inside one lung; its ``mask`` marks the opacity. For
    demos, tests and checking that explanations point at the lesion; not a
    model of real disease.

    Parameters
    ----------
    n_samples : int
        Number of images.
    image_size : int
        Side of the square images (at least 16).
    positive_fraction : float
        Expected fraction of ``"PNEUMONIA"`` images.
    lesion_size : (float, float)
        Range of the opacity's radius, as a fraction of the image side.
    noise : float
        Standard deviation of the Gaussian pixel noise (intensity in [0, 1]).
    random_state : int, RandomState or None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size), dtype uint8
    y : ndarray of shape (n_samples,)
        ``"NORMAL"`` or ``"PNEUMONIA"``.
    masks : ndarray of shape (n_samples, image_size, image_size), dtype bool
        The lesion of each image (all False for ``"NORMAL"``).

    Examples
    --------
    >>> X, y, masks = make_synthetic_cxr(10, image_size=32, random_state=0)
    >>> X.shape, X.dtype, sorted(set(y.tolist()))
    ((10, 32, 32), dtype('uint8'), ['NORMAL', 'PNEUMONIA'])
    >>> bool(masks[y == "NORMAL"].any())
    False
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if not 0 <= positive_fraction <= 1:
        raise ValueError(
            f"positive_fraction must be in [0, 1], got {positive_fraction}"
        )
    rng = check_random_state(random_state)
    n = int(n_samples)
    positive = rng.random_sample(n) < positive_fraction
    if n >= 2 and 0 < positive_fraction < 1:  # both classes, always
        positive[0], positive[1] = False, True
    grid = (np.arange(image_size) + 0.5) / image_size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    X = np.empty((n, image_size, image_size), dtype=np.uint8)
    masks = np.zeros((n, image_size, image_size), dtype=bool)
    for i in range(n):
        cx = 0.5 + rng.uniform(-0.04, 0.04)
        cy = 0.52 + rng.uniform(-0.04, 0.04)
        body = np.exp(-(((xx - cx) / 0.42) ** 8 + ((yy - cy) / 0.55) ** 8))
        img = 0.15 + 0.6 * body
        lungs = []
        for side in (-1, 1):
            lx = cx + side * rng.uniform(0.16, 0.2)
            rx, ry = rng.uniform(0.11, 0.14), rng.uniform(0.25, 0.3)
            lung = ((xx - lx) / rx) ** 2 + ((yy - cy + 0.02) / ry) ** 2 <= 1
            lungs.append((lung, lx, rx, ry))
            img = np.where(lung, img - rng.uniform(0.3, 0.4), img)
        ribs = 0.06 * (np.sin(yy * rng.uniform(30, 38) * np.pi) > 0.6)
        img = img + ribs * (body > 0.5)
        if positive[i]:
            lung, lx, rx, ry = lungs[rng.randint(2)]
            ox = lx + rng.uniform(-0.4, 0.4) * rx
            oy = cy + rng.uniform(-0.45, 0.45) * ry
            r = rng.uniform(*lesion_size)
            dist2 = ((xx - ox) ** 2 + (yy - oy) ** 2) / r**2
            opacity = np.exp(-dist2) * lung
            img = img + rng.uniform(0.35, 0.5) * opacity
            masks[i] = (dist2 <= 1.0) & lung
        img = img * rng.uniform(0.85, 1.15) + rng.normal(0, noise, img.shape)
        X[i] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    y = np.where(positive, "PNEUMONIA", "NORMAL")
    return X, y, masks

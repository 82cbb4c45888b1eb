"""Faithfulness of heatmaps: deletion and insertion curves (Petsiuk et al., 2018).

A heatmap is faithful when the pixels it ranks highest are the ones the model
needs: hiding them first (deletion) should make the class probability fall
fast, and revealing them first (insertion) should make it rise fast. The
curves are computed through ``clf.predict_proba``, so any fitted classifier
and any heatmaps (of any method, or random ones as a floor) can be compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torchvision.transforms.v2 import functional as TF

from cxrkit.explain._base import ImageInput, class_indices
from cxrkit.images._cache import load_images

__all__ = ["deletion_curve", "faithfulness_score"]


def _baseline_images(images: np.ndarray, baseline: str | float) -> np.ndarray:
    """What hidden pixels are replaced with, per image (uint8)."""
    if baseline == "blur":
        size = images.shape[-1]
        sigma = max(1.0, size / 16)
        kernel = 2 * int(3 * sigma) + 1
        blurred = TF.gaussian_blur(
            torch.from_numpy(images[:, None].astype(np.float32)),
            [kernel, kernel],
            [sigma, sigma],
        )
        return blurred[:, 0].round().clamp(0, 255).numpy().astype(np.uint8)
    if baseline == "mean":
        means = images.reshape(len(images), -1).mean(axis=1)
        return np.broadcast_to(
            np.rint(means)[:, None, None].astype(np.uint8), images.shape
        )
    if isinstance(baseline, (int, float, np.number)) and 0 <= baseline <= 255:
        return np.full(images.shape, round(float(baseline)), dtype=np.uint8)
    raise ValueError(
        f"baseline must be 'blur', 'mean' or a gray level in [0, 255]; got {baseline!r}"
    )


def _resized_heatmaps(heatmaps: np.ndarray, n: int, size: int) -> np.ndarray:
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 3 or len(heatmaps) != n:
        raise ValueError(
            f"heatmaps has shape {heatmaps.shape}; expected (n, H, W) with one "
            f"heatmap per image in X ({n}), e.g. the output of grad_cam(clf, X)"
        )
    if not np.all(np.isfinite(heatmaps)):
        raise ValueError("heatmaps contains NaN or infinite values")
    if heatmaps.shape[1:] == (size, size):
        return heatmaps
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(heatmaps)[:, None], (size, size), mode="bilinear"
    )
    return resized[:, 0].numpy()


def deletion_curve(
    clf: Any,
    X: ImageInput,
    heatmaps: np.ndarray,
    target: Any = None,
    *,
    fractions: Any = None,
    insertion: bool = False,
    baseline: str | float = "blur",
) -> np.ndarray:
    """Class probability as the highest-ranked pixels are hidden (or revealed).

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    heatmaps : ndarray of shape (n, H, W)
        One map per image; larger values rank first. Resized bilinearly to
        the model's ``image_size`` when needed.
    target : class label, sequence of labels, or None
        Whose probability to follow; None: each image's predicted class.
    fractions : array-like of float in [0, 1], optional
        Fractions of the pixels hidden (default ``0, 0.05, ..., 1``).
    insertion : bool
        False (deletion): the top pixels are replaced by the baseline. True
        (insertion): the image starts as the baseline and the top pixels are
        restored.
    baseline : "blur", "mean" or float
        What hidden pixels become: a Gaussian-blurred copy of the image
        (default, avoids creating sharp edges the model may react to), the
        image's mean gray level, or a fixed gray level in [0, 255].

    Returns
    -------
    ndarray of shape (n, len(fractions))
        Probability of the target class at each fraction.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> random_maps = np.random.default_rng(0).random((4, 32, 32))
    >>> deletion_curve(clf, X[:4], random_maps, fractions=[0, 0.5, 1]).shape
    (4, 3)
    """
    check_is_fitted(clf, "net_")
    fractions = np.linspace(0, 1, 21) if fractions is None else np.asarray(fractions)
    if (
        fractions.ndim != 1
        or len(fractions) == 0
        or not (np.all(fractions >= 0) and np.all(fractions <= 1))
    ):
        raise ValueError(
            f"fractions must be a 1-D list of values in [0, 1]; got {fractions}"
        )
    size = clf.image_size
    images, _ = load_images(X, size)
    n = len(images)
    ranks = _resized_heatmaps(heatmaps, n, size).reshape(n, -1)
    # order[i] lists image i's pixels from the highest heatmap value down
    order = np.argsort(-ranks, axis=1, kind="stable")
    base = _baseline_images(images, baseline).reshape(n, -1)
    flat = images.reshape(n, -1)
    proba_clean = clf.predict_proba(images)
    if target is None:
        columns = proba_clean.argmax(axis=1)
    else:
        columns = class_indices(clf, target, n).numpy()
    curve = np.empty((n, len(fractions)))
    rows = np.arange(n)[:, None]
    for j, fraction in enumerate(fractions):
        k = round(float(fraction) * size * size)
        top = np.zeros_like(flat, dtype=bool)
        top[rows, order[:, :k]] = True
        hide = ~top if insertion else top
        perturbed = np.where(hide, base, flat).reshape(n, size, size)
        curve[:, j] = clf.predict_proba(perturbed)[np.arange(n), columns]
    return curve


def faithfulness_score(
    clf: Any,
    X: ImageInput,
    heatmaps: np.ndarray,
    target: Any = None,
    *,
    metric: str = "deletion",
    n_steps: int = 20,
    baseline: str | float = "blur",
) -> np.ndarray:
    """Area under the deletion or insertion curve of each image's heatmap.

    Deletion: lower is more faithful (the probability collapses once the
    top-ranked pixels are hidden). Insertion: higher is more faithful.
    Compare methods on the same images, and against random heatmaps
    (``np.random.default_rng(0).random(heatmaps.shape)``) as the floor.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    heatmaps : ndarray of shape (n, H, W)
        One map per image, from any method.
    target : class label, sequence of labels, or None
        Whose probability to follow; None: the predicted class.
    metric : {"deletion", "insertion"}
    n_steps : int
        Steps of the curve (``n_steps + 1`` fractions from 0 to 1).
    baseline : "blur", "mean" or float
        What hidden pixels become; see
        [`deletion_curve`][cxrkit.explain.deletion_curve].

    Returns
    -------
    ndarray of shape (n,)
        Area under the curve, in [0, 1].

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> random_maps = np.random.default_rng(0).random((4, 32, 32))
    >>> auc = faithfulness_score(clf, X[:4], random_maps, n_steps=4)
    >>> auc.shape, bool(np.all((auc >= 0) & (auc <= 1)))
    ((4,), True)
    """
    if metric not in ("deletion", "insertion"):
        raise ValueError(f"metric must be 'deletion' or 'insertion', got {metric!r}")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    fractions = np.linspace(0, 1, int(n_steps) + 1)
    curve = deletion_curve(
        clf,
        X,
        heatmaps,
        target,
        fractions=fractions,
        insertion=metric == "insertion",
        baseline=baseline,
    )
    return np.trapezoid(curve, fractions, axis=1)

"""Checks of ``X``, ``y`` and ``groups``, before any image is decoded.

Every problem with what a user passes gets its own message, naming the input
and the fix: a single path instead of a list, a 2-D array that is one image
without its batch axis, channel-first images, ragged lists, NaN, sparse
matrices, lengths that do not match. Nothing here opens a file; decoding and
the cache of decoded images are ``cxrkit.images._cache``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from cxrkit.images._pixels import floats_to_uint8

__all__ = [
    "check_fit_inputs",
    "check_image_array",
    "is_path_like_sequence",
    "reject_single_path",
    "reject_sparse",
]


def is_path_like_sequence(X: object) -> bool:
    """Whether ``X`` is a sequence of file paths (not an image array).

    Examples
    --------
    >>> is_path_like_sequence(["a.png", "b.png"]), is_path_like_sequence("a.png")
    (True, False)
    >>> is_path_like_sequence(np.zeros((2, 8, 8)))
    False
    """
    if isinstance(X, np.ndarray):
        if X.ndim != 1 or len(X) == 0 or X.dtype.kind not in "OU":
            return False
        return X.dtype.kind == "U" or all(isinstance(x, (str, os.PathLike)) for x in X)
    if isinstance(X, (str, bytes, os.PathLike)):
        return False
    if isinstance(X, Sequence) and len(X) > 0:
        return all(isinstance(x, (str, os.PathLike)) for x in X)
    return False


def reject_single_path(X: object) -> None:
    """Raise a ``TypeError`` when ``X`` is one path rather than a list of them."""
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            f"X is a single path ({X!r}); pass a list of paths, e.g. [path], or "
            "the X returned by cxrkit.load_image_folder"
        )


def reject_sparse(X: object) -> None:
    """Raise a ``TypeError`` for a scipy sparse matrix or array."""
    if sparse.issparse(X):
        raise TypeError(
            "X is a sparse matrix; sparse input is not supported: pass image "
            "paths or a dense array of images (n, H, W) or (n, H, W, C)"
        )


def _n_images(X: Any) -> int:
    reject_sparse(X)
    reject_single_path(X)
    try:
        return len(X) if hasattr(X, "__len__") else len(np.asarray(X))
    except TypeError:
        raise TypeError(
            f"X of type {type(X).__name__} is not a sequence; pass a list of image "
            "paths or an array of images"
        ) from None


def check_fit_inputs(
    X: Any, y: Any, groups: Any = None, *, estimator: str = "the estimator"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check the ``y`` and ``groups`` of a ``fit`` against ``X``, without decoding.

    Parameters
    ----------
    X : sequence of paths or array of images
        Only its kind and length are looked at.
    y : array-like of shape (n,)
        Class labels.
    groups : array-like of shape (n,), optional
    estimator : str
        Name used in the message when ``y`` is missing.

    Returns
    -------
    y : ndarray of shape (n,)
    groups : ndarray of shape (n,) or None

    Raises
    ------
    ValueError
        ``y`` missing, not class labels, or lengths that differ from ``X``.
    TypeError
        ``X`` a single path, sparse, or not a sequence.

    Examples
    --------
    >>> y, groups = check_fit_inputs(["a.png", "b.png"], ["NORMAL", "PNEUMONIA"])
    >>> y.tolist(), groups
    (['NORMAL', 'PNEUMONIA'], None)
    """
    if y is None:
        raise ValueError(
            f"{estimator} requires y to be passed, but the target y is None: "
            "pass one class label per image in X"
        )
    y = column_or_1d(np.asarray(y), warn=True)
    check_classification_targets(y)
    n = _n_images(X)
    if n != len(y):
        raise ValueError(f"X has {n} images but y has {len(y)} entries")
    if groups is not None:
        groups = np.asarray(groups)
        if n != len(groups):
            raise ValueError(f"X has {n} images but groups has {len(groups)} entries")
    return y, groups


def check_image_array(X: object) -> np.ndarray:
    """Check a batch of images given as an array; floats become ``uint8``.

    Parameters
    ----------
    X : array-like of shape (n, H, W) or (n, H, W, C), C in {1, 3, 4}
        Integers, or floats in [0, 1] or [0, 255] (the range is decided once
        for the whole batch).

    Returns
    -------
    ndarray
        ``X`` as an array; ``uint8`` if it held floats.

    Raises
    ------
    ValueError
        Ragged, empty, 2-D (one image without its batch axis), channel-first,
        pixel-less, NaN or out-of-range input, each with its own message.
    TypeError
        Strings, objects, booleans, complex numbers.

    Examples
    --------
    >>> check_image_array(np.ones((2, 4, 4))).dtype
    dtype('uint8')
    """
    try:
        X = np.asarray(X)
    except ValueError:
        # numpy refuses ragged nesting (images of different sizes).
        raise ValueError(
            "X holds images of different shapes; stack them into one array of "
            "shape (n, H, W) (resize them first) or pass their file paths"
        ) from None
    if X.ndim == 1 and len(X) == 0:
        raise ValueError("X is empty: it holds 0 images")
    if X.dtype == object or X.dtype.kind in "USV":
        raise TypeError(
            f"X has dtype {X.dtype}: pass either a 1-D sequence of image file "
            "paths or a numeric array of images of shape (n, H, W) or (n, H, W, C)"
        )
    if X.dtype == bool or X.dtype.kind not in "uif":
        raise TypeError(
            f"X has dtype {X.dtype}; images must be integers or floats (for a "
            "mask use X.astype(np.uint8) * 255)"
        )
    if X.ndim == 2:
        raise ValueError(
            f"X has shape {X.shape}: a batch of images needs shape (n, H, W) or "
            "(n, H, W, C). For one image use X[np.newaxis]; for flattened images "
            "reshape them to (n, H, W)."
        )
    if X.ndim not in (3, 4):
        raise ValueError(
            f"X has {X.ndim} dimension(s) (shape {X.shape}); expected a 1-D "
            "sequence of paths, or images of shape (n, H, W) or (n, H, W, C)"
        )
    if X.ndim == 3 and X.shape[-1] in (3, 4) and X.shape[1] > 4:
        raise ValueError(
            f"X has shape {X.shape}: this looks like one colour image (H, W, C), "
            "not a batch of images 3 or 4 pixels wide; use X[np.newaxis] to pass "
            "it as a batch of one"
        )
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4):
        hint = ""
        if X.shape[1] in (1, 3, 4):
            hint = " It looks channel-first: use np.moveaxis(X, 1, -1)."
        raise ValueError(
            f"X has shape {X.shape}: the last axis must hold 1, 3 or 4 channels "
            f"(channel-last, (n, H, W, C)).{hint}"
        )
    if X.shape[0] == 0:
        raise ValueError("X is empty: it holds 0 images")
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"X has shape {X.shape}: its images have no pixels")
    if X.dtype.kind == "f":
        X = floats_to_uint8(X, name="X")
    return X

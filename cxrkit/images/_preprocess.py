"""Deterministic preprocessing of decoded images, applied in ``fit`` and ``predict``.

Unlike augmentation (random, training only), preprocessing is part of the
model: [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier]\\ ``(preprocess=...)``
applies it to every image it trains on or predicts, and a saved model applies
it again after loading. It runs on the decoded, resized ``uint8`` images (the
cache keeps images before preprocessing, so a grid search over ``preprocess``
decodes each file once).

The steps aim at intensity and field-of-view differences between machines
and hospitals, which a model can otherwise learn as shortcuts:

* ``"equalize"``: global histogram equalisation (Pillow's
  ``ImageOps.equalize``);
* ``"clahe"``: contrast-limited adaptive histogram equalisation (OpenCV,
  clip limit 2, 8 x 8 tiles; needs ``pip install "cxrkit[clahe]"``);
* ``"stretch"``: per-image contrast stretch of the 1st-99th percentiles to
  the full grey range (a per-image standardisation that stays ``uint8``);
* ``"crop"``: drop an 8% band on every side (collimation, black borders,
  burnt-in markers) and resize back, emphasising the thorax.

For research and education; not a medical device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from cxrkit.images._cache import DecodedImages, decode_images

__all__ = ["PREPROCESSING", "check_preprocess", "model_images", "preprocess_images"]


def _equalize(image: np.ndarray) -> np.ndarray:
    return np.asarray(ImageOps.equalize(Image.fromarray(image)))


def _clahe(image: np.ndarray) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise ImportError(
            'preprocess="clahe" needs OpenCV: pip install "cxrkit[clahe]"'
        ) from None
    tiles = (8, 8) if min(image.shape) >= 64 else (2, 2)
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=tiles).apply(image)


def _stretch(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    if hi <= lo:
        return image
    scaled = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


#: The share of each side that ``"crop"`` drops (heatmaps undo it:
#: ``cxrkit.explain._base.onto_image``).
CROP_BAND = 0.08


def _crop(image: np.ndarray, band: float = CROP_BAND) -> np.ndarray:
    h, w = image.shape
    dy, dx = round(h * band), round(w * band)
    inner = Image.fromarray(image).crop((dx, dy, w - dx, h - dy))
    return np.asarray(inner.resize((w, h), Image.Resampling.BILINEAR))


#: Preprocessing steps by name; each maps one ``(H, W)`` ``uint8`` image to
#: another of the same shape.
PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "equalize": _equalize,
    "clahe": _clahe,
    "stretch": _stretch,
    "crop": _crop,
}


def check_preprocess(preprocess: str | Sequence[str] | None) -> tuple[str, ...]:
    """The steps of a ``preprocess`` value, checked, as a tuple of names.

    Parameters
    ----------
    preprocess : None, str or sequence of str
        One step name, several joined by ``"+"`` (``"crop+clahe"``), or a
        sequence of names; applied in that order.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> check_preprocess("crop+equalize")
    ('crop', 'equalize')
    >>> check_preprocess(None)
    ()
    """
    if preprocess is None:
        return ()
    steps = preprocess.split("+") if isinstance(preprocess, str) else preprocess
    try:
        steps = tuple(steps)
    except TypeError:
        steps = (preprocess,)
    unknown = [s for s in steps if s not in PREPROCESSING]
    if unknown or not all(isinstance(s, str) for s in steps):
        raise ValueError(
            f"preprocess={preprocess!r} has unknown step(s) {unknown}; use None, "
            f"one of {sorted(PREPROCESSING)}, or several joined by '+' "
            "(e.g. 'crop+clahe')"
        )
    return steps


def preprocess_images(
    images: np.ndarray, preprocess: str | Sequence[str] | None
) -> np.ndarray:
    """Apply preprocessing steps to a batch of ``uint8`` images.

    Parameters
    ----------
    images : ndarray of shape (n, H, W), dtype uint8
    preprocess : None, str or sequence of str
        See [`check_preprocess`][cxrkit.images.check_preprocess].

    Returns
    -------
    ndarray of shape (n, H, W), dtype uint8
        ``images`` itself when there is nothing to do, else a new array.

    Examples
    --------
    >>> ramp = np.tile(np.arange(64, 128, dtype=np.uint8), (2, 64, 1))
    >>> out = preprocess_images(ramp, "stretch")
    >>> int(out.min()), int(out.max())
    (0, 255)
    """
    steps = check_preprocess(preprocess)
    if not steps:
        return images
    out = np.empty_like(images)
    for i, image in enumerate(images):
        for step in steps:
            image = PREPROCESSING[step](image)
        out[i] = image
    return out


def model_images(
    clf: Any,
    X: Sequence | np.ndarray | DecodedImages,
    *,
    on_error: str = "raise",
    verbose: int = 0,
) -> DecodedImages:
    """What the classifier ``clf`` sees of ``X``: decoded, resized, preprocessed.

    The one way from raw ``X`` to a model's input images, shared by ``fit``,
    ``predict_proba``, ``ood_score``, ``cxrkit.explain`` and site
    adaptation, so that all of them see the same pixels: ``X`` decoded at
    ``clf.image_size`` (``cxrkit.decode_images``),
    then ``clf.preprocess`` applied once.

    Parameters
    ----------
    clf : PneumoniaClassifier
        Only its ``image_size`` and ``preprocess`` (None when absent) are read.
    X : sequence of paths, ndarray of images, or DecodedImages
        A ``DecodedImages`` already preprocessed for ``clf`` is returned as it
        is; one decoded at ``clf.image_size`` without preprocessing is
        preprocessed.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable files, as in [`load_images`][cxrkit.load_images].
    verbose : int, default=0
        Progress bar while decoding many files.

    Returns
    -------
    DecodedImages
        ``preprocess`` names the steps applied to its ``pixels``.

    Raises
    ------
    ValueError
        ``X`` is a ``DecodedImages`` of another size, or preprocessed with
        other steps than ``clf.preprocess``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> clf = SimpleNamespace(image_size=32, preprocess="stretch")
    >>> seen = model_images(clf, np.zeros((2, 50, 40), np.uint8))
    >>> seen.pixels.shape, seen.preprocess
    ((2, 32, 32), ('stretch',))
    """
    steps = check_preprocess(getattr(clf, "preprocess", None))
    decoded = decode_images(
        X, clf.image_size, on_error=on_error, verbose=verbose, stacklevel=4
    )
    if decoded.preprocess == steps:
        return decoded
    if decoded.preprocess:
        raise ValueError(
            f"X holds images preprocessed with {decoded.preprocess}, but this "
            f"model preprocesses with {steps or None}; pass the original X "
            "(paths or array) instead"
        )
    pixels = preprocess_images(decoded.pixels, steps)
    return replace(decoded, pixels=pixels, preprocess=steps)

"""Pixel conversion: any numeric image to a grayscale ``uint8`` image, and resizing.

The one place where cxrkit decides how pixel values become the 8-bit grey
levels a model sees, for decoded image files (``cxrkit.images._reading``) and
for arrays passed as ``X``. DICOM has its own grayscale chain (windowing, see
``cxrkit.images._dicom``) that ends here. This module imports nothing else from
cxrkit, so every other module can use it.

Policy:

* colour becomes luma with the ITU-R 601 weights of Pillow's ``"L"``
  conversion; an alpha channel is dropped;
* ``uint8``, and integers already within 0-255, are grey levels as they are;
  other integers (12- or 16-bit data) are stretched min-max to 0-255, since
  their useful range rarely fills the type. This is decided per image, for
  files (16-bit PNG and TIFF, 32-bit integer TIFF) and arrays alike, so that a
  file and the array of its pixels give the same grey levels whatever they are
  batched with; a 16-bit image whose values all lie within 0-255 is therefore
  taken as 8-bit grey levels;
* float arrays must lie in [0, 1] (scaled by 255) or [0, 255]; the range is
  decided once for everything converted together (a batch), so that a dark
  image of a [0, 255] batch is not taken for a [0, 1] image. Float image
  files (TIFF mode ``"F"``) are the one exception: they have no agreed range,
  so each is stretched min-max like 12- or 16-bit data;
* NaN and infinite values are refused with a ``ValueError``;
* resizing squashes to a square with Pillow's antialiased bilinear filter, as
  the Kermany 224 px copies and most pipelines do.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "NonFiniteError",
    "floats_to_uint8",
    "pil_to_gray",
    "resize_square",
    "stretch_to_uint8",
    "to_grayscale_uint8",
]

# ITU-R 601 luma weights, the same as Pillow's "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114])
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # integer modes


class NonFiniteError(ValueError):
    """An image holds NaN or infinite values, which have no grey level."""


def floats_to_uint8(values: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Scale floats in [0, 1] or [0, 255] to ``uint8``, deciding the range once.

    Parameters
    ----------
    values : ndarray of floats
        One image, or a batch of images along the first axis (then an error
        counts the images that hold NaN or infinite values).
    name : str
        What ``values`` is called in error messages (``"image"``, ``"X"``).

    Returns
    -------
    ndarray of the same shape, dtype uint8
        ``values * 255`` when every value is at most 1, else ``values``;
        rounded.

    Raises
    ------
    ValueError
        NaN or infinite values (a ``NonFiniteError``), or values outside both
        ranges.

    Examples
    --------
    >>> floats_to_uint8(np.array([[0.0, 0.5, 1.0]])).tolist()
    [[0, 128, 255]]
    >>> floats_to_uint8(np.array([[0.0, 2.0, 255.0]])).tolist()
    [[0, 2, 255]]
    """
    finite = np.isfinite(values)
    if not finite.all():
        where = ""
        if values.ndim > 2:
            n_bad = int((~finite).reshape(len(values), -1).any(axis=1).sum())
            where = f" in {n_bad} image(s)"
        raise NonFiniteError(
            f"{name} contains NaN or infinite values{where}; replace them "
            "(e.g. np.nan_to_num) before fitting or predicting"
        )
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0, 0)
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{name} is a float array with values in [{lo:g}, {hi:g}]; expected "
            "[0, 1] or [0, 255]. Rescale it first, e.g. "
            "(x - x.min()) / (x.max() - x.min())"
        )
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def stretch_to_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max stretch an image of more than 8 bits to 0-255.

    Parameters
    ----------
    image : ndarray of integers or floats

    Returns
    -------
    ndarray of the same shape, dtype uint8
        All zeros for a constant image.

    Raises
    ------
    NonFiniteError
        A ``ValueError``: the image holds NaN or infinite values.

    Examples
    --------
    >>> stretch_to_uint8(np.array([[1000, 2000, 3000]], np.uint16)).tolist()
    [[0, 128, 255]]
    """
    if image.size == 0:
        return image.astype(np.uint8)
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise NonFiniteError("image contains NaN or infinite values")
    lo, hi = values.min(), values.max()
    if hi == lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def to_grayscale_uint8(image: np.ndarray) -> np.ndarray:
    """Convert one image array to a 2-D grayscale ``uint8`` array.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C) with C in {1, 3, 4}
        ``uint8``, and integers already within 0-255, are kept as grey
        levels; other integers (12- or 16-bit data) are stretched min-max to
        0-255, as 16-bit image files are; floats must lie in [0, 1] (scaled
        by 255) or [0, 255]. Colour is converted to luma; an alpha channel is
        dropped.

    Returns
    -------
    ndarray of shape (H, W), dtype uint8

    Raises
    ------
    ValueError
        Non-finite values, floats outside both ranges, wrong dimensions.
    TypeError
        bool, complex or object arrays.

    Examples
    --------
    >>> to_grayscale_uint8(np.array([[0.0, 1.0]])).tolist()
    [[0, 255]]
    >>> to_grayscale_uint8(np.full((2, 2, 3), 200, dtype=np.uint8))[0, 0]
    np.uint8(200)
    """
    image = np.asarray(image)
    if image.dtype == bool or image.dtype.kind not in "uif":
        raise TypeError(
            f"image has dtype {image.dtype}; expected an integer or float array "
            "(convert with image.astype(np.uint8) or np.float32 first)"
        )
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        if image.shape[-1] == 1:
            image = image[..., 0]
        else:
            luma = image[..., :3].astype(np.float64) @ _LUMA
            image = luma if image.dtype.kind == "f" else _round_to(luma, image.dtype)
    if image.ndim != 2:
        raise ValueError(
            f"image has shape {image.shape}; expected (H, W) or (H, W, C) "
            "with C in {1, 3, 4}"
        )
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "f":
        return floats_to_uint8(image)
    if image.size and image.min() >= 0 and image.max() <= 255:
        return image.astype(np.uint8)  # already grey levels, e.g. np.array([[0, 128]])
    return stretch_to_uint8(image)


def pil_to_gray(img: Image.Image) -> Image.Image:
    """A Pillow image of any mode as an 8-bit ``"L"`` image.

    16- and 32-bit integer modes follow the rule for integer arrays
    (``to_grayscale_uint8``): kept when every value lies within 0-255, else
    stretched min-max; the float mode ``"F"`` is always stretched min-max
    (``stretch_to_uint8``). Palette images with transparency go through RGBA;
    everything else is Pillow's own ``"L"`` conversion.

    Raises
    ------
    NonFiniteError
        A ``ValueError``: a float image holds NaN or infinite values.

    Examples
    --------
    >>> pil_to_gray(Image.new("RGB", (2, 1), (255, 0, 0))).getpixel((0, 0))
    76
    >>> pil_to_gray(Image.new("I;16", (1, 1), 200)).getpixel((0, 0))
    200
    """
    if img.mode == "L":
        return img
    if img.mode == "F":
        return Image.fromarray(stretch_to_uint8(np.asarray(img)))
    if img.mode in _HIGH_BIT_MODES:
        return Image.fromarray(to_grayscale_uint8(np.asarray(img)))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("L")


def resize_square(
    image: Image.Image | np.ndarray, size: int
) -> Image.Image | np.ndarray:
    """Resize (squash) an image to ``size x size``; same type out as in.

    Pillow's antialiased bilinear filter; ``reducing_gap`` lets Pillow shrink
    large images in two cheap steps with almost no loss.

    Parameters
    ----------
    image : PIL.Image.Image or ndarray of shape (H, W), dtype uint8
    size : int

    Returns
    -------
    PIL.Image.Image or ndarray of shape (size, size)
        ``image`` itself when it already has that size.

    Examples
    --------
    >>> resize_square(np.zeros((40, 30), np.uint8), 16).shape
    (16, 16)
    """
    if isinstance(image, np.ndarray):
        if image.shape == (size, size):
            return image
        return np.asarray(resize_square(Image.fromarray(image), size))
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)

"""Decode chest X-ray files and arrays into grayscale ``uint8`` images.

Everything that reaches a model passes through here: a path is opened with
Pillow (or pydicom for DICOM, see :mod:`cxrkit.dicom`), an array is checked,
and both come out as one 2-D ``uint8`` image, resized to a square when asked.

Policy, in one place:

* colour, alpha, palette and CMYK images become luma (Pillow's ``"L"``
  conversion, ITU-R 601 weights); EXIF orientation is honoured;
* images with more than 8 bits (16-bit PNG, integer arrays beyond 0-255) are
  stretched min-max to 0-255 per image, since their useful range rarely fills the type;
  DICOM is windowed first (see :mod:`cxrkit.dicom`);
* files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
  about 179 megapixels for an error) are refused with a message saying how
  to raise it; tiny images are upscaled to the requested size;
* every failure is a ``FileNotFoundError`` or ``ValueError`` naming the file
  (an ``ImportError`` when an optional package is missing).

The full table of inputs and behaviours is in the user guide ("Supported
inputs").
* float arrays must lie in [0, 1] or [0, 255];
* resizing squashes the aspect ratio to a square, as the Kermany 224 px copies
  and most pipelines do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "read_image",
    "to_grayscale_uint8",
]

#: File endings read as images (case-insensitive).
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
# ITU-R 601 luma weights, the same as Pillow's "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114])


class ImageReadError(ValueError):
    """One or more image files could not be read.

    Attributes
    ----------
    failures : dict
        Maps each path that failed to the reason.
    """

    def __init__(self, failures: dict[str, str], hint: str = "") -> None:
        self.failures = dict(failures)
        n = len(self.failures)
        msg = f"{n} image file(s) could not be read:\n{list_failures(self.failures)}"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


def list_failures(failures: dict[str, str]) -> str:
    """One indented line per failed file; the path once, even if the reason names it.

    Examples
    --------
    >>> print(list_failures({"a.png": "image file is empty (0 bytes): a.png",
    ...                      "b.png": "permission denied"}))
      image file is empty (0 bytes): a.png
      b.png: permission denied
    """
    return "\n".join(
        f"  {why}" if path in why else f"  {path}: {why}"
        for path, why in failures.items()
    )


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is DICOM: a ``.dcm`` ending or the ``DICM`` preamble."""
    if Path(path).suffix.lower() in _DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def to_grayscale_uint8(image: np.ndarray) -> np.ndarray:
    """Convert one image array to a 2-D grayscale ``uint8`` array.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C) with C in {1, 3, 4}
        ``uint8``, and integers already within 0-255, are kept as grey
        levels; other integers (12- or 16-bit data) are stretched min-max to
        0-255; floats must lie in [0, 1] (scaled by 255) or [0, 255].
        Colour is converted to luma; an alpha channel is dropped.

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
    >>> import numpy as np
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
        channels = image.shape[-1]
        if channels == 1:
            image = image[..., 0]
        else:
            rgb = image[..., :3].astype(np.float64)
            if image.dtype.kind == "f" and not np.all(np.isfinite(rgb)):
                raise ValueError("image contains NaN or infinite values")
            luma = rgb @ _LUMA
            image = luma if image.dtype.kind == "f" else _round_to(luma, image.dtype)
    if image.ndim != 2:
        raise ValueError(
            f"image has shape {image.shape}; expected (H, W) or (H, W, C) "
            "with C in {1, 3, 4}"
        )
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "f":
        if not np.all(np.isfinite(image)):
            raise ValueError("image contains NaN or infinite values")
        lo, hi = (float(image.min()), float(image.max())) if image.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"float image has values in [{lo:g}, {hi:g}]; expected [0, 1] or "
                "[0, 255] (rescale it, e.g. (x - x.min()) / (x.max() - x.min()))"
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    if image.size and image.min() >= 0 and image.max() <= 255:
        return image.astype(np.uint8)  # already grey levels, e.g. np.array([[0, 128]])
    return _stretch_to_uint8(image)


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _stretch_to_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max stretch an integer image of more than 8 bits to 0-255."""
    if image.size == 0:
        return image.astype(np.uint8)
    values = image.astype(np.float64)
    lo, hi = values.min(), values.max()
    if hi == lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _pil_to_gray(img: Image.Image) -> Image.Image:
    """A Pillow image of any mode as an 8-bit ``"L"`` image."""
    if img.mode == "L":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_stretch_to_uint8(np.asarray(img)))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("L")


def _resize(img: Image.Image, size: int) -> Image.Image:
    if img.size == (size, size):
        return img
    # reducing_gap lets Pillow shrink large images in two cheap steps with
    # almost no loss; BILINEAR with Pillow's support scaling is antialiased.
    return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)


def read_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read one image file as a 2-D grayscale ``uint8`` array.

    Parameters
    ----------
    path : str or path-like
        A JPEG, PNG, BMP or TIFF file, or DICOM (``.dcm`` or a file with the
        DICOM preamble; needs ``pip install cxrkit[dicom]``).
    size : int, optional
        Resize to ``(size, size)``. JPEGs are decoded at reduced scale when
        much larger than ``size`` (Pillow's ``draft``), which is several
        times faster for full-resolution radiographs.

    Returns
    -------
    ndarray of shape (H, W) or (size, size), dtype uint8

    Raises
    ------
    FileNotFoundError
        The file does not exist (or is a broken symbolic link).
    ValueError
        The file is empty, a folder, not an image, truncated or damaged, or
        larger than Pillow's decompression-bomb limit.
    ImportError
        A DICOM file needs pydicom (``pip install cxrkit[dicom]``) or a
        decoder package for its compression.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> path = tempfile.mkdtemp() + "/x.png"
    >>> Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(path)
    >>> read_image(path, size=16).shape
    (16, 16)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        broken = " (a broken symbolic link)" if os.path.islink(path) else ""
        raise FileNotFoundError(f"image file not found: {path}{broken}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not an image file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"image file is empty (0 bytes): {path}")
    if is_dicom_file(path):
        from cxrkit.dicom import read_dicom

        gray = Image.fromarray(read_dicom(path))
        return np.asarray(_resize(gray, size) if size else gray)
    try:
        with Image.open(path) as img:
            if size and img.format == "JPEG":
                img.draft("L", (size, size))
            img = ImageOps.exif_transpose(img)
            gray = _pil_to_gray(img)
            if size:
                gray = _resize(gray, size)
            return np.asarray(gray, dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{path}: {exc} If you trust the file, raise Pillow's limit before "
            "reading it: PIL.Image.MAX_IMAGE_PIXELS = None (or a larger number)."
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file Pillow can read: {path}") from None
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError,
        # struct.error, zlib.error and others on damaged files (found by the
        # fuzz tests); all of them mean "this file cannot be decoded".
        raise ValueError(
            f"could not decode image {path} ({type(exc).__name__}: {exc}); the "
            "file may be truncated or damaged"
        ) from None

"""Decode chest X-ray files into grayscale ``uint8`` images.

A path is opened with Pillow (or pydicom for DICOM, see ``cxrkit.images._dicom``)
and comes out as one 2-D ``uint8`` image, resized to a square when asked. How
pixel values become grey levels (colour, 16-bit data, resizing) is decided in
``cxrkit.images._pixels``, for files and arrays alike; ``to_grayscale_uint8`` is
re-exported here.

Policy for files:

* EXIF orientation is honoured; DICOM is windowed first (see
  ``cxrkit.images._dicom``);
* files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
  about 179 megapixels for an error) are refused with a message saying how
  to raise it; tiny images are upscaled to the requested size;
* every failure is a ``FileNotFoundError`` or ``ValueError`` naming the file
  (an ``ImportError`` when an optional package is missing).

The full table of inputs and behaviours is in the user guide ("Supported
inputs").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrkit.images._dicom import read_dicom
from cxrkit.images._pixels import (
    NonFiniteError,
    pil_to_gray,
    resize_square,
    to_grayscale_uint8,
)

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
    return _has_dicom_preamble(path)


def _has_dicom_preamble(path: str | os.PathLike) -> bool:
    """Whether the file starts with the 128-byte preamble and ``DICM``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _pillow_identifies(path: str) -> bool:
    """Whether Pillow recognises the file's format (reading its header only)."""
    try:
        with Image.open(path):
            return True
    except Exception:  # not an image, or one Pillow cannot open
        return False


def _read_as_dicom(path: str) -> bool:
    """Whether ``read_image`` hands ``path`` to pydicom.

    Files with the ``DICM`` preamble are DICOM. A ``.dcm`` file without it may
    be DICOM written without the preamble, or an image given the wrong ending
    (a PNG uploaded as ``x.dcm``): what Pillow recognises is read as an image.
    """
    # One read of the preamble per image (this runs for every file read).
    if _has_dicom_preamble(path):
        return True
    return Path(path).suffix.lower() in _DICOM_EXTENSIONS and not _pillow_identifies(
        path
    )


def read_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read one image file as a 2-D grayscale ``uint8`` array.

    Parameters
    ----------
    path : str or path-like
        A JPEG, PNG, BMP or TIFF file, or DICOM (``.dcm`` or a file with the
        DICOM preamble; needs ``pip install cxrkit[dicom]``). A ``.dcm`` file
        without the preamble that Pillow recognises is read as an image.
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
        The file is empty, a folder, not an image, truncated or damaged,
        larger than Pillow's decompression-bomb limit, or holds NaN or
        infinite pixel values (float TIFF).
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
    if _read_as_dicom(path):
        gray = read_dicom(path)
        return resize_square(gray, size) if size else gray
    try:
        with Image.open(path) as img:
            if size and img.format == "JPEG":
                img.draft("L", (size, size))
            img = ImageOps.exif_transpose(img)
            gray = pil_to_gray(img)
            if size:
                gray = resize_square(gray, size)
            return np.asarray(gray, dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{path}: {exc} If you trust the file, raise Pillow's limit before "
            "reading it: PIL.Image.MAX_IMAGE_PIXELS = None (or a larger number)."
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file Pillow can read: {path}") from None
    except NonFiniteError:
        raise ValueError(
            f"image contains NaN or infinite values: {path}; replace them (e.g. "
            "with numpy.nan_to_num) and save the file again"
        ) from None
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

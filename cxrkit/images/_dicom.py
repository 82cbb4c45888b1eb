"""Read DICOM radiographs as display-ready grayscale ``uint8`` images.

Needs the optional extra ``pip install cxrkit[dicom]`` (pydicom). The pixel
pipeline follows the DICOM standard's grayscale chain and uses pydicom's own
implementations of each step:

1. decode the stored values (compressed transfer syntaxes need a decoder
   package: Pillow covers JPEG baseline and JPEG 2000, pylibjpeg or gdcm the
   rest; a missing one raises an ImportError that names it);
2. Modality LUT or Rescale Slope / Intercept
   (``pydicom.pixels.apply_modality_lut``);
3. VOI LUT, else Window Center / Width (``pydicom.pixels.apply_voi_lut``),
   and the window's output range is mapped to 0-255; without either, data
   of 8 bits or fewer is taken as it is stored (the grey levels an 8-bit PNG
   of the same pixels holds) and more bits have the image's own minimum and
   maximum mapped to 0-255. Data of 12 or 16 bits is reduced to 8 bits only
   here, after windowing;
4. ``MONOCHROME1`` (bone dark in the stored values) is inverted so that bone
   is bright, as in ``MONOCHROME2`` and in every other image cxrkit reads.

Colour DICOM (RGB, YBR) becomes luma, as colour JPEGs do. Multi-frame files
are refused: a chest radiograph is one frame.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cxrkit.images._pixels import stretch_to_uint8, to_grayscale_uint8

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["read_dicom"]

_INSTALL_HINT = "pip install cxrkit[dicom]"


def _import_pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise ImportError(
            "reading DICOM files needs pydicom, which is not installed. "
            f"Install the optional extra: {_INSTALL_HINT}"
        ) from exc
    return pydicom


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Read one DICOM file as a 2-D grayscale ``uint8`` image.

    Parameters
    ----------
    path : str or path-like
        A DICOM file (with or without the 128-byte preamble and ``DICM``
        prefix, with or without a ``.dcm`` ending).

    Returns
    -------
    ndarray of shape (Rows, Columns), dtype uint8
        Windowed as described in the module ``cxrkit.images._dicom``; bone is bright.

    Raises
    ------
    ImportError
        pydicom is missing (``pip install cxrkit[dicom]``), or the file uses a
        compressed transfer syntax whose decoder package is not installed (the
        message names the packages that would decode it).
    FileNotFoundError
        No such file.
    ValueError
        Not a DICOM file, no pixel data, damaged pixel data, several frames,
        or more pixels than Pillow's decompression-bomb limit.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pydicom.dataset import Dataset, FileMetaDataset
    >>> from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    >>> ds = Dataset()
    >>> ds.file_meta = FileMetaDataset()
    >>> ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    >>> ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    >>> ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    >>> ds.Rows, ds.Columns = 2, 3
    >>> ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    >>> ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    >>> ds.PixelRepresentation = 0
    >>> ds.PixelData = np.array([[0, 1000, 4095], [0, 0, 0]], "<u2").tobytes()
    >>> path = tempfile.mkdtemp() + "/x.dcm"
    >>> ds.save_as(path, enforce_file_format=True)
    >>> read_dicom(path).tolist()  # min-max, then MONOCHROME1 inverted
    [[255, 193, 0], [255, 255, 255]]
    """
    pydicom = _import_pydicom()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"DICOM file not found: {path}")
    try:
        # force=True also reads files written without the preamble.
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise ValueError(f"not a readable DICOM file: {path} ({exc})") from None
    if "PixelData" not in ds:
        if not _looks_like_dicom(ds):
            raise ValueError(
                f"not a DICOM file: {path} (it has no DICM preamble, no file "
                "meta information and no SOP Class UID)"
            )
        if "Rows" in ds and "Columns" in ds:  # an image's header, cut short
            raise ValueError(
                f"DICOM file ends before its pixel data (an image header of "
                f"{ds.Rows} x {ds.Columns} pixels, then nothing): it looks "
                f"truncated; copy or export it again: {path}"
            )
        raise ValueError(
            f"DICOM file has no pixel data (it may be a report or a "
            f"structured document, not an image): {path}"
        )
    _check_header(ds, path)
    stored = _decode_pixels(ds, path)
    try:
        if stored.ndim == 3 and stored.shape[-1] in (3, 4):
            return to_grayscale_uint8(stored)
        if stored.ndim != 2:
            raise ValueError(f"pixel array has shape {stored.shape}")
        return _grayscale_to_uint8(stored, ds)
    except ValueError as exc:
        raise ValueError(f"could not convert DICOM pixels of {path}: {exc}") from None
    except Exception as exc:  # broken LUTs or window values in a damaged header
        raise ValueError(
            f"could not apply the DICOM grayscale transforms of {path} "
            f"({type(exc).__name__}: {exc})"
        ) from None


def _looks_like_dicom(ds: Dataset) -> bool:
    """Whether a dataset read with ``force=True`` came from a DICOM file.

    pydicom parses any bytes with ``force=True``; a file that is not DICOM
    gives a dataset of meaningless tags. Real DICOM has the preamble or file
    meta information, and every DICOM object has a SOP Class UID.
    """
    meta = getattr(ds, "file_meta", None)
    return (
        getattr(ds, "preamble", None) is not None or bool(meta) or "SOPClassUID" in ds
    )


def _check_header(ds: Dataset, path: str) -> None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise ValueError(
            f"DICOM file has a damaged image header: {path} ({exc})"
        ) from None
    if frames > 1:
        raise ValueError(
            f"DICOM file has {frames} frames: {path}; cxrkit reads single-frame "
            "radiographs (save one frame as its own file)"
        )
    limit = Image.MAX_IMAGE_PIXELS
    if limit and rows * cols > 2 * limit:
        raise ValueError(
            f"DICOM image of {cols}x{rows} pixels exceeds the decompression-bomb "
            f"limit of {2 * limit} pixels: {path}. If you trust the file, raise "
            "the limit: PIL.Image.MAX_IMAGE_PIXELS = None (or a larger number)"
        )


def _bits_stored(ds: Dataset, default: int) -> int:
    """Bits Stored, or ``default`` when it is missing or damaged."""
    try:
        return int(ds.get("BitsStored", default) or default)
    except (TypeError, ValueError):
        return default


def _decode_pixels(ds: Dataset, path: str) -> np.ndarray:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ValueError(
                f"DICOM file uses transfer syntax {syntax} ({syntax.name}), which "
                f"no decoder supports: {path}"
            ) from None
        bits = _bits_stored(ds, default=8)
        twelve_bit = syntax == JPEGExtended12Bit and bits > 8
        if twelve_bit and set(decoder.available_plugins) <= {"pillow"}:
            raise ImportError(
                f"{path} holds JPEG Extended pixel data with "
                f"{bits}-bit samples, which Pillow cannot decode; "
                "install pylibjpeg and pylibjpeg-libjpeg (pip install pylibjpeg "
                "pylibjpeg-libjpeg) or GDCM (pip install python-gdcm)"
            )
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            raise ImportError(
                f"{path} holds {syntax.name} compressed pixel data and no decoder "
                f"for it is installed. Install one of: {missing} "
                "(e.g. pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, "
                "or pip install python-gdcm)"
            )
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # truncated or inconsistent pixel data
        raise ValueError(
            f"could not decode the DICOM pixel data of {path} "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _grayscale_to_uint8(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(stored, ds)
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        # Integral values after a rescale: a VOI LUT indexes with integers.
        values = values.astype(np.int64)
    window = _voi_output_range(ds)
    if window is None and _display_values(values, ds):
        # 8 bits or fewer, no rescale and no VOI transform: the stored values
        # are grey levels already, read as an 8-bit PNG or JPEG is (the same
        # pixels converted to DICOM give the same image, as DCMTK shows them
        # without windowing)
        image = np.asarray(values, dtype=np.uint8)
    elif window is None:
        # No VOI transform on more bits: min-max over the image (as for
        # 16-bit PNGs).
        image = stretch_to_uint8(np.asarray(values, dtype=np.float64))
    else:
        lo, hi = window
        shown = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        if not np.all(np.isfinite(shown)):
            raise ValueError("windowing produced NaN or infinite values")
        scale = 255.0 / (hi - lo) if hi != lo else 0.0
        image = np.clip(np.rint((shown - lo) * scale), 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        image = 255 - image
    return image


def _display_values(values: np.ndarray, ds: Dataset) -> bool:
    """Whether window-less ``values`` are 8-bit grey levels as they stand:
    at most 8 bits stored, unsigned, integers in 0-255 after the modality
    transform (a rescale that leaves that range needs a stretch)."""
    return (
        _bits_stored(ds, default=16) <= 8
        and int(ds.get("PixelRepresentation", 0) or 0) == 0
        and values.dtype.kind in "iu"
        and values.size > 0
        and int(values.min()) >= 0
        and int(values.max()) <= 255
    )


def _voi_output_range(ds: Dataset) -> tuple[float, float] | None:
    """The output range of the VOI transform pydicom will apply, or None:
    the outputs to show as black and as white (for a window, those of the
    lowest and the highest input, in that order).

    pydicom returns windowed values in the output range of the VOI LUT or
    window but not the range itself, which is what maps to 0-255. It is found
    by passing probe values through the same pydicom functions: all LUT
    entries for a VOI LUT, two extreme values for a window. The choice of
    transform mirrors ``apply_voi_lut`` (a valid VOI LUT wins over a window).
    """
    from pydicom.pixels import apply_voi, apply_windowing

    sequence = ds.get("VOILUTSequence")
    if sequence and None not in (
        sequence[0].get("LUTDescriptor"),
        sequence[0].get("LUTData"),
    ):
        n_entries, first, _ = sequence[0].LUTDescriptor
        probe = np.arange(first, first + (n_entries or 2**16), dtype=np.int64)
        entries = apply_voi(probe, ds)
        return float(entries.min()), float(entries.max())
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        with np.errstate(over="ignore"):
            ends = apply_windowing(np.array([-1e30, 1e30]), ds)
        # in this order, not min and max: pydicom scales the window's output
        # range by the rescale, so with a negative Rescale Slope the lowest
        # values come out highest, and only the order maps them to black
        return float(ends[0]), float(ends[1])
    return None

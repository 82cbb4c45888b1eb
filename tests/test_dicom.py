"""DICOM decoding: files built with pydicom from real radiographs.

Each test writes a DICOM file whose stored values are a known transform of a
real chest X-ray (from ``../shared/data/chest_xray_fullres``) and checks that
``read_dicom`` undoes the transform: the decoded image matches the source up
to rounding.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    generate_uid,
)

from cxrkit import load_image_folder, read_image  # noqa: E402
from cxrkit.images import read_dicom  # noqa: E402


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    preamble: bool = True,
    **elements,
) -> Path:
    """Write ``pixels`` (2-D integer, or (H, W, 3) uint8) as a DX DICOM file."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[:2]
    colour = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    if colour:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    if not preamble:
        path.write_bytes(path.read_bytes()[132:])
    return path


def stretch(values: np.ndarray) -> np.ndarray:
    """Reference min-max mapping to 0-255, written independently of cxrkit."""
    v = values.astype(np.float64)
    return np.rint((v - v.min()) / (v.max() - v.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def real_gray(fullres_dir: Path) -> list[np.ndarray]:
    """Two real radiographs (one NORMAL, one PNEUMONIA) as 192 px uint8."""
    paths = [
        sorted((fullres_dir / "train" / label).glob("*.jpeg"))[0]
        for label in ("NORMAL", "PNEUMONIA")
    ]
    return [read_image(p, size=192) for p in paths]


def test_monochrome2_16bit_rescale_without_window_is_min_max(tmp_path, real_gray):
    for i, gray in enumerate(real_gray):
        stored = (gray.astype(np.uint16) * 16 + 7).astype(np.uint16)
        path = write_dicom(
            tmp_path / f"{i}.dcm",
            stored,
            bits_stored=12,
            RescaleSlope=0.5,
            RescaleIntercept=-100,
        )
        decoded = read_dicom(path)
        assert decoded.dtype == np.uint8 and decoded.shape == gray.shape
        assert np.abs(decoded.astype(int) - stretch(gray)).max() <= 1


def test_8bit_without_window_reads_as_its_png_does(tmp_path, real_gray):
    # the grey levels of an 8-bit file converted to DICOM without a window
    # (as RSNA's pneumonia challenge converted NIH's PNGs): as stored, the
    # image the PNG gives; a stretch would change its contrast
    gray = (real_gray[0] // 2 + 40).astype(np.uint8)  # 40-167, not 0-255
    Image.fromarray(gray).save(tmp_path / "source.png")
    path = write_dicom(tmp_path / "8bit.dcm", gray)
    np.testing.assert_array_equal(read_dicom(path), read_image(tmp_path / "source.png"))
    # MONOCHROME1 at 8 bits: inverted, not stretched
    path = write_dicom(tmp_path / "8bit_m1.dcm", gray, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_dicom(path), 255 - gray)
    # a rescale that leaves 0-255, or more than 8 bits stored: stretched
    path = write_dicom(
        tmp_path / "8bit_rescaled.dcm", gray, RescaleSlope=3, RescaleIntercept=0
    )
    assert np.abs(read_dicom(path).astype(int) - stretch(gray)).max() <= 1
    wide = gray.astype(np.uint16)
    path = write_dicom(tmp_path / "10bit.dcm", wide, bits_stored=10)
    assert np.abs(read_dicom(path).astype(int) - stretch(gray)).max() <= 1


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path, real_gray):
    gray = real_gray[0]
    stored = ((255 - gray.astype(np.uint16)) * 16).astype(np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")
    decoded = read_dicom(path)
    assert np.abs(decoded.astype(int) - stretch(gray)).max() <= 1
    # The same values as MONOCHROME2 give the negative.
    path2 = write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2")
    assert np.abs(read_dicom(path2).astype(int) + decoded - 255).max() <= 1


def test_window_covering_the_source_range_gives_the_source(tmp_path, real_gray):
    gray = real_gray[1]
    slope, intercept = 2.0, -1024.0
    stored = (gray.astype(np.int16) * 8).astype(np.int16)  # signed data
    lo, hi = intercept, slope * 255 * 8 + intercept  # rescaled values of 0, 255
    path = write_dicom(
        tmp_path / "w.dcm",
        stored,
        bits_stored=16,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=(lo + hi) / 2,
        WindowWidth=hi - lo,
        VOILUTFunction="LINEAR_EXACT",
    )
    decoded = read_dicom(path)
    # Not min-max: the window maps 0 -> 0 and 255 -> 255 whatever the image.
    assert np.abs(decoded.astype(int) - gray).max() <= 1


def test_negative_rescale_slope_keeps_dark_dark(tmp_path, real_gray):
    """The same modality values and window give the same image whatever the
    sign of the rescale: pydicom's window output range follows the slope's
    sign, and its order, not its minimum, is black."""
    gray = real_gray[0]
    values = gray.astype(np.uint16) * 16  # modality values 0..4080
    window = {"WindowCenter": 2048, "WindowWidth": 4096}
    positive = write_dicom(tmp_path / "pos.dcm", values, bits_stored=12, **window)
    negative = write_dicom(
        tmp_path / "neg.dcm",
        (4095 - values).astype(np.uint16),  # stored so that -v + 4095 = values
        bits_stored=12,
        RescaleSlope=-1,
        RescaleIntercept=4095,
        **window,
    )
    expected = read_dicom(positive).astype(int)
    assert np.abs(expected - gray).max() <= 2  # the window spans the range
    assert np.array_equal(read_dicom(negative).astype(int), expected)


def test_narrow_window_saturates_outside_it(tmp_path, real_gray):
    gray = real_gray[0]
    stored = gray.astype(np.uint16) * 16
    # Window over source values 64..192 (stored 1024..3072), LINEAR function.
    path = write_dicom(
        tmp_path / "n.dcm",
        stored,
        bits_stored=12,
        WindowCenter=2048,
        WindowWidth=2048,
    )
    decoded = read_dicom(path).astype(int)
    expected = np.clip((gray.astype(float) - 64) / 128 * 255, 0, 255)
    assert np.abs(decoded - expected).max() <= 2
    assert (decoded[gray <= 63] == 0).all() and (decoded[gray >= 193] == 255).all()


def test_voi_lut_sequence_is_applied(tmp_path, real_gray):
    gray = real_gray[1]
    stored = gray.astype(np.uint16) * 16
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = lut.astype("<u2").tobytes()  # OW, little endian
    path = write_dicom(
        tmp_path / "lut.dcm", stored, bits_stored=12, VOILUTSequence=[item]
    )
    decoded = read_dicom(path).astype(int)
    expected = np.rint(np.sqrt(stored / 4095) * 255)
    assert np.abs(decoded - expected).max() <= 1


def test_file_without_preamble_and_without_extension(tmp_path, real_gray):
    gray = real_gray[0]
    bare = write_dicom(tmp_path / "bare.dcm", gray, preamble=False)
    assert np.array_equal(read_image(bare), gray)  # 8 bits: as stored
    # PACS exports: files without an extension, or named by their UID (whose
    # "suffix" is its last number), found in a folder by their preamble
    uid = "1.2.826.0.1.3680043.8.498.10001"
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        write_dicom(tmp_path / "tree" / label / "IM0001", gray)
        write_dicom(tmp_path / "tree" / label / uid, gray)
    (tmp_path / "tree" / "NORMAL" / "notes.1").write_text("not an image")
    with pytest.warns(UserWarning, match=r"ignored 1 file.*notes\.1"):
        X, y = load_image_folder(tmp_path / "tree")
    assert [Path(x).name for x in X] == [uid, "IM0001"] * 2
    assert y.tolist() == ["NORMAL"] * 2 + ["PNEUMONIA"] * 2
    assert read_image(X[0], size=32).shape == (32, 32)


def test_rgb_dicom_becomes_luma(tmp_path, real_gray):
    gray = real_gray[0]
    rgb = np.stack([gray, gray // 2, 255 - gray], axis=-1)
    decoded = read_dicom(write_dicom(tmp_path / "rgb.dcm", rgb)).astype(float)
    luma = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(decoded - luma).max() <= 1


def test_jpeg_compressed_dicom_decodes_with_pillow(tmp_path, real_gray):
    gray = real_gray[1]
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=95)
    path = write_dicom(tmp_path / "j.dcm", gray)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    decoded = read_dicom(path).astype(int)
    assert np.abs(decoded - gray).mean() < 3
    # the same JPEG read by Pillow directly: the same pixels, not stretched
    jpeg = np.asarray(Image.open(buffer).convert("L"), dtype=int)
    assert np.abs(decoded - jpeg).max() <= 1


def test_compressed_without_decoder_names_the_packages(tmp_path, real_gray):
    path = write_dicom(tmp_path / "ls.dcm", real_gray[0])
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really JPEG-LS"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    if JPEGLSLosslessDecoder.is_available:  # e.g. pyjpegls, which cxrkit[pacs] brings
        with pytest.raises(ValueError, match="could not decode the DICOM pixel data"):
            read_image(path)
        return
    with pytest.raises(ImportError, match="pylibjpeg") as info:
        read_image(path)
    assert "JPEG-LS" in str(info.value) and "gdcm" in str(info.value)


def test_twelve_bit_jpeg_extended_names_a_decoder_pillow_is_not(tmp_path):
    """Pillow says it decodes JPEG Extended but reads 8-bit samples only:
    a 12-bit film (pydicom's own JPEG-lossy.dcm) is told what to install,
    and the DICOM node does not offer the syntax without such a decoder."""
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    from cxrkit.pacs._radiographs import decodable_transfer_syntaxes

    path = get_testdata_file("JPEG-lossy.dcm")
    assert pydicom.dcmread(path).BitsStored == 12
    plugins = set(get_decoder(JPEGExtended12Bit).available_plugins)
    offered = JPEGExtended12Bit in decodable_transfer_syntaxes()
    if plugins - {"pillow"}:  # pylibjpeg-libjpeg or GDCM installed here
        assert offered
        assert read_image(path).dtype == np.uint8
        return
    assert not offered
    with pytest.raises(ImportError, match=r"12-bit.*pylibjpeg-libjpeg.*gdcm"):
        read_image(path)


def test_missing_pydicom_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"pip install cxrkit\[dicom\]"):
        read_image(path)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no_pixels", "no pixel data"),
        ("truncated", "ends before its pixel data .* looks truncated"),
        ("frames", "3 frames"),
        ("bomb", "MAX_IMAGE_PIXELS"),
        ("text", "not a DICOM file|not a readable DICOM"),
        ("short_pixels", "could not decode the DICOM pixel data"),
    ],
)
def test_broken_dicom_files_raise_value_errors(tmp_path, case, match):
    path = tmp_path / f"{case}.dcm"
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    if case == "text":
        path.write_text("patient list, not an image\n")
    else:
        write_dicom(path, pixels)
        ds = pydicom.dcmread(path)
        if case == "no_pixels":  # no image header either: a report, say
            del ds.PixelData, ds.Rows, ds.Columns
        elif case == "frames":
            ds.NumberOfFrames = 3
        elif case == "bomb":
            ds.Rows = ds.Columns = 60000
        elif case == "short_pixels":
            ds.PixelData = ds.PixelData[:50]
        ds.save_as(path, enforce_file_format=True)
        if case == "truncated":  # cut where the pixel data element starts
            data = path.read_bytes()
            path.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])
    with pytest.raises(ValueError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_an_image_named_dcm_is_read_as_an_image(tmp_path):
    """A PNG uploaded as x.dcm is no DICOM report: Pillow reads it. A file
    that is neither gets told it is not a DICOM file."""
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray).save(tmp_path / "x.png")
    (tmp_path / "x.dcm").write_bytes((tmp_path / "x.png").read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "x.dcm"), gray)
    with pytest.raises(ValueError, match="not a DICOM file") as info:
        read_dicom(tmp_path / "x.dcm")  # asked for DICOM: says plainly it is not
    assert "no pixel data" not in str(info.value)
    (tmp_path / "notes.dcm").write_text("patient list, not an image\n")
    with pytest.raises(ValueError, match="not a DICOM file") as info:
        read_image(tmp_path / "notes.dcm")
    assert "no pixel data" not in str(info.value)
    assert str(tmp_path / "notes.dcm") in str(info.value)

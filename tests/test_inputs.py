"""Every image a hospital produces, and every bad input, gets a defined outcome.

Each test here backs one row of the "Supported inputs" table in
``docs/guide/inputs.md``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from PIL import Image

from cxrkit import ImageReadError, PneumoniaClassifier, load_image_folder, read_image
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.images import clear_image_cache, load_images

RNG = np.random.default_rng(0)
SOURCE = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # H=24, W=32


@pytest.fixture(scope="module")
def small_model() -> PneumoniaClassifier:
    X, y, _ = make_synthetic_cxr(48, image_size=32, random_state=0)
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(float) @ np.array([0.299, 0.587, 0.114])


# ------------------------------------------------------------ formats and modes
@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("L", "JPEG"),
        ("RGB", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGB", "BMP"),
        ("RGB", "TIFF"),
    ],
)
def test_modes_and_formats_become_luma(tmp_path, mode, fmt):
    source = Image.fromarray(SOURCE).convert(mode)
    path = tmp_path / f"img_{mode}.{fmt.lower()}"
    source.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    decoded = read_image(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (24, 32)
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGBA").convert("RGB"), dtype=float)
    tolerance = 1 if fmt != "JPEG" else 2
    assert np.abs(decoded - _luma(expected)).max() <= tolerance


def test_palette_png_with_transparency(tmp_path):
    img = Image.fromarray(SOURCE).convert("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png", transparency=0)
    assert read_image(tmp_path / "t.png").shape == (24, 32)


def test_16bit_png_is_stretched_min_max(tmp_path):
    values = (RNG.integers(0, 4096, (24, 32)) + 1000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode.startswith("I")  # really a 16-bit file
    decoded = read_image(tmp_path / "a.png").astype(float)
    expected = (values - values.min()) / (values.max() - values.min()) * 255
    assert np.abs(decoded - expected).max() <= 0.5 + 1e-9


def test_exif_orientation_is_honoured(tmp_path):
    gray = SOURCE[..., 0]
    img = Image.fromarray(gray)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "phone.png", exif=exif)
    decoded = read_image(tmp_path / "phone.png")
    assert decoded.shape == (32, 24)
    assert np.array_equal(decoded, np.rot90(gray, k=-1))


def test_decompression_bomb_names_the_limit(tmp_path, monkeypatch):
    Image.fromarray(SOURCE).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 768 px > 2 x 100
    with pytest.raises(ValueError, match=r"PIL\.Image\.MAX_IMAGE_PIXELS = None"):
        read_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as the message says
    assert read_image(tmp_path / "big.png").shape == (24, 32)


def test_tiny_images_are_upscaled(tmp_path, small_model):
    Image.fromarray(np.array([[7]], np.uint8)).save(tmp_path / "one.png")
    assert np.array_equal(
        read_image(tmp_path / "one.png", size=32), np.full((32, 32), 7)
    )
    X = RNG.integers(0, 256, (2, 3, 5), dtype=np.uint8)  # smaller than 32 px
    assert set(small_model.predict(X)) <= set(small_model.classes_)


def test_real_fullres_radiographs_all_decode(fullres_dir):
    paths = sorted(fullres_dir.rglob("*.jpeg"))
    modes = set()
    for path in paths:
        with Image.open(path) as img:
            modes.add(img.mode)
        image = read_image(path, size=48)
        assert image.shape == (48, 48) and image.dtype == np.uint8
        assert image.std() > 5  # a radiograph, not a blank
    assert len(paths) == 120 and {"L", "RGB"} <= modes


def test_truncated_real_jpeg_is_a_value_error(tmp_path, fullres_dir):
    data = sorted(fullres_dir.rglob("*.jpeg"))[0].read_bytes()
    path = tmp_path / "cut.jpeg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"this is a text file, not an image", "not an image file"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "could not decode|not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x13" * 100, "could not decode|not an image"),
    ],
)
def test_bad_files_raise_value_errors_naming_them(tmp_path, content, match):
    path = tmp_path / "bad.jpeg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_symlinks_non_ascii_names_and_folders(tmp_path):
    target = tmp_path / "Röntgen_胸部 1.png"
    Image.fromarray(SOURCE).save(target)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert np.array_equal(read_image(link), read_image(target))
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match="broken symbolic link"):
        read_image(broken)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        read_image(tmp_path / "dir.png")


def _tree(root: Path) -> dict[str, Path]:
    """A class folder tree with the debris real folders hold."""
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.roll(SOURCE, i, axis=0)).save(root / label / f"é{i}.png")
    bad = {
        "zero": root / "NORMAL" / "zero.jpeg",
        "trunc": root / "PNEUMONIA" / "trunc.png",
        "broken": root / "PNEUMONIA" / "broken.jpeg",
    }
    bad["zero"].write_bytes(b"")
    good = (root / "NORMAL" / "é0.png").read_bytes()
    bad["trunc"].write_bytes(good[: len(good) // 3])
    bad["broken"].symlink_to(root / "nowhere.jpeg")
    (root / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "NORMAL" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(SOURCE).save(root / "NORMAL" / ".ipynb_checkpoints" / "x.png")
    (root / "PNEUMONIA" / "notes.txt").write_text("to do")
    (root / "PNEUMONIA" / "Thumbs.db").write_bytes(b"\0" * 10)
    return bad


def test_folder_debris_hidden_ignored_others_warned(tmp_path):
    _tree(tmp_path)
    with pytest.warns(UserWarning, match="ignored 2 file") as record:
        X, _ = load_image_folder(tmp_path)
    message = str(record[0].message)
    assert "notes.txt" in message and "Thumbs.db" in message
    names = {Path(x).name for x in X}
    assert ".DS_Store" not in names and "x.png" not in names  # hidden: silent
    assert {"zero.jpeg", "trunc.png", "broken.jpeg"} <= names  # bad: kept, to report
    assert len(X) == 9


def test_fit_raises_listing_every_bad_file(tmp_path):
    bad = _tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = load_image_folder(tmp_path)
    clear_image_cache()
    clf = PneumoniaClassifier(model="simple_cnn", validation_fraction=None, **FAST)
    with pytest.raises(ImageReadError) as info:
        clf.fit(X, y)
    assert set(info.value.failures) == {str(p) for p in bad.values()}
    for path in bad.values():
        assert str(path) in str(info.value)
    assert "on_error='skip'" in str(info.value)


def test_fit_skip_warns_once_and_records_skipped_files(tmp_path):
    bad = _tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = load_image_folder(tmp_path)
    clf = PneumoniaClassifier(
        model="simple_cnn", validation_fraction=None, on_error="skip", **FAST
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, y)
    skip_warnings = [w for w in caught if "skipped 3 unreadable" in str(w.message)]
    assert len(skip_warnings) == 1
    assert sorted(clf.skipped_files_) == sorted(str(p) for p in bad.values())
    with pytest.raises(ImageReadError):  # predict never drops rows
        clf.predict(X)
    assert len(clf.predict([x for x in X if x not in clf.skipped_files_])) == 6


# ------------------------------------------------------------------ array input
BAD_ARRAYS = {
    "nan": (np.full((2, 8, 8), np.nan), ValueError, "NaN or infinite"),
    "inf": (np.full((2, 8, 8), np.inf, np.float32), ValueError, "NaN or infinite"),
    "empty batch": (np.zeros((0, 8, 8)), ValueError, "0 images"),
    "empty list": ([], ValueError, "0 images"),
    "no pixels": (np.zeros((2, 0, 8)), ValueError, "no pixels"),
    "2-D": (np.zeros((8, 8)), ValueError, r"X\[np.newaxis\]"),
    "5-D": (np.zeros((1, 2, 8, 8, 1)), ValueError, "5 dimension"),
    "1-D numbers": (np.zeros(5), ValueError, "1 dimension"),
    "float < 0": (np.full((2, 8, 8), -0.5), ValueError, r"\[0, 1\] or \[0, 255\]"),
    "float > 255": (np.full((2, 8, 8), 300.0), ValueError, r"\[0, 1\] or \[0, 255\]"),
    "bool": (np.ones((2, 8, 8), bool), TypeError, "astype"),
    "object": (np.empty((2, 8, 8), object), TypeError, "dtype object"),
    "complex": (np.ones((2, 8, 8), complex), TypeError, "complex"),
    "strings": (np.array(["a", "b"])[:, None], TypeError, "dtype <U1"),
    "channel-first": (np.zeros((2, 3, 8, 8)), ValueError, "moveaxis"),
    "one colour image": (np.zeros((40, 30, 3)), ValueError, "one colour image"),
    "ragged": ([np.zeros((8, 8)), np.zeros((9, 9))], ValueError, "different shapes"),
    "single path": ("image.png", TypeError, "single path"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays_get_specific_messages(case, small_model):
    X, error, match = BAD_ARRAYS[case]
    with pytest.raises(error, match=match):
        load_images(X, 32)
    with pytest.raises(error, match=match):
        small_model.predict(X)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64]
)
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_good_arrays_of_every_dtype_and_channel_count(dtype, channels, small_model):
    shape = (3, 20, 24) + ((channels,) if channels else ())
    top = 1.0 if np.dtype(dtype).kind == "f" else 255
    X = (RNG.random(shape) * top).astype(dtype)
    images, kept = load_images(X, 32)
    assert images.shape == (3, 32, 32) and images.dtype == np.uint8 and kept.all()
    assert small_model.predict_proba(X).shape == (3, 2)


def test_float_range_is_decided_per_batch_not_per_image():
    X = np.stack([np.full((8, 8), 0.6), np.full((8, 8), 200.0)])  # a [0, 255] batch
    images, _ = load_images(X, 8)
    assert images[0, 0, 0] == 1 and images[1, 0, 0] == 200  # not 0.6 * 255
    unit = load_images(np.stack([np.full((8, 8), 0.6), np.ones((8, 8))]), 8)[0]
    assert unit[0, 0, 0] == 153 and unit[1, 0, 0] == 255


def test_paths_as_object_array_and_pathlike(tmp_path, small_model):
    Image.fromarray(SOURCE).save(tmp_path / "a.png")
    as_array = np.array([str(tmp_path / "a.png")], dtype=object)
    as_paths = [tmp_path / "a.png"]
    assert np.array_equal(load_images(as_array, 32)[0], load_images(as_paths, 32)[0])
    assert os.fspath(as_paths[0]) == as_array[0]

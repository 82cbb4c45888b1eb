"""Pixel conversion (cxrkit.images._pixels): float ranges, resizing, one policy
for files and arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from cxrkit.images import clear_image_cache, load_images, read_image
from cxrkit.images._pixels import floats_to_uint8, resize_square, stretch_to_uint8

_batches = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
    elements=st.floats(0, 255),
)


@given(_batches)
def test_float_range_is_decided_once_for_the_batch(batch):
    out = floats_to_uint8(batch)
    scale = 255.0 if batch.max() <= 1 else 1.0
    assert out.dtype == np.uint8 and out.shape == batch.shape
    np.testing.assert_array_less(np.abs(out - batch * scale), 0.5 + 1e-9)


def test_dark_image_of_a_0_255_batch_is_not_rescaled():
    batch = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 200.0)])
    assert floats_to_uint8(batch)[0, 0, 0] == 0  # 0.5 grey levels, not 128


def test_batch_errors_count_the_images():
    batch = np.zeros((3, 2, 2))
    batch[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN .* in 1 image\(s\)"):
        floats_to_uint8(batch, name="X")


@settings(max_examples=30)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    st.integers(1, 24),
)
def test_resize_square_keeps_the_type(image, size):
    out = resize_square(image, size)
    assert isinstance(out, np.ndarray) and out.shape == (size, size)
    pil = resize_square(Image.fromarray(image), size)
    assert isinstance(pil, Image.Image)
    np.testing.assert_array_equal(np.asarray(pil), out)
    if image.shape == (size, size):
        assert out is image


@given(arrays(np.uint16, st.tuples(st.integers(1, 8), st.integers(1, 8))))
def test_stretch_fills_0_255(image):
    out = stretch_to_uint8(image)
    if image.max() > image.min():
        assert out.min() == 0 and out.max() == 255
    else:
        assert not out.any()


def test_a_file_and_its_array_give_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 40), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    clear_image_cache()
    from_file, _ = load_images([str(path)], 32)
    from_array, _ = load_images(image[np.newaxis], 32)
    np.testing.assert_array_equal(from_file, from_array)


@pytest.mark.parametrize(
    ("low", "high", "dtype"),
    [
        (0, 200, np.uint16),  # 8-bit grey levels in a 16-bit PNG: kept
        (1000, 4095, np.uint16),  # 12-bit data: stretched
        (0, 200, np.int32),  # a 32-bit integer TIFF (Pillow mode "I")
        (-50, 3000, np.int32),
    ],
)
def test_a_high_bit_file_and_its_array_give_the_same_pixels(tmp_path, low, high, dtype):
    """One rule for 16- and 32-bit integer images, decided per image, whether
    they come from a file or from the array of its pixels."""
    rng = np.random.default_rng(1)
    image = rng.integers(low, high + 1, (50, 40)).astype(dtype)
    image[0, :2] = low, high
    path = tmp_path / ("x.png" if dtype == np.uint16 else "x.tif")
    Image.fromarray(image).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # really a high-bit file
        pixels = np.asarray(img)
    clear_image_cache()
    from_file, _ = load_images([str(path)], 32)
    from_array, _ = load_images(pixels[np.newaxis], 32)
    np.testing.assert_array_equal(from_file, from_array)
    assert read_image(path).max() == (high if high <= 255 and low >= 0 else 255)

"""Decoding: array conversion (hypothesis), file formats, resizing, the cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from cxrkit.images import clear_image_cache, load_images, read_image, to_grayscale_uint8
from cxrkit.images._cache import ImageCache, image_cache

_shapes_2d = array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)


@given(arrays(np.uint8, _shapes_2d))
def test_uint8_gray_is_unchanged(image):
    out = to_grayscale_uint8(image)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, image)


@given(arrays(np.float64, _shapes_2d, elements=st.floats(0, 1)))
def test_unit_floats_scale_to_0_255(image):
    out = to_grayscale_uint8(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_less(np.abs(out.astype(float) - image * 255), 0.5 + 1e-9)


@given(arrays(np.uint16, _shapes_2d))
def test_16bit_is_stretched_min_max(image):
    out = to_grayscale_uint8(image)
    assert out.dtype == np.uint8
    if image.max() <= 255:  # already 8-bit grey levels: kept
        np.testing.assert_array_equal(out, image)
    elif image.max() > image.min():
        assert out.min() == 0 and out.max() == 255
        # monotone: a brighter input pixel is never darker in the output
        order = np.argsort(image, axis=None, kind="stable")
        assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)
    else:
        assert not out.any()


@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 3, 4])),
    )
)
def test_channels_become_luma_like_pillow(image):
    out = to_grayscale_uint8(image)
    assert out.shape == image.shape[:2]
    if image.shape[-1] == 1:
        np.testing.assert_array_equal(out, image[..., 0])
    else:
        mode = "RGB" if image.shape[-1] == 3 else "RGBA"
        expected = np.asarray(Image.fromarray(image, mode).convert("L"))
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


@settings(max_examples=50)
@given(
    st.sampled_from([np.float32, np.float64]),
    st.floats(-1e6, -0.01) | st.floats(255.01, 1e6),  # survive a float32 cast
)
def test_out_of_range_floats_rejected_with_hint(dtype, bad):
    image = np.zeros((4, 4), dtype=dtype)
    image[0, 0] = bad
    with pytest.raises(ValueError, match=r"\[0, 1\] or \[0, 255\]"):
        to_grayscale_uint8(image)


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((3, 3), dtype=bool), TypeError),
        (np.array([[np.nan, 0.0]]), ValueError),
        (np.zeros((2, 2, 2, 2)), ValueError),
        (np.zeros((2, 2, 5)), ValueError),
    ],
)
def test_bad_arrays(image, error):
    with pytest.raises(error):
        to_grayscale_uint8(image)


# ------------------------------------------------------------------- files
@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("png", m) for m in ("L", "RGB", "RGBA", "P", "I;16")]
    + [("jpeg", m) for m in ("L", "RGB", "CMYK")],  # what Pillow can write
)
def test_file_modes_become_gray_uint8(tmp_path, fmt, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    img = base.convert("L").convert(mode) if mode == "I;16" else base.convert(mode)
    path = tmp_path / f"x.{fmt}"
    img.save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (30, 20)
    assert read_image(path, size=16).shape == (16, 16)


def test_exif_orientation_is_honoured(tmp_path):
    image = np.zeros((10, 30), dtype=np.uint8)
    image[:, :5] = 255  # bright band on the left of a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(image).save(tmp_path / "r.jpeg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpeg")
    assert out.shape == (30, 10)  # tall once rotated
    assert out[:5].mean() > 200  # the band is now at the top


def test_16bit_png_uses_its_range(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 40 + 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "r16.png")
    out = read_image(tmp_path / "r16.png")
    assert out.min() == 0 and out.max() == 255


def test_real_fullres_jpeg_reduced_decode_matches_full_decode(fullres_dir):
    """Pillow's draft (DCT-scaled) decode gives the same small image, near enough."""
    path = sorted(fullres_dir.rglob("*.jp*g"))[0]
    fast = read_image(path, size=128).astype(float)
    with Image.open(path) as img:
        full = img.convert("L").resize((128, 128), Image.Resampling.BILINEAR)
    diff = np.abs(fast - np.asarray(full, dtype=float))
    assert diff.mean() < 3.0  # grey levels of 255


@pytest.mark.parametrize(
    ("content", "match"), [(b"", "empty"), (b"not an image at all", "not an image")]
)
def test_unreadable_files(tmp_path, content, match):
    path = tmp_path / "bad.jpeg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


# ------------------------------------------------------------------- cache
def test_cache_evicts_least_recently_used():
    cache = ImageCache(max_bytes=250)
    for key in "abc":
        cache.put((key,), np.zeros(100, np.uint8))
    assert len(cache) == 2 and cache.get(("a",)) is None
    cache.get(("b",))
    cache.put(("d",), np.zeros(100, np.uint8))
    assert cache.get(("b",)) is not None and cache.get(("c",)) is None
    assert cache.nbytes <= 250


def test_changed_file_is_decoded_again(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    clear_image_cache()
    first, _ = load_images([path], size=8)
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path)
    import os

    os.utime(path, ns=(1, 10**18))  # a different mtime, whatever the clock
    second, _ = load_images([path], size=8)
    assert first.max() == 0 and second.min() == 200
    assert image_cache.misses == 2


def test_load_images_lists_every_bad_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = [tmp_path / "a.jpeg", tmp_path / "b.png"]
    for b in bad:
        b.write_bytes(b"junk")
    with pytest.raises(ValueError) as info:
        load_images([good, *bad], size=8)
    assert all(str(b) in str(info.value) for b in bad)
    with pytest.warns(UserWarning, match="skipped 2"):
        images, kept = load_images([good, *bad], size=8, on_error="skip")
    assert images.shape == (1, 8, 8) and kept.tolist() == [True, False, False]


@given(
    arrays(
        st.sampled_from([np.int16, np.int32, np.int64]),
        _shapes_2d,
        elements=st.integers(0, 255),
    )
)
def test_integer_grey_levels_are_kept(image):
    np.testing.assert_array_equal(to_grayscale_uint8(image), image.astype(np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_tiff_with_nan_or_inf_is_refused_naming_the_file(tmp_path, bad):
    """Not an all-black image: the array path refuses the same pixels too."""
    values = np.linspace(0, 1000, 64, dtype=np.float32).reshape(8, 8)
    values[0, 0] = bad
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    with pytest.raises(ValueError, match="NaN or infinite") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "truncated" not in str(info.value)  # the file decodes; its values are bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_grayscale_uint8(values)

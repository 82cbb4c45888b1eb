"""Deterministic preprocessing: the steps, and the estimator applying them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cxrkit import PneumoniaClassifier
from cxrkit.images import PREPROCESSING, check_preprocess, preprocess_images

images_strategy = arrays(
    np.uint8, st.tuples(st.integers(1, 3), st.integers(16, 48), st.integers(16, 48))
)


@settings(max_examples=25, deadline=None)
@given(images_strategy, st.sampled_from(sorted(PREPROCESSING)))
def test_steps_keep_shape_and_dtype(images, step):
    pytest.importorskip("cv2") if step == "clahe" else None
    out = preprocess_images(images, step)
    assert out.shape == images.shape and out.dtype == np.uint8


def test_equalize_flattens_the_histogram():
    rng = np.random.default_rng(0)
    narrow = rng.normal(120, 8, (1, 64, 64)).clip(0, 255).astype(np.uint8)
    out = preprocess_images(narrow, "equalize")
    assert np.ptp(out) > 200 > np.ptp(narrow)
    assert abs(np.median(out) - 128) < 20


def test_stretch_maps_percentiles_to_the_full_range():
    ramp = np.tile(np.arange(64, 128, dtype=np.uint8), (1, 64, 1))
    out = preprocess_images(ramp, "stretch")
    assert out.min() == 0 and out.max() == 255
    constant = np.full((1, 8, 8), 77, np.uint8)
    np.testing.assert_array_equal(preprocess_images(constant, "stretch"), constant)


def test_crop_removes_a_black_border():
    framed = np.full((1, 50, 50), 150, np.uint8)
    framed[:, :3], framed[:, -3:], framed[:, :, :3], framed[:, :, -3:] = 0, 0, 0, 0
    out = preprocess_images(framed, "crop")
    assert out.min() == 150


def test_clahe_raises_local_contrast():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    image = (100 + rng.normal(0, 4, (1, 64, 64))).clip(0, 255).astype(np.uint8)
    assert preprocess_images(image, "clahe").std() > 2 * image.std()


def test_steps_compose_in_order():
    rng = np.random.default_rng(1)
    images = rng.integers(40, 200, (2, 32, 32), dtype=np.uint8)
    both = preprocess_images(images, "crop+stretch")
    one_by_one = preprocess_images(preprocess_images(images, "crop"), "stretch")
    np.testing.assert_array_equal(both, one_by_one)
    np.testing.assert_array_equal(preprocess_images(images, ["crop", "stretch"]), both)
    assert preprocess_images(images, None) is images


@pytest.mark.parametrize("bad", ["sharpen", "crop+", ["crop", 3], 5])
def test_unknown_steps_are_named(bad):
    with pytest.raises(ValueError, match="preprocess="):
        check_preprocess(bad)


def test_estimator_applies_preprocessing_in_fit_and_predict(synthetic, fast):
    X, y, _ = synthetic
    X = (X[:80] * 0.5).astype(np.uint8)  # dim images: equalising changes them
    clf = PneumoniaClassifier(model="simple_cnn", preprocess="equalize", **fast)
    clf.fit(X, y[:80])
    proba = clf.predict_proba(X)
    from cxrkit import load_images

    resized, _ = load_images(X, fast["image_size"])
    done_by_hand = preprocess_images(resized, "equalize")
    clf.set_params(preprocess=None)
    np.testing.assert_allclose(clf.predict_proba(done_by_hand), proba, atol=1e-6)
    assert not np.allclose(clf.predict_proba(resized), proba, atol=1e-3)


def test_bad_preprocess_fails_before_decoding(fast):
    clf = PneumoniaClassifier(preprocess="sharpen", **fast)
    with pytest.raises(ValueError, match="preprocess='sharpen'"):
        clf.fit(["/no/such/file.png", "/no/such/other.png"], [0, 1])

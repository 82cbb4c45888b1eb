"""Shift-aware validation: traits, matched split, leave-batch-out, shifts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import roc_auc_score

from cxrkit import load_image_folder, patient_groups
from cxrkit.validation import (
    SHIFTS,
    TRAITS,
    ConfounderMatchedSplit,
    LeaveBatchOut,
    acquisition_order,
    acquisition_traits,
    shift_images,
    shifted_predictions,
)

images_strategy = arrays(
    np.uint8, st.tuples(st.integers(1, 3), st.integers(16, 40), st.integers(16, 40))
)


@settings(max_examples=30, deadline=None)
@given(images_strategy)
def test_traits_are_finite_and_in_range(images):
    traits = acquisition_traits(images)
    assert traits.shape == (len(images), len(TRAITS))
    assert np.isfinite(traits).all()
    col = dict(zip(TRAITS, traits.T))
    assert (col["dark_level"] <= col["bright_level"]).all()
    for fraction in ("dark_border", "saturation"):
        assert ((col[fraction] >= 0) & (col[fraction] <= 1)).all()


def test_traits_measure_what_they_name():
    flat = np.full((1, 40, 40), 128, np.uint8)
    framed = flat.copy()
    framed[:, :2], framed[:, -2:], framed[:, :, :2], framed[:, :, -2:] = 0, 0, 0, 0
    rng = np.random.default_rng(0)
    noisy = np.clip(flat + rng.normal(0, 30, flat.shape), 0, 255).astype(np.uint8)
    t = {
        name: dict(zip(TRAITS, acquisition_traits(im)[0]))
        for name, im in (("flat", flat), ("framed", framed), ("noisy", noisy))
    }
    assert t["flat"]["exposure"] == 128
    assert t["flat"]["dark_border"] == 0 and t["framed"]["dark_border"] == 1
    assert t["noisy"]["sharpness"] > t["flat"]["sharpness"] + 5


def test_traits_reject_non_uint8():
    with pytest.raises(ValueError, match="uint8 array of shape"):
        acquisition_traits(np.zeros((2, 8, 8), np.float32))


def _confounded(n=400, seed=0):
    """Images whose exposure predicts the label (a shortcut), with patients."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // 2  # two images per patient, one label each
    y = np.array(["NORMAL", "PNEUMONIA"])[rng.integers(0, 2, n // 2)][groups]
    level = rng.normal(np.where(y == "PNEUMONIA", 110, 140), 15).clip(20, 230)
    images = np.clip(
        level[:, None, None] + rng.normal(0, 10, (n, 24, 24)), 0, 255
    ).astype(np.uint8)
    return images, y, groups


def test_matched_split_removes_the_shortcut():
    images, y, groups = _confounded()
    exposure = acquisition_traits(images)[:, TRAITS.index("exposure")]
    assert roc_auc_score(y == "PNEUMONIA", -exposure) > 0.8  # a strong shortcut
    cv = ConfounderMatchedSplit(holdout_fraction=0.5, n_bins=8, random_state=0)
    train, test = next(cv.split(images, y, groups))
    assert not set(groups[train]) & set(groups[test])
    assert not set(train) & set(test)
    counts = np.unique(y[test], return_counts=True)[1]
    assert counts[0] == counts[1]
    assert abs(roc_auc_score(y[test] == "PNEUMONIA", -exposure[test]) - 0.5) < 0.12
    assert cv.trait_auc_["all"] > 0.8 > 0.62 > cv.trait_auc_["holdout"]
    assert set(test) <= set(cv.pool_)
    assert len(train) + len(test) + cv.n_dropped_ == len(y)


def test_matched_split_is_seeded_and_rejects_bad_input():
    images, y, groups = _confounded(200)
    a = next(ConfounderMatchedSplit(random_state=3).split(images, y, groups))[1]
    b = next(ConfounderMatchedSplit(random_state=3).split(images, y, groups))[1]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="holdout_fraction"):
        next(ConfounderMatchedSplit(holdout_fraction=1.5).split(images, y, groups))
    with pytest.raises(ValueError, match="groups is None"):
        next(ConfounderMatchedSplit().split(images, y))
    three = y.copy()
    three[:10] = "VIRUS"
    with pytest.raises(ValueError, match="exactly 2 classes"):
        next(ConfounderMatchedSplit().split(images, three, groups))


def test_matched_split_on_real_images(kermany_dir):
    """On Kermany, traits predict the class; in the matched holdout they do not."""
    X, y = load_image_folder(kermany_dir / "train")
    X, y = X[::3], y[::3]
    cv = ConfounderMatchedSplit(random_state=0)
    train, test = next(cv.split(X, y))
    groups = patient_groups(X)
    assert not set(groups[train]) & set(groups[test])
    assert cv.trait_auc_["all"] > 0.85
    assert cv.trait_auc_["holdout"] < 0.6
    assert len(test) > 100


def test_leave_batch_out_holds_out_contiguous_batches(kermany_dir):
    X, y = load_image_folder(kermany_dir / "train")
    groups = patient_groups(X)
    splits = list(LeaveBatchOut(2).split(X, y))
    assert len(splits) == LeaveBatchOut(2).get_n_splits() == 2
    held = np.concatenate([test for _, test in splits])
    np.testing.assert_array_equal(np.sort(held), np.arange(len(X)))  # a partition
    order = acquisition_order(X)
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test]) == {"NORMAL", "PNEUMONIA"}
        for label in ("NORMAL", "PNEUMONIA"):
            keys_test = [order[i] for i in test if y[i] == label]
            keys_train = [order[i] for i in train if y[i] == label]
            # contiguous: every held-out key is on one side of every kept key
            assert max(keys_test) < min(keys_train) or min(keys_test) > max(keys_train)
    first_normal = {order[i][0] for i in splits[0][1] if y[i] == "NORMAL"}
    assert first_normal == {"IM"}  # the IM- studies come first


def test_leave_batch_out_keeps_a_patient_of_two_classes_in_one_batch():
    # patient d: the last NORMAL study and the first PNEUMONIA one, which each
    # class cut alone puts in different batches
    X = [f"IM-{i:04d}-0001.jpeg" for i in range(1, 5)]
    X += [f"person{i}_virus_{i}.jpeg" for i in range(1, 5)]
    y = ["N"] * 4 + ["P"] * 4
    groups = np.array(["a", "b", "c", "d", "d", "e", "f", "g"])
    splits = list(LeaveBatchOut(2).split(X, y, groups))
    held = np.sort(np.concatenate([test for _, test in splits]))
    np.testing.assert_array_equal(held, np.arange(len(X)))  # a partition
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(np.asarray(y)[test]) == {"N", "P"}
    again = list(LeaveBatchOut(2).split(X, y, groups))  # deterministic
    for (_, a), (_, b) in zip(splits, again):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 4),
    st.lists(
        st.tuples(
            st.sampled_from(["IM-{:04d}-0001", "NORMAL2-IM-{:04d}-0001", "person{}_x"]),
            st.integers(1, 30),
            st.integers(0, 1),
            st.integers(0, 9),
        ),
        min_size=2,
        max_size=40,
    ),
)
def test_leave_batch_out_never_puts_a_patient_on_both_sides(n_splits, rows):
    X = [
        scheme.format(number) + f"_{i}.jpeg"
        for i, (scheme, number, _, _) in enumerate(rows)
    ]
    y = np.array([label for _, _, label, _ in rows])
    groups = np.array([patient for _, _, _, patient in rows])
    try:
        splits = list(LeaveBatchOut(n_splits).split(X, y, groups))
    except ValueError as error:  # too few patients of a class for n_splits
        assert "n_splits" in str(error)
        return
    assert len(splits) == n_splits
    held = np.sort(np.concatenate([test for _, test in splits]))
    np.testing.assert_array_equal(held, np.arange(len(X)))
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test]) == set(y)  # every class in every batch


def test_matched_split_warns_when_the_fraction_is_rounded_far_off():
    images, y, groups = _confounded(200)
    cv = ConfounderMatchedSplit(holdout_fraction=0.4)
    with pytest.warns(UserWarning, match=r"rounded to 1/2"):
        next(cv.split(images, y, groups))
    assert abs(len(cv.pool_) / len(y) - 0.5) < 0.05  # 1 of 2 folds, as documented
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fraction in (0.25, 0.3, 1 / 3, 0.45, 0.5):
            next(
                ConfounderMatchedSplit(holdout_fraction=fraction).split(
                    images, y, groups
                )
            )


def test_leave_batch_out_needs_paths():
    with pytest.raises(TypeError, match="file paths"):
        next(LeaveBatchOut().split(np.zeros((4, 8, 8)), [0, 0, 1, 1]))
    with pytest.raises(ValueError, match="n_splits"):
        next(LeaveBatchOut(1).split(["a.png"], [0]))


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_each_shift_changes_the_image_and_keeps_its_shape(shift):
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(30, 220, 48), (48, 1))
    images = np.clip(ramp + rng.normal(0, 12, (2, 48, 48)), 0, 255).astype(np.uint8)
    out = shift_images(images, shift)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    np.testing.assert_array_equal(out, shift_images(images, shift))  # seeded


@settings(max_examples=25, deadline=None)
@given(images_strategy)
def test_gamma_shifts_are_monotone(images):
    assert (shift_images(images, "darker") <= images).all()
    assert (shift_images(images, "brighter") >= images).all()
    shifted = shift_images(images, "histogram_shift").astype(int)
    np.testing.assert_array_equal(shifted, np.minimum(images.astype(int) + 25, 255))


def test_unknown_shift_is_named():
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        shift_images(np.zeros((1, 8, 8), np.uint8), "fog")


def test_shifted_predictions_give_each_shift_on_the_same_images(kermany_dir):
    class MeanBrightness:  # a stand-in model: probability = mean grey level
        def predict_proba(self, X):
            p = np.asarray(X, dtype=float).mean(axis=(1, 2)) / 255
            return np.column_stack([1 - p, p])

    paths, _ = load_image_folder(kermany_dir / "train")
    probas = shifted_predictions(MeanBrightness(), paths[:4])
    assert list(probas) == ["none", *SHIFTS]
    assert all(p.shape == (4, 2) for p in probas.values())
    assert (probas["brighter"][:, 1] > probas["none"][:, 1]).all()
    assert (probas["darker"][:, 1] < probas["none"][:, 1]).all()
    with pytest.raises(ValueError, match="unknown shifts"):
        shifted_predictions(MeanBrightness(), paths[:4], shifts=["rotate"])

"""cxrkit.explain's shortcut check: the lung-field prior, heat shares, and
how much of a model's evidence lies outside the lungs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FAST
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import (
    DEFAULT_METHOD,
    evidence_outside_lungs,
    grad_cam,
    heat_share,
    lung_field_prior,
)
from cxrkit.explain._lung_fields import SHORTCUT_SHARE, border_mask


@pytest.fixture(scope="module")
def tiny():
    X, y, _ = make_synthetic_cxr(32, image_size=32, random_state=0)
    clf = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)
    return clf, X


# ------------------------------------------------------------ the prior
def test_prior_is_two_lung_fields_beside_the_mediastinum():
    prior = lung_field_prior()
    assert prior.shape == (32, 32) and prior.dtype == np.float32
    assert 0 <= prior.min() and prior.max() <= 1
    lung = prior >= 0.5
    assert 0.25 < lung.mean() < 0.40  # about a third of the image
    # both halves hold a lung field, the middle column (spine, heart) less
    rows = slice(6, 22)
    left, right = prior[rows, 4:14].mean(), prior[rows, 18:28].mean()
    middle = prior[rows, 15:17].mean()
    assert left > 0.6 and right > 0.6 and middle < 0.5 * min(left, right)
    # nothing at the corners, or along the top and bottom rows
    assert prior[[0, 0, -1, -1], [0, -1, 0, -1]].max() < 0.05
    assert prior[0].max() < 0.2 and prior[-1].max() < 0.2


def test_prior_resizes_and_checks_its_size():
    assert lung_field_prior(112).shape == (112, 112)
    np.testing.assert_allclose(
        lung_field_prior(64)[::2, ::2].mean(), lung_field_prior().mean(), atol=0.02
    )
    with pytest.raises(ValueError, match="size"):
        lung_field_prior(0)


# --------------------------------------------------------- heat shares
def test_heat_share_exact_values():
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3, 1
    maps[1] = 1
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    np.testing.assert_allclose(heat_share(maps, mask), [0.75, 0.25])
    per_image = np.stack([mask, ~mask])
    np.testing.assert_allclose(heat_share(maps, per_image), [0.75, 0.75])
    assert np.isnan(heat_share(np.zeros((1, 4, 4)), mask)[0])  # no heat at all


def test_heat_share_rejects_bad_input():
    with pytest.raises(ValueError, match="same size"):
        heat_share(np.ones((1, 4, 4)), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="2 masks for 1"):
        heat_share(np.ones((1, 4, 4)), np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match="non-negative"):
        heat_share(-np.ones((1, 4, 4)), np.ones((4, 4), bool))


@settings(max_examples=40, deadline=None)
@given(
    maps=arrays(np.float64, (3, 6, 6), elements=st.floats(0, 10)),
    mask=arrays(bool, (6, 6)),
)
def test_heat_inside_and_outside_add_up_to_one(maps, mask):
    inside, outside = heat_share(maps, mask), heat_share(maps, ~mask)
    has_heat = maps.sum(axis=(1, 2)) > 0
    np.testing.assert_allclose((inside + outside)[has_heat], 1, atol=1e-9)
    assert np.all((inside[has_heat] >= 0) & (inside[has_heat] <= 1))


def test_border_mask_is_the_outer_sixteenth():
    mask = border_mask((64, 64))
    assert mask[0].all() and mask[:, -1].all() and mask[3, 3] and not mask[4, 4]
    assert mask.sum() == 64 * 64 - 56 * 56


# ------------------------------------------------------ the shortcut check
def test_evidence_on_given_maps_and_masks_exact():
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 3, 3] = 1  # all in the lungs
    maps[1, 0, 0] = maps[1, 3, 3] = 1  # half on the border corner
    lungs = np.zeros((2, 8, 8), bool)
    lungs[:, 2:6, 2:6] = True
    evidence = evidence_outside_lungs(
        None, None, heatmaps=maps, lung_masks=lungs, method="made up"
    )
    np.testing.assert_allclose(evidence.outside, [0, 0.5])
    np.testing.assert_allclose(evidence.border, [0, 0.5])
    assert evidence.area_outside == pytest.approx(1 - 16 / 64)
    assert evidence.mean_outside == pytest.approx(0.25)
    assert evidence.masks == "given"
    assert "25% of the heat (made up)" in evidence.summary()
    assert "Most of the evidence lies in the lungs" in evidence.summary()


def test_evidence_resizes_masks_and_warns_of_a_shortcut():
    maps = np.zeros((1, 16, 16), np.float32)
    maps[0, 0, :] = 1  # the top row: neck, outside every lung
    lungs = np.zeros((1, 64, 64), bool)
    lungs[0, 16:48, 8:56] = True
    evidence = evidence_outside_lungs(None, None, heatmaps=maps, lung_masks=lungs)
    assert evidence.outside[0] == 1 and evidence.border[0] == 1
    assert evidence.mean_outside >= SHORTCUT_SHARE
    assert "look for a shortcut" in evidence.summary()
    with pytest.raises(ValueError, match="one mask per image"):
        evidence_outside_lungs(None, None, heatmaps=maps, lung_masks=lungs[0])
    with pytest.raises(ValueError, match="at least one pixel"):
        evidence_outside_lungs(None, None, heatmaps=maps, lung_masks=~lungs & lungs)


def test_evidence_with_the_prior_scores_heat_where_the_lungs_usually_are():
    size = 64
    prior = lung_field_prior(size)
    in_lungs = np.where(prior >= 0.9, 1.0, 0.0)[None].astype(np.float32)
    outside = np.where(prior < 0.01, 1.0, 0.0)[None].astype(np.float32)
    evidence = evidence_outside_lungs(
        None, None, heatmaps=np.concatenate([in_lungs, outside])
    )
    np.testing.assert_allclose(evidence.outside, [0, 1])
    assert evidence.masks == "prior"
    assert 0.6 < evidence.area_outside < 0.75


def test_evidence_explains_a_model_with_the_recommended_method(tiny):
    clf, X = tiny
    evidence = evidence_outside_lungs(clf, X[:3], method="grad_cam")
    np.testing.assert_array_equal(evidence.heatmaps, grad_cam(clf, X[:3]))
    assert evidence.outside.shape == (3,) and evidence.method == "grad_cam"
    assert evidence_outside_lungs(clf, X[:2]).method == DEFAULT_METHOD

"""cxrkit.explain.adaptive_occlusion: occlusion's map, evaluated in full only
around its peak; exact where it must be, and fewer forward passes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FAST
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import adaptive_occlusion, occlusion


@pytest.fixture(scope="module")
def tiny():
    X, y, _ = make_synthetic_cxr(32, image_size=32, random_state=0)
    clf = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)
    return clf, X


class _RegionScore(nn.Module):
    """Logits (0, mean of the input over one square region): class B's
    evidence is the brightness of that region, nothing else."""

    def __init__(self, size: int, top: int, left: int, side: int, second=None) -> None:
        super().__init__()
        region = torch.zeros(1, 1, size, size)
        region[..., top : top + side, left : left + side] = 1
        if second is not None:  # (top, left, weight) of a weaker square
            row, col, weight = second
            region[..., row : row + side, col : col + side] = weight
        self.register_buffer("region", region)
        self.inputs = 0  # images seen, for counting forward passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs += len(x)
        score = (x * self.region).sum(dim=(1, 2, 3)) / self.region.sum()
        return torch.stack([torch.zeros_like(score), score], dim=1)


class _HandSet(ClassifierMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self


def _hand_classifier(size, top, left, side, second=None) -> _HandSet:
    module = _RegionScore(size, top, left, side, second)
    clf = _HandSet()
    clf.net_ = SimpleNamespace(module_=module)
    clf.image_size, clf.device_, clf.model = size, "cpu", "hand"
    clf.classes_ = np.array(["A", "B"])
    clf.mean_image_ = None
    return clf


@pytest.mark.parametrize("fill", ["mean_image", "gray"])
@pytest.mark.parametrize("target", [None, "NORMAL", "PNEUMONIA"])
def test_every_position_evaluated_is_exactly_occlusion(tiny, fill, target):
    clf, X = tiny
    exact = occlusion(clf, X[:3], target, fill=fill)
    np.testing.assert_allclose(
        adaptive_occlusion(clf, X[:3], target, fill=fill, coarse=1), exact, atol=1e-4
    )
    np.testing.assert_allclose(
        adaptive_occlusion(clf, X[:3], target, fill=fill, refine=13), exact, atol=1e-4
    )


@pytest.mark.parametrize(("top", "left"), [(20, 36), (8, 8), (44, 30)])
def test_peak_region_is_exact_from_a_third_of_the_passes(top, left):
    # a bright 8 px square is the only evidence for B; a gray patch (0 after
    # normalisation) hides it. 64 px: 16 px patches in 4 px steps, 13 x 13
    size = 64
    clf = _hand_classifier(size, top, left, 8)
    image = np.full((1, size, size), 60, np.uint8)
    image[0, top : top + 8, left : left + 8] = 250
    module = clf.net_.module_
    exact = occlusion(clf, image, "B", fill="gray", smooth=0)
    full_passes, module.inputs = module.inputs, 0
    fast = adaptive_occlusion(clf, image, "B", fill="gray", smooth=0)
    # 1 clean + 25 coarse + at most 2 x 24 refined positions, against 169
    assert 26 < module.inputs <= 74 and full_passes >= 169
    # the peak lies where occlusion's maximum is (a plateau: the patch hides
    # the whole square from several positions), on or beside the square
    peak = np.unravel_index(fast[0].argmax(), fast[0].shape)
    assert exact[0][peak] == pytest.approx(1.0, abs=1e-5)
    assert abs(peak[0] - (top + 3.5)) <= 12 and abs(peak[1] - (left + 3.5)) <= 12
    assert exact[0].max() == pytest.approx(1.0)
    # the map agrees with occlusion's where the evidence is, and not elsewhere
    assert exact[0][fast[0] > 0.5].min() > 0.4
    assert fast[0][exact[0] == 0].max() < 0.2
    assert np.abs(fast - exact).mean() < 0.05


def test_second_region_of_evidence_is_refined_too():
    # two bright squares, the second worth 0.6 of the first: with peaks=2
    # the map is occlusion's around both; with peaks=1 only around the first
    size = 64
    clf = _hand_classifier(size, 8, 8, 8, second=(40, 40, 0.6))
    image = np.full((1, size, size), 60, np.uint8)
    image[0, 8:16, 8:16] = image[0, 40:48, 40:48] = 250
    exact = occlusion(clf, image, "B", fill="gray", smooth=0)[0]
    module = clf.net_.module_
    module.inputs = 0
    one = adaptive_occlusion(clf, image, "B", fill="gray", smooth=0, peaks=1)[0]
    passes_one, module.inputs = module.inputs, 0
    two = adaptive_occlusion(clf, image, "B", fill="gray", smooth=0)[0]
    assert passes_one < module.inputs <= 74
    second = (slice(40, 48), slice(40, 48))  # the weaker square itself
    np.testing.assert_allclose(two[second], exact[second], atol=1e-5)
    assert np.abs(one[second] - exact[second]).max() > 1e-3


def test_explains_the_predicted_class_from_its_own_pass(tiny):
    clf, X = tiny
    predicted = adaptive_occlusion(clf, X[:4], batch_size=3)
    np.testing.assert_allclose(
        predicted, adaptive_occlusion(clf, X[:4], clf.predict(X[:4])), atol=1e-5
    )


def test_model_is_left_as_it_was(tiny):
    clf, X = tiny
    module = clf.net_.module_
    module.train()
    adaptive_occlusion(clf, X[:2])
    assert all(m.training for m in module.modules())
    assert all(p.requires_grad for p in module.parameters())
    module.eval()


def test_errors_name_the_parameter(tiny):
    clf, X = tiny
    with pytest.raises(ValueError, match="coarse must be an integer >= 1"):
        adaptive_occlusion(clf, X[:1], coarse=0)
    with pytest.raises(ValueError, match="refine must be an integer >= 0"):
        adaptive_occlusion(clf, X[:1], refine=-1)
    with pytest.raises(ValueError, match="peaks must be an integer >= 1"):
        adaptive_occlusion(clf, X[:1], peaks=0)
    with pytest.raises(ValueError, match="window"):
        adaptive_occlusion(clf, X[:1], window=100)


@pytest.mark.parametrize("method", [occlusion, adaptive_occlusion])
def test_a_stride_larger_than_the_window_is_refused(method):
    # pixels between such patches are never hidden: adaptive_occlusion gave
    # all-zero maps (0 / 0 there), occlusion a bare assertion from Captum
    clf = _hand_classifier(32, 8, 8, 8)
    image = np.full((1, 32, 32), 60, np.uint8)
    image[0, 8:16, 8:16] = 250
    with pytest.raises(ValueError, match=r"stride \(8\) must not exceed window \(4\)"):
        method(clf, image, "B", window=4, stride=8, fill="gray")
    with pytest.raises(ValueError, match=r"stride \(9\) must not exceed window \(8\)"):
        method(clf, image, "B", stride=9, fill="gray")  # the default window
    assert method(clf, image, "B", window=4, stride=4, fill="gray").max() == 1


def test_pixels_no_patch_covers_get_zero_not_nan():
    from cxrkit.explain._adaptive_occlusion import _spread

    # 4 px patches 8 px apart, 2 x 2 of them on a 16 px image
    maps = _spread(torch.ones(1, 2, 2), torch.ones(1, 1, 4, 4), 8, 16)[0, 0]
    covered = torch.zeros(16, 16, dtype=torch.bool)
    for top in (0, 8):
        for left in (0, 8):
            covered[top : top + 4, left : left + 4] = True
    assert torch.equal(maps, covered.float())

"""cxrkit.models._inference_model: batch norm folded into the convs, for the
many forward passes of occlusion, frozen-backbone features and predictions;
same outputs, the model left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAST
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import BatchNormAct2d, Conv2dSame, StdConv2d
from torch import nn

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.models import build_model
from cxrkit.models._inference_model import (
    _CACHE,
    _SameConv,
    copy_is_watched_alike,
    inference_model,
)
from cxrkit.models._registry import classifier_head


def _trained_statistics(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with batch norm statistics and affine weights
    that are not the identity (freshly built norms would fold to nothing)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator))
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name", ["cnn4", "resnet18"])
def test_folded_model_gives_the_same_logits(name):
    torch.manual_seed(0)
    model = _trained_statistics(build_model(name, n_classes=2, image_size=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 32, 32)
    folded = inference_model(model)
    assert folded is not model
    norms = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) < sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the model itself is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_timm_efficientnet_folds_its_same_padded_convs_and_norm_activations():
    # the recommended recipe's backbone: Conv2dSame + BatchNormAct2d pairs,
    # which fx's default tracer can neither trace nor see as pairs
    torch.manual_seed(0)
    model = _trained_statistics(
        build_model("efficientnet_lite0", n_classes=2, image_size=64)
    )
    n_norms = sum(isinstance(m, BatchNormAct2d) for m in model.modules())
    folded = inference_model(model)
    assert folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # each folded norm keeps its activation, under the same name
    assert isinstance(folded.bn1, nn.Sequential)
    assert isinstance(folded.bn1[1], type(model.bn1.act))
    assert n_norms == 49
    # ReLU6 now overwrites the folded conv's output; the model's own does not
    assert folded.bn1[1].inplace and not model.bn1.act.inplace
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    # and gradients through the in-place activations are those of the model
    # (the CAMs take them on the folded copy)
    grads = []
    for net in (model, folded):
        xg = x.clone().requires_grad_()
        net(xg)[:, 1].sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(3, 19),
    width=st.integers(3, 19),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
)
def test_a_folded_same_padded_conv_pads_like_tensorflow_at_any_size(
    height, width, kernel, stride, dilation, groups
):
    # timm's Conv2dSame pads p // 2 before and the rest after, p from the
    # input's size; the folded conv pads inside the convolution, with a zero
    # first kernel row (column) where p is odd: the same output at every
    # size, odd and even, strided or dilated
    torch.manual_seed(0)
    conv = Conv2dSame(2, 4, kernel, stride=stride, dilation=dilation, groups=groups)
    model = _trained_statistics(nn.Sequential(conv, nn.BatchNorm2d(4)))
    folded = inference_model(model)
    assert isinstance(folded[0], _SameConv)
    x = torch.randn(2, 2, height, width)
    with torch.no_grad():
        expected = model(x)
        got = folded(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_conv_that_changes_its_weight_is_not_folded():
    # timm's weight-standardised conv normalises its weight in forward: a
    # batch norm folded into that weight would be undone
    model = _trained_statistics(
        nn.Sequential(StdConv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    )
    assert inference_model(model) is model


def test_nothing_to_fold_returns_the_model_itself():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()).eval()
    assert inference_model(model) is model


def test_a_kept_conv_keeps_its_norm():
    model = _trained_statistics(build_model("resnet18", n_classes=2, image_size=32))
    folded = inference_model(model, keep=[model.conv1])
    assert isinstance(folded.bn1, nn.BatchNorm2d)
    assert isinstance(folded.layer1[0].bn1, nn.Identity)


def test_copy_is_reused_until_the_weights_change():
    model = _trained_statistics(build_model("cnn4", n_classes=2, image_size=32))
    folded = inference_model(model)
    assert inference_model(model) is folded
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        model.classifier[-1].weight.mul_(2)  # an in-place update, as a step makes
        refolded = inference_model(model)
        assert refolded is not folded
        torch.testing.assert_close(refolded(x), model(x), rtol=1e-4, atol=1e-4)


def test_the_documented_ways_to_edit_weights_refresh_the_copy():
    # writes through .data raise no version counter and go unseen (see the
    # module docstring); load_state_dict and in-place ops under no_grad do
    model = _trained_statistics(build_model("cnn4", n_classes=2, image_size=32))
    x = torch.randn(2, 1, 32, 32)
    folded = inference_model(model)
    state = {k: v * 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    refolded = inference_model(model)
    assert refolded is not folded
    with torch.no_grad():
        torch.testing.assert_close(refolded(x), model(x), rtol=1e-4, atol=1e-4)
        norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        norm.weight.copy_(torch.zeros_like(norm.weight))
        again = inference_model(model)
        assert again is not refolded
        torch.testing.assert_close(again(x), model(x), rtol=1e-4, atol=1e-4)


def _small_fit(random_state: int) -> tuple[PneumoniaClassifier, np.ndarray]:
    X, y, _ = make_synthetic_cxr(24, image_size=32, random_state=random_state)
    settings = {**FAST, "batch_size": 8, "validation_fraction": None}
    return PneumoniaClassifier(model="cnn4", **settings).fit(X, y), X


def _module_proba(clf: PneumoniaClassifier, X: np.ndarray) -> np.ndarray:
    """Probabilities from the classifier's module itself, not its copy."""
    module = clf.net_.module_.eval()
    with torch.no_grad():
        inputs = clf.net_.model_input(torch.from_numpy(clf._model_images(X))[:, None])
        return torch.softmax(module(inputs), dim=1).numpy()


@pytest.fixture(scope="module")
def small_fit():
    return _small_fit(0)


def test_predict_proba_runs_the_folded_copy_with_the_same_probabilities(small_fit):
    clf, X = small_fit
    module = clf.net_.module_
    _CACHE.pop(module, None)
    proba = clf.predict_proba(X)
    assert module in _CACHE  # the prediction folded the module
    assert inference_model(module) is not module
    np.testing.assert_allclose(proba, _module_proba(clf, X), atol=1e-5)
    # the module itself keeps its norms
    assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_a_hook_on_the_head_sees_predictions_made_on_the_folded_copy(small_fit):
    # the out-of-distribution score hooks the head during predict_proba; the
    # copy was folded before the hook existed, and shares the head
    clf, X = small_fit
    clf.predict_proba(X[:4])  # the copy exists now
    seen = []
    head = classifier_head(clf.net_.module_, clf.model)
    assert head in list(inference_model(clf.net_.module_).modules())
    handle = head.register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        proba = clf.predict_proba(X[:5])
    finally:
        handle.remove()
    assert sum(len(out) for out in seen) == 5
    scores = torch.cat(seen).float()
    np.testing.assert_allclose(torch.softmax(scores, 1).numpy(), proba, atol=1e-6)


def test_predictions_follow_the_weights_when_they_change():
    clf, X = _small_fit(1)
    before = clf.predict_proba(X)
    folded = inference_model(clf.net_.module_)
    with torch.no_grad():  # in place, as an optimizer step changes them
        for p in clf.net_.module_.parameters():
            p.mul_(1.5)
    after = clf.predict_proba(X)
    assert inference_model(clf.net_.module_) is not folded
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _module_proba(clf, X), atol=1e-5)


def test_a_hook_the_copy_would_miss_makes_predictions_run_the_module(small_fit):
    # a hook on the model itself (or a block, or a conv) is not on the
    # folded copy: predictions then run the module, and the hook sees them
    clf, X = small_fit
    module = clf.net_.module_
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(len(out)))
    try:
        assert not copy_is_watched_alike(module)
        clf.predict_proba(X[:6])
    finally:
        handle.remove()
    assert sum(seen) == 6
    assert copy_is_watched_alike(module)

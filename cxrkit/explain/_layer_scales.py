"""The layers of a network at each of its spatial grids, for multi-scale CAMs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["layers_by_scale"]


def layers_by_scale(
    model: nn.Module, layer: nn.Module, image_size: int, n_scales: int
) -> list[nn.Module]:
    """``layer`` and the layers that end each of the ``n_scales - 1`` finer grids.

    A network halves its feature grid a few times (64 px: 32, 16, 8, 4...).
    The layer that ends a grid is the last module, in the order modules
    finish their forward pass, whose output has that grid: a ResNet's
    ``layer3``, a cnn4 block's last ReLU before its pooling. One forward
    pass of a blank image with hooks on every module finds them, for any
    architecture (torchvision's feature extractors need the layer names,
    which differ per architecture; the registry names only the last one).

    Returns ``[layer, finer, finer still, ...]``, coarsest first; fewer than
    ``n_scales`` when the network has fewer finer grids.
    """
    finished: list[tuple[nn.Module, tuple[int, int]]] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            finished.append((module, tuple(output.shape[-2:])))

    handles = [m.register_forward_hook(record) for m in model.modules()]
    parameter = next(model.parameters())
    blank = torch.zeros(
        1, 1, image_size, image_size, dtype=parameter.dtype, device=parameter.device
    )
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(blank)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in training:
            m.training = mode
    last: dict[tuple[int, int], nn.Module] = {}
    for module, grid in finished:
        last[grid] = module  # the later finisher wins
    grid = next((g for m, g in reversed(finished) if m is layer), None)
    if grid is None:
        return [layer]
    finer = sorted(g for g in last if g[0] > grid[0] and g[1] > grid[1])
    return [layer, *(last[g] for g in finer[: n_scales - 1])]

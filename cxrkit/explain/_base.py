"""What every attribution method shares: inputs, targets, the model guard, batching.

A method only says how to attribute one batch (a Captum call); this module
turns ``X`` into the model's normalised inputs, class labels into indices,
leaves the model exactly as it found it, runs the batches, maps the maps
bilinearly back onto the images as given (undoing ``preprocess="crop"``)
and scales each to [0, 1].
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from captum.attr import LayerAttribution
from sklearn.utils.validation import check_is_fitted
from torch import nn

from cxrkit.images._cache import DecodedImages
from cxrkit.images._normalize import normalize
from cxrkit.images._preprocess import CROP_BAND, check_preprocess, model_images
from cxrkit.models._inference_model import inference_model
from cxrkit.models._registry import target_layer

_CAPTUM_NOTICES = r"(?s).*(did not already require gradients|Setting backward hooks)"

ImageInput = Sequence[str | os.PathLike] | np.ndarray | DecodedImages

#: ``attribute(model, inputs, targets)`` -> non-negative maps ``(b, 1, h, w)``;
#: ``targets`` is None when the model explains its own predicted class.
Attribute = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def model_inputs(clf: Any, X: ImageInput) -> tuple[torch.Tensor, tuple[int, int]]:
    """Normalised ``(n, 1, s, s)`` inputs of ``clf`` and the heatmaps' size.

    Arrays keep their own ``(H, W)``: the heatmap lies on the image as given.
    Paths are decoded at ``clf.image_size`` (files of different sizes could
    not share one array), so their heatmaps have the model's resolution.
    The classifier's ``preprocess`` steps (histogram equalisation, ...) are
    applied by the same function as in ``predict_proba``
    (``cxrkit.images.model_images``): the model is explained on the
    inputs it predicts from (``onto_image`` maps the heatmaps back).
    """
    check_is_fitted(clf, "net_")
    decoded = model_images(clf, X)
    out_size = decoded.input_shape or (clf.image_size, clf.image_size)
    # the whole stack at once, as ImageDataset does image by image: four
    # tensor operations per image cost a loaded 2-core CPU milliseconds each
    pixels = np.ascontiguousarray(decoded.pixels)
    inputs = normalize(torch.from_numpy(pixels)[:, None])
    return inputs, out_size


def class_indices(clf: Any, target: Any, n: int) -> torch.Tensor | None:
    """Indices into ``clf.classes_`` of ``target`` (None: the predicted class).

    ``target`` is one class label for every image, or one label per image.
    """
    if target is None:
        return None
    classes = list(clf.classes_)
    labels = [target] * n if np.ndim(target) == 0 else list(np.asarray(target))
    if len(labels) != n:
        raise ValueError(
            f"target has {len(labels)} labels but X has {n} images; pass one "
            "class label, one label per image, or None for the predicted class"
        )
    indices = []
    for label in labels:
        if label not in classes:
            raise ValueError(
                f"target {label!r} is not a class of this model; use one of "
                f"{classes} (clf.classes_), or None for the predicted class"
            )
        indices.append(classes.index(label))
    return torch.tensor(indices, dtype=torch.long)


def resolve_layer(clf: Any, layer: str | nn.Module | None) -> nn.Module:
    """The module to explain: the registry's choice, a dotted name or a module."""
    model = clf.net_.module_
    if layer is None:
        return target_layer(model, clf.model)
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ValueError(
                f"layer {layer!r} is not a submodule of this {clf.model} model; "
                "pass a dotted name from clf.net_.module_.named_modules() "
                "(e.g. the default, cxrkit.models.target_layer), or None"
            ) from None
    if isinstance(layer, nn.Module) and any(m is layer for m in model.modules()):
        return layer
    raise ValueError(
        f"layer must be None, a dotted module name or a module of "
        f"clf.net_.module_; got {type(layer).__name__}"
    )


def resolve_layers(
    clf: Any, layer: str | nn.Module | Sequence[str | nn.Module] | None
) -> list[nn.Module]:
    """``resolve_layer`` for one layer or a list of layers (fused methods)."""
    if isinstance(layer, (list, tuple)):
        if not layer:
            raise ValueError("layer is an empty list; pass None or at least one layer")
        return [resolve_layer(clf, one) for one in layer]
    return [resolve_layer(clf, layer)]


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


@contextmanager
def explained_model(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode, restored on exit, also when an exception is raised.

    The parameters' ``requires_grad`` is switched off meanwhile: heatmaps
    need gradients with respect to inputs and activations only, and the
    backward pass then skips the weight gradients (about a third of its
    work). Restores every submodule's training flag and every parameter's
    ``requires_grad``; Captum releases its own hooks in ``finally`` blocks,
    and parameter gradients are left untouched (Captum uses
    ``torch.autograd.grad``, which does not accumulate into ``.grad``).
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


class PredictedClassScore(nn.Module):
    """The logit of each image's predicted class, from a single forward pass.

    Lets Grad-CAM explain the predicted class without a second forward pass to
    find it: the argmax picks the logit, and gradients flow through that logit
    only (Captum is then called with ``target=0``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits.gather(1, logits.argmax(dim=1, keepdim=True))


#: ``layer_map(gradients, activations)`` -> one layer's map ``(b, 1, h, w)``
LayerMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def layer_gradients(
    model: nn.Module,
    layers: Sequence[nn.Module],
    xb: torch.Tensor,
    tb: torch.Tensor | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's activations, and the class logit's gradients w.r.t. them.

    One forward pass, and a backward pass from the logits to the layers only.
    The forward pass records the autograd graph from the first of
    ``layers`` to run onwards: that layer's output is replaced by a copy of
    a new leaf tensor, and nothing before it needs gradients (the inputs do
    not, and ``explained_model`` freezes the weights). Captum's
    ``compute_layer_gradients_and_eval`` makes the inputs require gradients
    instead, so that the whole network's forward pass is recorded: about
    1.6 times the time of a plain forward pass of a ResNet-18 on a CPU,
    against 1.1 here, for the same maps. Every hooked output is passed on
    as a copy, so an in-place operation downstream (DenseNet's functional
    ReLU) cannot change the activations kept. ``tb`` None explains each
    image's predicted class. Hooks are removed on exit.
    """
    kept: dict[nn.Module, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: object, output: torch.Tensor):
        if not kept:  # the first explained layer to run: cut the graph here
            output = output.detach().requires_grad_()
        kept[module] = output
        return output.clone()

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with torch.enable_grad():
            logits = model(xb.detach())
    finally:
        for handle in handles:
            handle.remove()
    classes = logits.argmax(dim=1) if tb is None else tb
    score = logits.gather(1, classes[:, None]).sum()
    activations = [kept[layer] for layer in layers]
    gradients = torch.autograd.grad(score, activations)
    return [g.detach() for g in gradients], [a.detach() for a in activations]


def cam_attribute(layers: Sequence[nn.Module], layer_map: LayerMap) -> Attribute:
    """An ``Attribute`` for a class-activation-map method over ``layers``.

    One forward and one short backward pass give every layer's activations
    and the class score's gradients with respect to them
    (``layer_gradients``). ``layer_map`` turns them into one non-negative
    map per layer. Several layers are fused: each map is upsampled
    bilinearly to the finest layer's grid, divided by its maximum, and the
    maps are averaged (as pytorch-grad-cam does). The passes run on
    ``inference_model(model)``: batch norm folded into the convs, the same
    activations up to float rounding.
    """
    layers = list(layers)

    def attribute(
        model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None
    ) -> torch.Tensor:
        # the same network with batch norm folded into the convs; the
        # explained layers are found in it by name
        names = {id(module): name for name, module in model.named_modules()}
        folded = inference_model(model, keep=layers)
        explained = [folded.get_submodule(names[id(layer)]) for layer in layers]
        grads, acts = layer_gradients(folded, explained, xb, tb)
        maps = [layer_map(g, a) for g, a in zip(grads, acts)]
        if len(maps) == 1:
            return maps[0]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        fused = [
            to_unit_range(LayerAttribution.interpolate(m, size, "bilinear"))
            for m in maps
        ]
        return torch.stack(fused).mean(dim=0)

    return attribute


def smoothed(attribute: Attribute, smooth: float) -> Attribute:
    """``attribute`` whose maps are upsampled to the input and blurred.

    ``smooth`` is the Gaussian's standard deviation as a fraction of the
    input's side (0 returns ``attribute`` unchanged).
    """
    if not isinstance(smooth, (int, float, np.number)) or not 0 <= smooth <= 0.5:
        raise ValueError(
            f"smooth must be a fraction of the image side in [0, 0.5], got {smooth!r}"
        )
    if smooth == 0:
        return attribute

    def blurred(
        model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None
    ) -> torch.Tensor:
        size = tuple(xb.shape[-2:])
        maps = LayerAttribution.interpolate(attribute(model, xb, tb), size, "bilinear")
        sigma = float(smooth) * max(size)
        rows, cols = (gaussian_matrix(n, sigma).to(maps) for n in size)
        return rows @ maps @ cols.T

    return blurred


def gaussian_matrix(n: int, sigma: float) -> torch.Tensor:
    """``(n, n)`` matrix of a 1-D Gaussian blur along an axis of ``n`` pixels.

    Kornia's ``gaussian_blur2d`` as matrices: a normalised kernel of
    ``2 * ceil(3 * sigma) + 1`` taps, the border reflected (``"reflect"``:
    the edge pixel is not repeated). ``rows @ maps @ cols.T`` blurs a batch
    of maps with two matrix products, which a CPU runs much faster than
    the same blur as two convolutions of one-channel maps.
    """
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    taps /= taps.sum()
    source = torch.arange(n)[:, None] + offsets.long()[None, :]
    if n > 1:  # reflect about the end pixels, as often as the kernel needs
        period = 2 * (n - 1)
        source = source % period
        source = torch.where(source >= n, period - source, source)
    else:
        source = torch.zeros_like(source)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.scatter_add_(1, source, taps.expand(n, -1).contiguous())
    return matrix.float()


def predicted_classes(
    model: nn.Module, inputs: torch.Tensor, device: str, batch_size: int
) -> torch.Tensor:
    """Argmax class of each input (for methods that perturb the inputs)."""
    with torch.no_grad():
        return torch.cat(
            [
                model(inputs[i : i + batch_size].to(device)).argmax(dim=1).cpu()
                for i in range(0, len(inputs), batch_size)
            ]
        )


def to_unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Divide each non-negative map by its maximum (all-zero maps stay zero).

    Dividing by the maximum, not min-max scaling, keeps 0 meaning "no evidence
    for the class".
    """
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), torch.zeros_like(maps))


def onto_image(
    maps: torch.Tensor, out_size: tuple[int, int], size: int, steps: Sequence[str]
) -> torch.Tensor:
    """Maps ``(b, 1, h, w)`` over the model's input -> ``(b, 1, H, W)`` on the image.

    The model's input is the image as given, squashed to ``size`` x
    ``size``, then preprocessed by ``steps``. Only ``"crop"`` moves pixels:
    it drops ``d = round(size * CROP_BAND)`` px on every side of the
    ``size`` px image (the same ``d`` for every image, as it is square) and
    stretches the rest back to ``size`` px. The maps, which cover the
    model's input, are therefore placed on the image's inner region
    ``[d, size - d)`` (in ``size`` px units, scaled to ``H`` and ``W``) and
    are 0 on the band that was cropped; each crop of ``steps`` is undone in
    turn. Bilinear, with pixel centres as in Pillow's resize and
    ``F.interpolate(..., align_corners=False)``; without a crop, exactly
    ``F.interpolate`` to ``out_size``. For an image of ``size`` px the map
    is resized to ``size - 2 d`` px and padded with ``d`` zeros per side.
    """
    crops = sum(step == "crop" for step in steps)
    if not crops:
        return LayerAttribution.interpolate(maps, out_size, interpolate_mode="bilinear")
    band = round(size * CROP_BAND)
    rows = _onto_axis(out_size[0], maps.shape[-2], size, band, crops).to(maps)
    cols = _onto_axis(out_size[1], maps.shape[-1], size, band, crops).to(maps)
    return rows @ maps @ cols.T


def _onto_axis(
    n_out: int, n_map: int, size: int, band: int, crops: int
) -> torch.Tensor:
    """``(n_out, n_map)`` bilinear weights along one axis, for ``onto_image``."""
    # each output pixel's centre in the model's squashed image, in px of size
    where = (torch.arange(n_out, dtype=torch.float64) + 0.5) * size / n_out
    inside = torch.ones(n_out, dtype=torch.bool)
    for _ in range(crops):
        inside &= (where > band) & (where < size - band)
        where = (where - band) * size / (size - 2 * band)
    source = (where * n_map / size - 0.5).clamp(0, n_map - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=n_map - 1)
    weight = source - low
    matrix = torch.zeros(n_out, n_map, dtype=torch.float64)
    index = torch.arange(n_out)
    matrix.index_put_((index, low), 1 - weight, accumulate=True)
    matrix.index_put_((index, high), weight, accumulate=True)
    matrix[~inside] = 0
    return matrix.float()


def explain_batches(
    clf: Any,
    X: ImageInput,
    target: Any,
    batch_size: int,
    attribute: Attribute,
    *,
    needs_target: bool,
) -> np.ndarray:
    """Run ``attribute`` over batches of ``X``; heatmaps ``(n, H, W)`` in [0, 1].

    The maps are placed on the images as given (``onto_image``: 0 on the
    band a ``"crop"`` step drops). ``needs_target``: methods that evaluate
    perturbed inputs must be given the predicted class of the clean image;
    the others get None and explain the predicted class from their own
    forward pass.
    """
    batch_size = check_batch_size(batch_size)
    inputs, out_size = model_inputs(clf, X)
    steps = check_preprocess(getattr(clf, "preprocess", None))
    targets = class_indices(clf, target, len(inputs))
    model = clf.net_.module_
    device = clf.device_
    heatmaps = np.empty((len(inputs), *out_size), dtype=np.float32)
    with explained_model(model):
        if targets is None and needs_target:
            targets = predicted_classes(model, inputs, device, batch_size)
        for start in range(0, len(inputs), batch_size):
            stop = start + batch_size
            # inputs that require gradients keep every activation a non-leaf
            # tensor with the weights frozen: a hooked layer's output may then
            # be changed in place downstream (DenseNet's functional ReLU)
            xb = inputs[start:stop].to(device).requires_grad_()
            tb = None if targets is None else targets[start:stop].to(device)
            with warnings.catch_warnings():
                # Captum announces that it sets requires_grad on the inputs and
                # hooks the ReLUs (both undone on exit): not the user's concern
                warnings.filterwarnings("ignore", _CAPTUM_NOTICES, UserWarning)
                maps = attribute(model, xb, tb).detach()
            maps = onto_image(maps, out_size, clf.image_size, steps)
            heatmaps[start:stop] = to_unit_range(maps[:, 0]).cpu().numpy()
    return heatmaps

"""A copy of a model for forward passes only: batch norm folded into its convs.

Methods that run the model many times without gradients (occlusion), and the
one pass of a frozen backbone over the training images, spend a third of a
ResNet's CPU time in batch norm and the ReLUs after it. In eval
mode a batch norm after a convolution is an affine map per channel, which
the convolution's weights and bias can absorb (Ioffe and Szegedy, 2015;
Jacob et al., 2018, section 3.2): the same outputs, up to float rounding,
from one operation instead of two.

The folded copy of a model is cached and made again when one of the model's
parameters or buffers changes, which is detected from each tensor's storage
and version counter (``Tensor._version``): autograd raises the counter on
every in-place operation on the tensor itself (an optimizer step,
``load_state_dict``, ``p.mul_(2)`` or ``p.copy_(w)`` under
``torch.no_grad()``, batch norm statistics in training), and assigning a
new tensor changes its storage. A write through ``.data`` (``p.data.mul_(0)``,
``p.data[:] = w``) raises no counter, so it goes unseen: the copy, and the
predictions and heatmaps that run it, keep the old weights. Edit weights
with in-place operations on the parameters themselves under
``torch.no_grad()``, or with ``load_state_dict``. The contents are not
checked: a sum per tensor on every call costs 1 to 2 ms on one CPU thread,
3 to 9% of a forward pass of one 224 px image through ResNet-18 or
EfficientNet-Lite0 (the copy is looked up for every batch).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["copy_is_watched_alike", "folded_copy", "inference_model"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# timm's layers of the recommended recipe's EfficientNet-Lite0: a conv that
# pads by the input's size ("SAME", as TensorFlow) and batch norm followed by
# dropout and an activation. Both compute exactly what their torch base class
# does (then, for the norm, ``act(drop(.))``), so they fold like it. Other
# subclasses may not (timm's weight-standardised ``StdConv2d`` changes its
# weight in ``forward``): only these are folded.
_SAME_CONVS: tuple[type, ...] = ()
_NORM_ACTS: tuple[type, ...] = ()
try:
    from timm.layers import BatchNormAct2d, Conv2dSame, conv2d_same, get_same_padding

    _SAME_CONVS, _NORM_ACTS = (Conv2dSame,), (BatchNormAct2d,)
except ImportError:  # timm is a dependency; without it nothing of timm runs
    pass


class _SameConv(nn.Conv2d):
    """A folded ``Conv2dSame``: TensorFlow's "SAME" padding done inside the
    convolution instead of by a copy of the input.

    ``Conv2dSame`` pads its input with ``F.pad`` first: ``p`` pixels along
    each axis, ``p // 2`` before and the rest after. That copy (a freshly
    allocated tensor as large as the input) cost about a fifth of a forward
    pass of the recommended recipe's EfficientNet-Lite0 at 224 px on a CPU,
    mostly in its stride-2 convs at 112 px (``benchmarks/timings/folding.py``).
    A convolution pads both sides alike, so where ``p`` is odd the kernel gains
    a zero first row (column) and both sides are padded by ``p - p // 2``: each
    output then reads the same input pixels with the same weights (the extra
    tap reads one pixel more, times zero). Written here because neither torch
    (``padding="same"`` refuses strides) nor timm (static "SAME" padding for
    stride 1 only) does it. With a dilation and an odd ``p`` it falls back to
    timm's padding: a zero tap would then shift by the dilation, not by one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [
            get_same_padding(n, k, s, d)  # timm's: p for an axis of n pixels
            for n, k, s, d in zip(
                x.shape[-2:], self.kernel_size, self.stride, self.dilation
            )
        ]
        odd = (pads[0] % 2, pads[1] % 2)
        if any(odd) and self.dilation != (1, 1):
            return conv2d_same(
                x, self.weight, self.bias, self.stride, (0, 0), self.dilation,
                self.groups,
            )  # fmt: skip
        weight = self._weights.get(odd)
        if weight is None:  # at most 4: one per parity of the two paddings
            weight = F.pad(self.weight, (odd[1], 0, odd[0], 0))
            weight = weight.contiguous(memory_format=torch.channels_last)
            self._weights[odd] = weight
        padding = (pads[0] - pads[0] // 2, pads[1] - pads[1] // 2)
        return F.conv2d(
            x, weight, self.bias, self.stride, padding, self.dilation, self.groups
        )


def _is_conv(m: nn.Module) -> bool:
    return type(m) in (*_CONVS, *_SAME_CONVS)


def _is_norm(m: nn.Module) -> bool:
    return type(m) in (*_NORMS, *_NORM_ACTS)


class _LayerTracer(fx.Tracer):
    """fx's tracer, with the convs and norms that fold kept whole.

    fx keeps only ``torch.nn``'s own modules whole and traces into the rest:
    into ``Conv2dSame`` (whose padding, computed from the input's size, fx
    cannot trace) and ``BatchNormAct2d`` (which would hide the pair).
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            _is_conv(m)
            or _is_norm(m)
            or super().is_leaf_module(m, module_qualified_name)
        )


#: activations whose gradient autograd computes from their output, so that
#: they may overwrite their input (a folded conv's output, read by nothing
#: else) even when gradients are taken, as torchvision's ResNets do
_INPLACE_SAFE = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def _after_norm(norm: nn.Module) -> nn.Module:
    """What remains of ``norm`` once its affine map is folded into the conv:
    nothing for a plain batch norm; ``BatchNormAct2d``'s dropout (the
    identity in eval mode) and activation, in place where that is safe
    (EfficientNet-Lite0's ReLU6 otherwise allocates a new tensor for each of
    its 33 activations: about a quarter of the forward pass on a CPU)."""
    if type(norm) in _NORMS:
        return nn.Identity()
    act = norm.act
    if type(act) in _INPLACE_SAFE and not act.inplace:
        act = copy.copy(act)
        act.inplace = True
    after = nn.Sequential(norm.drop, act)
    after.training = False  # not .eval(): the dropout may be the model's own
    return after


def _conv_norm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names of (conv, batch norm) pairs where the norm only reads the conv.

    Found in the graph of one ``torch.fx`` trace; each module of a pair is
    called exactly once, and the conv's output goes to the norm only. An
    untraceable model (data-dependent control flow) has no pairs.
    """
    try:
        graph = _LayerTracer().trace(model)
    except Exception:  # any tracing failure: leave the model as it is
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_norm(modules[node.target]):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and _is_conv(modules[source.target])
            and len(source.users) == 1
            and calls[source.target] == calls[node.target] == 1
            and modules[node.target].track_running_stats
            and modules[node.target].running_mean is not None
        ):
            pairs.append((source.target, node.target))
    return pairs


def _folded_conv(conv: nn.Module, norm: nn.Module) -> nn.Module:
    """A conv computing ``norm(conv(x))``, frozen, its weight ``channels_last``.

    Shares nothing with ``conv`` but its settings (``fuse_conv_bn_eval``
    would deep-copy ``conv``'s weights first, only to replace them).
    """
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            norm.running_mean,
            norm.running_var,
            norm.eps,
            norm.weight,
            norm.bias,
        )
    new = copy.copy(conv)
    if type(conv) in _SAME_CONVS:
        new.__class__ = _SameConv  # same attributes, padding done in the conv
        new._weights = {}
    new._parameters = {
        "weight": nn.Parameter(
            weight.detach().contiguous(memory_format=torch.channels_last),
            requires_grad=False,
        ),
        "bias": nn.Parameter(bias.detach(), requires_grad=False),
    }
    return new


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``model`` is replaced or
    changed in place through autograd's view of it: in-place updates (an
    optimizer step, ``load_state_dict``, batch norm statistics in training)
    raise a tensor's version counter. Writes through ``.data`` do not, and
    the contents are not read (too slow for every batch; see the module
    docstring): such a write goes unseen."""
    return tuple(
        (name, t.data_ptr(), t._version)
        for name, t in (*model.named_parameters(), *model.named_buffers())
    )


#: the folded copy of each model, with the fingerprint it was made from
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_model(model: nn.Module, keep: Sequence[nn.Module] = ()) -> nn.Module:
    """``model`` with each batch norm that follows a conv folded into the conv.

    For passes in eval mode whose gradients, if any, are taken with respect
    to inputs or activations only (the copy uses the running statistics and
    is not trained). Returns ``model`` itself when there is nothing to fold;
    otherwise a copy with the same module names, in ``channels_last``
    memory format (oneDNN's layout for convolutions on a CPU): the folded
    norms become ``nn.Identity`` (or the activation a norm applies after
    normalising), so hooks on other modules, looked up by
    name, still see the same outputs. A conv in ``keep`` (a layer whose own
    output is explained) keeps its norm. The copy shares every tensor with
    ``model`` but the folded convs' weights, and every module that has no
    modules inside and is not folded (its head among them: hooks on those
    see the copy's passes); the copy is in eval mode but for those, which
    keep ``model``'s mode, so call it with ``model`` in eval mode. It is
    kept (weakly keyed on ``model``, one per ``keep``) until ``model``'s
    parameters or buffers change: the next heatmap or prediction of the
    same model does not fold again. A change is seen from the tensors'
    version counters, which writes through ``.data`` do not raise: after
    such a write the copy keeps the old weights. Change weights in place
    under ``torch.no_grad()`` (``p.mul_(2)``, ``p.copy_(w)``), or with
    ``load_state_dict``, instead.
    """
    fingerprint = _fingerprint(model)
    kept = frozenset(id(module) for module in keep)
    cached = _CACHE.get(model)
    if cached is None or cached[0] != fingerprint:
        cached = _CACHE[model] = (fingerprint, {})
    if kept not in cached[1]:
        folded = _fold(model, keep)
        # the value must not refer to the key, or the key is never released
        cached[1][kept] = None if folded is model else folded
    folded = cached[1][kept]
    return model if folded is None else folded


def copy_is_watched_alike(model: nn.Module) -> bool:
    """Whether every hook on ``model`` would also see passes of its folded
    copy: hooks only on modules that the copy shares (those with no modules
    inside, other than convs and norms). A hook on the model itself, a
    block or a conv (a user's, or a test's that counts the images the
    network sees) is not on the copy: run ``model`` itself then."""
    for module in model.modules():
        hooked = (
            module._forward_hooks
            or module._forward_pre_hooks
            or module._backward_hooks
            or module._backward_pre_hooks
        )
        if hooked and (
            next(module.children(), None) is not None
            or _is_conv(module)
            or _is_norm(module)
        ):
            return False
    return True


def folded_copy(model: nn.Module) -> nn.Module:
    """``model`` with every batch norm that follows a conv folded into it,
    as ``inference_model`` makes it, but neither cached nor looked up: for
    a single pass over many images (the frozen backbone's features)."""
    return _fold(model, ())


def _fold(model: nn.Module, keep: Sequence[nn.Module]) -> nn.Module:
    kept = {id(module) for module in keep}
    names = dict(model.named_modules())
    pairs = [
        (conv, norm)
        for conv, norm in _conv_norm_pairs(model)
        if id(names[conv]) not in kept
    ]
    if not pairs:
        return model
    # copy the modules, not their tensors: the folded convs get new ones;
    # and not the modules that the fold leaves alone and that have no
    # modules inside (the head, activations, pooling): a hook on one of them,
    # such as the one the out-of-distribution score puts on the head, then
    # sees the copy's passes too
    folding = {id(names[name]) for pair in pairs for name in pair}
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    shared.update(
        (id(module), module)
        for module in model.modules()
        if id(module) not in folding and next(module.children(), None) is None
    )
    folded = copy.deepcopy(model, memo=shared)
    for module in folded.modules():  # the shared ones keep the model's mode
        if id(module) not in shared:
            module.training = False
    for conv_name, norm_name in pairs:
        conv = folded.get_submodule(conv_name)
        norm = folded.get_submodule(norm_name)
        folded.set_submodule(conv_name, _folded_conv(conv, norm))
        folded.set_submodule(norm_name, _after_norm(norm))
    return folded

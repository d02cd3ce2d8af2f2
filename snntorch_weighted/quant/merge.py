"""Linear chains for the radix twin: every weight layer must read neuron codes.

A radix neuron re-quantises its input, so a weight layer fed by another weight layer's sum (a
linear bottleneck: MobileNet-v2 / MNASNet's projection into the next expansion, ShuffleNet's
depthwise convolution into a 1x1, DenseNet's BatchNorm after a concatenation) has no spiking
counterpart as it stands. :func:`distribute` rewrites the captured float graph, exactly, so that
it does:

* ``L(P(x))`` for weight layers ``L``, ``P`` becomes one merged layer ``M(x)`` (``M = L o P``:
  ``L`` per-channel affine; ``L`` a 1x1 convolution or a Linear; ``P`` a per-channel affine and
  ``L`` without padding);
* ``L(a + b)`` becomes ``L(a) + L'(b)`` (``L'``: ``L`` without bias);
* a per-channel affine of a concatenation becomes the concatenation of per-branch affines, and
  a per-channel affine of an average pool (no padding) is applied before the pool.

Copies are made where a layer's sum feeds several such layers.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, fx, nn

from ..conversion.graph import WEIGHT_LAYERS, UnsupportedLayerError, is_add, is_cat, module_of
from ..conversion.ops import ChannelAffine

__all__ = ["distribute", "is_code"]

_CODE_PASS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)


def is_code(gm: fx.GraphModule, node: fx.Node, memo: dict) -> bool:
    """True when ``node`` carries neuron outputs (input, ReLU, and pools / moves / cat of them)."""
    if node in memo:
        return memo[node]
    module = module_of(gm, node)
    if node.op == "placeholder" or isinstance(module, nn.ReLU):
        result = True
    elif isinstance(module, WEIGHT_LAYERS) or is_add(node) or node.op == "output":
        result = False
    else:
        tensors = [a for a in node.all_input_nodes if a.meta.get("shape") is not None]
        result = all(is_code(gm, a, memo) for a in tensors)
    memo[node] = result
    return result


def _dense(layer: nn.Module) -> Tensor:
    """The weight of a (grouped) convolution as a dense ``[out, in, *k]`` tensor."""
    w = layer.weight.detach()
    groups = getattr(layer, "groups", 1)
    if groups == 1:
        return w
    out_ch, in_g = w.shape[:2]
    dense = w.new_zeros((out_ch, in_g * groups, *w.shape[2:]))
    per = out_ch // groups
    for g in range(groups):
        dense[g * per:(g + 1) * per, g * in_g:(g + 1) * in_g] = w[g * per:(g + 1) * per]
    return dense


def _bias(layer: nn.Module, channels: int, like: Tensor) -> Tensor:
    return layer.bias.detach() if layer.bias is not None else like.new_zeros(channels)


def _is_pointwise(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, (nn.Conv1d, nn.Conv2d)) and all(k == 1 for k in layer.kernel_size)
            and all(s == 1 for s in layer.stride) and not any(_pads(layer)))


def _pads(layer: nn.Module) -> tuple:
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):
        return (padding != "valid",)
    return tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)


@torch.no_grad()
def merge(outer: nn.Module, inner: nn.Module) -> nn.Module | None:
    """The layer computing ``outer(inner(x))`` exactly, or None when it is not one layer."""
    if isinstance(outer, ChannelAffine):
        merged = copy.deepcopy(inner)
        g = outer.weight.detach()
        merged.weight.mul_(g.view(-1, *([1] * (merged.weight.dim() - 1))))
        bias = g * _bias(inner, g.numel(), g) + _bias(outer, g.numel(), g)
        merged.bias = nn.Parameter(bias)
        return merged
    if isinstance(inner, ChannelAffine) and isinstance(outer, WEIGHT_LAYERS) and not any(
            _pads(outer)):
        merged = copy.deepcopy(outer)
        w = _dense(outer)
        g, b = inner.weight.detach(), _bias(inner, inner.weight.numel(), inner.weight)
        shape = (1, -1, *([1] * (w.dim() - 2)))
        bias = _bias(outer, w.shape[0], w) + (w * b.view(shape)).flatten(1).sum(1)
        if isinstance(merged, (nn.Conv1d, nn.Conv2d)):
            merged.groups, merged.in_channels = 1, w.shape[1]
        merged.weight = nn.Parameter(w * g.view(shape))
        merged.bias = nn.Parameter(bias)
        return merged
    if not (_is_pointwise(outer) and isinstance(inner, (nn.Linear, nn.Conv1d, nn.Conv2d))
            and (isinstance(outer, nn.Linear) == isinstance(inner, nn.Linear))):
        return None
    lw = _dense(outer).flatten(1)  # [out, mid]
    pw = _dense(inner)  # [mid, in, *k]
    merged = copy.deepcopy(inner)
    merged.weight = nn.Parameter(torch.einsum("om,m...->o...", lw, pw).contiguous())
    merged.bias = nn.Parameter(lw @ _bias(inner, pw.shape[0], pw) + _bias(outer, lw.shape[0], lw))
    if isinstance(merged, nn.Linear):
        merged.out_features = lw.shape[0]
    else:
        merged.groups, merged.in_channels, merged.out_channels = 1, pw.shape[1], lw.shape[0]
    return merged


def _new_module(gm: fx.GraphModule, base: str, module: nn.Module) -> str:
    name, k = base.replace(".", "_"), 0
    names = dict(gm.named_modules())
    while f"{name}_m{k}" in names:
        k += 1
    gm.add_submodule(f"{name}_m{k}", module)
    return f"{name}_m{k}"


def _call(gm: fx.GraphModule, before: fx.Node, module: nn.Module, arg: fx.Node, base: str,
          shape) -> fx.Node:
    with gm.graph.inserting_before(before):
        node = gm.graph.call_module(_new_module(gm, base, module), (arg,))
    node.meta["shape"] = shape
    return node


def _apply(gm: fx.GraphModule, layer: nn.Module, source: fx.Node, at: fx.Node, name: str,
           shape, memo: dict) -> fx.Node:
    """A node computing ``layer(source)`` with every weight layer reading codes (recursive)."""
    if is_code(gm, source, memo):
        return _call(gm, at, layer, source, name, shape)
    inner = module_of(gm, source)
    if isinstance(inner, WEIGHT_LAYERS):
        merged = merge(layer, inner)
        if merged is not None:
            return _apply(gm, merged, source.args[0], at, name, shape, memo)
    elif is_add(source):
        no_bias = copy.deepcopy(layer)
        no_bias.bias = None
        a = _apply(gm, layer, source.args[0], at, name, shape, memo)
        b = _apply(gm, no_bias, source.args[1], at, name, shape, memo)
        with gm.graph.inserting_before(at):
            total = gm.graph.call_function(source.target, (a, b))
        total.meta["shape"] = shape
        return total
    elif isinstance(layer, ChannelAffine) and is_cat(source) and _cat_dim(source) == 1:
        return _affine_cat(gm, layer, source, at, name, memo)
    elif isinstance(layer, ChannelAffine) and _affine_commutes(inner):
        pre = _apply(gm, layer, source.args[0], at, name, source.args[0].meta["shape"], memo)
        return _call(gm, at, copy.deepcopy(inner), pre, source.name, shape)
    raise UnsupportedLayerError(
        f"node '{at.name}': a {type(layer).__name__} fed by '{source.name}' (a sum, not neuron "
        "outputs) cannot be merged into one radix layer; insert a ReLU between them")


def _cat_dim(node: fx.Node) -> int:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = len(node.meta["shape"]) + 1
    return dim % rank


def _affine_commutes(pool: nn.Module | None) -> bool:
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return True
    return isinstance(pool, nn.AvgPool2d) and not any(_pads(pool)) and not pool.ceil_mode


def _affine_cat(gm, layer: ChannelAffine, cat: fx.Node, at: fx.Node, name: str, memo) -> fx.Node:
    parts, start = [], 0
    for part in cat.args[0]:
        size = part.meta["shape"][0]
        piece = ChannelAffine(layer.weight[start:start + size],
                              None if layer.bias is None else layer.bias[start:start + size])
        parts.append(_apply(gm, piece, part, at, name, part.meta["shape"], memo))
        start += size
    with gm.graph.inserting_before(at):
        node = gm.graph.call_function(torch.cat, (parts, 1))
    node.meta["shape"] = cat.meta["shape"]
    return node


def distribute(gm: fx.GraphModule) -> None:
    """Rewrite ``gm`` (captured with an example: ``meta["shape"]`` set) so that every weight
    layer reads neuron codes (module docs). Raises UnsupportedLayerError where impossible."""
    memo: dict = {}
    for node in list(gm.graph.nodes):
        layer = module_of(gm, node)
        if not isinstance(layer, WEIGHT_LAYERS) or is_code(gm, node.args[0], memo):
            continue
        new = _apply(gm, layer, node.args[0], node, node.target, node.meta["shape"], memo)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        memo.clear()
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()

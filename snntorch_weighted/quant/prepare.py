"""Preparing the radix twin: calibration, graph rewriting (:func:`prepare`) and inspection
(:func:`integer_params`, :func:`integer_activations`); the math is in
:mod:`snntorch_weighted.quant`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from ..conversion.calibration import calibrate, check_batch, first_batch
from ..conversion.graph import WEIGHT_LAYERS, UnsupportedLayerError, capture, is_add, module_of
from ..conversion.ops import ClippedReLU, is_cat, is_move, is_size_expr, replay_move
from .merge import distribute
from .modules import (
    IdentityScale,
    InputQuant,
    QuantLayer,
    QuantOutput,
    QuantReLU,
    SumPool2d,
    _check_bits,
    _Join,
    _Path,
)

__all__ = ["PathParams", "NeuronParams", "prepare", "is_prepared", "twin", "integer_params",
           "integer_activations"]


def _calibrate(gm: fx.GraphModule, data, percentile: float) -> dict[str, float]:
    """Clip per ReLU module: the percentile of its positive activations (the statistics of
    :func:`snntorch_weighted.conversion.calibration.calibrate`)."""
    scales = calibrate(gm, data, "percentile", percentile, progress=False)
    return {node.target: scales[node.name] for node in gm.graph.nodes if node.name in scales}


# --------------------------------------------------------------------------- graph rewriting


@dataclass
class _Value:
    """What a node carries: neuron codes (``kind="code"``) or an integer accumulator, the sum of
    ``terms`` ``(layer node, code node feeding it, post factor)``."""

    kind: str
    terms: list[tuple[fx.Node, fx.Node, float]] = field(default_factory=list)


def _set_module(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)


def _fresh_name(gm: nn.Module, base: str) -> str:
    name, k = base, 0
    names = {n for n, _ in gm.named_modules()}
    while name in names:
        k += 1
        name = f"{base}_{k}"
    return name


def _err(node: fx.Node, kind: str, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"node '{node.name}' ({kind}): {why}")


def _as_acc(gm: fx.GraphModule, node: fx.Node, value: _Value, user: fx.Node) -> _Value:
    """An operand of a sum / concatenation of sums: an accumulator as is, codes through an
    inserted identity path."""
    if value.kind == "acc":
        return value
    name = _fresh_name(gm, f"{user.name}_shortcut")
    gm.add_submodule(name, IdentityScale())
    with gm.graph.inserting_before(user):
        scaled = gm.graph.call_module(name, (node,))
    scaled.meta["shape"] = node.meta["shape"]
    user.replace_input_with(node, scaled)
    return _Value("acc", [(scaled, node, 1.0)])


def _uniform_divisor(node: fx.Node, pool: SumPool2d, in_shape) -> float:
    divisor = pool.divisor(torch.zeros((1, 1, *in_shape[-2:])))
    if not bool((divisor == divisor.flatten()[0]).all()):
        sizes = sorted({float(d) for d in divisor.flatten()})
        other = (divisor[0, 0] != divisor.flatten()[0]).nonzero().tolist()
        raise _err(node, type(pool.pool).__name__, f"its bins have different sizes {sizes} "
                   f"(bins {[tuple(b) for b in other[:8]]} differ from bin (0, 0)) "
                   "after a weight layer: the pooling weights are not one factor that the layer "
                   "can absorb; pool after the ReLU or use an output size that divides the input")
    return 1.0 / float(divisor.flatten()[0])


def _join(gm, node, module, values, num_bits, weight_bits, clips, learn_clip, joins) -> None:
    arg = values[node.args[0]]
    if arg.kind != "acc":
        raise _err(node, type(module).__name__, "a ReLU must follow a Linear/Conv layer, a "
                   "residual add or a concatenation of them (not neuron outputs)")
    ceiling = module.ceiling if isinstance(module, ClippedReLU) else float("inf")
    join = QuantReLU(num_bits, weight_bits, clips[node.target], learn_clip, ceiling)
    _set_module(gm, node.target, join)
    joins.append((node, join, arg.terms))
    values[node] = _Value("code")


def _visit(gm, node, values, args) -> _Value | None:
    """The value of a node that is not a neuron, placeholder or output."""
    module = module_of(gm, node)
    kind = type(module).__name__ if module is not None else str(node.target)
    tensors = [a for a in node.all_input_nodes if a in values]
    if is_size_expr(node):
        return None
    if is_add(node) or (is_cat(node) and any(values[a].kind == "acc" for a in tensors)):
        terms = []
        for a in tensors:
            terms += _as_acc(gm, a, values[a], node).terms
        return _Value("acc", terms)
    if isinstance(module, WEIGHT_LAYERS):
        if args[0].kind == "acc":
            raise _err(node, kind, "two weight layers in a row without a ReLU between them "
                       "cannot be mapped to radix neurons; insert a ReLU or merge the layers")
        _set_module(gm, node.target, QuantLayer(module))
        return _Value("acc", [(node, node.args[0], 1.0)])
    if isinstance(module, nn.MaxPool2d):
        if args[0].kind != "code":
            raise _err(node, kind, "max pooling must act on neuron outputs (after a ReLU or "
                       "on the input), not on sums")
        return args[0]
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        pool = SumPool2d(module)
        _set_module(gm, node.target, pool)
        if args[0].kind == "code":
            return args[0]
        post = _uniform_divisor(node, pool, node.args[0].meta["shape"])
        return _Value("acc", [(lay, src, f * post) for lay, src, f in args[0].terms])
    if isinstance(module, nn.Flatten) or is_move(node) or is_cat(node):
        return _Value(args[0].kind, list(args[0].terms)) if args else None
    raise _err(node, kind, "unsupported node in the captured graph")


def _rewrite(gm: fx.GraphModule, num_bits: int, weight_bits: int, clips: dict[str, float],
             learn_clip: bool) -> None:
    """Replace the captured modules by twin modules and wire joins to their paths."""
    values: dict[fx.Node, _Value] = {}
    joins: list[tuple[fx.Node, _Join, list]] = []
    for node in list(gm.graph.nodes):
        module = module_of(gm, node)
        if node.op == "placeholder":
            gm.add_submodule("input_quant", InputQuant(num_bits))
            with gm.graph.inserting_after(node):
                q = gm.graph.call_module("input_quant", (node,))
            q.meta["shape"] = node.meta["shape"]
            node.replace_all_uses_with(q)
            q.args = (node,)
            values[q] = _Value("code")
        elif node.op == "output":
            arg = node.args[0]
            out = QuantOutput(num_bits, weight_bits)
            gm.add_submodule("output_quant", out)
            with gm.graph.inserting_before(node):
                q = gm.graph.call_module("output_quant", (arg,))
            q.meta["shape"] = arg.meta["shape"]
            node.args = (q,)
            joins.append((q, out, _as_acc(gm, arg, values[arg], q).terms))
        elif node in values:  # the inserted input quantiser
            continue
        elif isinstance(module, nn.ReLU):
            _join(gm, node, module, values, num_bits, weight_bits, clips, learn_clip, joins)
        else:
            args = [values[a] for a in node.all_input_nodes if a in values]
            value = _visit(gm, node, values, args)
            if value is not None:
                values[node] = value
    _wire(gm, joins)
    gm.graph.lint()
    gm.recompile()


# --------------------------------------------------------------------------- maps


class _Maps(dict):
    """Per-element maps ``[1, *shape]`` of nodes; a node not set reads as zeros (size reads are
    evaluated on the maps)."""

    def __missing__(self, node: fx.Node):
        if is_size_expr(node):
            value = replay_move(node, self)
        elif node.meta.get("shape") is not None:
            value = torch.zeros((1, *node.meta["shape"]), dtype=torch.float64)
        else:
            value = None
        self[node] = value
        return value


def _per_channel(node: fx.Node, full: Tensor) -> Tensor:
    flat = full.reshape(1, full.shape[1], -1)
    if not bool((flat == flat[..., :1]).all()):
        raise _err(node, "pool", "its input mixes codes of different scales within a channel")
    return flat[..., :1].unsqueeze(-1)


def _code_maps(gm: fx.GraphModule) -> tuple[_Maps, _Maps, list[fx.Node]]:
    """For every code node: the index of the neuron each element comes from (``ids``) and the
    product of ``1/divisor`` of the sum pools on the way (``factor``)."""
    ids, factor, neurons = _Maps(), _Maps(), []
    for node in gm.graph.nodes:
        module = module_of(gm, node)
        shape = node.meta.get("shape")
        if isinstance(module, (InputQuant, QuantReLU)):
            ids[node] = torch.full((1, *shape), float(len(neurons)), dtype=torch.float64)
            factor[node] = torch.ones((1, *shape), dtype=torch.float64)
            neurons.append(node)
            continue
        inputs = [a for a in node.all_input_nodes if a in ids and ids[a] is not None]
        if not inputs or isinstance(module, (_Join, QuantLayer, IdentityScale)):
            continue
        if isinstance(module, (nn.MaxPool2d, SumPool2d)):
            src = node.args[0]
            out = torch.zeros((1, *shape), dtype=torch.float64)
            ids[node] = _per_channel(node, ids[src]) + out
            fac = _per_channel(node, factor[src]) + out
            if isinstance(module, SumPool2d):
                fac = fac / module.divisor(ids[src])
            factor[node] = fac
        elif module is not None:  # Flatten
            ids[node], factor[node] = module(ids[inputs[0]]), module(factor[inputs[0]])
        elif is_move(node) or is_cat(node):
            ids[node], factor[node] = replay_move(node, ids), replay_move(node, factor)
    return ids, factor, neurons


def _bias_route(gm, order: list[fx.Node], layer_node: fx.Node, end: fx.Node
                ) -> tuple[Tensor, Tensor]:
    """Which bias channel of ``layer_node`` reaches each element of ``end`` (the join's input),
    with which weight: replays the sums, concatenations, moves and (real) average pools."""
    shape = layer_node.meta["shape"]
    channel_dim = len(shape) if module_of(gm, layer_node).kind == "Linear" else 1
    view = [1] * (len(shape) + 1)
    view[channel_dim] = -1
    chan = torch.arange(shape[channel_dim - 1], dtype=torch.float64).view(view)
    weight, index = _Maps(), _Maps()
    weight[layer_node] = torch.ones((1, *shape), dtype=torch.float64)
    index[layer_node] = chan + weight[layer_node] * 0
    live = {layer_node}
    for node in order[order.index(layer_node) + 1: order.index(end) + 1]:
        if not any(a in live for a in node.all_input_nodes) or is_size_expr(node):
            continue
        module = module_of(gm, node)
        if isinstance(module, SumPool2d):
            for maps in (weight, index):
                x = maps[node.args[0]]
                maps[node] = module(x) / module.divisor(x)
        elif module is not None:  # Flatten (joins and layers end a route)
            if isinstance(module, (_Join, QuantLayer, IdentityScale)):
                continue
            weight[node], index[node] = module(weight[node.args[0]]), module(index[node.args[0]])
        elif is_add(node):
            weight[node] = weight[node.args[0]] + weight[node.args[1]]
            index[node] = index[node.args[0]] + index[node.args[1]]
        else:
            weight[node], index[node] = replay_move(node, weight), replay_move(node, index)
        live.add(node)
    w = weight[end]
    idx = torch.where(w > 0, index[end] / w.clamp(min=1e-300), torch.zeros_like(w))
    return idx.round().long(), w


def _wire(gm: fx.GraphModule, joins) -> None:
    """Give every join neuron its paths and every path layer its buffers and join."""
    ids, factor, neurons = _code_maps(gm)
    order = list(gm.graph.nodes)
    for join_node, join, terms in joins:
        paths = []
        for layer_node, code_node, post in terms:
            layer = gm.get_submodule(layer_node.target)
            global_ids = ids[code_node].long()
            used = torch.unique(global_ids)
            local = torch.searchsorted(used, global_ids)
            sources = [neurons[int(i)] for i in used]
            layer.src_ids, layer.src_factor = local, factor[code_node].float()
            if isinstance(layer, QuantLayer) and layer.bias is not None:
                layer.bias_index, w = _bias_route(gm, order, layer_node, join_node.args[0])
                layer.bias_weight = w.float()
            path = _Path(tuple(gm.get_submodule(s.target) for s in sources),
                         tuple(s.target for s in sources), layer, layer_node.target, post)
            layer._link = (join, path)
            paths.append(path)
        join._set_paths(paths)


def _relink_parameters(model: nn.Module, gm: fx.GraphModule) -> None:
    """Make the twin share the user's Parameters where the captured layer is unchanged."""
    for name, module in gm.named_modules():
        if not isinstance(module, QuantLayer):
            continue
        try:
            original = model.get_submodule(name)
        except AttributeError:
            continue
        for attr in ("weight", "bias"):
            mine, theirs = getattr(module, attr), getattr(original, attr, None)
            if (
                isinstance(mine, nn.Parameter)
                and isinstance(theirs, nn.Parameter)
                and mine.shape == theirs.shape
                and torch.equal(mine.detach(), theirs.detach())
            ):
                setattr(module, attr, theirs)


def prepare(
    model: nn.Module,
    num_bits: int = 8,
    weight_bits: int = 8,
    calibration_data=None,
    learn_clip: bool = False,
    percentile: float = 99.99,
) -> fx.GraphModule:
    """The T-bit radix twin of a trained float ``model`` (see the module docs for the math).

    Args:
        model: trained float model with inputs in ``[0, 1]`` (captured by
            :func:`snntorch_weighted.conversion.graph.capture`: BatchNorm folded, Dropout removed).
        num_bits: T, activation bits (= radix spike-train length), 1 .. 16.
        weight_bits: bits of the symmetric integer weights (8 in Wang et al.).
        calibration_data: input batches in ``[0, 1]`` (a tensor, an ``(x, y)`` pair, a Dataset or a
            DataLoader) for the activation clips and the sizes of adaptive pools. Required.
        learn_clip: make each clip :math:`c_l` a trainable ``nn.Parameter`` (PACT).
        percentile: clip = this percentile of each ReLU's activations (100 = max).

    Returns:
        ``model`` itself, prepared in place: its ``forward`` now runs the twin, an
        ``fx.GraphModule`` registered as ``model.radix_twin`` (in train mode if ``model`` was), so
        ``model(x)``, ``model.parameters()``, ``state_dict``, ``.to()`` and ``train()`` /
        ``eval()`` all act on the quantised model. The twin shares the user's ``weight`` /
        ``bias`` Parameter objects for every Linear / Conv that
        capture left unchanged (no BatchNorm folded into it, called once), so an optimiser built
        on ``model.parameters()`` trains the twin, and ``model`` sees the fine-tuned weights.
        Layers with folded BatchNorm get new Parameters (the float model cannot express them):
        build the optimiser on ``model.parameters()`` after ``prepare`` (the replaced originals
        stay in the module, unused). To load a saved state_dict, ``prepare`` a fresh model with
        the same arguments first.

    Raises:
        ValueError: bad ``num_bits`` / ``weight_bits`` / ``percentile``, missing or empty
            calibration data, inputs outside ``[0, 1]``.
        UnsupportedLayerError: a layer or op the radix SNN cannot express (names the node).
    """
    _check_bits("num_bits", num_bits, 1, 16)
    _check_bits("weight_bits", weight_bits, 2, 16)
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if calibration_data is None:
        raise ValueError("prepare needs calibration_data (input batches in [0, 1]) to set the "
                         "activation clips")
    if is_prepared(model):
        raise ValueError("model is already prepared")
    was_training = model.training
    first = first_batch(calibration_data)
    check_batch(first, normalized_input=False)
    device = next((p.device for p in model.parameters()), first.device)
    gm = capture(model, first.to(device))
    clips = _calibrate(gm, calibration_data, percentile)
    distribute(gm)
    _rewrite(gm, num_bits, weight_bits, clips, learn_clip)
    gm.to(device)
    _relink_parameters(model, gm)
    gm.train(was_training)
    model.radix_twin = gm  # registered: parameters, state_dict, .to(), train()/eval() follow
    model.forward = gm.forward  # the user's module now computes the twin
    return model


def _twin_or_none(model: nn.Module) -> fx.GraphModule | None:
    model = getattr(model, "module", model)  # a DDP wrapper
    model = getattr(model, "radix_twin", model)
    if isinstance(model, fx.GraphModule) and any(isinstance(m, QuantOutput)
                                                 for m in model.modules()):
        return model
    return None


def is_prepared(model: nn.Module) -> bool:
    """True for a module prepared by :func:`prepare` (or a DDP wrapper of one)."""
    return _twin_or_none(model) is not None


def twin(model: nn.Module) -> fx.GraphModule:
    """The quantised twin graph of a prepared model (``model.radix_twin``)."""
    gm = _twin_or_none(model)
    if gm is None:
        raise TypeError("expected a model prepared by snntorch_weighted.quant.prepare")
    return gm


_check_prepared = twin


# --------------------------------------------------------------------------- inspection


@dataclass
class PathParams:
    """One input path of a neuron: integer weight (tensor; 0-dim for an identity shortcut)."""

    source: str  # module name of the (first) source neuron ("input_quant" or a ReLU's name)
    layer: str  # module name of the QuantLayer / IdentityScale
    weight: Tensor  # int64
    factor: float  # 1/area of the sum pools between the layer and the neuron
    sources: tuple[str, ...] = ()  # every source neuron (concatenated branches)


@dataclass
class NeuronParams:
    """Integer parameters of one neuron: ``y = clamp(floor((sum w_k*y_k + b) / 2**s), 0, 2**T-1)``.

    For the output neuron ``shift == 0``, no clamp, and ``scale`` maps ``X`` to logits; for hidden
    neurons ``step`` is :math:`\\Delta_l` and ``scale`` is :math:`A_l = \\Delta_l / 2^{s_l}`.
    """

    name: str
    shift: int
    bias: Tensor  # int64, broadcastable against the accumulator
    paths: list[PathParams]
    step: float | None
    scale: float
    output: bool


@torch.no_grad()
def integer_params(model: nn.Module) -> dict[str, NeuronParams]:
    """Integer weights, biases and shifts of every neuron of a prepared model, in graph order."""
    gm = _check_prepared(model)
    out = {}
    for node in gm.graph.nodes:
        module = module_of(gm, node)
        if not isinstance(module, _Join):
            continue
        paths = [PathParams(p.source_names[0], p.layer_name, module.int_weight(p).long(),
                            p.post, p.source_names) for p in module._paths]
        is_out = isinstance(module, QuantOutput)
        out[node.target] = NeuronParams(
            name=node.target,
            shift=int(module.shift()),
            bias=module.int_bias().long(),
            paths=paths,
            step=None if is_out else float(module.step()),
            scale=float(module.acc_scale()),
            output=is_out,
        )
    return out


@torch.no_grad()
def integer_activations(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Integer codes of the input and of every hidden neuron, and the output integers ``X``.

    Keys: ``"input_quant"``, each ReLU's module name, ``"output_quant"``; values ``int64``.
    Runs the model once (in its current dtype; use ``model.double()`` for exactness).
    """
    gm = _check_prepared(model)
    found: dict[str, Tensor] = {}
    handles = []
    for name, module in gm.named_modules():
        if isinstance(module, QuantOutput):
            handles.append(module.register_forward_hook(
                lambda m, i, o, n=name: found.__setitem__(n, m.integer(i[0]))))
        elif isinstance(module, (InputQuant, QuantReLU)):
            handles.append(module.register_forward_hook(
                lambda m, i, o, n=name: found.__setitem__(n, o)))
    try:
        dtype = next(gm.parameters()).dtype
        gm(x.to(dtype))
    finally:
        for h in handles:
            h.remove()
    return {k: v.round().long() for k, v in found.items()}


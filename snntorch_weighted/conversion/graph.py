"""Graph capture for ANN -> SNN conversion: ``torch.fx`` tracing plus canonicalisation.

:func:`capture` turns a trained ``nn.Module`` into a small, canonical ``torch.fx.GraphModule`` that
the converters (rate / weighted in :mod:`snntorch_weighted.conversion.convert`, radix through
:mod:`snntorch_weighted.quant`) walk node by node. After :func:`capture` the graph contains only:

* ``placeholder`` (exactly one input) and ``output`` (exactly one tensor);
* ``call_module`` to ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` (any groups, so depthwise too),
  :class:`~snntorch_weighted.conversion.ops.ChannelAffine`, ``nn.AvgPool2d``,
  ``nn.AdaptiveAvgPool2d``, ``nn.MaxPool2d``, ``nn.Flatten`` and ``nn.ReLU`` (or its subclass
  :class:`~snntorch_weighted.conversion.ops.ClippedReLU`);
* ``call_function`` to :func:`operator.add` with two node arguments (the residual join) and
  ``torch.cat``;
* *moves* (:func:`~snntorch_weighted.conversion.ops.is_move`): view / reshape / flatten /
  transpose / permute / chunk / split / (un)squeeze / indexing and the size reads they use. With
  an example input, a move that mixes samples of the batch is refused by name.

Canonicalisation (all exact for the ANN in eval mode; the captured module computes what the model
computes):

* the model is deep-copied and put in eval mode; the user's model is never modified;
* ``BatchNorm1d/2d`` directly after a ``Linear`` / ``Conv`` (and used only by it) is folded into it
  (``torch.nn.utils.fusion``): ``W' = W g / sqrt(v + eps)``,
  ``b' = (b - m) g / sqrt(v + eps) + beta``; any other BatchNorm becomes a ``ChannelAffine``;
* ``Dropout`` (all variants) and ``Identity`` are removed;
* ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``clamp(min=0)`` become ``nn.ReLU()`` modules;
  ``ReLU6``, ``Hardtanh(0, a)``, ``F.relu6``, ``F.hardtanh(x, 0, a)`` and ``clamp(x, 0, a)``
  become ``ClippedReLU(a)``;
* ``x.mean((2, 3))`` (``keepdim`` either way) becomes ``AdaptiveAvgPool2d(1)`` (+ ``Flatten``);
  ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)`` etc. become ``nn.Flatten()``;
  ``F.avg_pool2d`` / ``F.max_pool2d`` / ``F.adaptive_avg_pool2d`` become the matching modules;
* ``operator.add`` / ``operator.iadd`` / ``torch.add`` / ``Tensor.add`` of two tensors become
  ``operator.add``; ``torch.concat`` becomes ``torch.cat``;
* ``MaxPool2d`` directly followed by a ``ReLU`` (its only user) is commuted to ``ReLU -> MaxPool2d``
  (``max`` and ``relu`` commute because ``relu`` is monotone), so max pooling acts on spikes;
* every ``call_module`` node gets a module of its own (a module called twice, such as
  torchvision's shared ``BasicBlock.relu``, is copied), so each node can be given its own neuron or
  normalisation scale. The owning attribute path is kept; repeated uses get ``_1``, ``_2``, ...

Anything else is listed, every node at once with its op and a hint, in one
:class:`UnsupportedLayerError`; :func:`check` returns that list without raising.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .blockers import Blocker, UnsupportedLayerError, blocker, blockers_error
from .ops import ChannelAffine, ClippedReLU, batch_mixing, is_cat, is_move, is_size_expr

__all__ = [
    "UnsupportedLayerError",
    "Blocker",
    "capture",
    "check",
    "WEIGHT_LAYERS",
    "POOL_LAYERS",
    "SUPPORTED_MODULES",
    "is_add",
    "is_cat",
    "is_move",
    "module_of",
]

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, ChannelAffine)
POOL_LAYERS: tuple[type[nn.Module], ...] = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    *WEIGHT_LAYERS,
    *POOL_LAYERS,
    nn.Flatten,
    nn.ReLU,
)

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
_DROPOUT_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                  F.feature_alpha_dropout, torch.dropout}
_RELU_FUNCS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU_METHODS = {"relu", "relu_"}
_CLAMP_FUNCS = {torch.clamp, torch.clip, torch.clamp_, F.hardtanh, F.hardtanh_, F.relu6}
_CLAMP_METHODS = {"clamp", "clip", "clamp_", "clip_"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_MEAN_DIMS = ({2, 3}, {-2, -1})
_RESHAPE_METHODS = {"view", "reshape"}
def _error(blockers: list[Blocker]) -> UnsupportedLayerError:
    return blockers_error(blockers, ", ".join(t.__name__ for t in SUPPORTED_MODULES))


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else ``None``."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_add(node: fx.Node) -> bool:
    """True for the canonical residual join ``operator.add(a, b)``."""
    return node.op == "call_function" and node.target is operator.add


def _add_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, base: str) -> str:
    """Register ``module`` under a fresh name derived from ``base``."""
    name, k = base, 0
    while _has_submodule(gm, name):
        k += 1
        name = f"{base}_{k}"
    gm.add_submodule(name, module)
    return name


def _has_submodule(gm: nn.Module, name: str) -> bool:
    try:
        gm.get_submodule(name)
    except AttributeError:
        return False
    return True


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, source: fx.Node
                         ) -> fx.Node:
    """Replace ``node`` by ``call_module(module)(source)``."""
    name = _add_module(gm, node, module, node.name)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _arg(node: fx.Node, index: int, key: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)


def _is_batch_size(node, source: fx.Node) -> bool:
    """``source.size(0)``, ``source.shape[0]`` or ``source.size()[0]``."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_method" and node.target == "size" and node.args[0] is source:
        return _arg(node, 1, "dim") == 0
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        inner = node.args[0]
        if not isinstance(inner, fx.Node):
            return False
        if inner.op == "call_function" and inner.target is getattr:
            return inner.args[0] is source and inner.args[1] == "shape"
        if inner.op == "call_method" and inner.target == "size":
            return inner.args[0] is source and len(inner.args) == 1
    return False


def _flatten_source(node: fx.Node) -> fx.Node | None:
    """The input of a flatten-from-dim-1 written as a function/method call, else ``None``."""
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return node.args[0] if (start, end) == (1, -1) else None
    if node.op == "call_method" and node.target in _RESHAPE_METHODS:
        source, shape = node.args[0], node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if len(shape) == 2 and shape[1] == -1 and _is_batch_size(shape[0], source):
            return source
    return None


_POOL_FUNCS: dict[Callable, Callable[[fx.Node], nn.Module]] = {
    F.avg_pool2d: lambda n: nn.AvgPool2d(
        _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0),
        _arg(n, 4, "ceil_mode", False), _arg(n, 5, "count_include_pad", True),
        _arg(n, 6, "divisor_override")),
    F.max_pool2d: lambda n: nn.MaxPool2d(
        _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0),
        _arg(n, 4, "dilation", 1), False, _arg(n, 6, "ceil_mode", False)),
    F.adaptive_avg_pool2d: lambda n: nn.AdaptiveAvgPool2d(_arg(n, 1, "output_size")),
}


def _clamp_bounds(node: fx.Node) -> tuple | None:
    """``(low, high)`` of a clamp / hardtanh / relu6 call, else ``None``."""
    f = node.target
    if node.op == "call_function" and f is F.relu6:
        return 0.0, 6.0
    if node.op == "call_function" and f in (F.hardtanh, F.hardtanh_):
        return _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    if (node.op == "call_function" and f in _CLAMP_FUNCS) or (
            node.op == "call_method" and f in _CLAMP_METHODS):
        return _arg(node, 1, "min"), _arg(node, 2, "max")
    return None


def _clipped(low, high) -> nn.Module | None:
    """``nn.ReLU`` / ``ClippedReLU`` for clamp bounds ``(0, None)`` / ``(0, a > 0)``."""
    if isinstance(low, (int, float)) and low == 0:
        if high is None:
            return nn.ReLU()
        if isinstance(high, (int, float)) and high > 0:
            return ClippedReLU(float(high))
    return None


def _module_replacement(module: nn.Module) -> nn.Module | None:
    if isinstance(module, nn.ReLU6):
        return ClippedReLU(6.0)
    if isinstance(module, nn.Hardtanh):
        return _clipped(module.min_val, module.max_val)
    if isinstance(module, nn.ReLU) and module.inplace:
        return nn.ReLU()
    return None


def _mean_pool(node: fx.Node) -> tuple[fx.Node, bool] | None:
    """``(source, keepdim)`` of a mean over the last two dims, else ``None``."""
    if not ((node.op == "call_method" and node.target == "mean") or
            (node.op == "call_function" and node.target is torch.mean)):
        return None
    dims = _arg(node, 1, "dim")
    dims = {dims} if isinstance(dims, int) else set(dims) if isinstance(dims, (tuple, list)) \
        else None
    if dims not in _MEAN_DIMS or _arg(node, 3, "dtype") is not None:
        return None
    return node.args[0], bool(_arg(node, 2, "keepdim", False))


def _is_eval_stochastic_depth(node: fx.Node) -> bool:
    """torchvision's ``stochastic_depth(x, p, mode, training=False)``: the identity in eval."""
    name = getattr(node.target, "__name__", "")
    return name == "stochastic_depth" and _arg(node, 3, "training", True) is False


def _drop(gm: fx.GraphModule, node: fx.Node) -> None:
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def _canonical_node(gm: fx.GraphModule, node: fx.Node, blockers: list[Blocker]) -> None:
    """Rewrite one functional / method form into its canonical node (module docs)."""
    op, target = node.op, node.target
    if is_size_expr(node):
        return
    if op == "call_function" and (target in _DROPOUT_FUNCS or _is_eval_stochastic_depth(node)):
        _drop(gm, node)
    elif (op == "call_function" and target in _RELU_FUNCS) or (
            op == "call_method" and target in _RELU_METHODS):
        _replace_with_module(gm, node, nn.ReLU(), node.args[0])
    elif (bounds := _clamp_bounds(node)) is not None:
        module = _clipped(*bounds)
        if module is None:
            blockers.append(blocker(gm, node, f"clamp to {bounds} is not a (saturating) ReLU; "
                                     "only clamp(0, a) / clamp(min=0) convert"))
        else:
            _replace_with_module(gm, node, module, node.args[0])
    elif op == "call_function" and target in _POOL_FUNCS:
        if target is F.max_pool2d and _arg(node, 5, "return_indices", False):
            blockers.append(blocker(gm, node, "max_pool2d with return_indices"))
        else:
            _replace_with_module(gm, node, _POOL_FUNCS[target](node), node.args[0])
    elif (mean := _mean_pool(node)) is not None:
        pooled = _replace_with_module(gm, node, nn.AdaptiveAvgPool2d(1), mean[0])
        if not mean[1]:
            with gm.graph.inserting_after(pooled):
                flat = gm.graph.call_module(_add_module(gm, pooled, nn.Flatten(), "flatten"),
                                            (pooled,))
            pooled.replace_all_uses_with(flat)
            flat.args = (pooled,)
    elif (source := _flatten_source(node)) is not None:
        _replace_with_module(gm, node, nn.Flatten(), source)
    elif (op == "call_function" and target in _ADD_FUNCS) or (
            op == "call_method" and target in _ADD_METHODS):
        _canonical_add(gm, node, blockers)
    elif op == "call_function" and target is torch.concat:
        node.target = torch.cat


def _canonical_functions(gm: fx.GraphModule, blockers: list[Blocker]) -> None:
    """Rewrite functional / method forms into modules and ``operator.add``; drop no-ops."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, (*_DROPOUTS, nn.Identity)):
                _drop(gm, node)
            elif (new := _module_replacement(module)) is not None:
                _set_submodule(gm, node.target, new)
        elif node.op in ("call_function", "call_method"):
            _canonical_node(gm, node, blockers)
    gm.graph.eliminate_dead_code()


def _canonical_add(gm: fx.GraphModule, node: fx.Node, blockers: list[Blocker]) -> None:
    if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1 or set(node.kwargs) - {"alpha"}:
        blockers.append(blocker(gm, node, "only a plain a + b of two tensors is supported"))
        return
    a, b = node.args
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        blockers.append(blocker(gm, node, "adding a constant is not supported"))
        return
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(operator.add, (a, b))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _fold_batchnorms(gm: fx.GraphModule, blockers: list[Blocker]) -> None:
    """Fold every BatchNorm into the Linear / Conv that feeds only it; others become affine."""
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if not isinstance(bn, _BATCHNORMS):
            continue
        if not bn.track_running_stats or bn.running_mean is None:
            blockers.append(blocker(gm, node, "BatchNorm without running statistics (it "
                                     "normalises each batch by itself): track running stats"))
            continue
        prev = node.args[0]
        layer = module_of(gm, prev) if isinstance(prev, fx.Node) else None
        if isinstance(layer, WEIGHT_LAYERS[:3]) and len(prev.users) == 1:
            fused = (fuse_linear_bn_eval if isinstance(layer, nn.Linear) else
                     fuse_conv_bn_eval)(layer, bn)
            _set_submodule(gm, prev.target, fused)
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
        else:
            _set_submodule(gm, node.target, ChannelAffine.from_batchnorm(bn))


def _set_submodule(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)


def _commute_maxpool_relu(gm: fx.GraphModule) -> None:
    """``MaxPool -> ReLU`` (the pool's only user) becomes ``ReLU -> MaxPool`` (exact)."""
    for node in list(gm.graph.nodes):
        if not isinstance(module_of(gm, node), nn.ReLU):
            continue
        pool = node.args[0]
        if not (isinstance(module_of(gm, pool), nn.MaxPool2d) and len(pool.users) == 1):
            continue
        # relu(pool(x)) -> pool(relu(x)): swap the two nodes' inputs and outputs.
        source = pool.args[0]
        node.replace_all_uses_with(pool)
        pool.args = (node,)
        node.args = (source,)
        pool.prepend(node)  # keep topological order


def _unique_modules(gm: fx.GraphModule) -> None:
    """Give every ``call_module`` node a module of its own (copies for repeated calls)."""
    seen: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        if node.target in seen:
            module = copy.deepcopy(gm.get_submodule(node.target))
            node.target = _add_module(gm, node, module, node.target)
        seen.add(node.target)


def _validate(gm: fx.GraphModule, blockers: list[Blocker]) -> None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        names = [n.name for n in placeholders]
        blockers.append(Blocker("inputs", str(names), "the model must take exactly one tensor"))
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                blockers.append(Blocker(node.name, "output", "the model must return one tensor, "
                                        f"got {type(node.args[0]).__name__}"))
        elif node.op == "call_module":
            if not isinstance(gm.get_submodule(node.target), SUPPORTED_MODULES):
                blockers.append(blocker(gm, node))
        elif not (is_add(node) or is_move(node)):
            blockers.append(blocker(gm, node))


def _trace(model: nn.Module) -> fx.GraphModule:
    if not isinstance(model, nn.Module):
        raise TypeError(f"capture expects an nn.Module, got {type(model).__name__}")
    copied = copy.deepcopy(model).eval()
    if isinstance(copied, SUPPORTED_MODULES):  # a bare layer: trace it as a one-layer network
        copied = nn.Sequential(copied)
    try:
        gm = fx.symbolic_trace(copied)
    except Exception as err:  # fx raises many error types for data-dependent control flow
        raise UnsupportedLayerError(
            f"torch.fx could not trace {type(model).__name__}: {err}",
            [Blocker("trace", type(model).__name__, str(err))]) from err
    return gm.eval()


def _canonical(model: nn.Module) -> tuple[fx.GraphModule, list[Blocker]]:
    gm = _trace(model)
    blockers: list[Blocker] = []
    _canonical_functions(gm, blockers)
    _fold_batchnorms(gm, blockers)
    _validate(gm, blockers)
    return gm, blockers


def _finish(gm: fx.GraphModule) -> fx.GraphModule:
    _commute_maxpool_relu(gm)
    _unique_modules(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def check(model: nn.Module, example_input: Tensor) -> list[Blocker]:
    """Every node that blocks the conversion of ``model``, without converting (empty: OK).

    Traces and canonicalises a copy of ``model`` like :func:`capture`, runs it on
    ``example_input`` (at least 2 samples are used, to find reshapes that mix the batch) and
    returns one :class:`Blocker` (node, op, hint) per unsupported node.
    """
    try:
        gm, blockers = _canonical(model)
    except UnsupportedLayerError as err:
        return err.blockers
    if blockers:
        return blockers
    gm = _finish(gm)
    try:
        shapes = probe_shapes(gm, example_input)
    except Exception as err:  # the model itself fails on this input
        return [Blocker("input", type(model).__name__, f"the model fails on the example: {err}")]
    return [blocker(gm, n, "mixes samples of the batch: keep the batch axis first and whole "
                     "(e.g. x.view(x.size(0), ...))") for n in batch_mixing(gm, shapes)]


def capture(model: nn.Module, example_input: Tensor | None = None) -> fx.GraphModule:
    """Trace ``model`` with ``torch.fx`` and return its canonical graph (see the module docs).

    Args:
        model: a trained ``nn.Module`` (not modified: a deep copy is traced, in eval mode).
        example_input: input batch; when given, the captured module is run on it (2 samples at
            least), every node's output shape is stored in ``node.meta["shape"]`` (None for a
            non-tensor), moves that mix the batch are refused and the output is checked against
            ``model``. Needed for graphs with moves other than a flatten.

    Returns:
        A ``torch.fx.GraphModule`` in eval mode with only the nodes listed in the module docs.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        UnsupportedLayerError: listing every layer or op that cannot be converted (node, op,
            hint), or a model that fx cannot trace.
    """
    gm, blockers = _canonical(model)
    if blockers:
        raise _error(blockers)
    gm = _finish(gm)
    moves = [n for n in gm.graph.nodes if is_move(n) or is_cat(n)]
    if example_input is None:
        if moves:
            raise ValueError(f"capture needs example_input to check the reshapes "
                             f"{[n.name for n in moves]}")
        return gm
    shapes = probe_shapes(gm, example_input)
    bad = batch_mixing(gm, shapes)
    if bad:
        raise _error([blocker(gm, n, "mixes samples of the batch: keep the batch axis first "
                               "and whole") for n in bad])
    for node in gm.graph.nodes:
        shape = shapes.get(node)
        node.meta["shape"] = None if shape is None else tuple(shape[1:])
    _check_equal(model, gm, example_input)
    return gm


def _probe_batch(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError("example_input must be a tensor [N, ...] with N >= 1")
    x = x[:2]
    return torch.cat([x, x.flip(0) * 0.5]) if x.shape[0] == 1 else x


def probe_shapes(gm: fx.GraphModule, example_input: Tensor) -> dict[fx.Node, torch.Size | None]:
    """Each node's output shape on (up to) 2 samples of ``example_input`` (None: not a tensor)."""
    x = _probe_batch(example_input)
    dtype = next((p.dtype for p in gm.parameters() if p.is_floating_point()), x.dtype)
    shapes: dict[fx.Node, torch.Size | None] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            shapes[n] = out.shape if isinstance(out, Tensor) else None
            return out

    with torch.no_grad():
        _Recorder(gm).run(x.to(dtype))
    return shapes


def _check_equal(model: nn.Module, gm: fx.GraphModule, x: Tensor) -> None:
    reference = copy.deepcopy(model).eval()
    x = _probe_batch(x)
    with torch.no_grad():
        ref, got = reference(x), gm(x)
    if not torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-5):
        raise RuntimeError("captured graph does not reproduce the model's output; please report")

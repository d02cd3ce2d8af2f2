"""Graph capture for ANN -> SNN conversion: ``torch.fx`` tracing plus canonicalisation.

:func:`capture` turns a trained ``nn.Module`` into a small, canonical ``torch.fx.GraphModule`` that
the converters (rate / weighted in :mod:`snntorch_weighted.conversion.convert`, radix in
:mod:`snntorch_weighted.conversion.radix`) can walk node by node. After :func:`capture` the graph
contains only these nodes:

* ``placeholder`` (exactly one input) and ``output`` (exactly one tensor);
* ``call_module`` to ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` (any groups, so depthwise too),
  ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.MaxPool2d``, ``nn.Flatten`` and ``nn.ReLU``;
* ``call_function`` to :func:`operator.add` with two node arguments (the residual join).

Canonicalisation (all exact for the ANN in eval mode; the captured module computes what the model
computes):

* the model is deep-copied and put in eval mode; the user's model is never modified;
* ``BatchNorm1d/2d`` directly after a ``Linear`` / ``Conv`` (and used only by it) is folded into it
  (``torch.nn.utils.fusion``): ``W' = W g / sqrt(v + eps)``,
  ``b' = (b - m) g / sqrt(v + eps) + beta``;
* ``Dropout`` (all variants, module or functional) and ``Identity`` are removed;
* ``F.relu``, ``torch.relu``, ``Tensor.relu`` and in-place variants become ``nn.ReLU()`` modules;
* ``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``,
  ``x.reshape(x.shape[0], -1)`` become ``nn.Flatten()``; ``F.avg_pool2d`` / ``F.max_pool2d`` /
  ``F.adaptive_avg_pool2d`` become the matching modules;
* ``operator.add`` / ``operator.iadd`` / ``torch.add`` / ``Tensor.add`` of two tensors become
  ``operator.add``;
* ``MaxPool2d`` directly followed by a ``ReLU`` (its only user) is commuted to ``ReLU -> MaxPool2d``
  (``max`` and ``relu`` commute because ``relu`` is monotone), so max pooling acts on spikes;
* every ``call_module`` node gets a module of its own (a module called twice, such as
  torchvision's shared ``BasicBlock.relu``, is copied), so each node can be given its own neuron or
  normalisation scale. The owning attribute path is kept; repeated uses get ``_1``, ``_2``, ...

Anything else raises :class:`UnsupportedLayerError` naming the fx node and the layer / op type.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = [
    "UnsupportedLayerError",
    "capture",
    "WEIGHT_LAYERS",
    "POOL_LAYERS",
    "SUPPORTED_MODULES",
    "is_add",
    "module_of",
]

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
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
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_RESHAPE_METHODS = {"view", "reshape"}
_HINTS = {
    nn.ReLU6: "ReLU6 clips at 6 and is not a ReLU; replace it with nn.ReLU and fine-tune",
    nn.Hardtanh: "Hardtanh clips its output and is not a ReLU; replace it with nn.ReLU",
    nn.BatchNorm1d: "BatchNorm can only be folded into a Linear/Conv directly before it",
    nn.BatchNorm2d: "BatchNorm can only be folded into a Linear/Conv directly before it",
}


class UnsupportedLayerError(ValueError):
    """A layer or operation that the ANN -> SNN conversion cannot map (names the fx node)."""


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        name = getattr(node.target, "__name__", None) or repr(node.target)
        module = getattr(node.target, "__module__", None) or ""
        module = "operator" if module == "_operator" else module
        return f"{module}.{name}" if module and module != "builtins" else name
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return f"{node.op} {node.target}"


def _unsupported(gm: fx.GraphModule, node: fx.Node, why: str = "") -> UnsupportedLayerError:
    kind = _describe(gm, node)
    if node.op == "call_module":
        kind = f"{kind} at '{node.target}'"
    hint = ""
    if node.op == "call_module":
        hint = _HINTS.get(type(gm.get_submodule(node.target)), "")
    detail = "; ".join(s for s in (why, hint) if s)
    supported = ", ".join(t.__name__ for t in SUPPORTED_MODULES)
    return UnsupportedLayerError(
        f"node '{node.name}' ({kind}) is not supported for ANN->SNN conversion"
        + (f": {detail}" if detail else "")
        + f". Supported: {supported}, BatchNorm after Linear/Conv, Dropout, Identity, add."
    )


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else ``None``."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_add(node: fx.Node) -> bool:
    """True for the canonical residual join ``operator.add(a, b)``."""
    return node.op == "call_function" and node.target is operator.add


def _add_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, base: str) -> str:
    """Register ``module`` under a fresh name derived from ``base`` and point ``node`` at it."""
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
                         ) -> None:
    """Replace ``node`` by ``call_module(module)(source)``."""
    name = _add_module(gm, node, module, node.name)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


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
    if node.op == "call_function" and node.target is torch.flatten:
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return node.args[0] if (start, end) == (1, -1) else None
    if node.op == "call_method" and node.target == "flatten":
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


def _canonical_functions(gm: fx.GraphModule) -> None:
    """Rewrite functional / method forms into modules and ``operator.add``; drop no-ops."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, (*_DROPOUTS, nn.Identity)):
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
            elif isinstance(module, nn.ReLU) and module.inplace:
                module.inplace = False
            continue
        if node.op not in ("call_function", "call_method"):
            continue
        target = node.target
        if node.op == "call_function" and target in _DROPOUT_FUNCS:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif (node.op == "call_function" and target in _RELU_FUNCS) or (
            node.op == "call_method" and target in _RELU_METHODS
        ):
            _replace_with_module(gm, node, nn.ReLU(), node.args[0])
        elif node.op == "call_function" and target in _POOL_FUNCS:
            if node.target is F.max_pool2d and _arg(node, 5, "return_indices", False):
                raise _unsupported(gm, node, "max_pool2d with return_indices")
            _replace_with_module(gm, node, _POOL_FUNCS[target](node), node.args[0])
        elif (source := _flatten_source(node)) is not None:
            _replace_with_module(gm, node, nn.Flatten(), source)
        elif (node.op == "call_function" and target in _ADD_FUNCS) or (
            node.op == "call_method" and target in _ADD_METHODS
        ):
            _canonical_add(gm, node)
    graph.eliminate_dead_code()


def _canonical_add(gm: fx.GraphModule, node: fx.Node) -> None:
    if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1 or set(node.kwargs) - {"alpha"}:
        raise _unsupported(gm, node, "only a plain a + b of two tensors is supported")
    a, b = node.args
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        raise _unsupported(gm, node, "adding a constant is not supported")
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(operator.add, (a, b))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _fold_batchnorms(gm: fx.GraphModule) -> None:
    """Fold every BatchNorm into the Linear / Conv that feeds it (and nothing else)."""
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if not isinstance(bn, _BATCHNORMS):
            continue
        prev = node.args[0]
        layer = module_of(gm, prev) if isinstance(prev, fx.Node) else None
        if not isinstance(layer, WEIGHT_LAYERS) or len(prev.users) != 1:
            raise _unsupported(gm, node, "BatchNorm must directly follow a Linear/Conv that "
                               "feeds nothing else, so it can be folded into it")
        if not bn.track_running_stats or bn.running_mean is None:
            raise _unsupported(gm, node, "BatchNorm without running statistics cannot be folded")
        if isinstance(layer, nn.Linear):
            fused = fuse_linear_bn_eval(layer, bn)
        else:
            fused = fuse_conv_bn_eval(layer, bn)
        _set_submodule(gm, prev.target, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)


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


def _validate(gm: fx.GraphModule) -> None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        names = [n.name for n in placeholders]
        raise UnsupportedLayerError(f"the model must take exactly one input tensor, got {names}")
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            if node.op == "output" and not isinstance(node.args[0], fx.Node):
                raise UnsupportedLayerError(
                    f"node '{node.name}' (output): the model must return one tensor, got "
                    f"{type(node.args[0]).__name__}")
            continue
        if node.op == "call_module":
            if not isinstance(gm.get_submodule(node.target), SUPPORTED_MODULES):
                raise _unsupported(gm, node)
        elif not is_add(node):
            raise _unsupported(gm, node)


def capture(model: nn.Module, example_input: Tensor | None = None) -> fx.GraphModule:
    """Trace ``model`` with ``torch.fx`` and return its canonical graph (see the module docs).

    Args:
        model: a trained ``nn.Module`` (not modified: a deep copy is traced, in eval mode).
        example_input: optional input batch; when given, the captured module is run on it and
            checked against ``model`` (catches tracing mistakes early).

    Returns:
        A ``torch.fx.GraphModule`` in eval mode whose nodes are only placeholder, output,
        ``call_module`` to ``Linear``/``Conv1d``/``Conv2d``/``AvgPool2d``/``AdaptiveAvgPool2d``/
        ``MaxPool2d``/``Flatten``/``ReLU`` (each node its own module) and ``operator.add``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        UnsupportedLayerError: a layer or op that cannot be converted (message names the fx node
            and the layer type), or a model that fx cannot trace.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"capture expects an nn.Module, got {type(model).__name__}")
    copied = copy.deepcopy(model).eval()
    if isinstance(copied, SUPPORTED_MODULES):  # a bare layer: trace it as a one-layer network
        copied = nn.Sequential(copied)
    try:
        gm = fx.symbolic_trace(copied)
    except Exception as err:  # fx raises many error types for data-dependent control flow
        raise UnsupportedLayerError(
            f"torch.fx could not trace {type(model).__name__}: {err}") from err
    gm.eval()
    _canonical_functions(gm)
    _fold_batchnorms(gm)
    _validate(gm)
    _commute_maxpool_relu(gm)
    _unique_modules(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    if example_input is not None:
        _check_equal(model, gm, example_input)
    return gm


def _check_equal(model: nn.Module, gm: fx.GraphModule, x: Tensor) -> None:
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        ref, got = reference(x), gm(x)
    if not torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-5):
        raise RuntimeError("captured graph does not reproduce the model's output; please report")

"""Counting spikes and synaptic operations of converted SNNs, and MACs of the ANN they came from.

Definitions used throughout (per sample):

* **spikes** of a layer at step t: number of its neurons with a non-zero output at step t
  (graded spikes count once). Only spiking neurons (:class:`snntorch.SpikingNeuron` subclasses)
  count; the non-firing output integrator never spikes.
* **fan-out** of a spike source (the input, a neuron, or a routing layer such as
  :class:`~snntorch_weighted.conversion.layers.SpikeMaxPool2d`): the number of synapses one spike
  of that
  neuron drives, i.e. the number of (path-)connections from it to the input currents of the
  neurons downstream, through stateless layers only. It is computed once per graph, exactly, as
  the gradient of the sum of all neuron input currents with respect to every source, with every
  weight replaced by its non-zero indicator :math:`[W \\ne 0]`, average pooling by sum pooling,
  :class:`~snntorch_weighted.conversion.layers.Scale` by the identity, and every stateful module
  cut (its
  output is a fresh source). This handles stride, padding, groups, pooling and flatten-into-Linear;
  a border pixel of a padded conv has fewer synapses than a centre pixel.
* **synaptic operations** (SynOps) of a source at step t: :math:`\\sum_j s_j(t)\\, f_j` over its
  neurons j, with :math:`f_j` the fan-out (so a spike a max-pool drops costs nothing there; the
  pooled train is counted at the pool's output).
* **ANN MACs** (:func:`ann_macs`): multiply-accumulates of ``Linear`` / ``Conv`` layers for one
  sample: ``out_numel * in_features`` and ``out_numel * in_channels / groups * prod(kernel)``.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import snntorch
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, fx, nn

from ..conversion.layers import Scale
from ..conversion.ops import ChannelAffine
from ..neurons.reset import is_stateful

__all__ = [
    "INPUT",
    "GraphProfile",
    "ann_macs",
    "fanout",
    "is_neuron",
    "is_stateful",
    "profile_graph",
    "steps_to_accuracy",
]

INPUT = "input"
"""Key of the network input (the encoded input spike train) in fan-out / SynOps dictionaries."""

_PASS_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.ReLU)
_IDENTITY_MODULES = (Scale, nn.BatchNorm1d, nn.BatchNorm2d)


def is_neuron(module: nn.Module) -> bool:
    """A spiking neuron: a ``snntorch.SpikingNeuron`` (``Leaky``, ``WeightedLeaky``, ...)."""
    return isinstance(module, snntorch.SpikingNeuron)


# --------------------------------------------------------------------------- fan-out


@dataclass
class GraphProfile:
    """What one pass over a step graph with a single sample finds out.

    Attributes:
        fanout: per source (``INPUT`` or the qualified name of a stateful module), the fan-out of
            each of its neurons, shape of one sample's output (``long``).
        stateful: qualified names of the stateful modules, in graph order.
        max_numel: the largest number of elements of any node's output for one sample (sizes the
            time chunks of the folded runner).
    """

    fanout: dict[str, Tensor]
    stateful: list[str] = field(default_factory=list)
    max_numel: int = 1


def _fetch_attr(graph: fx.GraphModule, target: str) -> Any:
    obj: Any = graph
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _window_counts(in_size: int, out_size: int, device, dtype) -> Tensor:
    """Inputs per output cell of adaptive pooling: ``ceil((i+1)n/m) - floor(i n/m)``."""
    i = torch.arange(out_size, device=device)
    start = torch.div(i * in_size, out_size, rounding_mode="floor")
    end = torch.div((i + 1) * in_size + out_size - 1, out_size, rounding_mode="floor")
    return (end - start).to(dtype)


def _sum_adaptive_pool(x: Tensor, output_size: Any, dims: int) -> Tensor:
    pool = F.adaptive_avg_pool2d if dims == 2 else F.adaptive_avg_pool1d
    y = pool(x, output_size)
    counts = _window_counts(x.shape[-1], y.shape[-1], x.device, x.dtype)
    if dims == 2:
        counts = _window_counts(x.shape[-2], y.shape[-2], x.device, x.dtype)[:, None] * counts
    return y * counts


def _sum_avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, ceil_mode=False, *_, **__):
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, True, 1)


def _binary_module(name: str, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Apply ``module`` with every connection weight replaced by 1 (see the module docstring)."""
    x = args[0] if args else None
    if isinstance(module, nn.Linear):
        return F.linear(x, (module.weight != 0).to(x.dtype))
    if isinstance(module, nn.modules.conv._ConvNd) and hasattr(module, "_conv_forward"):
        return module._conv_forward(x, (module.weight != 0).to(x.dtype), None)
    if isinstance(module, nn.AvgPool2d):
        return _sum_avg_pool2d(x, module.kernel_size, module.stride, module.padding,
                               module.ceil_mode)
    if isinstance(module, nn.AvgPool1d):
        y = _sum_avg_pool2d(x.unsqueeze(-2), (1, module.kernel_size[0]),
                            (1, module.stride[0]), (0, module.padding[0]), module.ceil_mode)
        return y.squeeze(-2)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _sum_adaptive_pool(x, module.output_size, 2)
    if isinstance(module, nn.AdaptiveAvgPool1d):
        return _sum_adaptive_pool(x, module.output_size, 1)
    if isinstance(module, _IDENTITY_MODULES):
        return x
    if isinstance(module, ChannelAffine):  # one synapse per element, where the channel's scale != 0
        return x * module._shaped((module.weight != 0).to(x.dtype), x)
    no_state = next(iter(module.parameters()), None) is None and next(
        iter(module.buffers()), None) is None
    if isinstance(module, _PASS_MODULES) or no_state:
        return module(*args, **kwargs)
    raise ValueError(
        f"cannot count synapses through node {name!r} ({type(module).__name__}): only Linear, "
        "Conv, average pooling, Flatten, Scale and parameter-free layers are supported"
    )


def _spiky(value: Any) -> bool:
    """A tensor derived from a spike source on the binarised pass (not a parameter / constant)."""
    return isinstance(value, Tensor) and value.requires_grad and not isinstance(value, nn.Parameter)


def _binary_function(name: str, fn: Any, args: tuple, kwargs: dict) -> Any:
    """Apply a ``call_function`` node on the binarised pass."""
    tensors = [a for a in args if _spiky(a)]
    if fn in (operator.mul, torch.mul, operator.truediv, torch.div) and any(
            isinstance(a, Tensor) for a in args):  # not sizes (``c * h * w`` of a reshape)
        if len(tensors) != 1:
            raise ValueError(f"cannot count synapses through node {name!r} ({fn.__name__}) of two "
                             "spike-derived tensors")
        return tensors[0]
    if fn in (F.avg_pool2d, torch._C._nn.avg_pool2d):
        return _sum_avg_pool2d(*args, **kwargs)
    if fn is F.adaptive_avg_pool2d:
        return _sum_adaptive_pool(args[0], args[1] if len(args) > 1 else kwargs["output_size"], 2)
    if fn is F.linear:
        return F.linear(args[0], (args[1] != 0).to(args[0].dtype))
    if fn in (F.conv1d, F.conv2d):
        rest = args[3:]
        return fn(args[0], (args[1] != 0).to(args[0].dtype), None, *rest, **kwargs)
    return fn(*args, **kwargs)


def _leaf_like(value: Any) -> Any:
    """Fresh all-ones sources shaped like a stateful module's output (tensor or tuple)."""
    if isinstance(value, Tensor):
        return torch.ones_like(value, dtype=torch.float64).requires_grad_(True)
    if isinstance(value, (tuple, list)):
        return type(value)(_leaf_like(v) for v in value)
    return value


def _stateful_output(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Output structure of a stateful module without touching its state."""
    plain = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
    if is_neuron(module):
        spk = torch.empty_like(plain[0])
        return (spk, spk) if getattr(module, "output", False) else spk
    return copy.deepcopy(module)(*plain, **kwargs)


def profile_graph(graph: fx.GraphModule, example_step: Tensor) -> GraphProfile:
    """Fan-out of every spike source of a step graph, from one binarised pass (see module doc).

    Args:
        graph: the step graph (``SpikingNetwork.graph``): input spikes of one step -> output.
        example_step: one step of input, ``[B, ...]`` (only the first sample's shape is used).

    Returns:
        :class:`GraphProfile`. The network's state is not changed.
    """
    if not isinstance(graph, fx.GraphModule):
        raise TypeError(f"graph must be a torch.fx.GraphModule, got {type(graph).__name__}")
    env: dict[fx.Node, Any] = {}
    sources: dict[str, Tensor] = {}
    currents: list[Tensor] = []
    stateful: list[str] = []
    max_numel = 1
    with torch.enable_grad():
        for node in graph.graph.nodes:
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "placeholder":
                if INPUT in sources:
                    raise ValueError(f"the step graph must have one input, found another: {node}")
                leaf = torch.ones_like(example_step[:1], dtype=torch.float64).requires_grad_(True)
                env[node] = sources[INPUT] = leaf
            elif node.op == "get_attr":
                env[node] = _fetch_attr(graph, node.target)
            elif node.op == "call_module":
                module = graph.get_submodule(node.target)
                if is_stateful(module):
                    if node.target in stateful:
                        raise ValueError(f"stateful module {node.target!r} "
                                         f"({type(module).__name__}) is called twice in the graph")
                    stateful.append(node.target)
                    if is_neuron(module):
                        currents.extend(a for a in args if _spiky(a))
                    env[node] = _leaf_like(_stateful_output(module, args, kwargs))
                    first = env[node][0] if isinstance(env[node], (tuple, list)) else env[node]
                    sources[node.target] = first
                else:
                    env[node] = _binary_module(node.target, module, args, kwargs)
            elif node.op == "call_function":
                env[node] = _binary_function(node.name, node.target, args, kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            if _spiky(env.get(node)):  # batch 1: numel is per sample
                max_numel = max(max_numel, env[node].numel())
        names = list(sources)
        total = sum((c.sum() for c in currents), torch.zeros((), dtype=torch.float64))
        inputs = [sources[n] for n in names]
        grads = torch.autograd.grad(total, inputs, allow_unused=True) if currents else [None] * len(
            names)
    fan = {}
    for name, leaf, grad in zip(names, inputs, grads):
        g = torch.zeros_like(leaf) if grad is None else grad
        fan[name] = g[0].round().long()
    return GraphProfile(fan, stateful, max_numel)


def fanout(graph: fx.GraphModule, example_step: Tensor) -> dict[str, Tensor]:
    """Per-neuron fan-out of every spike source (see :func:`profile_graph`)."""
    return profile_graph(graph, example_step).fanout


# --------------------------------------------------------------------------- ANN and curves


def ann_macs(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of one sample through ``model``'s ``Linear`` and ``Conv`` layers.

    ``Linear``: ``out.numel() / B * in_features``; ``ConvNd``: ``out.numel() / B *
    in_channels / groups * prod(kernel_size)``. Counted with forward hooks during one forward pass
    of ``example_input`` (batch ``B``, first dimension) under ``torch.no_grad``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, Tensor) or example_input.dim() < 1:
        raise ValueError("example_input must be a batched tensor [B, ...]")
    if example_input.shape[0] == 0:
        raise ValueError("example_input has batch size 0")
    total = [0]

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        per_out = output[0].numel()
        if isinstance(module, nn.Linear):
            total[0] += per_out * module.in_features
        else:
            total[0] += per_out * module.in_channels // module.groups * math.prod(
                module.kernel_size)

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


def steps_to_accuracy(curve: Tensor, target: float, stay: bool = True) -> int | None:
    """First step (1-based) at which an accuracy curve reaches ``target``.

    With ``stay=True`` (default) the step is the first ``t`` such that ``curve[t'] >= target`` for
    **every** ``t' >= t`` (reached and never lost again within the simulated window), which is the
    robust reading of "steps to reach ANN accuracy within 0.1 / 1 %p": use
    ``target = ann_accuracy - 0.001`` or ``- 0.01`` (accuracies as fractions). With ``stay=False``
    it is the first step where ``curve >= target``. Returns ``None`` if never reached (with
    ``stay=True``: if the last step is below target).
    """
    curve = torch.as_tensor(curve).detach().flatten().cpu()
    if curve.numel() == 0:
        raise ValueError("curve is empty")
    ok = curve >= target
    if not stay:
        hits = torch.nonzero(ok)
        return int(hits[0]) + 1 if hits.numel() else None
    if not bool(ok[-1]):
        return None
    failing = torch.nonzero(~ok)
    return int(failing[-1]) + 2 if failing.numel() else 1

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

from ..conversion.layers import Scale, SpikeMaxPool2d
from ..neurons.reset import is_stateful

__all__ = [
    "INPUT",
    "GraphProfile",
    "SpikeRecorder",
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
DEFER_BYTES = 4 * 2**20
"""Spikes a deferred counting hook collects per module before counting them as one block."""
DEFER_STEP_BYTES = 2**18
"""Largest step of spikes that is deferred; a larger one is counted at once (its kernels are long
enough that launching them costs little, and it is still in cache)."""


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
    if fn in (operator.mul, torch.mul, operator.truediv, torch.div):
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


# --------------------------------------------------------------------------- recording


_Reduction = tuple[int | tuple[int, ...], Tensor | None]
"""What :meth:`SpikeRecorder.take` sums a step over, and the per-position fan-out (if any)."""


class SpikeRecorder:
    """Counts spikes and SynOps per step, on device, with no host sync.

    Use as a context manager around the steps (forward hooks on ``modules`` hand each output to
    :meth:`take`), or call :meth:`take` directly with each output as it is made (the step loop
    of :func:`~snntorch_weighted.simulation.runner.simulate` does: no hooks).
    Spikes are counted with a sum and a matrix-vector product of the flattened spikes
    ``[t, B, N]`` (spike count; SynOps with the fan-out ``f``), per step and sample (a sum and a
    product with a contiguous vector are several times faster than one product with an
    ``[N, 2]`` matrix at batch 1). When ``f`` is the same in every channel (a convolution with
    all weights non-zero reads the spikes), the spikes are summed over channels first and both
    counts come from those per-position sums: one pass over the spikes instead of two.
    For modules whose outputs are fresh tensors (neurons, ``SpikeMaxPool2d``) :meth:`take` first
    reduces each step of 0/1 spikes to what the counts need, while it is still in cache
    (:meth:`_reduction`: the per-position sums over channels where the fan-out is the same in
    every channel, the count per sample where no SynOps are reported), so the step's spikes
    are not kept; these sums (or the spikes, where they cannot be reduced) of at most
    ``DEFER_STEP_BYTES`` per step are kept and counted in blocks of about ``DEFER_BYTES`` (fewer
    kernel launches per step); larger steps and other modules are counted at every call.
    :meth:`observe` counts a block given directly (the time-folded runner, where no per-step
    hook fires).
    Spikes are taken as 0/1 (graded spikes of a neuron with ``graded_spikes_factor != 1`` are
    counted as ``!= 0``). Only what is reported is computed: no spike sum for routing layers, no
    product for a neuron whose fan-out is all zero (its spikes feed a spike max-pool). The
    product runs in float32 when it is exact there (``N < 2**24`` and ``sum(f) < 2**24``, so no
    partial sum can round), else in float64. :meth:`stacked` returns ``[T, B]`` tensors.
    :meth:`renewed` gives a recorder for the next run that shares the tables built here.

    Args:
        modules: name -> module to watch (neurons and routing layers).
        fanouts: name -> per-neuron fan-out (from :func:`profile_graph`); SynOps are reported for
            these names.
        count_spikes: names whose spikes are reported (the neurons).
        keep_trains: also keep the full spike trains of ``count_spikes`` (memory: ``T*B*N``).
    """

    def __init__(
        self,
        modules: dict[str, nn.Module],
        fanouts: dict[str, Tensor],
        count_spikes: set[str],
        keep_trains: bool = False,
    ) -> None:
        self.modules = modules
        self.fanouts = {n: f.flatten() for n, f in fanouts.items() if n in modules}
        self.count_spikes = {n for n in count_spikes if n in modules}
        # neurons whose spikes drive no synapse (e.g. into a spike max-pool): SynOps are zeros
        self._silent = {n for n in self.count_spikes
                        if n in self.fanouts and not bool(self.fanouts[n].any())}
        self._binary = {n: _is_binary(m) for n, m in modules.items()}
        self._deferred = {n: _fresh_outputs(m) for n, m in modules.items()}
        self._weights: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self._position_fans: dict[tuple, Tensor | None] = {}  # see _position_fan
        self._reductions: dict[tuple, _Reduction | None] = {}  # see _reduction
        self._begin(keep_trains)

    def _begin(self, keep_trains: bool) -> None:
        """Empty per-run state."""
        self.keep_trains = keep_trains
        self.records: dict[str, list[tuple[Tensor, Tensor]]] = {n: [] for n in self.modules}
        self.trains: dict[str, list[Tensor]] = {n: [] for n in self.count_spikes}
        self.num_neurons: dict[str, int] = {}
        self._handles: list[Any] = []
        self._pending: dict[str, list[Tensor]] = {n: [] for n, d in self._deferred.items() if d}
        self._limits: dict[str, int] = {}
        self._reduced: dict[str, _Reduction | None] = {}  # this run's _reduction

    def renewed(self, keep_trains: bool = False) -> SpikeRecorder:
        """A recorder for a new run over the same modules that shares this one's tables (the
        fan-outs in the counting dtype, which modules spike 0/1), so a run has no set-up work."""
        new = copy.copy(self)
        new._begin(keep_trains)
        return new

    def _weight(self, name: str, flat: Tensor) -> Tensor:
        """The fan-out ``[N]`` of one module in the counting dtype, on ``flat``'s device."""
        n = flat.shape[-1]
        key = (name, flat.dtype, flat.device)
        fan = self._weights.get(key)
        if fan is None or fan.numel() != n:
            fan = self.fanouts.get(name)
            if fan is None:
                fan = torch.zeros(n, dtype=torch.long)
            elif fan.numel() != n:
                raise ValueError(f"module {name!r} emitted {n} neurons per sample but its fan-out "
                                 f"has {fan.numel()} entries (input shape changed since "
                                 "profiling?)")
            fan = self._weights[key] = counting_fan(fan, flat.dtype, flat.device)
        self.num_neurons[name] = n
        return fan

    def _position_fan(self, name: str, block: Tensor, fan: Tensor) -> Tensor | None:
        """The fan-out per position ``[H*W...]`` when it is the same in every channel of
        ``block`` ``[t, B, C, ...]`` (a convolution reading all channels with all weights
        non-zero), else None. Then :math:`\\sum_i s_i f_i = \\sum_p f_p \\sum_c s_{c,p}`: the
        spikes are read once (a sum over channels), not twice (a sum and a product); exact in
        the counting dtype for the same reason as the product (every partial sum is at most
        ``sum(f)``)."""
        if block.dim() < 4:
            return None
        key = (name, fan.dtype, fan.device, tuple(block.shape[2:]))
        if key not in self._position_fans:
            rows = fan.view(block.shape[2], -1)
            shared = bool((rows == rows[0]).all())  # once per module and shape
            self._position_fans[key] = rows[0].contiguous() if shared else None
        return self._position_fans[key]

    def observe(self, name: str, output: Any, steps: int | None = None) -> None:
        """Count one output of module ``name``: one step ``[B, ...]``, or ``steps`` steps
        ``[steps, B, ...]`` at once (the folded runner's blocks; no per-step hooks fire there).
        A tuple output counts its first element (the spikes)."""
        spk = (output[0] if isinstance(output, (tuple, list)) else output).detach()
        block = spk if steps is not None else spk.unsqueeze(0)
        flat = block.flatten(2)
        fan = self._weight(name, flat)
        if not self._binary[name]:
            flat = flat.ne(0)
        if flat.dtype != fan.dtype:
            flat = flat.to(fan.dtype)
        # spikes, SynOps: [t, B] each, only what is reported and not known to be zero
        product = name in self.fanouts and name not in self._silent
        shared = self._position_fan(name, block, fan) if product else None
        if shared is not None:  # one pass over the spikes: per-position sums over channels
            flat, fan = flat.unflatten(2, (block.shape[2], -1)).sum(2), shared
        self._record(name, flat, fan if product else None)
        if self.keep_trains and name in self.trains:
            self.trains[name].append(block if steps is not None else block.clone())

    def _record(self, name: str, flat: Tensor, fan: Tensor | None) -> None:
        """Record the counts of ``flat`` ``[t, B, R]`` (0/1 spikes, or per-position sums of them,
        in the counting dtype): spikes ``flat.sum(2)`` when reported, SynOps ``flat @ fan`` (no
        ``fan``: none reported)."""
        counts = flat.sum(2) if name in self.count_spikes else None
        synops = flat @ fan if fan is not None else None
        self.records[name].append((counts, synops))

    def _reduction(self, name: str, spk: Tensor) -> _Reduction | None:
        """How :meth:`take` reduces a step of ``name``'s spikes ``spk`` ``[B, C, ...]`` as soon
        as it is made (while in cache; the step's spikes are then not kept): ``(dims, f_p)``,
        one ``spk.sum(dims)``, cached per module and step shape:

        * ``(1, f_p)``: to the per-position sums over the C channels ``[B, ...]``, counted later
          against the per-position fan-out ``f_p`` (:meth:`_position_fan`: the same in every
          channel): spikes :math:`\\sum_p \\sum_c s_{c,p}`,
          SynOps :math:`\\sum_p f_p \\sum_c s_{c,p}`;
        * ``((1, ..., d-1), None)``: to the spike count per sample ``[B]`` (no SynOps reported:
          a neuron feeding a spike max-pool);
        * None: not reduced, the spikes are kept (graded spikes, fan-outs that differ between
          channels, counts in another dtype, or the trains are kept).

        Exact: the spikes are 0/1 in the counting dtype and every partial sum is at most the
        number of neurons or ``sum(f)`` (see the class docstring)."""
        key = (name, tuple(spk.shape), spk.dtype, spk.device)
        if key not in self._reductions:
            reduction = None
            fan = (self._weight(name, spk.flatten(1).unsqueeze(0))  # checks the size
                   if self._binary[name] and spk.dim() >= 3 else None)
            if fan is None or fan.dtype != spk.dtype:
                pass  # not 0/1, no channels, or counted in another dtype: kept whole
            elif name not in self.fanouts or name in self._silent:
                if name in self.count_spikes:
                    reduction = (tuple(range(1, spk.dim())), None)
            else:
                shared = self._position_fan(name, spk.unsqueeze(0), fan)
                reduction = None if shared is None else (1, shared)
            self._reductions[key] = reduction
        return self._reductions[key]

    def take(self, name: str, output: Any) -> None:
        """One step's output of module ``name`` (what its forward hook sees): counted now, or
        kept for a block when the module's outputs are fresh tensors, reduced to what the counts
        need first where possible (:meth:`_reduction`; one kernel, no reshape: every call
        counts in a step)."""
        if not self._deferred[name]:
            self.observe(name, output)
            return
        spk = output[0] if isinstance(output, (tuple, list)) else output
        if spk.requires_grad:
            spk = spk.detach()
        if name not in self._reduced:  # the first step of this run
            self._reduced[name] = None if self.keep_trains else self._reduction(name, spk)
            self.num_neurons[name] = spk[0].numel()
        reduction = self._reduced[name]
        if reduction is not None:
            spk = spk.sum(reduction[0])
        pending = self._pending[name]
        pending.append(spk)
        limit = self._limits.get(name)
        if limit is None:  # steps per block, from the first step's size
            size = max(spk.numel() * spk.element_size(), 1)
            limit = self._limits[name] = DEFER_BYTES // size if size <= DEFER_STEP_BYTES else 1
        if len(pending) >= limit:
            self._flush(name)

    def _flush(self, name: str) -> None:
        """Count the steps a deferred hook has collected, as one block."""
        pending = self._pending.get(name)
        if not pending:
            return
        reduction = self._reduced.get(name)
        if reduction is None:
            if len(pending) == 1:
                self.observe(name, pending.pop())  # no stack copy for one step
            else:
                self.observe(name, torch.stack(pending), steps=len(pending))
                pending.clear()
            return
        block = torch.stack(pending)
        pending.clear()
        if reduction[1] is None:  # [t, B]: the spike counts themselves
            self.records[name].append((block, None))
        else:  # [t, B, ...] per-position sums, SynOps against the per-position fan-out
            self._record(name, block.flatten(2), reduction[1])

    def __enter__(self) -> SpikeRecorder:
        if self._handles:
            raise RuntimeError("this recorder is already recording; use renewed() for another run")
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(
                lambda module, inputs, output, name=name: self.take(name, output)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name in list(self._pending):
            self._flush(name)

    def stacked(self) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """``(spikes, synops, trains)``: per-name ``[T, B]`` counts (``long``) and spike trains."""
        for name in list(self._pending):
            self._flush(name)
        # exact integers in float (see the class docstring): .long() converts exactly
        spikes = {n: cat_blocks([c for c, _ in v]).long() for n, v in self.records.items()
                  if v and n in self.count_spikes}
        synops = {n: torch.zeros_like(spikes[n]) if n in self._silent
                  else cat_blocks([s for _, s in v]).long()
                  for n, v in self.records.items() if v and n in self.fanouts}
        trains = {}
        for name, values in self.trains.items():
            if values:
                trains[name] = torch.cat(values)
        return spikes, synops, trains


def counting_fan(fan: Tensor, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """A fan-out, flattened to ``[N]``, on ``device`` in the dtype its SynOps product with spikes
    of ``dtype`` runs in: float32 when that product is exact (``N < 2**24``, ``sum(f) < 2**24``:
    no partial sum can round; float64 spikes stay float64), else float64."""
    exact32 = fan.numel() < 2**24 and int(fan.sum()) < 2**24 and dtype != torch.float64
    return fan.flatten().to(device=device,
                            dtype=torch.float32 if exact32 else torch.float64).contiguous()


def cat_blocks(blocks: list[Tensor]) -> Tensor:
    """The blocks concatenated over time (a single block as is)."""
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


def _fresh_outputs(module: nn.Module) -> bool:
    """Whether every call returns new spike tensors, never changed afterwards, so a hook may
    keep them and count several steps at once: the neurons and ``SpikeMaxPool2d`` (a radix
    ``Delay`` may hand out views of its ring buffer, and unknown modules are not trusted)."""
    return is_neuron(module) or isinstance(module, SpikeMaxPool2d)


def _is_binary(module: nn.Module) -> bool:
    """Whether a module's spikes are 0/1 (not graded), checked once before the run.

    Only neurons are trusted: a routing layer may carry scaled spikes (a radix ``Delay`` after
    the ``Scale`` of an identity shortcut), so its output is counted as ``!= 0``.
    """
    if isinstance(module, SpikeMaxPool2d):
        return True  # routes its input's spikes (a neuron's or a pool's in converted nets)
    if not is_neuron(module):
        return False
    factor = getattr(module, "graded_spikes_factor", 1.0)
    return bool(torch.all(torch.as_tensor(factor) == 1))


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

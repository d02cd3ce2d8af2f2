"""Running converted SNNs: accuracy over time, spike / SynOp counts, early decision, time folding.

:func:`simulate` resets a :class:`~snntorch_weighted.conversion.network.SpikingNetwork`, encodes
the inputs
(``snn.encode``), runs ``num_steps`` steps and returns a :class:`SimulationResult`:

* the output membrane over time ``mem`` ``[T, B, C]``, the decoded ANN-output estimate per step
  (``snn.decode``) and the prediction per step :math:`\\arg\\max_i V_i^L(t)` (Kim eq. 15-17);
* the accuracy-vs-time curve when labels are given;
* per layer and per sample the spikes and synaptic operations per step (:mod:`.metrics`);
* with ``early_decision=(theta, T1)`` Kim's Algorithm 1 (:mod:`.decision`) and the spikes /
  SynOps counted only up to each sample's decision time.

Radix networks (``coding="radix"``) produce their output once per period: the membrane is read at
period ends (steps ``k * T``, 1-based) and held until the next one (zeros before the first), and
``num_steps`` defaults to ``snn.latency`` (``(L + 1) * T``).

**Time folding** (``fold``). The step loop calls the whole graph once per step. The folded runner
instead walks the graph node by node over a block of ``t`` steps: stateless nodes (``Linear``,
``Conv``, pooling, ``Flatten``, ``add``, ``Scale``) run once on the block with time folded into
the batch (``[t * B, ...]``), stateful modules (neurons, spike max-pool: anything with a
``reset_mem``) step through the ``t`` steps: through their ``forward_steps(x[t, B, ...])`` when
they have one (the package's neurons and clocked layers: the same kernels as ``forward`` per step
without the per-call overhead; ``SpikeMaxPool2d`` pools the whole block at once), else by calling
the module once per step. Both orders compute the same numbers because every node's
output at step t depends only on its inputs at step t and its own state. The results are
bit-identical to the step loop whenever every weight layer's output row does not depend on how many
rows it is computed with. That always holds when the sums are exact (radix nets in float64,
weights with few significant bits: tested), but not for arbitrary float32 weights: BLAS picks the
kernel and summation order by shape, e.g. MKL on this CPU rounds ``Linear`` differently for 1-2
rows (gemv / small-M path) than for >= 4 rows (measured: every row of a 4096->512 layer differed
in the last bit at 1 or 2 rows, none at 4, 8, 64; convolutions were batch-invariant). On
the converted Net4 at batch 1 this moved the output membranes by about 4e-9 with identical spikes;
a last-bit difference flips a spike only when a membrane lands exactly on its threshold, after
which the trains may diverge (statistically equivalent, not identical). There is no cheap general
fix (only per-step calls, i.e. no folding, guarantee the loop's kernels): use ``fold=False`` when
bit-for-bit agreement with the step loop matters.
Chunk rule (``chunk_size=None``): ``t = clamp(floor(4 MiB / (B * max_numel * itemsize)), 1, T)``
with ``max_numel`` the largest per-sample activation of any node, so each folded activation stays
around 4 MiB. ``fold="auto"`` (the default) folds when that gives ``t >= 2`` and uses the step
loop otherwise (large batches already fill the weight layers). Measured speed-ups: BENCHMARKS.md,
section "speed" (``benchmarks/speed.py``).

**Radix shortcut** (``shortcut=True`` or :func:`radix_shortcut`): a radix SNN equals its quantised
twin bit for bit, so the identical result (output membranes, spikes and SynOps per step and layer)
is computed per period on integer codes instead of per step; only on request.

**Input reuse** (``reuse_input``, both runners): weighted and radix input trains are periodic
(period K, resp. T), so everything computed from the input alone through stateless layers (the
first weight layer's currents) is computed for one period only: the folded runner gathers it by
phase for every block, the step loop keeps the first period's values (one per phase) and feeds
step t the values of step ``t mod P`` (the same kernels on the same values: identical results).
Forward hooks of your own on those layers therefore fire during the first period only
(``reuse_input=False`` runs them at every step).

**Membranes in place** (step loop): hidden :class:`~snntorch_weighted.neurons.WeightedLeaky`
neurons that do not return their membrane integrate into it in place during the run
(:func:`~snntorch_weighted.neurons.membranes_in_place`: same kernels, identical values, one
membrane-sized buffer less per neuron and step); a hook of your own that keeps ``module.mem``
must clone it. Outside ``simulate`` the neurons make a new membrane every step, as in snntorch.

**Quick steps** (step loop, while nothing is hooked): after its first step of a run each
:class:`~snntorch_weighted.neurons.WeightedLeaky` and
:class:`~snntorch_weighted.conversion.layers.SpikeMaxPool2d` steps without ``forward``'s per-step
bookkeeping (:func:`~snntorch_weighted.neurons.clock.quick_steps`: the same kernels, the clock
counted on
the host and written back to ``module.step`` when the run ends).

**Counting** (:class:`~snntorch_weighted.simulation.metrics.SpikeRecorder`) of the hidden neurons
and
routing layers (spike max-pool, delays): spikes and SynOps (a sum and a matrix-vector product, or
one sum over channels when the fan-out is the same in every channel) on device, with no host
sync. The step loop runs a copy of the step graph that hands each of these
modules' outputs to the recorder right after the call (:func:`_stepper`: the same modules run,
so hooks of your own fire at every step, but none of the recorder's: a hooked call costs several
microseconds; while none of the graph's modules has a hook and there are no global ones, the copy
calls their ``forward`` directly, which is what ``nn.Module.__call__`` does then, without its
per-call cost: checked at every run); the spikes of neurons and spike max-pools are reduced at
once to what the counts need (per-position sums over channels, or counts per sample), and those
are counted in blocks of steps of about 4 MiB when a step takes at most 256 KiB (fewer kernel
launches), else one step at a time.
``forward_steps`` blocks of the folded runner are counted directly (no per-step hooks fire
there, so use ``fold=False`` to see every step in hooks of your own); stateful modules it steps
one by one are counted by forward hooks. Input spikes and their SynOps are counted from the
encoded train.
Spike totals exclude the input; SynOps totals include the input layer's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn
from torch.nn.modules import module as _torch_module

from .. import spikegen
from ..conversion.network import SIMULATE_CACHE
from ..neurons.reset import stateful_modules
from . import decision as _decision
from .decision import EarlyDecision, gather_at_time
from .metrics import (
    INPUT,
    GraphProfile,
    SpikeRecorder,
    ann_macs,
    cat_blocks,
    counting_fan,
    is_neuron,
    is_stateful,
    profile_graph,
)
from .metrics import steps_to_accuracy as steps_to_accuracy

__all__ = ["SimulationResult", "simulate", "radix_shortcut", "steps_to_accuracy",
           "auto_chunk_size"]

CHUNK_BYTES = 4 * 2**20
"""Target size of one folded activation in the automatic chunk rule."""
Observer = Callable[[str, Any, int], None]  # (module name, block output, steps)
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")  # torch.nn.modules.module's, see _plain_calls


@dataclass
class SimulationResult:
    """Everything :func:`simulate` measured. Tensors stay on the network's device.

    Attributes:
        coding: the network's coding.
        num_steps: T.
        mem: output-integrator membrane after each step, ``[T, B, C]``.
        readout: the membrane the decision is read from, ``[T, B, C]`` (``mem`` itself, or for
            radix the membrane held from the last period end).
        estimate: decoded ANN-output estimate after each step, ``[T, B, C]``.
        predictions: :math:`\\arg\\max` of ``readout`` per step, ``[T, B]`` (Kim eq. 17).
        accuracy: fraction correct per step, ``[T]`` (``None`` without labels).
        labels: the labels given, ``[B]``.
        spikes: per hidden neuron layer, spikes per step and sample, ``[T, B]`` (``long``).
        synops: per spike source (``"input"``, neuron layers, routing layers), synaptic operations
            per step and sample, ``[T, B]`` (``long``).
        input_spikes: non-zero input entries per step and sample, ``[T, B]``.
        num_neurons: neurons per hidden layer (per sample).
        fanout: per source, the fan-out of each neuron (one sample's shape).
        ann_macs: MACs of one sample through the ANN (when ``model`` was given).
        layer_trains: full spike trains ``[T, B, ...]`` per layer (``record_layers=True``).
        decision: Kim Algorithm 1 result (``early_decision=(theta, T1)``).
        folded: whether the folded runner was used; ``chunk_size``: its time block.
        shortcut: computed by :func:`radix_shortcut` (per period) instead of step by step.
    """

    coding: str
    num_steps: int
    mem: Tensor
    readout: Tensor
    estimate: Tensor
    predictions: Tensor
    accuracy: Tensor | None
    labels: Tensor | None
    spikes: dict[str, Tensor]
    synops: dict[str, Tensor]
    input_spikes: Tensor
    num_neurons: dict[str, int]
    fanout: dict[str, Tensor]
    ann_macs: int | None = None
    layer_trains: dict[str, Tensor] = field(default_factory=dict)
    decision: EarlyDecision | None = None
    folded: bool = False
    chunk_size: int = 1
    shortcut: bool = False

    # ---- totals over layers
    @property
    def spikes_per_step(self) -> Tensor:
        """Spikes of all hidden neurons per step and sample ``[T, B]`` (input excluded)."""
        return _sum_layers(self.spikes, self.input_spikes)

    @property
    def synops_per_step(self) -> Tensor:
        """Synaptic operations of all sources (input included) per step and sample ``[T, B]``."""
        return _sum_layers(self.synops, self.input_spikes)

    @property
    def total_spikes(self) -> Tensor:
        """Spikes per sample over the whole run ``[B]``."""
        return self.spikes_per_step.sum(0)

    @property
    def total_synops(self) -> Tensor:
        """Synaptic operations per sample over the whole run ``[B]``."""
        return self.synops_per_step.sum(0)

    @property
    def firing_rate(self) -> Tensor:
        """Mean fraction of hidden neurons spiking at each step, ``[T]`` (batch average)."""
        total = max(sum(self.num_neurons.values()), 1)
        return self.spikes_per_step.double().mean(1) / total

    # ---- early decision
    def _need_decision(self) -> EarlyDecision:
        if self.decision is None:
            raise ValueError("no early decision: call simulate(..., early_decision=(theta, T1))")
        return self.decision

    @property
    def spikes_at_decision(self) -> Tensor:
        """Spikes per sample counted up to (including) its decision step ``[B]``."""
        return gather_at_time(self.spikes_per_step, self._need_decision().time)

    @property
    def synops_at_decision(self) -> Tensor:
        """Synaptic operations per sample up to its decision step ``[B]``."""
        return gather_at_time(self.synops_per_step, self._need_decision().time)

    @property
    def layer_spikes_at_decision(self) -> dict[str, Tensor]:
        """Per layer, spikes per sample up to its decision step ``[B]``."""
        time = self._need_decision().time
        return {name: gather_at_time(s, time) for name, s in self.spikes.items()}

    @property
    def early_accuracy(self) -> Tensor | None:
        """Accuracy of the early decisions (0-dim tensor), ``None`` without labels."""
        if self.labels is None:
            return None
        return (self._need_decision().decision == self.labels).double().mean()

    def steps_to_accuracy(self, target: float, stay: bool = True) -> int | None:
        """See :func:`snntorch_weighted.simulation.metrics.steps_to_accuracy` (needs labels)."""
        if self.accuracy is None:
            raise ValueError("no accuracy curve: pass labels to simulate")
        return steps_to_accuracy(self.accuracy, target, stay)

    def summary(self) -> dict[str, float]:
        """Plain numbers for reports (one host sync)."""
        out = {
            "num_steps": float(self.num_steps),
            "spikes_per_sample": float(self.total_spikes.double().mean()),
            "synops_per_sample": float(self.total_synops.double().mean()),
            "input_spikes_per_sample": float(self.input_spikes.sum(0).double().mean()),
        }
        if self.accuracy is not None:
            out["final_accuracy"] = float(self.accuracy[-1])
        if self.ann_macs is not None:
            out["ann_macs"] = float(self.ann_macs)
        if self.decision is not None:
            out["mean_decision_time"] = float(self.decision.mean_time())
            out["spikes_at_decision"] = float(self.spikes_at_decision.double().mean())
            out["synops_at_decision"] = float(self.synops_at_decision.double().mean())
            if self.labels is not None:
                out["early_accuracy"] = float(self.early_accuracy)
        return out


def _sum_layers(per_layer: dict[str, Tensor], like: Tensor) -> Tensor:
    total = torch.zeros_like(like, dtype=torch.long)
    for value in per_layer.values():
        total = total + value
    return total


# --------------------------------------------------------------------------- argument checks


def _check_inputs(snn: nn.Module, inputs: Tensor, labels: Tensor | None) -> None:
    for attr in ("graph", "encode", "decode", "neurons", "output_neuron", "coding"):
        if not hasattr(snn, attr):
            raise TypeError(f"simulate expects a SpikingNetwork (missing {attr!r}), got "
                            f"{type(snn).__name__}")
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError("inputs must be a batched tensor [B, ...] of values in [0, 1]")
    if labels is not None and (not isinstance(labels, Tensor)
                               or labels.shape != inputs.shape[:1]):
        raise ValueError(f"labels must be a tensor of shape [{inputs.shape[0]}], got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")


def _check_decision(early_decision: Any) -> None:
    if early_decision is not None and (not isinstance(early_decision, (tuple, list))
                                       or len(early_decision) != 2):
        raise ValueError(f"early_decision must be (theta, T1), got {early_decision!r}")


def _config_key(snn: nn.Module) -> tuple:
    """Identity of a network's configuration: its graph, its modules, and the identity and version
    counter of every parameter and persistent buffer (weights, biases, shifts, scales; not the
    neurons' state, which snntorch and this package register as non-persistent buffers). Any
    in-place update (optimiser step, ``load_state_dict``) or replacement changes it.

    The modules are walked depth first in ``snn.modules()`` order (each once), with a plain list
    instead of ``named_modules``' generators and names (this runs at every ``simulate`` call)."""
    config: list = []
    todo, seen = [snn], set()
    while todo:
        module = todo.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        config.append(id(module))
        config += [(id(p), p._version) for p in module._parameters.values() if p is not None]
        skip = module._non_persistent_buffers_set
        config += [(id(b), b._version) for n, b in module._buffers.items()
                   if b is not None and n not in skip]
        todo += [m for m in reversed(module._modules.values()) if m is not None]
    return id(snn.graph.graph), len(snn.graph.graph.nodes), tuple(config)


class _StepGraphs(NamedTuple):
    """The step loop's graphs (:func:`_stepper`, :func:`_reuser`), all built the same way."""

    stepper: fx.GraphModule  # (recorder, x_t) -> output membrane
    head: fx.GraphModule  # (recorder, x_t) -> (output membrane, input-only frontier values)
    reuser: fx.GraphModule  # (recorder, *frontier values) -> output membrane
    direct: bool  # they call the modules' forward directly (see _plain_calls)


@dataclass(frozen=True)
class _Plan:
    """What a network's runs reuse while its configuration stays the same (see :func:`_plan`)."""

    profile: GraphProfile
    recorder: SpikeRecorder  # its tables; each run counts with recorder.renewed()
    input_fan: Tensor  # the input's fan-out, ready for _count_input
    stateful: tuple[nn.Module, ...]  # what reset(snn) restarts, in its order (no module walk)
    called: tuple[nn.Module, ...]  # the modules the step graph calls
    graphs: dict[bool, _StepGraphs] = field(default_factory=dict)  # by `direct`, built on use

    def step_graphs(self, snn: nn.Module) -> _StepGraphs:
        """The step loop's graphs for this run: calling the modules' ``forward`` directly while
        that is what calling them does (:func:`_plain_calls`), else calling the modules."""
        direct = _plain_calls(self.called)
        if direct not in self.graphs:
            only, frontier = _input_only(snn.graph)
            names = self.recorder.modules
            self.graphs[direct] = _StepGraphs(
                _stepper(snn, names, direct=direct), _stepper(snn, names, frontier, direct),
                _reuser(snn, names, only, frontier, direct), direct)
        return self.graphs[direct]


def _plain_calls(modules: Iterable[nn.Module]) -> bool:
    """Whether ``module(*args)`` is exactly ``module.forward(*args)`` for each of ``modules`` now:
    the fast path of ``nn.Module.__call__`` (no forward / backward hooks on the module nor
    global ones, not compiled with ``module.compile()``, no JIT tracing). Checked at every run,
    so hooks added at any time fire."""
    if torch._C._get_tracing_state() or any(
            getattr(_torch_module, name, None) for name in _GLOBAL_HOOKS):
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   or m._backward_pre_hooks or getattr(m, "_compiled_call_impl", None) is not None
                   for m in modules)


def _copy_watched(graph: fx.Graph, source: fx.Graph, env: dict[fx.Node, fx.Node],
                  names: Iterable[str], recorder: fx.Node, skip: set[fx.Node], direct: bool
                  ) -> Any:
    """Copy ``source``'s nodes (except ``skip``, those already in ``env`` and the output) into
    ``graph``; right after each call of a module in ``names`` its output goes to
    ``recorder.take``. ``direct``: module calls become calls of their ``forward`` (the same
    as calling the module while :func:`_plain_calls` holds, without ``nn.Module.__call__``'s
    per-call cost). Returns what ``source`` outputs, in ``graph``'s nodes."""
    result = None
    for node in source.nodes:
        if node.op == "output":
            result = fx.node.map_arg(node.args[0], env.__getitem__)
        elif node not in skip and node not in env:
            if direct and node.op == "call_module":
                args = fx.node.map_arg(node.args, env.__getitem__)
                kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
                env[node] = graph.call_method(
                    "forward", (graph.get_attr(node.target), *args), kwargs)
            else:
                env[node] = graph.node_copy(node, env.__getitem__)
            if node.op == "call_module" and node.target in names:
                graph.call_method("take", (recorder, node.target, env[node]))
    return result


def _stepper(snn: nn.Module, names: Iterable[str], frontier: list[fx.Node] | None = None,
             direct: bool = False) -> fx.GraphModule:
    """The step graph with a recorder as first input, ``stepper(recorder, x_t)``: right after
    each call of a module in ``names`` its output goes to ``recorder.take`` (counted while it is
    still in cache, or kept for a block), then the graph goes on; returns the output membrane
    (with ``frontier``: and those nodes' values, what :func:`_reuser` takes instead of ``x_t``).
    The same modules run (hooks of their own fire: ``direct`` graphs are used only while there
    are none), but nothing is hooked for counting (a hooked module call costs several
    microseconds more) and no spike tensor is held to the end of the step."""
    source = snn.graph.graph
    graph = fx.Graph()
    recorder = graph.placeholder("recorder")
    env: dict[fx.Node, fx.Node] = {}
    result = _copy_watched(graph, source, env, names, recorder, set(), direct)
    graph.output(result if frontier is None else (result, tuple(env[n] for n in frontier)))
    return fx.GraphModule(snn.graph, graph)


def _reuser(snn: nn.Module, names: Iterable[str], only: set[fx.Node], frontier: list[fx.Node],
            direct: bool = False) -> fx.GraphModule:
    """:func:`_stepper` without the nodes computed from the input alone (``only``, see
    :func:`_input_only`): ``reuser(recorder, *values)`` takes the ``frontier`` values of an
    earlier step of the same input phase and returns the output membrane."""
    source = snn.graph.graph
    graph = fx.Graph()
    recorder = graph.placeholder("recorder")
    env = {node: graph.placeholder(f"reused_{node.name}") for node in frontier}
    skip = {n for n in only if n.op != "get_attr"}  # attributes may feed later nodes
    graph.output(_copy_watched(graph, source, env, names, recorder, skip, direct))
    return fx.GraphModule(snn.graph, graph)


def _plan(snn: nn.Module, example: Tensor) -> _Plan:
    """:func:`~.metrics.profile_graph` of the step graph, a :class:`~.metrics.SpikeRecorder` of
    the modules to watch (:func:`_watched_modules`), the modules the step graph calls and, built
    on first use (:meth:`_Plan.step_graphs`), the :func:`_stepper` graphs (plain, and the head
    that also returns the input-only values) and the :func:`_reuser` graph, cached together on
    the network.

    The fan-outs depend on the graph, the per-sample input shape and the zero pattern of the
    weights; the cache key is :func:`_config_key` plus the input's shape / dtype / device, so a
    stale plan is never reused (a module replaced in the graph changes the key too).
    """
    key = (_config_key(snn), tuple(example.shape[1:]), example.dtype, example.device)
    cached = snn.__dict__.get(SIMULATE_CACHE)
    if cached is None or cached[0] != key:
        profile = profile_graph(snn.graph, example)
        modules, neuron_names = _watched_modules(snn)
        recorder = SpikeRecorder(modules, profile.fanout, neuron_names)
        input_fan = counting_fan(profile.fanout[INPUT], example.dtype, example.device)
        called = tuple(snn.graph.get_submodule(n.target) for n in snn.graph.graph.nodes
                       if n.op == "call_module")
        cached = (key, _Plan(profile, recorder, input_fan, stateful_modules(snn), called))
        snn.__dict__[SIMULATE_CACHE] = cached
    return cached[1]


def _resolve_steps(snn: nn.Module, num_steps: int | None) -> int:
    if num_steps is None:
        if snn.coding != "radix":
            raise ValueError(f"num_steps is required for {snn.coding!r} coding")
        num_steps = int(snn.latency)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    return num_steps


def _to_network(snn: nn.Module, inputs: Tensor) -> Tensor:
    """Inputs on the network's device, in its floating dtype (radix nets are float64)."""
    for tensor in itertools.chain(snn.parameters(), snn.buffers()):  # stops at the first one
        if tensor.is_floating_point():
            return inputs.to(device=tensor.device, dtype=tensor.dtype)
    return inputs


def auto_chunk_size(max_numel: int, batch: int, itemsize: int, num_steps: int,
                    target_bytes: int = CHUNK_BYTES) -> int:
    """Folded runner's time block: ``clamp(target_bytes // (B * max_numel * itemsize), 1, T)``."""
    per_step = max(batch * max_numel * itemsize, 1)
    return int(min(max(target_bytes // per_step, 1), num_steps))


# --------------------------------------------------------------------------- runners


def _input_period(snn: nn.Module) -> int | None:
    """Period of the input train ``snn.encode`` produces (``None``: not periodic)."""
    if snn.coding == "weighted":
        return int(snn.num_phases)
    if snn.coding == "radix":
        return int(snn.num_bits)
    return None


def _run_loop(graphs: _StepGraphs, spikes_in: Tensor, recorder: SpikeRecorder,
              period: int | None) -> Tensor:
    """Step loop: the whole graph once per step (:func:`_stepper`), the watched outputs handed to
    ``recorder`` as they are made; returns the output membranes ``[T, B, C]``.

    With ``period`` P (a P-periodic input train) shorter than the run, the values computed from
    the input alone are kept from the first P steps (``graphs.head``) and step t >= P reuses those
    of step ``t % P`` (:func:`_reuser`): the same kernels on the same values, so the same
    results."""
    steps = spikes_in.shape[0]
    # the graphs' forward itself: nothing hooks these internal modules, and GraphModule's
    # __call__ (nn.Module.__call__ plus fx's error-reporting wrapper) costs a microsecond a step
    stepper, head, reuser = graphs.stepper.forward, graphs.head.forward, graphs.reuser.forward
    if not period or period >= steps:
        return torch.stack([stepper(recorder, x_t) for x_t in spikes_in])
    mems: list[Tensor] = []
    kept: list[tuple] = []
    for x_t in spikes_in[:period]:
        mem, values = head(recorder, x_t)
        mems.append(mem)
        kept.append(values)
    if all(isinstance(v, Tensor) for v in kept[0]):
        mems += [reuser(recorder, *kept[t % period]) for t in range(period, steps)]
    else:  # e.g. a size() computed from the input: no reuse
        mems += [stepper(recorder, x_t) for x_t in spikes_in[period:]]
    return torch.stack(mems)


def _slice_step(value: Any, timed: bool, steps: int, t: int) -> Any:
    if not timed:
        return value
    return value.view(steps, -1, *value.shape[1:])[t]


def _fold(value: Any) -> Any:
    """Stack a list of per-step outputs (tensors or tuples of tensors) into ``[t * B, ...]``."""
    first = value[0]
    if isinstance(first, Tensor):
        return torch.stack(value).flatten(0, 1)
    return type(first)(_fold([v[i] for v in value]) for i in range(len(first)))


def _loop_stateful(node: fx.Node, module: nn.Module, args: tuple, kwargs: dict,
                   timed_args: tuple, steps: int) -> Any:
    """Call a stateful module once per step of the block, in time order."""
    if any(isinstance(v, Tensor) for v in kwargs.values()):
        raise ValueError(f"node {node.name!r} ({type(module).__name__}): tensor keyword arguments "
                         "to a stateful module are not supported by the folded runner")
    outputs = []
    for t in range(steps):
        step_args = tuple(_slice_step(a, timed, steps, t) for a, timed in zip(args, timed_args))
        outputs.append(module(*step_args, **kwargs))
    return _fold(outputs)


def _fetch(graph: fx.GraphModule, target: str) -> Any:
    obj: Any = graph
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _input_only(graph: fx.GraphModule) -> tuple[set[fx.Node], list[fx.Node]]:
    """Nodes computed from the input alone through stateless ops, and those of them that feed
    a node outside the set (the frontier whose values the input reuse caches), in graph order."""
    only: set[fx.Node] = set()
    for node in graph.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            only.add(node)
        elif node.op == "output" or (node.op == "call_module"
                                     and is_stateful(graph.get_submodule(node.target))):
            continue
        elif all(n in only for n in node.all_input_nodes):
            only.add(node)
    frontier = [n for n in graph.graph.nodes if n in only and n.op != "get_attr"
                and any(u not in only for u in n.users)]
    return only, frontier


def _multi_step(module: nn.Module, node: fx.Node, args: tuple, kwargs: dict, timed: set,
                steps: int, observe: Observer | None) -> Any:
    """A stateful module's whole block through its ``forward_steps`` (``None``: not possible).

    Used for modules that have one (the package's neurons and clocked layers) when the node's
    only argument is a timed tensor; ``observe`` then sees the block, since no per-step forward
    hooks fire.
    """
    if (not hasattr(module, "forward_steps") or kwargs or len(args) != 1
            or not (isinstance(node.args[0], fx.Node) and node.args[0] in timed)):
        return None
    x = args[0]
    out = module.forward_steps(x.view(steps, -1, *x.shape[1:]))
    if observe is not None:
        observe(node.target, out, steps)
    if isinstance(out, Tensor):
        return out.flatten(0, 1)
    return type(out)(o.flatten(0, 1) for o in out)


def _eval_node(graph: fx.GraphModule, node: fx.Node, env: dict, timed: set, steps: int,
               observe: Observer | None = None) -> Any:
    """One node of the folded runner (time folded into the batch for stateless nodes)."""
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    if node.op == "get_attr":
        return _fetch(graph, node.target)
    if node.op == "call_module":
        module = graph.get_submodule(node.target)
        if is_stateful(module):
            out = _multi_step(module, node, args, kwargs, timed, steps, observe)
            if out is not None:
                return out
            flags = tuple(isinstance(a, fx.Node) and a in timed for a in node.args)
            return _loop_stateful(node, module, args, kwargs, flags, steps)
        return module(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    raise ValueError(f"unexpected node {node.name!r} ({node.op}) in the step graph")


class _FoldedRunner:
    """Runs a step graph block by block with time folded into the batch (module docstring).

    With ``period`` P the input train is P-periodic, so every value computed from the input
    alone (e.g. the first weight layer's currents) is computed for one period only and gathered
    by phase afterwards (Kim section 3: the weighted input repeats every K steps).
    """

    def __init__(self, graph: fx.GraphModule, spikes_in: Tensor, period: int | None,
                 observe: Observer | None = None) -> None:
        self.graph = graph
        self.observe = observe
        self.batch = spikes_in.shape[1]
        self.cache: dict[fx.Node, Tensor] = {}
        self.input_only: set[fx.Node] = set()
        self.period = period if period and period < spikes_in.shape[0] else None
        if self.period:
            self.input_only, frontier = _input_only(graph)
            env = self._evaluate(spikes_in[:self.period], only=self.input_only)
            if all(isinstance(env[n], Tensor) for n in frontier):
                self.cache = {n: env[n] for n in frontier}
            else:  # e.g. a size() feeding later nodes: no reuse
                self.input_only, self.period = set(), None

    def _evaluate(self, block: Tensor, only: set[fx.Node] | None = None, start: int = 0
                  ) -> dict[fx.Node, Any]:
        steps = block.shape[0]
        env: dict[fx.Node, Any] = {}
        timed: set[fx.Node] = set()
        phase = None
        if self.cache:
            phase = (torch.arange(start, start + steps, device=block.device) % self.period)
        for node in self.graph.graph.nodes:
            if only is not None and node not in only:
                continue
            if node in self.cache:
                cached = self.cache[node]
                env[node] = cached.view(self.period, -1, *cached.shape[1:])[phase].flatten(0, 1)
                timed.add(node)
            elif only is None and node in self.input_only:
                continue  # computed once per period, only the frontier is needed
            elif node.op == "placeholder":
                env[node] = block.flatten(0, 1)
                timed.add(node)
            elif node.op == "output":
                result = node.args[0]
                if not isinstance(result, fx.Node) or result not in timed:
                    raise ValueError("the step graph must return a tensor computed from its input")
                out = env[result]
                env[node] = out.view(steps, self.batch, *out.shape[1:])
            else:
                env[node] = _eval_node(self.graph, node, env, timed, steps, self.observe)
                if any(n in timed for n in node.all_input_nodes):
                    timed.add(node)
        return env

    def run(self, spikes_in: Tensor, chunk: int) -> Tensor:
        """Output membranes ``[T, B, C]``, ``chunk`` steps per block."""
        output = next(n for n in self.graph.graph.nodes if n.op == "output")
        blocks = [self._evaluate(spikes_in[s:s + chunk], start=s)[output]
                  for s in range(0, spikes_in.shape[0], chunk)]
        return torch.cat(blocks)


# --------------------------------------------------------------------------- read-out


def _readout(snn: nn.Module, mem: Tensor) -> Tensor:
    """Membrane the decision is read from: radix holds the value of the last period end."""
    if snn.coding != "radix":
        return mem
    period = int(snn.num_bits)
    steps = torch.arange(1, mem.shape[0] + 1, device=mem.device)
    last_end = torch.div(steps, period, rounding_mode="floor") * period - 1
    held = mem[last_end.clamp(min=0)]
    return torch.where((last_end >= 0).view(-1, 1, 1), held, torch.zeros_like(held))


def _count_input(spikes_in: Tensor, fan: Tensor, binary: bool) -> tuple[Tensor, Tensor]:
    """Input spikes and SynOps per step ``[T, B]`` (:func:`_count` of the encoded train, ``fan``
    from :func:`~.metrics.counting_fan`)."""
    emitted = (lambda lo, hi: spikes_in[lo:hi], spikes_in[0].numel())
    counts, synops, _ = _count(emitted, spikes_in.shape[0], fan, keep=False, binary=binary)
    return counts, synops


# --------------------------------------------------------------------------- simulate


def _watched_modules(snn: nn.Module) -> tuple[dict[str, nn.Module], set[str]]:
    """Modules to hook: hidden neurons (spikes + SynOps) and routing layers (SynOps only)."""
    neurons = dict(snn.neurons())
    output = snn.output_neuron
    modules = dict(neurons)
    for node in snn.graph.graph.nodes:
        if node.op == "call_module":
            module = snn.graph.get_submodule(node.target)
            if is_stateful(module) and not is_neuron(module) and module is not output:
                modules[node.target] = module
    return modules, set(neurons)


def _observe_watched(recorder: SpikeRecorder, name: str, output: Any, steps: int) -> None:
    """Count a folded block of a module the recorder watches (others are ignored)."""
    if name in recorder.modules:
        recorder.observe(name, output, steps)


def _choose_chunk(fold: bool | str, chunk_size: int | None, max_numel: int, spikes_in: Tensor
                  ) -> int:
    """0 means: use the step loop."""
    if fold not in (True, False, "auto"):
        raise ValueError(f"fold must be True, False or 'auto', got {fold!r}")
    steps, batch = spikes_in.shape[:2]
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        if fold is False:
            raise ValueError("chunk_size applies to the folded runner; pass fold=True or 'auto'")
        return min(chunk_size, steps)
    if fold is False:
        return 0
    chunk = auto_chunk_size(max_numel, batch, spikes_in.element_size(), steps)
    if fold == "auto" and chunk < 2:
        return 0
    return chunk


@torch.no_grad()
def simulate(
    snn: nn.Module,
    inputs: Tensor,
    num_steps: int | None = None,
    labels: Tensor | None = None,
    skip_periods: int | None = None,
    early_decision: tuple[float, int] | None = None,
    record_layers: bool = False,
    fold: bool | str = "auto",
    chunk_size: int | None = None,
    model: nn.Module | None = None,
    encoded: bool = False,
    reuse_input: bool = True,
    shortcut: bool = False,
) -> SimulationResult:
    """Run a converted SNN on a batch and measure accuracy, spikes and SynOps over time.

    Args:
        snn: a :class:`~snntorch_weighted.conversion.network.SpikingNetwork` (``graph``, ``encode``,
            ``decode``, ``neurons()``, ``output_neuron``, ``coding``, ``latency``).
        inputs: values in ``[0, 1]``, ``[B, ...]`` (encoded with ``snn.encode``); moved to the
            network's device.
        num_steps: T; defaults to ``snn.latency`` for radix, required otherwise.
        labels: ``[B]`` class indices, for the accuracy curve (Kim eq. 15-17).
        skip_periods: periods the weighted output integrator ignores (Kim section 5.1) in this
            run (restored afterwards); ``None`` keeps the network's own setting. Weighted only.
        early_decision: ``(theta, T1)`` runs Kim Algorithm 1 from step ``T1`` (1-based) and adds
            per-sample decisions / times; spikes up to them via ``result.spikes_at_decision``.
        record_layers: keep every hidden layer's full spike train (memory heavy).
        fold: ``False`` step loop, ``True`` time-folded runner, ``"auto"`` folds when the chunk
            rule (module docstring) gives at least 2 steps per block.
        chunk_size: steps per folded block (default: the chunk rule).
        model: the original ANN, to report its MACs per sample (:func:`.metrics.ann_macs`).
        encoded: ``inputs`` is already the input spike train ``[T, B, ...]`` (e.g. to feed the
            same Bernoulli draw of a rate code to several runs); ``num_steps`` defaults to ``T``.
        reuse_input: compute what depends on the input alone (the first weight layer's
            currents) for one input period only and reuse it, in both runners (weighted: period
            K, radix: period T; rate inputs are random and not reused; nor are ``encoded`` ones).
        shortcut: radix only: compute the identical result per period with
            :func:`radix_shortcut` instead of stepping (``fold``, ``chunk_size``, ``encoded``
            and ``reuse_input`` do not apply).

    Returns:
        :class:`SimulationResult`.
    """
    if shortcut:
        if encoded or chunk_size is not None or fold is True:
            raise ValueError("shortcut=True evaluates periods of raw inputs: encoded, fold=True "
                             "and chunk_size do not apply")
        if skip_periods is not None:
            raise ValueError("skip_periods applies to weighted coding only")
        return radix_shortcut(snn, inputs, num_steps, labels, early_decision, record_layers,
                              model)
    _check_inputs(snn, inputs[0] if encoded and isinstance(inputs, Tensor) else inputs, labels)
    if encoded and num_steps not in (None, inputs.shape[0]):
        raise ValueError(f"num_steps={num_steps} but the encoded inputs have {len(inputs)} steps")
    num_steps = inputs.shape[0] if encoded else _resolve_steps(snn, num_steps)
    if skip_periods is not None and (isinstance(skip_periods, bool)
                                     or not isinstance(skip_periods, int) or skip_periods < 0):
        raise ValueError(f"skip_periods must be an int >= 0, got {skip_periods!r}")
    _check_decision(early_decision)
    output = snn.output_neuron
    if skip_periods and not hasattr(output, "skip_periods"):
        raise ValueError(f"skip_periods applies to weighted coding only (coding={snn.coding!r})")
    x = _to_network(snn, inputs)
    if labels is not None:
        labels = labels.to(x.device)
    spikes_in = x if encoded else snn.encode(x, num_steps)
    plan = _plan(snn, spikes_in[0])
    profile = plan.profile
    chunk = _choose_chunk(fold, chunk_size, profile.max_numel, spikes_in)
    recorder = plan.recorder.renewed(keep_trains=record_layers)

    saved_skip = getattr(output, "skip_periods", None)
    try:
        if saved_skip is not None and skip_periods is not None:
            output.skip_periods = skip_periods
        for module in plan.stateful:  # reset(snn), with the module list of the plan
            module.reset_mem()
        period = _input_period(snn) if reuse_input and not encoded else None
        if chunk:
            observe = partial(_observe_watched, recorder)
            with recorder:  # hooks count stateful modules the runner steps one by one
                mem = _FoldedRunner(snn.graph, spikes_in, period, observe).run(spikes_in, chunk)
        else:
            graphs = plan.step_graphs(snn)
            mem = _run_loop(graphs, spikes_in, recorder, period)
        readout = _readout(snn, mem)
        estimate = snn.decode_trace(readout)  # decode sees this run's skip_periods
    finally:
        if saved_skip is not None:
            output.skip_periods = saved_skip

    spikes, synops, trains = recorder.stacked()
    input_spikes, synops[INPUT] = _count_input(spikes_in, plan.input_fan, binary=not encoded)
    predictions = readout.argmax(-1)
    accuracy = None if labels is None else (predictions == labels).double().mean(1)
    decision = None
    if early_decision is not None:
        decision = _decision.early_decision(readout, *early_decision)
    return SimulationResult(
        coding=snn.coding, num_steps=num_steps, mem=mem, readout=readout,
        estimate=estimate, predictions=predictions, accuracy=accuracy,
        labels=labels, spikes=spikes, synops=synops, input_spikes=input_spikes,
        num_neurons=dict(recorder.num_neurons),
        fanout={n: f for n, f in profile.fanout.items() if n in synops},
        ann_macs=None if model is None else ann_macs(model, _to_network(model, spikes_in[0, :1])),
        layer_trains=trains, decision=decision, folded=bool(chunk), chunk_size=max(chunk, 1),
    )



# --------------------------------------------------------------------------- radix shortcut


def _radix_modules() -> tuple[type, type, type]:
    from ..conversion.radix import Delay, RadixMaxPool2d
    from ..neurons.leaky import RadixLeaky

    return RadixLeaky, RadixMaxPool2d, Delay


def _prefixes(code: Tensor, powers: Tensor) -> Tensor:
    """``code mod 2**(p + 1)`` for every step p: ``[T, *code.shape]``."""
    return torch.remainder(code.unsqueeze(0), 2 * powers)


def _bits(code: Tensor, powers: Tensor) -> Tensor:
    """Bit p of ``code`` for every step p (the spikes of a radix train): ``[T, *code.shape]``."""
    return torch.remainder(torch.floor(code.unsqueeze(0) / powers), 2)


class _PeriodEvaluator:
    """Evaluates a radix step graph one *period* at a time instead of one step at a time.

    In period n a stateful node emits the bits (LSB first) of one integer code ``v(node, n)``:

    * the input: ``v = quantize_code(x, T)`` in every period;
    * a firing ``RadixLeaky``: ``v(n) = readout(bias + I(n - 1))`` with ``I`` the integer sum
      ``sum_p 2**p cur_p`` its input layer computes from the codes of period n - 1 (``0`` in
      period 0: a fresh membrane reads out 0); ``RadixMaxPool2d``: ``max_pool(I(n - 1))``;
      ``Delay`` of m periods: ``v(n - m)`` of its input (zeros before); stateless nodes
      (weights without bias, sum pools, ``Scale``, ``add``, ``Flatten``) are linear, so ``I`` is
      the node applied to the codes (exact in float64 below 2**53);
    * the output integrator at the end of period n holds ``bias + I(n)``.

    A node of depth d (periods of latency between the input and it) is input-independent in
    periods ``n < d`` (pipeline filling: only biases propagate; this needs the inputs of every
    join to have one depth, which the converter's delays ensure: ``matched``) and constant from
    period d on, so every node is evaluated once at batch B (period d) and at most d times at
    batch 1; the input-independent values are cached on the network (:func:`radix_shortcut`).
    """

    def __init__(self, snn: nn.Module, code: Tensor) -> None:
        self.graph: fx.GraphModule = snn.graph
        self.bits = int(snn.num_bits)
        self.code = code
        self.batch = code.shape[0]
        self.output = snn.output_neuron
        self.powers = torch.exp2(torch.arange(self.bits, dtype=code.dtype, device=code.device))
        self.memo: dict[tuple[fx.Node, int], Any] = {}
        self.matched = True  # all inputs of every multi-input node have one depth
        self.depth = self._depths()

    def _module(self, node: fx.Node) -> nn.Module | None:
        if node.op != "call_module":
            return None
        module = self.graph.get_submodule(node.target)
        return module if is_stateful(module) else None

    def _depths(self) -> dict[fx.Node, int]:
        leaky, pool, delay = _radix_modules()
        depth: dict[fx.Node, int] = {}
        for node in self.graph.graph.nodes:
            ins = {depth[n] for n in node.all_input_nodes if n.op != "get_attr"}
            self.matched = self.matched and len(ins) <= 1
            base = max(ins, default=0)
            module = self._module(node)
            if module is None or module is self.output:
                depth[node] = base
            elif isinstance(module, (leaky, pool)) and getattr(module, "fire_spikes", True):
                depth[node] = base + 1
            elif isinstance(module, delay) and module.num_steps % self.bits == 0:
                depth[node] = base + module.num_steps // self.bits
            else:
                raise ValueError(f"radix shortcut: node {node.name!r} ({type(module).__name__}) "
                                 "is not a RadixLeaky, RadixMaxPool2d or whole-period Delay")
        return depth

    def value(self, node: fx.Node, period: int) -> Any:
        """``v(node, period)`` (batch 1 while the node is input-independent)."""
        period = min(period, self.depth[node])
        key = (node, period)
        if key not in self.memo:
            self.memo[key] = self._compute(node, period)
        return self.memo[key]

    def _zeros(self, node: fx.Node) -> Tensor:
        return torch.zeros_like(self.value(node, self.depth[node])[:1])

    def _lag(self, module: nn.Module) -> int:
        return module.num_steps // self.bits

    def _compute(self, node: fx.Node, period: int) -> Any:
        if node.op == "placeholder":
            return self.code
        if node.op == "get_attr":
            return _fetch(self.graph, node.target)
        module = self._module(node)
        if module is None:
            args = fx.node.map_arg(node.args, lambda n: self.value(n, period))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self.value(n, period))
            return _apply(self.graph, node, args, kwargs)
        source = node.args[0]
        if module is self.output:
            total = module.bias.to(self.code.dtype) + self.value(source, period)
            return torch.zeros_like(total), total
        _, pool, delay = _radix_modules()
        if isinstance(module, delay):
            lag = self._lag(module)
            return self._zeros(node) if period < lag else self.value(source, period - lag)
        if period == 0:
            return self._zeros(node)
        current = self.value(source, period - 1)
        if isinstance(module, pool):
            return module.pool(current)
        return module.readout(module.bias.to(current.dtype) + current)

    def per_step(self, node: fx.Node, period: int, transform) -> Tensor:
        """``node`` at every step p of ``period``, ``[T, B, ...]``: every source code v feeding
        it (through stateless nodes) replaced by ``transform(v, powers)[p]`` (T variants folded
        into the batch, one call per node)."""
        env: dict[fx.Node, Any] = {}

        def visit(n: fx.Node) -> Any:
            if n not in env:
                if n.op == "placeholder" or self._module(n) is not None:
                    v = self.value(n, period)
                    v = transform(v.expand(self.batch, *v.shape[1:]), self.powers.view(
                        -1, *([1] * v.dim())))
                    env[n] = v.flatten(0, 1)
                elif n.op == "get_attr":
                    env[n] = self.value(n, period)
                else:
                    args = fx.node.map_arg(n.args, visit)
                    kwargs = fx.node.map_arg(n.kwargs, visit)
                    env[n] = _apply(self.graph, n, args, kwargs)
            return env[n]

        out = visit(node)
        return out.view(self.bits, self.batch, *out.shape[1:])

    def output_membranes(self, node: fx.Node, period: int) -> Tensor:
        """Output integrator ``node``'s membrane after each step of ``period``, ``[T, B, C]``:
        ``bias + sum_{q <= p} 2**q cur_q`` = its input layer on the codes mod ``2**(p + 1)``."""
        current = self.per_step(node.args[0], period, _prefixes)
        return self.output.bias.to(current.dtype) + current

    def emitted(self, node: fx.Node, period: int) -> tuple[Callable[[int, int], Tensor], int]:
        """What stateful ``node`` (or the input) emits at steps ``lo .. hi - 1`` of ``period``, as
        a function of ``(lo, hi)`` returning ``[hi - lo, B', ...]``, and the number of elements
        of one step: those bits of its code; a ``Delay`` re-emits its (stateless) input's
        per-step values of ``m`` periods earlier (e.g. scaled spikes of an identity shortcut)."""
        module = self._module(node)
        _, _, delay = _radix_modules()
        if isinstance(module, delay):
            lag = self._lag(module)
            if period < lag:
                zeros = self._zeros(node)
                return lambda lo, hi: zeros.unsqueeze(0).expand(hi - lo, *zeros.shape), 1
            values = self.per_step(node.args[0], period - lag, _bits)
            return lambda lo, hi: values[lo:hi], values[0].numel()
        code = self.value(node, period)
        powers = self.powers.view(-1, *([1] * code.dim()))
        return lambda lo, hi: _bits(code, powers[lo:hi]), code.numel()

    def canonical(self, node: fx.Node, period: int) -> int:
        """The period whose values ``period``'s equal (values are constant from the depth on)."""
        return min(period, self.depth[node])


def _apply(graph: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    """Run one stateless node on already evaluated arguments."""
    if node.op == "call_module":
        return graph.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    raise ValueError(f"unexpected node {node.name!r} ({node.op}) in the step graph")


def _count(emitted: tuple[Callable[[int, int], Tensor], int], steps: int, weight: Tensor | None,
           keep: bool, binary: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per step: non-zero entries, ``sum_j [e_j != 0] w_j`` (``[T, B']`` each, ``long``; ``weight``
    from :func:`~.metrics.counting_fan`, so the product is exact) and, with ``keep``, the emitted
    values ``[T, B', ...]``. ``emitted`` is ``(get(lo, hi) -> [hi - lo, B', ...], elements per
    step)``; read in blocks of at most ``CHUNK_BYTES`` of float64 (bounded memory, few calls).
    ``binary``: the values are 0/1 already (no ``!= 0`` pass)."""
    counts, synops, trains = [], [], []
    get, numel = emitted
    block = max(1, CHUNK_BYTES // (8 * max(numel, 1)))
    for lo in range(0, steps, block):
        value = get(lo, min(lo + block, steps))
        flat = value.flatten(2) if binary else value.flatten(2).ne(0)
        counts.append(flat.sum(2))
        if weight is not None:
            synops.append(flat.to(weight.dtype) @ weight)
        if keep:
            trains.append(value)
    # integer-valued and exact in their dtype: .long() converts exactly
    return (cat_blocks(counts).long(),
            cat_blocks(synops).long() if weight is not None else None,
            torch.cat(trains) if keep else None)


def _steps(parts: list[Tensor], num_steps: int) -> Tensor:
    return torch.cat(parts)[:num_steps].contiguous()


@torch.no_grad()
def radix_shortcut(
    snn: nn.Module,
    inputs: Tensor,
    num_steps: int | None = None,
    labels: Tensor | None = None,
    early_decision: tuple[float, int] | None = None,
    record_layers: bool = False,
    model: nn.Module | None = None,
) -> SimulationResult:
    """The exact result of ``simulate(snn, inputs, num_steps)`` for a radix SNN, per period.

    A radix SNN equals its quantised twin bit for bit, so instead of ``num_steps`` steps of the
    whole graph this evaluates the graph once per *period* on integer codes
    (:class:`_PeriodEvaluator`: one pass at batch B plus input-independent batch-1 passes for
    the pipeline filling). Spikes are the bits of the codes: a layer emitting code ``v`` in
    period n spikes ``bit_p(v)`` at step ``n * T + p``, so spikes and SynOps per step, the
    output membrane after every step, read-out, predictions, accuracy and early decisions are
    identical to the simulation's (tests/test_speed_paths.py). Also available as
    ``simulate(..., shortcut=True)``; never used unless asked for.

    Args:
        snn: a radix :class:`~snntorch_weighted.conversion.network.SpikingNetwork`.
        inputs: values in ``[0, 1]``, ``[B, ...]``.
        num_steps, labels, early_decision, record_layers, model: as :func:`simulate`.

    Returns:
        :class:`SimulationResult` with ``shortcut=True``.
    """
    _check_inputs(snn, inputs, labels)
    _check_decision(early_decision)
    if snn.coding != "radix":
        raise ValueError(f"the shortcut is exact for radix networks only (coding={snn.coding!r})")
    num_steps = _resolve_steps(snn, num_steps)
    x = _to_network(snn, inputs)
    if labels is not None:
        labels = labels.to(x.device)
    bits, batch = int(snn.num_bits), x.shape[0]
    code = spikegen.quantize_code(x, bits).to(x.dtype if x.is_floating_point() else torch.float64)
    plan = _plan(snn, x[:1])
    profile, modules, neuron_names = plan.profile, plan.recorder.modules, plan.recorder.count_spikes
    evaluator = _PeriodEvaluator(snn, code)
    nodes = {n.target: n for n in snn.graph.graph.nodes if n.op == "call_module"}
    nodes[INPUT] = next(n for n in snn.graph.graph.nodes if n.op == "placeholder")
    out_node = next(n for n in nodes.values() if n.op == "call_module"
                    and snn.graph.get_submodule(n.target) is snn.output_neuron)
    key = (_config_key(snn), tuple(x.shape[1:]), x.dtype, x.device, bits)
    cached = snn.__dict__.get("_shortcut_cache")
    known = cached[1] if cached is not None and cached[0] == key else {}
    evaluator.memo.update(known.get("memo", {}))
    mems: dict[int, Tensor] = dict(known.get("mems", {}))
    counts: dict[str, dict[int, tuple]] = {  # cached counts carry no trains: recount those
        name: {} if record_layers and name in neuron_names
        else dict(known.get("counts", {}).get(name, {})) for name in [INPUT, *modules]}
    periods = range(-(-num_steps // bits))
    for period in periods:
        if evaluator.canonical(out_node, period) not in mems:
            mems[evaluator.canonical(out_node, period)] = evaluator.output_membranes(out_node,
                                                                                     period)
        for name, parts in counts.items():
            node = nodes[name]
            canonical = evaluator.canonical(node, period)
            if canonical not in parts:
                fan = profile.fanout.get(name)
                weight = None if fan is None else counting_fan(fan, torch.bool, x.device)
                parts[canonical] = _count(evaluator.emitted(node, period), bits, weight,
                                          record_layers and name in neuron_names)
    if evaluator.matched:  # keep the input-independent (pipeline filling) values
        depth = evaluator.depth
        snn.__dict__["_shortcut_cache"] = (key, {
            "memo": {k: v for k, v in evaluator.memo.items() if k[1] < depth[k[0]]},
            "mems": {k: v[:, :1] for k, v in mems.items() if k < depth[out_node]},
            "counts": {name: {k: (c, syn, None) for k, (c, syn, _) in parts.items()
                              if k < depth[nodes[name]]} for name, parts in counts.items()},
        })

    def per_step(name: str, i: int) -> Tensor | None:
        node = nodes[name]
        parts = [counts[name][evaluator.canonical(node, n)][i] for n in periods]
        if parts[0] is None:
            return None
        return _steps([p.expand(-1, batch, *p.shape[2:]) for p in parts], num_steps)

    mem = _steps([mems[evaluator.canonical(out_node, n)].expand(-1, batch, -1) for n in periods],
                 num_steps)
    readout = _readout(snn, mem)
    spikes = {n: per_step(n, 0) for n in modules if n in neuron_names}
    synops = {n: per_step(n, 1) for n in counts if n in profile.fanout}
    trains = {n: per_step(n, 2) for n in modules if record_layers and n in neuron_names}
    predictions = readout.argmax(-1)
    return SimulationResult(
        coding=snn.coding, num_steps=num_steps, mem=mem, readout=readout,
        estimate=snn.decode_trace(readout), predictions=predictions,
        accuracy=None if labels is None else (predictions == labels).double().mean(1),
        labels=labels, spikes=spikes, synops=synops,
        input_spikes=per_step(INPUT, 0),
        num_neurons={n: int(evaluator.value(nodes[n], 0)[0].numel()) for n in modules},
        fanout={n: f for n, f in profile.fanout.items() if n in synops},
        ann_macs=None if model is None else ann_macs(model, _to_network(model, x[:1])),
        layer_trains=trains,
        decision=None if early_decision is None else _decision.early_decision(readout,
                                                                              *early_decision),
        shortcut=True,
    )

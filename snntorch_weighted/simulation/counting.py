"""Counting spikes and synaptic operations from what the modules return, in one place.

* :class:`Counter` takes the outputs of the watched modules (hidden neurons: spikes and SynOps;
  routing layers such as spike max-pools and delays: SynOps) one step ``[B, ...]`` or one block
  ``[t, B, ...]`` at a time, exactly as the runners got them from the modules (after any hook of
  the user's), and turns them into per-step, per-sample counts ``[T, B]``.
* :func:`network_profile` is :func:`~.metrics.profile_graph` (the fan-outs) of a network,
  reused only while nothing it read has changed: the graph's nodes, the modules it calls and
  their settings, every weight it binarised (compared by value, so edits through ``.data`` count)
  and the input's shape, dtype and device.

Definitions (spikes, fan-out, SynOps): :mod:`.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn

from ..conversion.network import SIMULATE_CACHE
from .graphs import fetch, graph_modules
from .metrics import INPUT, GraphProfile, is_neuron, is_stateful, profile_graph

__all__ = ["Counter", "Fans", "count_input", "counting_fans", "network_profile",
           "watched_modules"]

BLOCK_BYTES = 4 * 2**20
"""Spike masks a :class:`Counter` collects per module before counting them as one block."""


def watched_modules(snn: nn.Module) -> tuple[dict[str, nn.Module], set[str]]:
    """The modules whose outputs are counted, by qualified name: the hidden neurons (spikes and
    SynOps; their names are the set returned) and the other stateful modules except the output
    integrator (routing layers: SynOps only)."""
    output = snn.output_neuron
    modules = graph_modules(snn.graph)
    watched: dict[str, nn.Module] = {}
    for node in snn.graph.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            if is_stateful(module) and module is not output:
                watched[node.target] = module
    return watched, {name for name, module in watched.items() if is_neuron(module)}


class Counter:
    """Spikes and SynOps per step and sample of the watched modules, on device, no host sync.

    Spikes are the non-zero entries (graded spikes count once), SynOps ``sum_j [s_j != 0] f_j``
    with the fan-out ``f`` in a dtype where the product is exact (:func:`counting_fans`). The
    outputs of the modules in ``binary`` (exactly 0 / 1 and fresh, :func:`~.plain.emits_binary`)
    are kept as they are; any other output is reduced to its non-zero mask at once (one ``ne``
    kernel writing 0 / 1 in a floating dtype; a fresh tensor, so a module that hands out views
    of its own state is safe). What is kept is counted in blocks of about ``BLOCK_BYTES`` with
    one sum and one matrix-vector product with ``f`` (few kernel launches per step).

    Args:
        fanouts: name -> fan-out of the modules whose SynOps are reported
            (:func:`counting_fans`).
        spiking: names whose spikes are reported (the hidden neurons).
        keep_trains: also keep the full outputs of ``spiking`` (memory: ``T * B * N``).
        binary: names whose outputs are exactly 0 / 1, fresh tensors, float32 or float64.
    """

    def __init__(self, fanouts: dict[str, Fans], spiking: set[str], keep_trains: bool,
                 binary: set[str] | None = None) -> None:
        self.fanouts = fanouts
        self.spiking = spiking
        self.keep_trains = keep_trains
        self.binary = binary or set()
        self.pending: dict[str, list[Tensor]] = {}
        self.counts: dict[str, list[tuple[Tensor, Tensor | None]]] = {}
        self.trains: dict[str, list[Tensor]] = {}
        self.num_neurons: dict[str, int] = {}
        self._sizes: dict[str, int] = {}  # bytes pending per name

    def add(self, name: str, output: Any, steps: int | None = None) -> None:
        """One step ``[B, ...]`` (``steps=None``) or a block ``[steps, B, ...]`` of ``name``."""
        spikes = output[0] if isinstance(output, (tuple, list)) else output
        block = spikes.unsqueeze(0) if steps is None else spikes
        if self.keep_trains and name in self.spiking:
            self.trains.setdefault(name, []).append(block.clone())
        dtype = torch.float64 if block.dtype == torch.float64 else torch.float32
        if name in self.binary and block.dtype == dtype:
            mask = block
        else:
            mask = torch.ne(block, 0, out=torch.empty(block.shape, dtype=dtype,
                                                      device=block.device))
        self.pending.setdefault(name, []).append(mask)
        size = self._sizes.get(name, 0) + mask.numel() * mask.element_size()
        self._sizes[name] = size
        if size >= BLOCK_BYTES:
            self._flush(name)

    def _flush(self, name: str) -> None:
        pending = self.pending.pop(name, [])
        self._sizes.pop(name, None)
        if pending:
            self._count(name, (pending[0] if len(pending) == 1 else torch.cat(pending)).flatten(2))

    def _count(self, name: str, flat: Tensor) -> None:
        """Count the masks ``flat`` ``[t, B, N]`` (0 / 1, float32 or float64)."""
        self.num_neurons[name] = flat.shape[2]
        fans = self.fanouts.get(name)
        synops = None
        if fans is not None:
            weight = fans.double if fans.single is None or flat.dtype == torch.float64 \
                else fans.single
            if weight.numel() != flat.shape[2]:
                raise ValueError(f"module {name!r} emitted {flat.shape[2]} values per sample but "
                                 f"its fan-out has {weight.numel()} (input shape changed?)")
            synops = (flat.to(weight.dtype) @ weight.to(flat.device)).long()  # exact
        self.counts.setdefault(name, []).append((flat.sum(2).long(), synops))  # exact: < 2**24

    def results(self) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """``(spikes, synops, trains)``: per name ``[T, B]`` counts (``long``) and the trains."""
        for name in list(self.pending):
            self._flush(name)
        spikes = {n: torch.cat([c for c, _ in parts]) for n, parts in self.counts.items()
                  if n in self.spiking}
        synops = {n: torch.cat([s for _, s in parts]) for n, parts in self.counts.items()
                  if n in self.fanouts}
        trains = {n: torch.cat(parts) for n, parts in self.trains.items()}
        return spikes, synops, trains


class Fans(NamedTuple):
    """A fan-out flattened to ``[N]`` for the SynOps product: in float32 where that product is
    exact (``N < 2**24`` and ``sum(f) < 2**24``: no partial sum can round), else ``None``, and in
    float64 (for float64 spikes, or larger sums)."""

    single: Tensor | None
    double: Tensor


def counting_fans(fanout: dict[str, Tensor]) -> dict[str, Fans]:
    """:class:`Fans` of every fan-out (one host read each)."""
    out = {}
    for name, fan in fanout.items():
        flat = fan.flatten()
        exact32 = flat.numel() < 2**24 and int(flat.sum()) < 2**24
        out[name] = Fans(flat.float() if exact32 else None, flat.double())
    return out


def count_input(train: Tensor, fans: Fans) -> tuple[Tensor, Tensor]:
    """Input spikes (non-zero entries) and their SynOps per step and sample ``[T, B]``."""
    counter = Counter({INPUT: fans}, {INPUT}, keep_trains=False)
    counter.add(INPUT, train, steps=train.shape[0])
    spikes, synops, _ = counter.results()
    return spikes[INPUT], synops[INPUT]


# --------------------------------------------------------------------------- fan-out reuse


_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass
class _Profiled:
    """A profile and everything it was computed from (see :func:`network_profile`)."""

    key: tuple
    weights: list[tuple[Tensor, Tensor]]  # (tensor the pass read, its value then)
    profile: GraphProfile
    fans: dict[str, Fans]  # counting_fans(profile.fanout)

    def still_valid(self, key: tuple) -> bool:
        try:
            same = key == self.key
        except RuntimeError:  # a tensor constant in the node arguments: compare it no further
            same = False
        return same and all(torch.equal(now, then) for now, then in self.weights)


def _module_settings(module: nn.Module) -> tuple:
    """What the fan-out pass reads from a module besides its weights: the module itself, its
    class and its public plain attributes (a conv's stride, padding, groups, ...); of a stateful
    module only whether it returns its membrane too (its output is a fresh source)."""
    if is_stateful(module):
        return module, type(module), getattr(module, "output", None)
    public = tuple((k, v) for k, v in vars(module).items()
                   if k[0] != "_" and isinstance(v, (int, float, str, bool, tuple, type(None))))
    return module, type(module), public


def _profile_inputs(graph: fx.GraphModule, example: Tensor) -> tuple[tuple, list[Tensor]]:
    """The key of a profile (nodes, modules and their settings, input shape / dtype / device)
    and the weight tensors the fan-out pass binarises (Linear / Conv weights, tensors fetched
    by the graph)."""
    nodes, modules, weights = [], [], []
    named = graph_modules(graph)
    for node in graph.graph.nodes:
        nodes.append((node, node.op, node.target, node.args, node.kwargs))
        if node.op == "call_module":
            module = named[node.target]
            modules.append(_module_settings(module))
            if isinstance(module, _WEIGHTED) and not is_stateful(module):
                weights.append(module.weight)
        elif node.op == "get_attr":
            value = fetch(graph, node.target)
            if isinstance(value, Tensor):
                weights.append(value)
    key = (tuple(nodes), tuple(modules), tuple(example.shape[1:]), example.dtype, example.device)
    return key, weights


def network_profile(snn: nn.Module, example: Tensor) -> tuple[GraphProfile, dict[str, Fans]]:
    """:func:`~.metrics.profile_graph` of ``snn.graph`` for inputs shaped like ``example``
    ``[B, ...]``, kept on the network and reused while every input of the pass is unchanged
    (:func:`_profile_inputs`; weights compared by value, so ``w.data[...] = 0`` is seen), and
    its :func:`counting_fans`."""
    key, weights = _profile_inputs(snn.graph, example)
    cached = snn.__dict__.get(SIMULATE_CACHE)
    if not (isinstance(cached, _Profiled) and cached.still_valid(key)):
        profile = profile_graph(snn.graph, example)
        cached = _Profiled(key, [(w, w.detach().clone()) for w in weights], profile,
                           counting_fans(profile.fanout))
        snn.__dict__[SIMULATE_CACHE] = cached
    return cached.profile, cached.fans

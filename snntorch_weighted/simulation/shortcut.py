"""The radix shortcut: a radix SNN's exact simulation result computed per period.

A radix SNN equals its quantised twin bit for bit (Wang et al., eq. 17-22 with the package's
exactness extension), so the result of ``simulate(snn, x, T)`` (output membranes, spikes and SynOps
per step and layer) follows from evaluating the graph once per *period* on integer codes; the
spikes of a period are the bits of the codes. Nothing is cached between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn

from .. import spikegen
from ..conversion.ops import is_size_expr
from . import decision as _decision
from .counting import BLOCK_BYTES, Counter, Fans, network_profile, watched_modules
from .graphs import fetch
from .inputs import check_batch, check_decision, check_network, resolve_steps, to_network
from .metrics import INPUT, ann_macs, is_stateful
from .result import SimulationResult, readout_of

__all__ = ["radix_shortcut"]


def _radix_modules() -> tuple[type, type, type]:
    from ..conversion.radix import Delay, RadixMaxPool2d
    from ..neurons import RadixLeaky

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
    periods ``n < d`` (pipeline filling: only biases propagate; this needs the tensor inputs of
    every join to have one depth, which the converter's delays ensure; a join that does not is
    refused by name) and constant from period d on, so every node is evaluated once at batch B
    (period d) and at most d times at batch 1. Size reads (``x.size(0)``, ``x.shape``, arithmetic
    on them) carry shapes, not spikes: they have no depth, and a node reading one sees the sizes
    of its source at its own batch (1, B, or T B in :meth:`per_step`), as every sample of the step
    simulation sees the batch it runs at.
    """

    def __init__(self, snn: nn.Module, code: Tensor) -> None:
        self.graph: fx.GraphModule = snn.graph
        self.bits = int(snn.num_bits)
        self.code = code
        self.batch = code.shape[0]
        self.output = snn.output_neuron
        self.powers = torch.exp2(torch.arange(self.bits, dtype=code.dtype, device=code.device))
        self.memo: dict[tuple[fx.Node, int], Any] = {}
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
            ins = {depth[n] for n in node.all_input_nodes
                   if n.op != "get_attr" and not is_size_expr(n)}
            if len(ins) > 1:
                raise ValueError(f"radix shortcut: the inputs of node {node.name!r} arrive after "
                                 f"different numbers of periods {sorted(ins)} (no delay matches "
                                 "them), so its pipeline filling is not input-independent")
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

    def sizes(self, node: fx.Node, batch: int) -> Any:
        """Size expression ``node`` read off its sources as if they had ``batch`` samples (the
        other dimensions of a node are the same in every period)."""
        def arg(n: fx.Node) -> Any:
            if is_size_expr(n):
                return self.sizes(n, batch)
            shape = self.value(n, self.depth[n]).shape
            return torch.empty((), device=self.code.device).expand(batch, *shape[1:])

        args, kwargs = fx.node.map_arg(node.args, arg), fx.node.map_arg(node.kwargs, arg)
        return _apply(self.graph, node, args, kwargs)

    def _zeros(self, node: fx.Node) -> Tensor:
        return torch.zeros_like(self.value(node, self.depth[node])[:1])

    def _lag(self, module: nn.Module) -> int:
        return module.num_steps // self.bits

    def _compute(self, node: fx.Node, period: int) -> Any:
        if node.op == "placeholder":
            return self.code
        if node.op == "get_attr":
            return fetch(self.graph, node.target)
        module = self._module(node)
        if module is None:
            batch = 1 if period < self.depth[node] else self.batch

            def arg(n: fx.Node) -> Any:
                return self.sizes(n, batch) if is_size_expr(n) else self.value(n, period)

            args, kwargs = fx.node.map_arg(node.args, arg), fx.node.map_arg(node.kwargs, arg)
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
        into the batch, one call per node). A ``Delay`` passes on its input's per-step values
        (:meth:`delayed`)."""
        _, _, delay = _radix_modules()
        env: dict[fx.Node, Any] = {}

        def visit(n: fx.Node) -> Any:
            if n not in env:
                if is_size_expr(n):
                    env[n] = self.sizes(n, self.bits * self.batch)
                elif isinstance(self._module(n), delay):
                    env[n] = self.delayed(n, period, transform).flatten(0, 1)
                elif n.op == "placeholder" or self._module(n) is not None:
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

    def delayed(self, node: fx.Node, period: int, transform) -> Tensor:
        """Delay ``node`` (m periods) at every step of ``period``, ``[T, B, ...]``: its input at
        the same step of period ``period - m`` (:meth:`per_step`), zeros before. Not
        ``transform`` of its integer value: a delayed *current* (the sum of a linear residual
        stream, e.g. MobileNet-v2) emits per step the sum of that step's inputs, not bits."""
        lag = self._lag(self.graph.get_submodule(node.target))
        if period < lag:
            zeros = self._zeros(node)
            return zeros.unsqueeze(0).expand(self.bits, self.batch, *zeros.shape[1:])
        return self.per_step(node.args[0], period - lag, transform)

    def emitted(self, node: fx.Node, period: int) -> tuple[Callable[[int, int], Tensor], int]:
        """What stateful ``node`` (or the input) emits at steps ``lo .. hi - 1`` of ``period``, as
        a function of ``(lo, hi)`` returning ``[hi - lo, B', ...]``, and the number of elements
        of one step: those bits of its code; a ``Delay`` re-emits its input's per-step values of
        ``m`` periods earlier (:meth:`delayed`)."""
        _, _, delay = _radix_modules()
        if isinstance(self._module(node), delay):
            values = self.delayed(node, period, _bits)
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


def _count(emitted: tuple[Callable[[int, int], Tensor], int], steps: int, fan: Fans | None,
           keep: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per step: non-zero entries and SynOps ``[T, B']`` (with ``fan``), and with ``keep`` the
    emitted values ``[T, B', ...]``, counted by a :class:`~.counting.Counter`. ``emitted`` is
    ``(get(lo, hi) -> [hi - lo, B', ...], elements per step)``, read in blocks of at most
    ``BLOCK_BYTES`` of float64 (bounded memory, few calls)."""
    counter = Counter({} if fan is None else {"x": fan}, {"x"}, keep)
    get, numel = emitted
    block = max(1, BLOCK_BYTES // (8 * max(numel, 1)))
    for lo in range(0, steps, block):
        hi = min(lo + block, steps)
        counter.add("x", get(lo, hi), steps=hi - lo)
    spikes, synops, trains = counter.results()
    return spikes["x"], synops.get("x"), trains.get("x")


def _period_counts(evaluator: _PeriodEvaluator, node: fx.Node, periods: range,
                   fans: Fans | None, keep: bool) -> dict[int, tuple]:
    """:func:`_count` of what ``node`` emits in each distinct (canonical) period."""
    return {canonical: _count(evaluator.emitted(node, canonical), evaluator.bits, fans, keep)
            for canonical in {evaluator.canonical(node, n) for n in periods}}


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
    check_network(snn)
    check_decision(early_decision)
    if snn.coding != "radix":
        raise ValueError(f"the shortcut is exact for radix networks only (coding={snn.coding!r})")
    num_steps = resolve_steps(snn, num_steps)
    check_batch(inputs, labels, "inputs")
    x = to_network(snn, inputs)
    if labels is not None:
        labels = labels.to(x.device)
    bits, batch = int(snn.num_bits), x.shape[0]
    code = spikegen.quantize_code(x, bits).to(x.dtype if x.is_floating_point() else torch.float64)
    profile, fans = network_profile(snn, x[:1])
    modules, neuron_names = watched_modules(snn)
    evaluator = _PeriodEvaluator(snn, code)
    nodes = {n.target: n for n in snn.graph.graph.nodes if n.op == "call_module"}
    nodes[INPUT] = next(n for n in snn.graph.graph.nodes if n.op == "placeholder")
    out_node = next(n for n in nodes.values() if n.op == "call_module"
                    and snn.graph.get_submodule(n.target) is snn.output_neuron)
    periods = range(-(-num_steps // bits))
    mems = {evaluator.canonical(out_node, n): None for n in periods}
    for period in mems:
        mems[period] = evaluator.output_membranes(out_node, period)
    kept = neuron_names if record_layers else set()
    counts = {name: _period_counts(evaluator, nodes[name], periods, fans.get(name), name in kept)
              for name in [INPUT, *modules]}

    def per_step(name: str, i: int) -> Tensor | None:
        node = nodes[name]
        parts = [counts[name][evaluator.canonical(node, n)][i] for n in periods]
        if parts[0] is None:
            return None
        return _steps([p.expand(-1, batch, *p.shape[2:]) for p in parts], num_steps)

    mem = _steps([mems[evaluator.canonical(out_node, n)].expand(-1, batch, -1) for n in periods],
                 num_steps)
    readout = readout_of(snn, mem)
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
        ann_macs=None if model is None else ann_macs(model, to_network(model, x[:1])),
        layer_trains=trains,
        decision=None if early_decision is None else _decision.early_decision(readout,
                                                                              *early_decision),
        shortcut=True,
    )

"""Running a converted SNN over time: :func:`simulate`.

The pieces: :mod:`.inputs` (checks, the input spike train), :mod:`.loop` (the step loop),
:mod:`.folded` (the fast path), :mod:`.counting` (spikes and SynOps), :mod:`.result`
(:class:`SimulationResult`), :mod:`.shortcut` (the radix shortcut), :mod:`.decision` (early
decision), :mod:`.metrics` (fan-out, MACs).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..conversion.network import SIMULATE_RUNNING as _RUNNING
from ..neurons.reset import stateful_modules
from . import decision as _decision
from .counting import Counter, count_input, network_profile, watched_modules
from .folded import FoldedRunner
from .inputs import check_decision, check_network, input_train, to_network
from .loop import StepProgram, run_loop
from .metrics import INPUT, ann_macs
from .metrics import steps_to_accuracy as steps_to_accuracy
from .plain import emits_binary
from .result import SimulationResult, readout_of
from .shortcut import radix_shortcut

__all__ = ["SimulationResult", "auto_chunk_size", "radix_shortcut", "simulate",
           "steps_to_accuracy"]

CHUNK_BYTES = 4 * 2**20
"""Target size of one folded activation in the automatic chunk rule."""


def auto_chunk_size(max_numel: int, batch: int, itemsize: int, num_steps: int,
                    target_bytes: int = CHUNK_BYTES) -> int:
    """Folded runner's time block: ``clamp(target_bytes // (B * max_numel * itemsize), 1, T)``."""
    per_step = max(batch * max_numel * itemsize, 1)
    return int(min(max(target_bytes // per_step, 1), num_steps))


def _choose_chunk(fold: Any, chunk_size: Any, max_numel: int, train: Tensor) -> int:
    """Steps per folded block; 0: use the step loop."""
    if fold not in (True, False, "auto"):
        raise ValueError(f"fold must be True, False or 'auto', got {fold!r}")
    steps, batch = train.shape[:2]
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        if fold is False:
            raise ValueError("chunk_size applies to the folded runner; pass fold=True or 'auto'")
        return min(chunk_size, steps)
    if fold is False:
        return 0
    chunk = auto_chunk_size(max_numel, batch, train.element_size(), steps)
    return 0 if fold == "auto" and chunk < 2 else chunk


def _check_skip(snn: nn.Module, skip_periods: Any) -> None:
    if skip_periods is None:
        return
    if isinstance(skip_periods, bool) or not isinstance(skip_periods, int) or skip_periods < 0:
        raise ValueError(f"skip_periods must be an int >= 0, got {skip_periods!r}")
    if skip_periods and not hasattr(snn.output_neuron, "skip_periods"):
        raise ValueError(f"skip_periods applies to weighted coding only (coding={snn.coding!r})")


@contextmanager
def _skipping(snn: nn.Module, skip: int | None) -> Iterator[None]:
    """The weighted output integrator ignores ``skip`` periods inside the block (``None``: its
    own setting); restored afterwards."""
    output = snn.output_neuron
    saved = getattr(output, "skip_periods", None)
    if saved is None or skip is None:
        yield
        return
    output.skip_periods = skip
    try:
        yield
    finally:
        output.skip_periods = saved


def _run(snn: nn.Module, train: Tensor, chunk: int, counter: Counter, watched: set[str]
         ) -> Tensor:
    """Reset the network and run it on ``train``: the step loop, or folded with ``chunk``
    steps per block; returns the output membranes ``[T, B, C]``."""
    for module in stateful_modules(snn):  # reset(snn)
        module.reset_mem()
    program = StepProgram(snn.graph, watched)
    if chunk:
        return FoldedRunner(program, counter).run(train, chunk)
    return run_loop(program, train, counter)


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
    reuse_input: bool | None = None,
    shortcut: bool = False,
) -> SimulationResult:
    """Run a converted SNN on a batch; accuracy, spikes and SynOps per step (Kim eq. 15-17).

    Resets ``snn``, encodes ``inputs`` (``snn.encode``), runs ``num_steps`` steps and reads the
    output integrator's membrane after each. Two runners give the same values: the **step
    loop** (``fold=False``) calls the step graph's modules once per step as ``module(x)``, so
    hooks, subclasses and compiled modules see every step; the **folded runner**
    (``fold=True``) runs each block of ``chunk_size`` steps through the stateless layers at once,
    time folded into the batch (see :mod:`.folded` and ``docs/speed.md``); ``fold="auto"``
    folds when the chunk rule gives at least 2 steps per block: ``chunk = clamp(4 MiB //
    (B * largest per-sample activation * itemsize), 1, T)``. Spikes and SynOps are counted
    from the modules' outputs (:mod:`.counting`); spike totals exclude the input, SynOps
    totals include it. Radix networks read their output at period ends.

    Args:
        snn: a :class:`~snntorch_weighted.conversion.network.SpikingNetwork`.
        inputs: values in ``[0, 1]``, ``[B, ...]``; with ``encoded=True`` the input spike train
            ``[T, B, ...]`` itself (values in ``[0, 1]``, checked like raw inputs).
        num_steps: T; defaults to ``snn.latency`` for radix (or the encoded train's length).
        labels: ``[B]`` class indices, for the accuracy curve.
        skip_periods: periods the weighted output integrator ignores in this run (Kim section
            5.1); ``None`` keeps the network's setting.
        early_decision: ``(theta, T1)``: Kim Algorithm 1 from step ``T1`` (:mod:`.decision`).
        record_layers: keep every hidden layer's spike train (memory heavy).
        fold, chunk_size: the runner and its block (above).
        model: the original ANN, to report its MACs per sample.
        encoded: ``inputs`` is the input train already.
        reuse_input: no effect (input reuse was removed, see ``docs/speed.md``); passing it
            warns (``DeprecationWarning``).
        shortcut: radix only: the identical result per period (:func:`radix_shortcut`).

    Raises:
        RuntimeError: ``simulate`` is already running on ``snn`` (another thread, or a hook);
            the neurons' state cannot serve two runs. Give each thread its own copy.
    """
    if reuse_input is not None:
        warnings.warn("simulate(reuse_input=...) has no effect: input reuse was removed "
                      "(docs/speed.md)", DeprecationWarning, stacklevel=3)
    if shortcut:
        if encoded or chunk_size is not None or fold is True or skip_periods is not None:
            raise ValueError("shortcut=True evaluates periods of raw inputs: encoded, fold=True, "
                             "chunk_size and skip_periods do not apply")
        return radix_shortcut(snn, inputs, num_steps, labels, early_decision, record_layers,
                              model)
    check_network(snn)
    check_decision(early_decision)
    _check_skip(snn, skip_periods)
    token = object()
    if snn.__dict__.setdefault(_RUNNING, token) is not token:
        raise RuntimeError("simulate is already running on this network (another thread, or a "
                           "hook inside the run); give each concurrent run its own copy "
                           "(copy.deepcopy(snn))")
    try:
        return _simulate(snn, inputs, num_steps, labels, skip_periods, early_decision,
                         record_layers, (fold, chunk_size), model, encoded)
    finally:
        del snn.__dict__[_RUNNING]


def _simulate(snn: nn.Module, inputs: Tensor, num_steps: int | None, labels: Tensor | None,
              skip_periods: int | None, early_decision: tuple[float, int] | None,
              record_layers: bool, folding: tuple[Any, Any], model: nn.Module | None,
              encoded: bool) -> SimulationResult:
    """:func:`simulate` once its arguments are checked and the network is reserved."""
    train = input_train(snn, inputs, num_steps, labels, encoded)
    if labels is not None:
        labels = labels.to(train.device)
    profile, fans = network_profile(snn, train[0])
    chunk = _choose_chunk(*folding, profile.max_numel, train)
    modules, spiking = watched_modules(snn)
    counter = Counter({n: f for n, f in fans.items() if n in modules}, spiking, record_layers,
                      {n for n in spiking if emits_binary(modules[n])})
    with _skipping(snn, skip_periods):  # decode sees this run's skip_periods too
        mem = _run(snn, train, chunk, counter, set(modules))
        readout = readout_of(snn, mem)
        estimate = snn.decode_trace(readout)
    spikes, synops, trains = counter.results()
    input_spikes, synops[INPUT] = count_input(train, fans[INPUT])
    predictions = readout.argmax(-1)
    return SimulationResult(
        coding=snn.coding, num_steps=train.shape[0], mem=mem, readout=readout, estimate=estimate,
        predictions=predictions,
        accuracy=None if labels is None else (predictions == labels).double().mean(1),
        labels=labels, spikes=spikes, synops=synops, input_spikes=input_spikes,
        num_neurons=dict(counter.num_neurons),
        fanout={n: f for n, f in profile.fanout.items() if n in synops},
        ann_macs=None if model is None else ann_macs(model, to_network(model, train[0, :1])),
        layer_trains=trains,
        decision=None if early_decision is None else _decision.early_decision(readout,
                                                                              *early_decision),
        folded=bool(chunk), chunk_size=max(chunk, 1),
    )

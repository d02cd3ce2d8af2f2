"""Evaluation over a dataset: :func:`evaluate` streams batches through :func:`.runner.simulate`.

:func:`evaluate` takes any iterable of ``(inputs, labels)`` batches (a
:class:`~torch.utils.data.DataLoader`), simulates them one after the other with
:func:`~snntorch_weighted.simulation.runner.simulate` and keeps only what the aggregated result
needs, so memory is bounded by one batch:

* per step, summed over all samples: correct predictions (the accuracy-vs-time curve, Kim
  eq. 15-17), hidden spikes and SynOps per layer, input spikes (``[T]`` each);
* per sample (``[N]``): label, final prediction and read-out membrane (``[N, C]``), total spikes
  and SynOps and, for every early
  decision setting ``(theta, T1)`` (Kim Algorithm 1), the decision, its time and the spikes /
  SynOps up to it;
* the output membranes ``[T, N, C]`` only when asked (``keep_readout=True``).

Per-step sums of integer counts are exact and do not depend on how the samples were batched;
the early decision of a sample depends on its own membranes only, so the aggregated result equals
:func:`simulate` on the concatenated batches (tests/test_evaluate.py).

**Rate coding** draws each sample's Bernoulli train from its own generator, seeded from ``seed``
and the sample's position in the evaluated order (``(position + seed * 0x9E3779B1) mod 2**32``:
distinct positions get distinct streams; torch's CPU generator keeps 32 bits of a seed). A run is
reproducible on a device type and does not depend on the batch size, on the order in which
batches are processed or on how they are sharded. Weighted and radix inputs are deterministic.

**torch.distributed** (``torchrun``, any backend; ``init_process_group`` called by the user):
each rank simulates its shard and the ranks' results are gathered
(``all_gather_object``), so every rank returns the aggregated result of the whole dataset, the
same as one process gives. How the batches are sharded:

* a ``DataLoader`` whose sampler is a :class:`~torch.utils.data.distributed.DistributedSampler`
  (each rank loads its own samples only): the sampler pads the dataset to a multiple of the
  world size with repeated samples; those are recognised by their position (rank ``r``'s k-th
  sample is position ``r + k * W`` of the sampler's order) and dropped, so no sample is counted
  twice. The loader and the sampler must not drop samples (``drop_last=False``), and the sampler
  must have the process group's rank and world size;
* anything else: every rank iterates the same batches (they must come in the same order on
  every rank) and simulates batch ``i`` when ``i % W == rank``; the other batches are loaded
  and skipped.

Positions are in the sampler's order (the dataset's order with ``shuffle=False``, which is what a
single process evaluating the unsharded loader sees). Example, ``torchrun --nproc_per_node 4
eval.py`` (NCCL's ``all_gather_object`` needs each rank's current CUDA device set)::

    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    sampler = DistributedSampler(test_set, shuffle=False)
    loader = DataLoader(test_set, batch_size=64, sampler=sampler, num_workers=8)
    result = evaluate(snn.cuda(), loader, 256)  # the same on every rank
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .decision import EarlyDecision, early_decision, gather_at_time
from .metrics import steps_to_accuracy
from .runner import simulate

__all__ = ["EvaluationResult", "evaluate", "rate_train", "sample_seeds"]

Setting = tuple[float, int]  # (theta, T1) of Kim Algorithm 1
_GOLDEN = 0x9E3779B1  # odd: position -> seed is a bijection mod 2**32 for every run seed


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured over all samples (CPU tensors; N samples, T steps).

    Attributes:
        coding: the network's coding.
        num_steps: T.
        num_samples: N (every sample once, whatever the sharding).
        correct: correct predictions per step, summed over the samples, ``[T]`` (``long``).
        labels: label per sample, ``[N]``.
        final_predictions: prediction after the last step per sample, ``[N]``.
        final_readout: the read-out membrane after the last step per sample, ``[N, C]``.
        spikes: per hidden neuron layer, spikes per step summed over the samples, ``[T]``.
        synops: per spike source (``"input"`` included), SynOps per step summed, ``[T]``.
        input_spikes: input spikes per step summed over the samples, ``[T]``.
        total_spikes: hidden spikes of each sample over the run, ``[N]`` (input excluded).
        total_synops: SynOps of each sample over the run, ``[N]`` (input included).
        num_neurons, fanout, ann_macs: as :class:`~.runner.SimulationResult`.
        decisions: per early-decision setting ``(theta, T1)``, Kim Algorithm 1 over all samples.
        decision_spikes, decision_synops: per setting, hidden spikes / SynOps of each sample up
            to (including) its decision step, ``[N]``.
        readout: the output membranes ``[T, N, C]`` (``keep_readout=True`` only).
        seconds: wall time of the evaluation (this rank, including the gathering).
        world_size: processes that shared the work.
    """

    coding: str
    num_steps: int
    num_samples: int
    correct: Tensor
    labels: Tensor
    final_predictions: Tensor
    final_readout: Tensor
    spikes: dict[str, Tensor]
    synops: dict[str, Tensor]
    input_spikes: Tensor
    total_spikes: Tensor
    total_synops: Tensor
    num_neurons: dict[str, int]
    fanout: dict[str, Tensor]
    ann_macs: int | None = None
    decisions: dict[Setting, EarlyDecision] = field(default_factory=dict)
    decision_spikes: dict[Setting, Tensor] = field(default_factory=dict)
    decision_synops: dict[Setting, Tensor] = field(default_factory=dict)
    readout: Tensor | None = None
    seconds: float = 0.0
    world_size: int = 1

    @property
    def accuracy(self) -> Tensor:
        """Fraction correct per step over all samples, ``[T]`` (float64)."""
        return self.correct.double() / self.num_samples

    @property
    def spikes_per_image(self) -> Tensor:
        """Mean hidden spikes per image at each step, ``[T]`` (input excluded)."""
        return _sum(self.spikes, self.input_spikes).double() / self.num_samples

    @property
    def synops_per_image(self) -> Tensor:
        """Mean SynOps per image at each step, ``[T]`` (input included)."""
        return _sum(self.synops, self.input_spikes).double() / self.num_samples

    @property
    def cum_spikes(self) -> Tensor:
        """Mean hidden spikes per image up to each step, ``[T]``."""
        return self.spikes_per_image.cumsum(0)

    @property
    def cum_synops(self) -> Tensor:
        """Mean SynOps per image up to each step, ``[T]``."""
        return self.synops_per_image.cumsum(0)

    def steps_to_accuracy(self, target: float, stay: bool = True) -> int | None:
        """See :func:`snntorch_weighted.simulation.metrics.steps_to_accuracy`."""
        return steps_to_accuracy(self.accuracy, target, stay)

    # ---- early decision (the first setting, as SimulationResult's single one)
    def _first(self) -> Setting:
        if not self.decisions:
            raise ValueError("no early decision: call evaluate(..., early_decision=(theta, T1))")
        return next(iter(self.decisions))

    @property
    def decision(self) -> EarlyDecision:
        """Kim Algorithm 1 over all samples for the first ``early_decision`` setting."""
        return self.decisions[self._first()]

    @property
    def spikes_at_decision(self) -> Tensor:
        """Hidden spikes per sample up to its decision step (first setting), ``[N]``."""
        return self.decision_spikes[self._first()]

    @property
    def synops_at_decision(self) -> Tensor:
        """SynOps per sample up to its decision step (first setting), ``[N]``."""
        return self.decision_synops[self._first()]

    def early_accuracy(self, setting: Setting | None = None) -> Tensor:
        """Accuracy of the early decisions of ``setting`` (default: the first), 0-dim."""
        dec = self.decisions[self._first() if setting is None else setting]
        return (dec.decision == self.labels).double().mean()

    def summary(self) -> dict[str, float]:
        """Plain numbers for reports, with :meth:`SimulationResult.summary`'s keys."""
        out = {
            "num_steps": float(self.num_steps),
            "num_samples": float(self.num_samples),
            "spikes_per_sample": float(self.total_spikes.double().mean()),
            "synops_per_sample": float(self.total_synops.double().mean()),
            "input_spikes_per_sample": float(self.input_spikes.sum().double() / self.num_samples),
            "final_accuracy": float(self.accuracy[-1]),
        }
        if self.ann_macs is not None:
            out["ann_macs"] = float(self.ann_macs)
        if self.decisions:
            out["mean_decision_time"] = float(self.decision.mean_time())
            out["spikes_at_decision"] = float(self.spikes_at_decision.double().mean())
            out["synops_at_decision"] = float(self.synops_at_decision.double().mean())
            out["early_accuracy"] = float(self.early_accuracy())
        return out


def _sum(per_layer: dict[str, Tensor], like: Tensor) -> Tensor:
    total = torch.zeros_like(like, dtype=torch.long)
    for value in per_layer.values():
        total = total + value
    return total


# --------------------------------------------------------------------------- rate coding


def sample_seeds(positions: Tensor, seed: int) -> list[int]:
    """The generator seed of each sample: ``(position + seed * 0x9E3779B1) mod 2**32``."""
    return [(int(p) + seed * _GOLDEN) % 2**32 for p in positions]


def rate_train(inputs: Tensor, num_steps: int, positions: Tensor, seed: int = 0) -> Tensor:
    """Rate-coded (Bernoulli, ``p = x``) input train ``[T, B, ...]``, one generator per sample.

    Sample b's train is drawn from a generator on ``inputs.device`` seeded with
    :func:`sample_seeds` of ``positions[b]``, so it does not depend on the other samples of
    its batch. Inputs must lie in ``[0, 1]``.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if inputs.numel() and (inputs.min() < 0 or inputs.max() > 1):
        raise ValueError("rate coding needs inputs in [0, 1]")
    train = torch.empty(num_steps, *inputs.shape, dtype=inputs.dtype, device=inputs.device)
    for b, value in enumerate(sample_seeds(positions, seed)):
        generator = torch.Generator(device=inputs.device).manual_seed(value)
        train[:, b].bernoulli_(inputs[b], generator=generator)
    return train


# --------------------------------------------------------------------------- sharding


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _pair(batch: Any, index: int) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"batch {index}: expected an (inputs, labels) pair, got "
                         f"{type(batch).__name__} (wrap a single batch in a list: [(x, y)])")
    x, y = batch
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or y.shape != x.shape[:1]:
        raise ValueError(f"batch {index}: need inputs [B, ...] and labels [B] tensors, got "
                         f"{getattr(x, 'shape', x)!r} and {getattr(y, 'shape', y)!r}")
    return x, y


def _distributed_sampler(batches: Iterable) -> Any:
    sampler = getattr(batches, "sampler", None)
    if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
        return sampler
    return None


def _shard(batches: Iterable, stream: Iterable, rank: int, world: int
           ) -> tuple[Iterator, list[int]]:
    """This rank's batches of ``stream`` (``batches`` or a progress bar around it) as
    ``(x, y, positions)`` and (filled while iterating) the number of samples of the whole
    dataset, as this rank sees it (module docs: sharding)."""
    total = [0]
    sampler = _distributed_sampler(batches)
    if sampler is not None:
        if (sampler.num_replicas, sampler.rank) != (world, rank):
            raise ValueError(f"the DistributedSampler has num_replicas={sampler.num_replicas}, "
                             f"rank={sampler.rank} but this process is rank {rank} of {world}")
        if sampler.drop_last or getattr(batches, "drop_last", False):
            raise ValueError("the DataLoader or its DistributedSampler drops samples "
                             "(drop_last=True): the result would not cover the dataset")
        total[0] = len(sampler.dataset)
        return _sampler_shard(stream, rank, world, total[0]), total
    return _index_shard(stream, rank, world, total), total


def _sampler_shard(batches: Iterable, rank: int, world: int, size: int) -> Iterator:
    seen = 0
    for i, batch in enumerate(batches):
        x, y = _pair(batch, i)
        positions = rank + (seen + torch.arange(len(y))) * world
        seen += len(y)
        keep = positions < size  # the sampler's padding repeats samples: drop it
        if bool(keep.all()):
            yield x, y, positions
        elif bool(keep.any()):
            yield x[keep], y[keep], positions[keep]


def _index_shard(batches: Iterable, rank: int, world: int, total: list[int]) -> Iterator:
    for i, batch in enumerate(batches):
        x, y = _pair(batch, i)
        start, total[0] = total[0], total[0] + len(y)
        if i % world == rank:
            yield x, y, torch.arange(start, total[0])


# --------------------------------------------------------------------------- accumulation


class _Totals:
    """Running per-step sums (on the network's device) and per-sample chunks (CPU)."""

    def __init__(self, settings: list[Setting], keep_readout: bool) -> None:
        self.settings = settings
        self.keep_readout = keep_readout
        self.sums: dict[str, Any] | None = None
        self.meta: dict[str, Any] | None = None
        self.chunks: dict[str, list[Tensor]] = {}

    def _chunk(self, name: str, value: Tensor) -> None:
        # a copy: a view (e.g. the last step of the predictions) would keep the whole batch's
        # storage alive
        self.chunks.setdefault(name, []).append(value.detach().to("cpu", copy=True))

    def add(self, res: Any, positions: Tensor, ann: int | None) -> None:
        correct = (res.predictions == res.labels).sum(1)
        sums = {"correct": correct, "input_spikes": res.input_spikes.sum(1),
                "spikes": {n: s.sum(1) for n, s in res.spikes.items()},
                "synops": {n: s.sum(1) for n, s in res.synops.items()}}
        self.sums = sums if self.sums is None else _add(self.sums, sums)
        if self.meta is None:
            self.meta = {"coding": res.coding, "num_steps": res.num_steps, "ann_macs": ann,
                         "num_neurons": dict(res.num_neurons),
                         "fanout": {n: f.cpu() for n, f in res.fanout.items()}}
        spikes, synops = res.spikes_per_step, res.synops_per_step
        for name, value in (("position", positions), ("label", res.labels),
                            ("final", res.predictions[-1]), ("final_readout", res.readout[-1]),
                            ("spikes", spikes.sum(0)),
                            ("synops", synops.sum(0))):
            self._chunk(name, value)
        for i, (theta, start) in enumerate(self.settings):
            dec = early_decision(res.readout, theta, start)
            for name, value in (("decision", dec.decision), ("time", dec.time),
                                ("decided", dec.decided),
                                ("spikes", gather_at_time(spikes, dec.time)),
                                ("synops", gather_at_time(synops, dec.time))):
                self._chunk(f"d{i}_{name}", value)
        if self.keep_readout:
            self._chunk("readout", res.readout.transpose(0, 1))  # per sample first

    def payload(self, total: int) -> dict[str, Any]:
        """This rank's part, on the CPU (what the ranks exchange)."""
        return {"sums": None if self.sums is None else _map(self.sums, Tensor.cpu),
                "meta": self.meta, "total": total,
                "chunks": {n: torch.cat(c) for n, c in self.chunks.items()}}


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: _add(a[k], b[k]) for k in a}
    return a + b


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value)


def _merge(parts: list[dict[str, Any]], settings: list[Setting], world: int,
           seconds: float) -> EvaluationResult:
    """Sum the ranks' per-step counts, concatenate their samples in position order."""
    done = [p for p in parts if p["sums"] is not None]
    if not done:
        raise ValueError("evaluate got no samples")
    totals = {p["total"] for p in parts}
    sums = done[0]["sums"]
    for p in done[1:]:
        sums = _add(sums, p["sums"])
    chunks = {n: torch.cat([p["chunks"][n] for p in done]) for n in done[0]["chunks"]}
    order = chunks["position"].argsort()
    chunks = {n: c[order] for n, c in chunks.items()}
    count = len(order)
    if len(totals) != 1 or count != totals.pop() or bool(
            (chunks["position"].diff() == 0).any()):
        raise RuntimeError(f"the ranks evaluated {count} samples of a dataset of "
                           f"{sorted(p['total'] for p in parts)} (per rank): under "
                           "torch.distributed every rank must iterate the same batches")
    meta = done[0]["meta"]
    steps = meta["num_steps"]
    decisions, dec_spikes, dec_synops = {}, {}, {}
    for i, setting in enumerate(settings):
        decisions[setting] = EarlyDecision(chunks[f"d{i}_decision"], chunks[f"d{i}_time"],
                                           chunks[f"d{i}_decided"], float(setting[0]),
                                           setting[1], steps)
        dec_spikes[setting] = chunks[f"d{i}_spikes"]
        dec_synops[setting] = chunks[f"d{i}_synops"]
    readout = chunks.get("readout")
    return EvaluationResult(
        coding=meta["coding"], num_steps=steps, num_samples=count, correct=sums["correct"],
        labels=chunks["label"], final_predictions=chunks["final"],
        final_readout=chunks["final_readout"], spikes=sums["spikes"],
        synops=sums["synops"], input_spikes=sums["input_spikes"], total_spikes=chunks["spikes"],
        total_synops=chunks["synops"], num_neurons=meta["num_neurons"], fanout=meta["fanout"],
        ann_macs=meta["ann_macs"], decisions=decisions, decision_spikes=dec_spikes,
        decision_synops=dec_synops,
        readout=None if readout is None else readout.transpose(0, 1),
        seconds=seconds, world_size=world,
    )


# --------------------------------------------------------------------------- evaluate


def _settings(early: Setting | Sequence[Setting] | None) -> list[Setting]:
    if early is None:
        return []
    items = [early] if len(early) == 2 and not isinstance(early[0], (tuple, list)) else early
    out = []
    for item in items:
        if len(item) != 2 or isinstance(item[1], bool) or not isinstance(item[1], int):
            raise ValueError(f"early_decision takes (theta, T1) pairs, got {item!r}")
        out.append((float(item[0]), int(item[1])))
    return out


def _device(snn: nn.Module) -> torch.device:
    for tensor in snn.parameters():
        return tensor.device
    for tensor in snn.buffers():
        return tensor.device
    return torch.device("cpu")


def _progress(batches: Iterable, progress: bool | None, rank: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    total = len(batches) if hasattr(batches, "__len__") else None
    disable = True if rank != 0 or progress is False else (None if progress is None else False)
    return tqdm(batches, total=total, desc=desc, unit="batch", disable=disable,
                dynamic_ncols=True)


@torch.no_grad()
def evaluate(
    snn: nn.Module,
    batches: Iterable,
    num_steps: int | None = None,
    *,
    progress: bool | None = None,
    desc: str = "evaluate",
    seed: int = 0,
    skip_periods: int | None = None,
    early_decision: Setting | Sequence[Setting] | None = None,
    keep_readout: bool = False,
    model: nn.Module | None = None,
    fold: bool | str = "auto",
    chunk_size: int | None = None,
    shortcut: bool = False,
) -> EvaluationResult:
    """Simulate ``snn`` on every batch of ``batches`` and aggregate (module docs).

    Args:
        snn: a converted :class:`~snntorch_weighted.conversion.network.SpikingNetwork`.
        batches: an iterable of ``(inputs, labels)`` pairs, e.g. a ``DataLoader``; inputs in
            ``[0, 1]``. Under ``torch.distributed`` see the module docs for the sharding.
        num_steps: T; defaults to ``snn.latency`` for radix, required otherwise.
        progress: tqdm bar over the batches (rank 0 only); ``None``: only on a terminal.
        desc: the bar's label.
        seed: seed of the rate-coded input trains (per sample, :func:`rate_train`).
        skip_periods, fold, chunk_size, shortcut: passed to
            :func:`~snntorch_weighted.simulation.runner.simulate` for every batch.
        early_decision: one ``(theta, T1)`` or a list of them: Kim Algorithm 1 (T2 = T) on
            every sample, with spikes / SynOps up to each decision.
        keep_readout: also return the output membranes ``[T, N, C]`` (memory grows with N).
        model: the ANN, to report its MACs per sample.

    Returns:
        :class:`EvaluationResult` (on CPU), identical on every rank.
    """
    settings = _settings(early_decision)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    coding = getattr(snn, "coding", None)
    if coding == "rate" and num_steps is None:
        raise ValueError("num_steps is required for 'rate' coding")
    options = {"skip_periods": skip_periods, "fold": fold, "chunk_size": chunk_size}
    if shortcut:
        options = {"shortcut": True, "skip_periods": skip_periods}
    rank, world = _world()
    started = time.perf_counter()
    totals = _Totals(settings, keep_readout)
    shard, dataset_size = _shard(batches, _progress(batches, progress, rank, desc), rank, world)
    device = _device(snn)
    for x, y, positions in shard:
        if coding == "rate":
            train = rate_train(x.to(device), num_steps, positions, seed)
            res = simulate(snn, train, labels=y, encoded=True, model=model, **options)
        else:
            res = simulate(snn, x, num_steps, labels=y, model=model, **options)
        totals.add(res, positions, res.ann_macs)
        model = None  # its MACs once
        del res  # one batch's results alive at a time
    part = totals.payload(dataset_size[0])
    parts = [part]
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, part)
    return _merge(parts, settings, world, time.perf_counter() - started)

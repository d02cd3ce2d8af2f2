"""What :func:`~snntorch_weighted.simulation.runner.simulate` returns: :class:`SimulationResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .decision import EarlyDecision, gather_at_time
from .metrics import steps_to_accuracy

__all__ = ["SimulationResult", "readout_of"]


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


def readout_of(snn: nn.Module, mem: Tensor) -> Tensor:
    """Membrane the decision is read from: radix holds the value of the last period end."""
    if snn.coding != "radix":
        return mem
    period = int(snn.num_bits)
    steps = torch.arange(1, mem.shape[0] + 1, device=mem.device)
    last_end = torch.div(steps, period, rounding_mode="floor") * period - 1
    held = mem[last_end.clamp(min=0)]
    return torch.where((last_end >= 0).view(-1, 1, 1), held, torch.zeros_like(held))

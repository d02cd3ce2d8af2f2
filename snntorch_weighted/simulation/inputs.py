"""Checking :func:`~snntorch_weighted.simulation.runner.simulate`'s arguments and making the
input spike train (``snn.encode``, or a train the caller encoded, validated the same way)."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["check_batch", "check_decision", "check_network", "input_train", "resolve_steps",
           "to_network"]


def check_network(snn: Any) -> None:
    """``snn`` has what ``simulate`` uses of a ``SpikingNetwork``."""
    for attr in ("graph", "encode", "decode", "neurons", "output_neuron", "coding"):
        if not hasattr(snn, attr):
            raise TypeError(f"simulate expects a SpikingNetwork (missing {attr!r}), got "
                            f"{type(snn).__name__}")


def check_decision(early_decision: Any) -> None:
    if early_decision is not None and (not isinstance(early_decision, (tuple, list))
                                       or len(early_decision) != 2):
        raise ValueError(f"early_decision must be (theta, T1), got {early_decision!r}")


def check_batch(inputs: Any, labels: Tensor | None, what: str) -> None:
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError(f"{what} must be a batched tensor [B, ...] of values in [0, 1]")
    if labels is not None and (not isinstance(labels, Tensor)
                               or labels.shape != inputs.shape[:1]):
        raise ValueError(f"labels must be a tensor of shape [{inputs.shape[0]}], got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")


def _check_encoded(train: Tensor) -> None:
    """An encoded input train holds spikes (graded ones up to 1): floating point, no NaN, in
    [0, 1], like the raw inputs :func:`~snntorch_weighted.spikegen.weighted` accepts."""
    if not train.is_floating_point():
        raise ValueError("encoded inputs must be a floating-point spike train [T, B, ...] with "
                         f"values in [0, 1], got dtype {train.dtype}")
    if not train.numel():
        return
    low, high = torch.stack(torch.aminmax(train)).tolist()  # NaN anywhere: both NaN
    if torch.isnan(train).any():
        raise ValueError("encoded inputs contain NaN")
    if low < 0 or high > 1:
        raise ValueError(f"encoded inputs must be spikes in [0, 1] (graded spikes included), "
                         f"got values in [{low:g}, {high:g}]")


def resolve_steps(snn: nn.Module, num_steps: int | None) -> int:
    """``num_steps``, checked; a radix network defaults to its latency."""
    if num_steps is None:
        if snn.coding != "radix":
            raise ValueError(f"num_steps is required for {snn.coding!r} coding")
        num_steps = int(snn.latency)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    return num_steps


def to_network(snn: nn.Module, inputs: Tensor) -> Tensor:
    """Inputs on the network's device, in its floating dtype (radix nets are float64)."""
    for tensor in itertools.chain(snn.parameters(), snn.buffers()):  # stops at the first one
        if tensor.is_floating_point():
            return inputs.to(device=tensor.device, dtype=tensor.dtype)
    return inputs


def input_train(snn: nn.Module, inputs: Any, num_steps: int | None, labels: Tensor | None,
                encoded: bool) -> Tensor:
    """The input spike train ``[T, B, ...]`` on the network's device: ``snn.encode`` of raw
    inputs ``[B, ...]`` (which checks them), or ``inputs`` itself when ``encoded`` (checked
    here the same way; ``num_steps``, if given, must match its length)."""
    if not encoded:
        check_batch(inputs, labels, "inputs")
        return snn.encode(to_network(snn, inputs), resolve_steps(snn, num_steps))
    if not isinstance(inputs, Tensor) or inputs.dim() < 3:
        raise ValueError("encoded inputs must be a spike train [T, B, ...]")
    check_batch(inputs[0], labels, "each step of the encoded inputs")
    if num_steps not in (None, inputs.shape[0]):
        raise ValueError(f"num_steps={num_steps} but the encoded inputs have {len(inputs)} steps")
    _check_encoded(inputs)
    return to_network(snn, inputs)

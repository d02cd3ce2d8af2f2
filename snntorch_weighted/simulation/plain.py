"""When a module may be called other than once per step: the one place that decides it.

``simulate``'s step loop always calls ``module(x)`` once per step. Two things depart from that,
each only where it provably computes the same:

* :func:`runs_as_block`: the folded runner calls a stateful module's ``forward_steps(x[t, B,
  ...])`` instead of ``t`` calls;
* :func:`folds`: the folded runner calls a stateless layer once on ``t`` steps folded into the
  batch;

and one thing the counting trusts: :func:`emits_binary`, a neuron's spikes are exactly 0 / 1, so
they are counted as they are instead of through a non-zero mask (measured: 11 % of a Net4
batch-1 step-loop call, ``docs/speed.md``).

All three require :func:`calls_plainly`: calling the module is calling its class's ``forward``
(no hooks of any kind, no compiled call, no ``forward`` set on the instance). They are checked at
every run, so a hook added or removed between runs is honoured.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _torch_module

from ..conversion.layers import Scale, SpikeMaxPool2d
from ..conversion.radix import Delay, RadixMaxPool2d
from ..neurons import RadixLeaky, WeightedLeaky

__all__ = ["calls_plainly", "emits_binary", "folds", "runs_as_block"]

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_STEPPERS = (WeightedLeaky, RadixLeaky, SpikeMaxPool2d, Delay, RadixMaxPool2d)
"""The package's stateful classes; ``forward_steps`` of these classes equals stepping."""
_STATELESS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.MaxPool1d, nn.MaxPool2d,
              nn.Flatten, nn.Identity, nn.ReLU, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, Scale)
"""Layers whose output row i depends only on input row i (in eval mode, flattening no batch)."""


def calls_plainly(module: nn.Module) -> bool:
    """Whether ``module(x)`` is exactly its class's ``forward(x)`` now: no forward / backward
    hooks or pre-hooks on it, no global module hooks, not compiled with ``module.compile()``,
    no ``forward`` set on the instance, no JIT tracing."""
    if torch._C._get_tracing_state() or any(getattr(_torch_module, name, None)
                                            for name in _GLOBAL_HOOKS):
        return False
    return not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or "forward" in module.__dict__
                or "forward_steps" in module.__dict__
                or getattr(module, "_compiled_call_impl", None) is not None
                or type(module).__call__ is not nn.Module.__call__)


def runs_as_block(module: nn.Module) -> bool:
    """Whether ``module.forward_steps(x[t, B, ...])`` provably equals ``t`` calls
    ``module(x[s])``: the module is an instance of one of the package's stateful classes itself
    (not of a subclass, which may override ``forward``), that class has ``forward_steps``
    (equal to stepping, tested with each class), and the module is called plainly
    (:func:`calls_plainly`: no hooks that would see, or change, each step)."""
    cls = type(module)
    return cls in _STEPPERS and hasattr(cls, "forward_steps") and calls_plainly(module)


def folds(module: nn.Module) -> bool:
    """Whether ``module`` may run once on a block with time folded into the batch: exactly one
    of the stateless layer classes (not a subclass), called plainly, not in training mode
    (dropout draws, batch statistics), and not flattening the batch dimension."""
    if type(module) not in _STATELESS or not calls_plainly(module):
        return False
    if module.training and isinstance(module, (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)):
        return False
    return not (isinstance(module, nn.Flatten) and module.start_dim == 0)


def emits_binary(module: nn.Module) -> bool:
    """Whether every spike ``module`` returns is exactly 0 or 1, a fresh tensor each call: one
    of the package's neuron classes itself (its ``forward`` fires with the Heaviside step),
    called plainly (no hook can change the output), with ``graded_spikes_factor`` 1 (read now,
    as a value, so a ``.data`` edit is seen)."""
    if type(module) not in (WeightedLeaky, RadixLeaky) or not calls_plainly(module):
        return False
    factor = module.graded_spikes_factor
    if isinstance(factor, torch.Tensor):
        return factor.numel() == 1 and factor.item() == 1
    return factor == 1

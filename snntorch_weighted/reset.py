"""Resetting the state of every stateful module inside one network."""

from __future__ import annotations

from torch import nn

from .metrics import is_stateful

__all__ = ["reset", "stateful_modules"]


def stateful_modules(net: nn.Module) -> tuple[nn.Module, ...]:
    """The modules of ``net`` (itself included) that :func:`reset` restarts, in its order."""
    return tuple(m for m in net.modules() if is_stateful(m))


def reset(net: nn.Module) -> nn.Module:
    """Restart every neuron (and stateful spiking layer) inside ``net``; returns ``net``.

    Walks ``net.modules()`` recursively and calls ``reset_mem()`` on each stateful module (whose
    class defines one, :func:`~snntorch_weighted.metrics.is_stateful`):
    membranes become fresh zeros (detached from any graph) and step clocks restart. Unlike
    :func:`snntorch.utils.reset`, which only looks at ``net``'s direct children and then resets
    every ``Leaky`` ever created, this touches ``net`` and nothing else.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"reset expects an nn.Module, got {type(net).__name__}")
    for module in stateful_modules(net):
        module.reset_mem()
    return net

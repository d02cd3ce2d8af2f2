"""Resetting the state of every stateful module inside one network."""

from __future__ import annotations

from torch import nn

__all__ = ["is_stateful", "reset", "stateful_modules"]


def is_stateful(module: nn.Module) -> bool:
    """A module with state over time: its class defines ``reset_mem`` (neurons, spike max-pool).

    Looked up on the class: a failed instance lookup goes through ``nn.Module.__getattr__``, which
    raises and catches an exception per module (:func:`~snntorch_weighted.reset` runs this for
    every module of a network before each sequence)."""
    return callable(getattr(type(module), "reset_mem", None))


def stateful_modules(net: nn.Module) -> tuple[nn.Module, ...]:
    """The modules of ``net`` (itself included) that :func:`reset` restarts, in its order."""
    return tuple(m for m in net.modules() if is_stateful(m))


def reset(net: nn.Module) -> nn.Module:
    """Restart every neuron (and stateful spiking layer) inside ``net``; returns ``net``.

    Walks ``net.modules()`` recursively and calls ``reset_mem()`` on each stateful module (whose
    class defines one, :func:`is_stateful`):
    membranes become fresh zeros (detached from any graph) and step clocks restart. Unlike
    :func:`snntorch.utils.reset`, which only looks at ``net``'s direct children and then resets
    every ``Leaky`` ever created, this touches ``net`` and nothing else.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"reset expects an nn.Module, got {type(net).__name__}")
    for module in stateful_modules(net):
        module.reset_mem()
    return net

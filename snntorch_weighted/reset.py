"""Resetting the state of every stateful module inside one network."""

from __future__ import annotations

from torch import nn

__all__ = ["reset"]


def reset(net: nn.Module) -> nn.Module:
    """Restart every neuron (and stateful spiking layer) inside ``net``; returns ``net``.

    Walks ``net.modules()`` recursively and calls ``reset_mem()`` on each module that has one:
    membranes become fresh zeros (detached from any graph) and step clocks restart. Unlike
    :func:`snntorch.utils.reset`, which only looks at ``net``'s direct children and then resets
    every ``Leaky`` ever created, this touches ``net`` and nothing else.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"reset expects an nn.Module, got {type(net).__name__}")
    for module in net.modules():
        reset_mem = getattr(module, "reset_mem", None)
        if callable(reset_mem):
            reset_mem()
    return net

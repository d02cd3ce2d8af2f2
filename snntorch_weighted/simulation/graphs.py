"""Reading a step graph's modules and attributes (shared by the runners and the counting)."""

from __future__ import annotations

from typing import Any

from torch import fx, nn

__all__ = ["fetch", "graph_modules"]


class _Modules(dict):
    """``{qualified name: module}``; a name ``named_modules`` skipped (a module registered
    twice) is looked up when asked for."""

    def __init__(self, graph: fx.GraphModule) -> None:
        super().__init__(graph.named_modules())
        self.graph = graph

    def __missing__(self, name: str) -> nn.Module:
        module = self[name] = self.graph.get_submodule(name)
        return module


def graph_modules(graph: fx.GraphModule) -> dict[str, nn.Module]:
    """The graph's modules by qualified name (one walk, instead of a ``get_submodule`` per
    node)."""
    return _Modules(graph)


def fetch(root: nn.Module, target: str) -> Any:
    """The attribute ``target`` (dotted) of ``root``, as a ``get_attr`` node reads it."""
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value

"""The step loop: the step graph once per step, every module called the ordinary way.

:class:`StepProgram` is the network's ``torch.fx`` step graph read afresh at every run (so an
edit of the graph, in place or not, is what runs) as a list of operations. :meth:`StepProgram.step`
evaluates them for one step like ``GraphModule.forward`` does, calling every module as
``module(*args)`` (``nn.Module.__call__``: forward hooks and pre-hooks, global hooks, a subclass's
``forward`` and ``module.compile()`` all see every step), and hands the output of each watched
module to a :class:`~.counting.Counter` (spikes and SynOps are counted from what the module,
after its hooks, returned). :func:`run_loop` is the runner of ``simulate(fold=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

from .counting import Counter
from .graphs import fetch, graph_modules

__all__ = ["Op", "StepProgram", "resolve", "run_loop"]


class _Ref:
    """An argument that is the value of an earlier operation (its index)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def resolve(value: Any, env: list[Any]) -> Any:
    """``value`` with every :class:`_Ref` replaced by its value in ``env`` (nested containers
    too)."""
    if type(value) is _Ref:
        return env[value.index]
    if isinstance(value, (tuple, list)):
        return type(value)(resolve(v, env) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, env) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(resolve(value.start, env), resolve(value.stop, env),
                     resolve(value.step, env))
    return value


def _is_flat(args: tuple) -> bool:
    """Every argument is a reference or a plain constant (resolved without recursion)."""
    return all(type(a) is _Ref or not isinstance(a, (tuple, list, dict, slice)) for a in args)


@dataclass
class Op:
    """One node of the step graph, ready to evaluate.

    ``fn``: the module (``call_module``), function (``call_function``), method name
    (``call_method``) or fetched value (``get_attr``); ``args`` / ``kwargs`` hold :class:`_Ref`
    for node values; ``watched``: the module is counted (its qualified name), else ``None``.
    """

    node: fx.Node
    fn: Any
    args: tuple
    kwargs: dict
    watched: str | None
    flat: bool
    inputs: tuple[int, ...]  # the operations whose values it reads

    def arguments(self, env: list[Any] | dict[int, Any]) -> tuple[tuple, dict]:
        if self.flat:
            args = tuple(env[a.index] if type(a) is _Ref else a for a in self.args)
        else:
            args = resolve(self.args, env)
        return args, (resolve(self.kwargs, env) if self.kwargs else {})


def _callee(graph: fx.GraphModule, modules: dict[str, nn.Module], node: fx.Node) -> Any:
    """What an operation calls (see :class:`Op`)."""
    if node.op == "call_module":
        return modules[str(node.target)]
    if node.op == "get_attr":
        return fetch(graph, str(node.target))
    if node.op in ("call_function", "call_method"):
        return node.target
    if node.op == "placeholder":
        return None
    raise ValueError(f"unexpected node {node.name!r} ({node.op}) in the step graph")


class StepProgram:
    """The operations of ``graph`` (one time step: input spikes ``[B, ...]`` -> output
    membrane ``[B, C]``), with the modules named in ``watched`` counted.

    Raises ``ValueError`` for a graph with other than one input or with an unknown node kind.
    """

    def __init__(self, graph: fx.GraphModule, watched: set[str]) -> None:
        self.graph = graph
        self.ops: list[Op] = []
        index: dict[fx.Node, int] = {}
        self.output: Any = None
        modules = graph_modules(graph)
        for node in graph.graph.nodes:
            refs = fx.node.map_arg((node.args, node.kwargs), lambda n: _Ref(index[n]))
            args, kwargs = tuple(refs[0]), dict(refs[1])
            if node.op == "output":
                self.output = args[0]
                break
            fn = _callee(graph, modules, node)
            name = str(node.target) if node.op == "call_module" and node.target in watched else None
            index[node] = len(self.ops)
            inputs = tuple(sorted({index[n] for n in node.all_input_nodes}))
            self.ops.append(Op(node, fn, args, kwargs, name, _is_flat(args), inputs))
        if sum(op.node.op == "placeholder" for op in self.ops) != 1:
            raise ValueError("the step graph must have exactly one input (the spikes of a step)")

    def step(self, x_t: Tensor, counter: Counter) -> Tensor:
        """One time step, every module called as ``module(*args)``; returns the graph's output."""
        env: list[Any] = []
        for op in self.ops:
            kind = op.node.op
            if kind == "placeholder":
                env.append(x_t)
                continue
            if kind == "get_attr":
                env.append(op.fn)
                continue
            args, kwargs = op.arguments(env)
            if kind == "call_method":
                out = getattr(args[0], op.fn)(*args[1:], **kwargs)
            else:
                out = op.fn(*args, **kwargs)
            if op.watched is not None:
                counter.add(op.watched, out)
            env.append(out)
        return self.result(env)

    def result(self, env: list[Any]) -> Tensor:
        """The graph's output from the values of all operations."""
        out = resolve(self.output, env)
        if not isinstance(out, Tensor):
            raise ValueError("the step graph must return the output membrane (a tensor)")
        return out


def run_loop(program: StepProgram, train: Tensor, counter: Counter) -> Tensor:
    """The step loop: :meth:`StepProgram.step` for every step of the input ``train``
    ``[T, B, ...]``, in order; returns the output membranes ``[T, B, C]``."""
    return torch.stack([program.step(x_t, counter) for x_t in train])

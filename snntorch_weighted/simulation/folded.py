"""The fast path: time folded into the batch through the stateless layers.

The step loop evaluates the whole step graph once per step. :class:`FoldedRunner` evaluates it
once per *block* of ``t`` steps instead, node by node, with time folded into the batch: a value
of the block is ``[t * B, ...]`` (step-major). Every node's output at step ``s`` depends only on
its inputs at step ``s`` and its own state, so the two orders compute the same values:

* a stateless node (:func:`~.plain.folds`: a layer of a known stateless class, or one of a few
  elementwise functions) runs once on the whole block;
* a stateful module (a neuron, a spike max-pool, a delay) steps through the block in time order:
  with one call ``module.forward_steps(x[t, B, ...])`` where that provably equals ``t`` calls
  (:func:`~.plain.runs_as_block`), else with ``t`` ordinary calls ``module(x[s])``;
* any other node (a module with hooks, a subclass, an unknown module or function) is called once
  per step, ``node(x[s])``, exactly as the step loop calls it.

The modules' outputs go to the :class:`~.counting.Counter` as blocks. The step loop's and this
runner's results are bit-identical whenever every weight layer computes each output row the same
way whatever the number of rows (exact sums: always; BLAS may pick other float32 kernels for 1-2
rows than for many, see ``docs/speed.md``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, nn

from ..conversion.convert import _membrane
from ..neurons.reset import is_stateful
from .counting import Counter
from .loop import Op, StepProgram
from .plain import folds, runs_as_block

__all__ = ["FoldedRunner"]

_ELEMENTWISE = (operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul,
                torch.relu, nn.functional.relu)


def _folds_call(op: Op, args: tuple) -> bool:
    """A function / method node that acts on each sample alone: elementwise arithmetic, the
    membrane of a neuron's ``(spk, mem)``, an item of a tuple, ``flatten`` from dim 1."""
    fn, kind = op.fn, op.node.op
    if kind == "call_function":
        if fn is operator.getitem or fn is _membrane:
            return isinstance(args[0], (tuple, list))
        if fn is torch.flatten:
            return len(args) > 1 and isinstance(args[1], int) and args[1] >= 1
        return fn in _ELEMENTWISE
    if fn == "flatten":
        return len(args) > 1 and isinstance(args[1], int) and args[1] >= 1
    return fn in ("add", "mul", "relu")


def _fold(outputs: list[Any]) -> Any:
    """Per-step outputs -> one folded value: tensors stacked into ``[t * B, ...]``, tuples
    element by element, equal plain values (e.g. a size) kept as one."""
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.stack(outputs).flatten(0, 1)
    if isinstance(first, (tuple, list)):
        return type(first)(_fold([o[i] for o in outputs]) for i in range(len(first)))
    if all(o == first for o in outputs):
        return first
    raise ValueError(f"a node returned different non-tensor values per step: {outputs[:3]}")


def _at_step(value: Any, steps: int, s: int) -> Any:
    """Step ``s`` of a folded value (tensors, tuples of them; a plain value is every step's)."""
    if isinstance(value, Tensor):
        return value.unflatten(0, (steps, -1))[s]
    if isinstance(value, (tuple, list)):
        return type(value)(_at_step(v, steps, s) for v in value)
    return value


def _unfold(value: Any, steps: int) -> Any:
    """A folded value (or tuple of them) as ``[steps, B, ...]``."""
    if isinstance(value, Tensor):
        return value.unflatten(0, (steps, -1))
    return type(value)(_unfold(v, steps) for v in value)


class FoldedRunner:
    """``simulate``'s fast path over ``program`` (module docstring), counting into ``counter``."""

    def __init__(self, program: StepProgram, counter: Counter) -> None:
        self.program = program
        self.counter = counter

    def run(self, train: Tensor, chunk: int) -> Tensor:
        """Output membranes ``[T, B, C]`` for the input ``train`` ``[T, B, ...]``, ``chunk``
        steps per block."""
        return torch.cat([self._block(train[s:s + chunk]) for s in range(0, len(train), chunk)])

    def _block(self, block: Tensor) -> Tensor:
        steps = block.shape[0]
        env: list[Any] = []
        timed: list[bool] = []
        for op in self.program.ops:
            kind = op.node.op
            if kind in ("placeholder", "get_attr"):
                env.append(block.flatten(0, 1) if kind == "placeholder" else op.fn)
                timed.append(kind == "placeholder")
                continue
            args, kwargs = op.arguments(env)
            is_timed = any(timed[i] for i in op.inputs)
            stateful = kind == "call_module" and is_stateful(op.fn)
            if not is_timed and not stateful:
                out = self._call(op, args, kwargs)  # a constant: the same at every step
            elif kind == "call_module":
                out = self._module(op, (args, kwargs), (env, timed), steps, stateful)
            elif _folds_call(op, args):
                out = self._call(op, args, kwargs)
            else:
                out = _each_step(op, env, timed, steps)
            env.append(out)
            timed.append(is_timed or stateful)
        out = self.program.result(env)
        return out.unflatten(0, (steps, -1))

    @staticmethod
    def _call(op: Op, args: tuple, kwargs: dict) -> Any:
        if op.node.op == "call_method":
            return getattr(args[0], op.fn)(*args[1:], **kwargs)
        return op.fn(*args, **kwargs)

    def _module(self, op: Op, arguments: tuple[tuple, dict], values: tuple[list, list],
                steps: int, stateful: bool) -> Any:
        """A module node: folded, through ``forward_steps`` or step by step (module doc)."""
        module, (args, kwargs) = op.fn, arguments
        if not stateful and folds(module):
            out = module(*args, **kwargs)  # stateless: not counted
        elif (stateful and runs_as_block(module) and len(args) == 1 and not kwargs
              and isinstance(args[0], Tensor) and op.inputs and values[1][op.inputs[0]]):
            out = module.forward_steps(args[0].unflatten(0, (steps, -1)))
            if op.watched is not None:
                self.counter.add(op.watched, out, steps)
            return _fold_block(out)
        else:
            out = _each_step(op, *values, steps)
        if op.watched is not None:
            self.counter.add(op.watched, _unfold(out, steps), steps)
        return out


def _each_step(op: Op, env: list[Any], timed: list[bool], steps: int) -> Any:
    """The node called once per step on that step's inputs, in time order (folded result)."""
    outputs = []
    for s in range(steps):
        local = {i: _at_step(env[i], steps, s) if timed[i] else env[i] for i in op.inputs}
        outputs.append(FoldedRunner._call(op, *op.arguments(local)))
    return _fold(outputs)


def _fold_block(out: Any) -> Any:
    """A ``forward_steps`` result ``[t, B, ...]`` (or a tuple of them) as ``[t * B, ...]``."""
    if isinstance(out, Tensor):
        return out.flatten(0, 1)
    return type(out)(o.flatten(0, 1) for o in out)

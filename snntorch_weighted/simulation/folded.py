"""The fast path: time folded into the batch through the stateless layers.

The step loop evaluates the whole step graph once per step. :class:`FoldedRunner` evaluates it
once per *block* of ``t`` steps instead, node by node, with time folded into the batch: a value
of the block is ``[t * B, ...]`` (step-major). Every node's output at step ``s`` depends only on
its inputs at step ``s`` and its own state, so the two orders compute the same values:

* a stateless node (:func:`folds`: a layer of a known stateless class, or one of a few
  elementwise functions) runs once on the whole block;
* a stateful module (a neuron, a spike max-pool, a delay) steps through the block in time order:
  with one call ``module.forward_steps(x[t, B, ...])`` where that provably equals ``t`` calls
  (:func:`runs_as_block`), else with ``t`` ordinary calls ``module(x[s])``;
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
from torch.nn.modules import module as _torch_module

from ..conversion.convert import _membrane
from ..conversion.layers import Scale, SpikeMaxPool2d
from ..conversion.radix import Delay, RadixMaxPool2d
from ..neurons.leaky import RadixLeaky, WeightedLeaky
from ..neurons.reset import is_stateful
from .counting import Counter
from .loop import Op, StepProgram

__all__ = ["FoldedRunner", "calls_plainly", "folds", "runs_as_block"]

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_STEPPERS = (WeightedLeaky, RadixLeaky, SpikeMaxPool2d, Delay, RadixMaxPool2d)
"""The package's stateful classes; ``forward_steps`` of these classes equals stepping."""
_STATELESS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.MaxPool1d, nn.MaxPool2d,
              nn.Flatten, nn.Identity, nn.ReLU, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, Scale)
"""Layers whose output row i depends only on input row i (in eval mode, flattening no batch)."""
_ELEMENTWISE = (operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul,
                torch.relu, nn.functional.relu)


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
    """Step ``s`` of a folded value (tensors and tuples of tensors)."""
    if isinstance(value, Tensor):
        return value.unflatten(0, (steps, -1))[s]
    return type(value)(_at_step(v, steps, s) for v in value)


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
              and isinstance(args[0], Tensor)):
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

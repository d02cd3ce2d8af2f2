"""Host-side mirror of a stateful module's step clock (one rule for neurons and clocked layers).

The step clock is a 0-dim ``long`` tensor buffer (``module.step``) so that it works under
``torch.compile`` and on any device without host syncs. In eager inference the phase of a step
(e.g. the weight :math:`2^{-(1 + t \\bmod K)}`) is cheaper to compute from a Python int, so
:class:`HostClock` remembers which clock tensor it mirrors and its value. The mirror is trusted
only while the module's current clock *is* that tensor object, unchanged since (same version
counter): a reset, a device move, an in-place write to the clock or steps taken while
``torch.compile`` traced leave it out of sync, and the tensor clock is used instead. (Clocks made
under ``torch.inference_mode`` have no version counter: in-place writes to them go unnoticed.)

While in sync, :meth:`HostClock.advance` also saves the per-step ``clock + 1`` kernel: the clock
tensor of each value is made once (by that same addition) and reused by later sequences.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["HostClock", "QuickSteps", "quick_steps", "restart_clock"]

#: clock tensors of values up to this are kept for reuse (8 bytes of data each)
MAX_CACHED = 1 << 14


def _version(tensor: Tensor) -> int:
    """The version counter of ``tensor`` (-1 for an inference tensor, which has none)."""
    return -1 if tensor.is_inference() else tensor._version


class HostClock:
    """The Python value of a clock tensor, valid while that tensor is the module's clock."""

    def __init__(self) -> None:
        self._tensor: Tensor | None = None
        self._version = 0
        self._count = 0
        self._made: dict[int, Tensor] = {}  # value -> a clock tensor of that value (one device)

    def restart(self, clock: Tensor) -> None:
        """``clock`` is a fresh zero clock."""
        if not torch.compiler.is_compiling():
            self._tensor, self._version, self._count = clock, _version(clock), 0
            if self._made and next(iter(self._made.values())).device != clock.device:
                self._made = {}

    def read(self, clock: Tensor) -> int | None:
        """The value of ``clock`` when mirrored, else None (the tensor clock must be used)."""
        if torch.compiler.is_compiling() or self._tensor is not clock:
            return None
        if self._version >= 0 and clock._version != self._version:  # written in place
            return None
        return self._count

    def advance(self, clock: Tensor, steps: int, count: int | None = None) -> Tensor:
        """The module's next clock, ``clock + steps``, kept mirrored when ``clock`` is.

        ``count``: what :meth:`read` returned for ``clock`` in this step (saves reading again).
        In sync, the tensor of that value is reused if one was made before and is unchanged
        (no in-place writes), so no kernel runs per step.
        """
        if count is None:
            count = self.read(clock)
        if count is None:
            if not torch.compiler.is_compiling():
                self._tensor = None
            return clock + steps
        count += steps
        new = self._made.get(count)
        if new is None or _version(new) > 0:
            new = clock + steps
            if count <= MAX_CACHED:
                self._made[count] = new
        self._tensor, self._version, self._count = new, _version(new), count
        return new

    def forget(self) -> None:
        """Stop trusting the mirror (the next steps use the tensor clock)."""
        self._tensor = None


def restart_clock(buffers: dict[str, Tensor], mirror: HostClock, device: torch.device) -> None:
    """Restart a module's clock ``buffers["step"]`` at zero on ``device``, mirrored by ``mirror``:
    the clock tensor is kept when the mirror knows it holds zero there (a reset made it, no step
    since), else a new zero clock is made."""
    clock = buffers["step"]
    if mirror.read(clock) != 0 or clock.device != device:
        clock = buffers["step"] = torch.zeros((), dtype=torch.long, device=device)
    mirror.restart(clock)


class QuickRun:
    """A module's quick steps in a :func:`quick_steps` block: the clock value when they started
    (``start``), the steps counted since on the host (``count``: the clock's value now), the
    input shape and dtype they apply to and the constants the module's step needs (fixed for the
    block)."""

    __slots__ = ("start", "count", "shape", "dtype", "constants")

    def __init__(self, count: int, like: Tensor, constants: tuple) -> None:
        self.start = self.count = count
        self.shape, self.dtype = like.shape, like.dtype
        self.constants = constants


class QuickSteps:
    """Mixin of the stateful modules that can take quick steps (:func:`quick_steps`): a step whose
    clock is counted on the host only, without the per-step bookkeeping of ``forward`` (restart
    checks, reading the constants and the mirror, a new clock tensor); the clock tensor is brought
    up to date when the quick steps stop.

    The module's ``forward`` takes a quick step itself, inline (a call less per step), when
    ``self._quick`` is a :class:`QuickRun` that applies, and returns :meth:`_step_normally`
    otherwise. It defines ``_regular_forward(x, state)`` (its usual step; ``state``: a neuron's
    ``mem`` argument) and ``_quick_constants(x)`` (what its quick steps need, or None: none for
    this input)."""

    _quick: QuickRun | bool | None = None  # None: no quick steps; False: armed; or the run

    def _step_normally(self, x: Tensor, state: Tensor | None = None):
        """The regular step; in a :func:`quick_steps` block, quick steps stop before it and start
        after it when they can."""
        quick = self._quick
        if quick:
            self._stop_quick(quick)
        result = self._regular_forward(x, state)
        if quick is not None:
            self._start_quick(x)
        return result

    def _start_quick(self, x: Tensor) -> None:
        """After a regular step in a block: quick steps from here on, when the mirror is in sync,
        gradients are off and the module offers them for ``x`` (else none in this block)."""
        count = self._host_clock.read(self._buffers["step"])
        constants = None if count is None or torch.is_grad_enabled() else self._quick_constants(x)
        self.__dict__["_quick"] = (None if constants is None
                                   else QuickRun(count, x, constants))

    def _stop_quick(self, run: QuickRun) -> None:
        """Bring the clock tensor (and its mirror) up to ``run.count``; armed again."""
        buffers = self._buffers
        buffers["step"] = self._host_clock.advance(buffers["step"], run.count - run.start,
                                                   run.start)
        self.__dict__["_quick"] = False
        self._quick_stopped()

    def _quick_stopped(self) -> None:
        """Hook for state the quick steps leave behind (neurons: the membrane they last made)."""


@contextmanager
def quick_steps(modules: Iterable[object]) -> Iterator[None]:
    """Within the block, the :class:`QuickSteps` modules among ``modules`` take every step after
    their first one as a quick step: the same kernels on the same values as ``forward``, with the
    clock counted on the host. Their clock tensor ``step`` is brought up to date when the block
    ends (or when a step does not qualify, e.g. a new input shape or dtype: that step runs as
    usual).

    For a run of steps nothing else watches, as in
    :func:`~snntorch_weighted.simulation.runner.simulate`'s step loop: inside the block the modules
    must
    not be reset, have their constants (beta, threshold, ...) or clock changed, or be stepped by
    ``forward_steps``; ``module.step`` is stale until the block ends; a non-firing output
    integrator returns one zero spike tensor for all its quick steps. Each quick step saves the
    Python bookkeeping of a step (several microseconds per module and step on a CPU).
    """
    chosen = [m for m in modules if isinstance(m, QuickSteps)]
    for module in chosen:
        module.__dict__["_quick"] = False
    try:
        yield
    finally:
        for module in chosen:
            run = module.__dict__.get("_quick")
            if run:
                module._stop_quick(run)
            module.__dict__.pop("_quick", None)

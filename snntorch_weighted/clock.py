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

import torch
from torch import Tensor

__all__ = ["HostClock"]

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

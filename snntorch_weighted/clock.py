"""Host-side mirror of a stateful module's step clock (one rule for neurons and clocked layers).

The step clock is a 0-dim ``long`` tensor buffer (``module.step``) so that it works under
``torch.compile`` and on any device without host syncs. In eager inference the phase of a step
(e.g. the weight :math:`2^{-(1 + t \\bmod K)}`) is cheaper to compute from a Python int, so
:class:`HostClock` remembers which clock tensor it mirrors and its value. The mirror is trusted
only while the module's current clock *is* that tensor object: a reset, a device move or steps
taken while ``torch.compile`` traced leave it out of sync, and the tensor clock is used instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["HostClock"]


class HostClock:
    """The Python value of a clock tensor, valid while that tensor is the module's clock."""

    def __init__(self) -> None:
        self._tensor: Tensor | None = None
        self._count = 0

    def restart(self, clock: Tensor) -> None:
        """``clock`` is a fresh zero clock."""
        if not torch.compiler.is_compiling():
            self._tensor, self._count = clock, 0

    def read(self, clock: Tensor) -> int | None:
        """The value of ``clock`` when mirrored, else None (the tensor clock must be used)."""
        if torch.compiler.is_compiling() or self._tensor is not clock:
            return None
        return self._count

    def moved(self, old: Tensor, new: Tensor, steps: int) -> None:
        """The module's clock went from ``old`` to ``new = old + steps``."""
        if torch.compiler.is_compiling():
            return
        count = self.read(old)
        self._tensor = None if count is None else new
        self._count = 0 if count is None else count + steps

    def forget(self) -> None:
        """Stop trusting the mirror (the next steps use the tensor clock)."""
        self._tensor = None

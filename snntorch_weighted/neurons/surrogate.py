"""The spike nonlinearity shared by the neurons: the unit step of Kim eq. 9 with a surrogate
gradient, and a picklable default surrogate."""

from __future__ import annotations

from collections.abc import Callable

import torch
from snntorch import surrogate
from torch import Tensor

__all__ = ["ATanSurrogate", "heaviside"]


class ATanSurrogate:
    """snntorch's default arc-tan surrogate (``surrogate.atan()``) as a picklable object.

    ``surrogate.atan()`` returns a closure, which ``torch.save(neuron)`` cannot pickle; the neurons
    use this equivalent when ``spike_grad`` is None.
    """

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = alpha

    def __call__(self, x: Tensor) -> Tensor:
        return surrogate.ATan.apply(x, self.alpha)


def heaviside(mem: Tensor, threshold: Tensor | float, spike_grad: Callable[[Tensor], Tensor]
              ) -> Tensor:
    """The unit step :math:`U(V - \\vartheta)`, 1 where ``mem >= threshold`` (Kim eq. 9: it fires
    on equality), in ``mem``'s dtype.

    The forward value is exact (snntorch's surrogates fire on ``x > 0``); when ``mem`` or
    ``threshold`` carries a gradient, the backward pass is ``spike_grad``'s surrogate of
    ``mem - threshold`` (the difference to the exact step is added as a detached correction).
    ``mem >= threshold`` is ``mem - threshold >= 0`` for finite floats (IEEE subtraction
    is zero only for equal operands), without the subtraction.
    """
    exact = torch.ge(mem, threshold, out=torch.empty_like(mem))  # 0/1 in mem's dtype, one kernel
    if not (mem.requires_grad or (isinstance(threshold, Tensor) and threshold.requires_grad)):
        return exact
    smooth = spike_grad(mem - threshold)
    return smooth + (exact - smooth).detach()

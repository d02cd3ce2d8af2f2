"""The spike nonlinearity shared by the neurons: the unit step of Kim eq. 9 with a surrogate
gradient, and a picklable default surrogate."""

from __future__ import annotations

from collections.abc import Callable

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


def heaviside(x: Tensor, spike_grad: Callable[[Tensor], Tensor]) -> Tensor:
    """The unit step :math:`U(x) = 1` if :math:`x \\ge 0` else 0 (Kim eq. 9), in ``x``'s dtype.

    The forward value is exact (snntorch's surrogates fire on ``x > 0``; eq. 9 fires on
    equality too); when ``x`` carries a gradient, the backward pass is ``spike_grad``'s surrogate
    (the difference to the exact step is added as a detached correction).
    """
    exact = (x >= 0).to(x.dtype)
    if not x.requires_grad:
        return exact
    smooth = spike_grad(x)
    return smooth + (exact - smooth).detach()

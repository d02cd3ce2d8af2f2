"""Spiking helper layers used by converted networks: :class:`SpikeMaxPool2d` and :class:`Scale`."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = ["SpikeMaxPool2d", "Scale"]


class SpikeMaxPool2d(nn.Module):
    """Max pooling of spike trains by accumulated (weighted) input (Kim et al. 2018, section 4.5).

    Each input neuron ``j`` keeps the running sum of what it has sent,

    .. math::

        A_j(t) = \\sum_{t' \\le t} \\omega(t')\\, s_j(t')

    with the phase weight :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` (eq. 6) for weighted
    spikes (``weighted=True``) or :math:`\\omega = 1` (spike count) for rate coding. At every step
    each pooling window passes on the current spike of the input whose :math:`A_j(t)` is largest
    (ties: the first in the window, as ``max_pool2d``), so the output train approximates the train
    of the window's maximum activation.

    The layer has its own step clock ``step`` and accumulator ``acc`` that restart exactly like the
    neurons': on :meth:`reset_mem` (what :func:`snntorch_weighted.reset` calls) and when the input
    shape changes. Both are non-persistent buffers (not in ``state_dict``).

    Args:
        kernel_size, stride, padding, dilation, ceil_mode: as :class:`torch.nn.MaxPool2d`.
        weighted: phase-weighted accumulation (weighted coding) or plain counts (rate coding).
        num_phases: K, phases per period (used when ``weighted``).
    """

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        ceil_mode: bool = False,
        weighted: bool = True,
        num_phases: int = 8,
    ) -> None:
        super().__init__()
        if isinstance(num_phases, bool) or not isinstance(num_phases, int) or num_phases < 1:
            raise ValueError(f"num_phases must be an int >= 1, got {num_phases!r}")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.weighted = weighted
        self.num_phases = num_phases
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("acc", torch.zeros(0), persistent=False)
        self._fresh = True

    @classmethod
    def from_maxpool(cls, pool: nn.MaxPool2d, weighted: bool, num_phases: int = 8
                     ) -> SpikeMaxPool2d:
        """The spiking counterpart of an ``nn.MaxPool2d`` (same geometry)."""
        if pool.return_indices:
            raise ValueError("MaxPool2d with return_indices=True cannot be converted")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                   weighted=weighted, num_phases=num_phases)

    def reset_mem(self) -> Tensor:
        """Restart: clear the accumulator and the step clock (returns the empty accumulator)."""
        self.acc = torch.zeros(0, device=self.acc.device)
        self.step = torch.zeros_like(self.step)
        self._fresh = True
        return self.acc

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"SpikeMaxPool2d expects [B, C, H, W] or [C, H, W], got {x.shape}")
        if self._fresh or self.acc.shape != x.shape or self.acc.device != x.device:
            self.acc = torch.zeros_like(x)
            self.step = torch.zeros((), dtype=torch.long, device=x.device)
            self._fresh = False
        if self.weighted:
            w = torch.exp2(-(1 + self.step % self.num_phases).to(x.dtype))
            self.acc = self.acc + w * x
        else:
            self.acc = self.acc + x
        self.step = self.step + 1
        _, idx = F.max_pool2d(self.acc, self.kernel_size, self.stride, self.padding,
                              self.dilation, self.ceil_mode, return_indices=True)
        return x.flatten(-2).gather(-1, idx.flatten(-2)).view_as(idx)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"weighted={self.weighted}, num_phases={self.num_phases}")


class Scale(nn.Module):
    """Multiply by a constant: ``y = scale * x`` (a buffer, scalar or broadcastable per channel).

    Used where a spike train enters a sum in other units, e.g. an identity shortcut into a
    residual join: the train of a layer normalised by :math:`\\lambda_{src}` feeding neurons
    normalised by :math:`\\lambda_l` is scaled by :math:`\\lambda_{src} / \\lambda_l`.
    """

    def __init__(self, scale: Tensor | float) -> None:
        super().__init__()
        scale = torch.as_tensor(scale, dtype=torch.get_default_dtype()).detach().clone()
        if not torch.isfinite(scale).all():
            raise ValueError("Scale needs finite values")
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype)

    def extra_repr(self) -> str:
        if self.scale.numel() == 1:
            return f"scale={float(self.scale):.6g}"
        return f"scale=Tensor{tuple(self.scale.shape)}"

"""Spiking helper layers used by converted networks: :class:`SpikeMaxPool2d`, :class:`Scale` and
:class:`ClockedLayer`, the base of every stateful spiking layer that is not a neuron."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..spikegen import check_bits

__all__ = ["ClockedLayer", "SpikeMaxPool2d", "Scale"]


class ClockedLayer(nn.Module):
    """A stateful spiking layer: a step counter ``step`` and state buffers that restart together.

    The state restarts, like the neurons', on :meth:`reset_mem` (what
    :func:`snntorch_weighted.reset` calls) and when the input's shape changes. State buffers (named
    in ``state_names``) are non-persistent (not in ``state_dict``). Subclasses build fresh state in
    :meth:`init_state` and call :meth:`begin_step` first thing in ``forward``; ``step`` is read
    afresh at every step (an edit of it takes effect at the next step).
    """

    state_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        for name in self.state_names:
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self._input_shape: torch.Size | None = None  # the input shape the state was made for

    def init_state(self, x: Tensor) -> None:
        """Set every state buffer to its fresh value for inputs shaped like ``x``."""
        raise NotImplementedError

    def reset_mem(self) -> Tensor:
        """Clear the state and restart the counter; returns the (empty) first state buffer."""
        for name in self.state_names:
            setattr(self, name, torch.zeros(0, device=self.step.device))
        self.step = torch.zeros_like(self.step)
        self._input_shape = None
        return getattr(self, self.state_names[0])

    def forward_steps(self, inputs: Tensor) -> Tensor:
        """``forward(inputs[0]), forward(inputs[1]), ...`` stacked over time (identical results).

        Time-first ``[t, B, ...]`` inputs; forward hooks do not fire per step. Subclasses may
        replace this loop with fewer kernels.
        """
        if inputs.dim() < 1 or inputs.shape[0] < 1:
            raise ValueError(f"forward_steps needs at least one step, got shape {inputs.shape}")
        return torch.stack([self.forward(x) for x in inputs])

    def begin_step(self, x: Tensor) -> Tensor:
        """Restart the state after a reset, or for a new input shape or device; returns the step
        counter."""
        if self._input_shape != x.shape or self.step.device != x.device:
            self.init_state(x)
            self.step = torch.zeros((), dtype=torch.long, device=x.device)
            self._input_shape = x.shape
        return self.step


class SpikeMaxPool2d(ClockedLayer):
    """Max pooling of spike trains by accumulated (weighted) input (Kim et al. 2018, section 4.5).

    Each input neuron ``j`` keeps the running sum of what it has sent,

    .. math::

        A_j(t) = \\sum_{t' \\le t} \\omega(t')\\, s_j(t')

    with the phase weight :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` (eq. 6) for weighted
    spikes (``weighted=True``) or :math:`\\omega = 1` (spike count) for rate coding. At every step
    each pooling window passes on the current spike of the input whose :math:`A_j(t)` is largest
    (ties: the first in the window, as ``max_pool2d``), so the output train approximates the train
    of the window's maximum activation.

    The step counter ``step`` and the accumulator ``acc`` restart as described in
    :class:`ClockedLayer`.

    Args:
        kernel_size, stride, padding, dilation, ceil_mode: as :class:`torch.nn.MaxPool2d`.
        weighted: phase-weighted accumulation (weighted coding) or plain counts (rate coding).
        num_phases: K, phases per period (used when ``weighted``).
    """

    state_names = ("acc",)

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
        check_bits("num_phases", num_phases)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.weighted = weighted
        self.num_phases = num_phases

    @classmethod
    def from_maxpool(cls, pool: nn.MaxPool2d, weighted: bool, num_phases: int = 8
                     ) -> SpikeMaxPool2d:
        """The spiking counterpart of an ``nn.MaxPool2d`` (same geometry)."""
        if pool.return_indices:
            raise ValueError("MaxPool2d with return_indices=True cannot be converted")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                   weighted=weighted, num_phases=num_phases)

    def init_state(self, x: Tensor) -> None:
        self.acc = torch.zeros_like(x)

    def weight(self, steps_done: Tensor) -> Tensor:
        """Kim eq. 6, :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` of step
        ``t = steps_done + 1`` (weighted coding)."""
        return torch.pow(0.5, 1 + steps_done % self.num_phases)

    def accumulate(self, acc: Tensor, x: Tensor, w: Tensor, out: Tensor | None = None
                   ) -> Tensor:
        """:math:`A(t) = A(t-1) + \\omega(t) s(t)` for the step's weight ``w`` (weighted
        coding) or :math:`A(t-1) + s(t)` (rate coding: spike counts), into ``out`` if given."""
        if not self.weighted:
            return torch.add(acc, x, out=out)
        return torch.addcmul(acc, w, x, out=out)

    def pool(self, acc: Tensor, x: Tensor) -> Tensor:
        """The spike of ``x`` where ``acc`` is largest in each window (section 4.5)."""
        _, idx = F.max_pool2d_with_indices(acc, self.kernel_size, self.stride, self.padding,
                                           self.dilation, self.ceil_mode)
        return x.flatten(-2).gather(-1, idx.flatten(-2)).view_as(idx)

    def forward(self, x: Tensor) -> Tensor:
        """One step: :meth:`accumulate`, then :meth:`pool`."""
        if x.dim() not in (3, 4):
            raise ValueError(f"SpikeMaxPool2d expects [B, C, H, W] or [C, H, W], got {x.shape}")
        done = self.begin_step(x)
        self.acc = self.accumulate(self.acc, x, self.weight(done))
        self.step = done + 1
        return self.pool(self.acc, x)

    def forward_steps(self, inputs: Tensor) -> Tensor:
        """``t`` steps at once, identical to stepping: :meth:`accumulate` per step (same kernel,
        written into the block's buffer), then the pooling and the gather once for the block."""
        if inputs.dim() not in (4, 5) or inputs.shape[0] < 1:
            raise ValueError("SpikeMaxPool2d.forward_steps expects at least one step of "
                             f"[t, B, C, H, W] or [t, C, H, W], got {inputs.shape}")
        steps = inputs.shape[0]
        done = self.begin_step(inputs[0])
        ws = self.weight(done + torch.arange(steps, device=done.device))
        accs = torch.empty_like(inputs)
        acc = self.acc
        for x, w, out in zip(inputs, ws, accs):
            acc = self.accumulate(acc, x, w, out=out)
        self.acc = acc.clone()
        self.step = done + steps
        fold = inputs.flatten(0, 1) if inputs.dim() == 5 else inputs
        out = self.pool(accs.view_as(fold), fold)
        return out.view(*inputs.shape[:-3], *out.shape[-3:])

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

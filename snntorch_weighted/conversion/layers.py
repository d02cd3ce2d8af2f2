"""Spiking helper layers used by converted networks: :class:`SpikeMaxPool2d`, :class:`Scale` and
:class:`ClockedLayer`, the base of every stateful spiking layer that is not a neuron."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..neurons.clock import HostClock, QuickSteps, restart_clock
from ..spikegen import block_phase_weights, phase_weight

__all__ = ["ClockedLayer", "SpikeMaxPool2d", "Scale"]


class ClockedLayer(nn.Module):
    """A stateful spiking layer: a step clock ``step`` and state buffers that restart together.

    The state restarts, like the neurons', on :meth:`reset_mem` (what
    :func:`snntorch_weighted.reset` calls) and when the input's shape or device changes. State
    buffers (named in ``state_names``) are non-persistent (not in ``state_dict``). Subclasses build
    fresh state in :meth:`init_state` and call :meth:`begin_step` first thing in ``forward``.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        for name in self.state_names:
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self._input_shape: torch.Size | None = None
        self._host_clock = HostClock()  # eager mode: the phase without tensor arithmetic

    def init_state(self, x: Tensor) -> None:
        """Set every state buffer to its fresh value for inputs shaped like ``x``."""
        raise NotImplementedError

    def reset_mem(self) -> Tensor:
        """Clear the state and restart the clock; returns the (empty) first state buffer."""
        buffers = self._buffers  # nn.Module.__setattr__ costs several microseconds per call
        clock = buffers["step"]
        for name in self.state_names:
            buffers[name] = torch.zeros(0, device=clock.device)
        buffers["step"] = torch.zeros_like(clock)
        self._host_clock.restart(buffers["step"])  # the first step keeps this zero clock
        self.__dict__["_input_shape"] = None
        return buffers[self.state_names[0]]

    @torch.no_grad()
    def forward_steps(self, inputs: Tensor) -> Tensor:
        """``forward(inputs[0]), forward(inputs[1]), ...`` stacked over time (identical results).

        Time-first ``[t, B, ...]`` inputs; inference only, forward hooks do not fire per step (the
        time-folded runner of :func:`snntorch_weighted.simulate` calls it). Subclasses may
        replace this loop with fewer kernels.
        """
        if inputs.shape[0] < 1:
            raise ValueError(f"forward_steps needs at least one step, got shape {inputs.shape}")
        return torch.stack([self.forward(x) for x in inputs])

    def begin_step(self, x: Tensor) -> Tensor:
        """Restart the state if needed (after a reset, a new input shape or device); the clock."""
        # buffers read from / written to the dicts: nn.Module.__getattr__ / __setattr__ cost
        # ~1 / several us per call
        buffers = self._buffers
        if self._input_shape != x.shape or buffers["step"].device != x.device:
            self.init_state(x)
            restart_clock(buffers, self._host_clock, x.device)
            self.__dict__["_input_shape"] = x.shape
        return buffers["step"]

    def clock_value(self) -> int | None:
        """The clock as a Python int while its host mirror is in sync (:mod:`.clock`), else None."""
        return self._host_clock.read(self._buffers["step"])

    def advance(self, steps: int = 1, count: int | None = None) -> None:
        """Move the clock on by ``steps`` (and its host mirror; ``count``: the value
        :meth:`clock_value` returned in this step, if any)."""
        self._buffers["step"] = self._host_clock.advance(self._buffers["step"], steps, count)


class SpikeMaxPool2d(QuickSteps, ClockedLayer):
    """Max pooling of spike trains by accumulated (weighted) input (Kim et al. 2018, section 4.5).

    Each input neuron ``j`` keeps the running sum of what it has sent,

    .. math::

        A_j(t) = \\sum_{t' \\le t} \\omega(t')\\, s_j(t')

    with the phase weight :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` (eq. 6) for weighted
    spikes (``weighted=True``) or :math:`\\omega = 1` (spike count) for rate coding. At every step
    each pooling window passes on the current spike of the input whose :math:`A_j(t)` is largest
    (ties: the first in the window, as ``max_pool2d``), so the output train approximates the train
    of the window's maximum activation.

    The step clock ``step`` and the accumulator ``acc`` restart as described in
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
        if isinstance(num_phases, bool) or not isinstance(num_phases, int) or num_phases < 1:
            raise ValueError(f"num_phases must be an int >= 1, got {num_phases!r}")
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
        self._buffers["acc"] = torch.zeros_like(x)

    def forward(self, x: Tensor) -> Tensor:
        quick = self._quick
        if quick and x.shape == quick.shape:
            # a quick step (clock.quick_steps): _accumulate at the host clock (acc + w * x: the
            # same values as acc + x for w = 1), then _pool
            n = quick.count
            quick.count = n + 1
            w = phase_weight(n, self.num_phases) if self.weighted else 1
            acc = torch.add(self._buffers["acc"], x, alpha=w)
            self._buffers["acc"] = acc
            return self._pool(acc, x)
        return self._step_normally(x)

    def _regular_forward(self, x: Tensor, _state: None = None) -> Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"SpikeMaxPool2d expects [B, C, H, W] or [C, H, W], got {x.shape}")
        clock = self.begin_step(x)
        n = self.clock_value()
        acc = self._accumulate(x, n, clock)
        self.advance(count=n)
        return self._pool(acc, x)

    def _accumulate(self, x: Tensor, n: int | None, clock: Tensor | None) -> Tensor:
        """:math:`A(t) = A(t-1) + \\omega(t) s(t)` (``n``: the clock on the host, or None: the
        tensor ``clock``), stored and returned."""
        acc = self._buffers["acc"]
        if not self.weighted:
            acc = acc + x
        elif n is not None:  # w * x is exact (w = 2^-k): the same values both ways
            acc = torch.add(acc, x, alpha=phase_weight(n, self.num_phases))
        else:
            acc = torch.addcmul(acc, phase_weight(clock, self.num_phases, x.dtype), x)
        self._buffers["acc"] = acc
        return acc

    def _pool(self, acc: Tensor, x: Tensor) -> Tensor:
        """The spike of ``x`` where ``acc`` is largest in each window."""
        _, idx = F.max_pool2d_with_indices(acc, self.kernel_size, self.stride, self.padding,
                                           self.dilation, self.ceil_mode)
        return x.flatten(-2).gather(-1, idx.flatten(-2)).view_as(idx)

    def _quick_constants(self, x: Tensor) -> tuple:
        """Quick steps (:func:`~snntorch_weighted.neurons.clock.quick_steps`) need nothing more."""
        return ()

    @torch.no_grad()
    def forward_steps(self, inputs: Tensor) -> Tensor:
        """``t`` steps at once, identical to stepping: the accumulator runs one add per step
        (same order of additions), the pooling and the gather run once for the whole block."""
        if inputs.dim() not in (4, 5) or inputs.shape[0] < 1:
            raise ValueError("SpikeMaxPool2d.forward_steps expects at least one step of "
                             f"[t, B, C, H, W] or [t, C, H, W], got {inputs.shape}")
        steps = inputs.shape[0]
        clock = self.begin_step(inputs[0])
        n = self.clock_value()
        ws = ([1.0] * steps if not self.weighted else
              block_phase_weights(clock if n is None else n, steps, self.num_phases, inputs.dtype))
        accs = torch.empty_like(inputs)
        acc = self._buffers["acc"]
        for w, x, out in zip(ws, inputs.unbind(0), accs.unbind(0)):  # forward's kernel per step
            if isinstance(w, float):
                acc = torch.add(acc, x, alpha=w, out=out)
            else:
                acc = torch.addcmul(acc, w, x, out=out)
        self._buffers["acc"] = acc.clone()  # nn.Module.__setattr__ costs microseconds
        self.advance(steps)
        fold = inputs.flatten(0, 1) if inputs.dim() == 5 else inputs
        _, idx = F.max_pool2d(accs.view_as(fold), self.kernel_size, self.stride, self.padding,
                              self.dilation, self.ceil_mode, return_indices=True)
        out = fold.flatten(-2).gather(-1, idx.flatten(-2)).view_as(idx)
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

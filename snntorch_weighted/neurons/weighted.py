"""The weighted-spike neuron of SNN-WS (Kim et al. 2018, eq. 6-10 and 16) as an ``snn.Leaky``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..spikegen import check_bits
from .base import SteppedLeaky, check_int
from .surrogate import ATanSurrogate, heaviside

__all__ = ["WeightedLeaky"]


class WeightedLeaky(SteppedLeaky):
    """Integrate-and-fire neuron with phase-weighted spikes (Kim et al. 2018, eq. 6-10).

    At step t = 1, 2, ... (``t = step + 1``) the phase weight is
    :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` (eq. 6), most significant phase first, and

    .. math::

        V(t) &= \\beta V(t-1) + \\omega(t)\\, I(t)                          && (8, 10) \\\\
        s(t) &= U\\big(V(t) - \\omega(t)\\,\\vartheta\\big)                    && (9) \\\\
        V(t) &\\leftarrow V(t) - \\omega(t)\\,\\vartheta\\, s(t)               && (10)

    where :math:`I(t)` is the layer's input current (``W s + beta_b``, eq. 8, computed by the
    layer in front) and :math:`U(x) = 1` for :math:`x \\ge 0` (it fires on equality; snntorch fires
    on strictly greater). ``beta=1`` (the default) is the paper's integrate-and-fire neuron.

    snntorch's options act on the weighted threshold :math:`\\omega(t)\\vartheta`:
    ``reset_mechanism="zero"`` sets the membrane to 0 after a spike, ``"none"`` keeps it;
    ``reset_delay=True`` applies the reset of a threshold crossing at the next step, in
    ``snn.Leaky``'s order (the returned membrane is then not yet reset); ``inhibition=True`` lets
    only the neuron with the largest :math:`V - \\omega\\vartheta` along dim 1 fire;
    ``state_quant`` quantises the membrane after integration; spikes are scaled by
    ``graded_spikes_factor``; ``spike_grad`` is the surrogate of :math:`U` (snntorch's ATan by
    default), so a network trains with BPTT as usual.
    :func:`~snntorch_weighted.spikegen.decode_weighted` turns a spike train back into values
    (eq. 13-14).

    With ``fire=False`` the neuron is the output layer of eq. 16: it integrates
    :math:`\\omega(t) I(t)` without firing (``spk`` is zeros) and ignores its input during the
    first ``skip_periods`` periods (section 5.1), so ``argmax(mem)`` is the decision (eq. 17).

    Differences from ``snn.Leaky``, on purpose: ``beta`` defaults to 1 (eq. 10 has no leak) and
    ``reset_delay`` to False (eq. 10 resets in the step that fires); it fires on equality. With
    ``reset_delay=False`` the spike is decided on :math:`V` (eq. 9); snntorch 1.0.0 decides after
    also subtracting a pending delayed reset, which differs when a membrane stays above threshold
    after its reset (the final membranes agree). Under ``inhibition`` spikes are scaled by
    ``graded_spikes_factor`` too (snntorch 1.0.0 leaves them unscaled there).
    ``num_phases`` may be at most 24 for float32 inputs and 53 for float64 (the K-bit code must
    be exact, :func:`~snntorch_weighted.spikegen.check_bits`).

    **NIR.** ``snntorch.export_to_nir`` reads only ``beta`` and ``threshold`` and exports this
    neuron as a plain LIF: the phase weighting (and ``fire=False``) is lost without a warning.
    Use :func:`snntorch_weighted.export_nir`, which refuses what NIR cannot express.

    Args:
        beta ... reset_delay: as :class:`snntorch.Leaky` (same order; defaults above).
        num_phases: K, phases per period (keyword-only).
        fire: ``False`` for the non-firing output integrator (keyword-only).
        skip_periods: periods of input ignored by a ``fire=False`` neuron (keyword-only).
    """

    def __init__(
        self,
        beta: float | Tensor = 1.0,
        threshold: float | Tensor = 1.0,
        spike_grad: Callable[[Tensor], Tensor] | None = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "subtract",
        state_quant: Callable[[Tensor], Tensor] | bool = False,
        output: bool = False,
        graded_spikes_factor: float | Tensor = 1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = False,
        *,
        num_phases: int = 8,
        fire: bool = True,
        skip_periods: int = 0,
    ) -> None:
        check_bits("num_phases", num_phases)
        check_int("skip_periods", skip_periods, 0)
        super().__init__(
            beta, threshold, ATanSurrogate() if spike_grad is None else spike_grad,
            surrogate_disable, init_hidden, inhibition, learn_beta, learn_threshold,
            reset_mechanism, state_quant, output, graded_spikes_factor,
            learn_graded_spikes_factor, reset_delay,
        )
        self.num_phases = num_phases
        self.fire_spikes = fire
        self.skip_periods = skip_periods
        self._init_step()

    def __setattr__(self, name: str, value: object) -> None:
        if name == "num_phases":
            check_bits("num_phases", value)
        elif name == "skip_periods":
            check_int("skip_periods", value, 0)
        super().__setattr__(name, value)

    def phase_weight(self, steps_done: Tensor) -> Tensor:
        """Kim eq. 6: :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` of step ``t = steps_done + 1``
        (a power of two, so :math:`\\omega I` and :math:`\\omega\\vartheta` are exact)."""
        return torch.pow(0.5, 1 + steps_done % self.num_phases)

    def input_weight(self, steps_done: Tensor) -> Tensor:
        """The weight of the input current (eq. 8): :meth:`phase_weight`, or 0 while a
        ``fire=False`` output neuron skips its first ``skip_periods`` periods (section 5.1)."""
        w = self.phase_weight(steps_done)
        if not self.fire_spikes and self.skip_periods:
            w = w * (steps_done >= self.skip_periods * self.num_phases)
        return w

    def integrate(self, mem: Tensor, input_: Tensor, w: Tensor) -> Tensor:
        """Kim eq. 8 and the first terms of eq. 10: :math:`V = \\beta V + \\omega(t) I(t)`
        (``beta`` clamped to [0, 1] as in snntorch)."""
        return torch.addcmul(self.beta.clamp(0, 1) * mem, w, input_)

    def quantize_state(self, mem: Tensor) -> Tensor:
        """snntorch's ``state_quant``, applied to the integrated membrane (when set)."""
        return self.state_quant(mem) if self.state_quant else mem

    def spike(self, mem: Tensor, threshold: Tensor) -> Tensor:
        """Kim eq. 9: :math:`s(t) = U(V(t) - \\omega(t)\\vartheta)` for the weighted threshold
        ``threshold`` :math:`= \\omega(t)\\vartheta`: binary, with the surrogate gradient."""
        return heaviside(mem, threshold, self.spike_grad)

    def inhibit(self, spk: Tensor, mem: Tensor, threshold: Tensor) -> Tensor:
        """``inhibition=True`` (snntorch's rule): only the neuron with the largest
        :math:`V - \\omega\\vartheta` along dim 1 keeps its spike."""
        winner = (mem - threshold).argmax(dim=1, keepdim=True)
        return spk * torch.zeros_like(spk).scatter_(1, winner, 1.0)

    def reset_by(self, mem: Tensor, spk: Tensor, threshold: Tensor) -> Tensor:
        """Kim eq. 10's reset for binary spikes ``spk``: :math:`V - \\omega\\vartheta s`
        (``"subtract"``, ``threshold`` :math:`= \\omega\\vartheta`), :math:`V (1 - s)`
        (``"zero"``) or :math:`V` (``"none"``); no gradient through ``spk``, as in snntorch."""
        if self._reset_mechanism == "subtract":
            return torch.addcmul(mem, spk.detach(), threshold, value=-1)
        if self._reset_mechanism == "zero":
            return mem * (1 - spk.detach())
        return mem

    def _step(self, mem: Tensor, input_: Tensor, w: Tensor, w_before: Tensor | None
              ) -> tuple[Tensor, Tensor]:
        """One step, eq. 8-10 in order, for this step's weight ``w``; returns ``(spk, mem)``.
        The output integrator (eq. 16) only integrates; ``reset_delay=True`` is
        :meth:`_delayed_step` (``w_before``: the previous step's weight)."""
        if not self.fire_spikes:
            return torch.zeros_like(input_), self.integrate(mem, input_, w)
        if self.reset_delay:
            return self._delayed_step(mem, input_, w, w_before)
        mem = self.quantize_state(self.integrate(mem, input_, w))
        threshold = w * self.threshold
        spk = self.spike(mem, threshold)
        if self.inhibition:
            spk = self.inhibit(spk, mem, threshold)
        mem = self.reset_by(mem, spk, threshold)
        return spk * self.graded_spikes_factor, mem

    def _delayed_step(self, mem: Tensor, input_: Tensor, w: Tensor, w_before: Tensor
                      ) -> tuple[Tensor, Tensor]:
        """``reset_delay=True``, snntorch's order on eq. 8-9: the reset for the previous step's
        threshold crossing (:math:`V(t-1) \\ge \\omega(t-1)\\vartheta`, read from the
        membrane) is applied in this step, "zero" before the leak, "subtract" after the input."""
        before = w_before * self.threshold
        crossed = self.spike(mem, before).detach()
        if self._reset_mechanism == "zero":
            mem = mem * (1 - crossed)
        mem = self.integrate(mem, input_, w)
        if self._reset_mechanism == "subtract":
            mem = mem - crossed * before
        mem = self.quantize_state(mem)
        threshold = w * self.threshold
        spk = self.spike(mem, threshold)
        if self.inhibition:
            spk = self.inhibit(spk, mem, threshold)
        return spk * self.graded_spikes_factor, mem

    def _check_dtype(self, x: Tensor) -> None:
        if self.num_phases > 8:  # above the smallest limit (bfloat16) only: no lookup per step
            check_bits("num_phases", self.num_phases, x.dtype)

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        """One step: ``spk, mem`` (explicit state) or ``spk`` (``init_hidden=True``), as
        ``snn.Leaky``."""
        self._check_dtype(input_)
        mem = self._load_state(input_, mem)
        done = self._buffers["step"]
        w_before = self.phase_weight(done - 1) if self.reset_delay else None
        spk, mem = self._step(mem, input_, self.input_weight(done), w_before)
        return self._store_state(spk, mem)

    def forward_steps(self, inputs: Tensor):
        """``forward(inputs[0]), forward(inputs[1]), ...`` on the neuron's own state, stacked:
        the same equations over a time axis ``[T, B, ...]``, the block's phase weights computed at
        once. Returns ``spk`` or ``(spk, mem)`` as ``forward`` would, each ``[T, B, ...]``, and
        leaves the state that ``T`` calls of ``forward`` leave. Forward hooks do not run per step
        (a runner that honours hooks calls ``forward``). The kernel of the time-folded runner:
        :meth:`_block_in_place` where it applies, else :meth:`_step` per step."""
        if inputs.dim() < 2 or inputs.shape[0] < 1:
            raise ValueError(f"forward_steps expects time-first inputs [T >= 1, B, ...], "
                             f"got shape {tuple(inputs.shape)}")
        self._check_dtype(inputs)
        mem = self._load_state(inputs[0], None)
        steps = inputs.shape[0]
        done = self._buffers["step"] + torch.arange(steps, device=self._buffers["step"].device)
        ws = self.input_weight(done)
        keep_mems = self.output or not self.init_hidden
        if self._in_place_applies(inputs, mem):
            spikes, mems, mem = self._block_in_place(inputs, mem, ws, keep_mems)
        else:
            ws_before = self.phase_weight(done - 1) if self.reset_delay else [None] * steps
            outs = [None] * steps
            for t, (x, w, w_before) in enumerate(zip(inputs, ws, ws_before)):
                spk, mem = self._step(mem, x, w, w_before)
                outs[t] = (spk, mem if keep_mems else None)
            spikes = torch.stack([spk for spk, _ in outs])
            mems = torch.stack([m for _, m in outs]) if keep_mems else None
        result = self._store_state(spikes, mem, steps=steps)
        return (spikes, mems) if keep_mems else result

    def _in_place_applies(self, inputs: Tensor, mem: Tensor) -> bool:
        """Whether :meth:`_block_in_place` computes what :meth:`_step` would: nothing needs a
        gradient, the equation methods are this class's own (not a subclass's), scalar
        ``beta`` / ``threshold`` / ``graded_spikes_factor``, the membrane in the input's dtype,
        and a firing neuron takes the plain step (subtractive reset in the same step, no
        inhibition, no state_quant)."""
        params = (self.beta, self.threshold, self.graded_spikes_factor)
        if torch.is_grad_enabled() and (inputs.requires_grad or mem.requires_grad
                                        or any(p.requires_grad for p in params)):
            return False
        own = all(getattr(type(self), name) is getattr(WeightedLeaky, name)
                  for name in ("_step", "integrate", "quantize_state", "spike", "reset_by"))
        plain = not self.fire_spikes or (
            self._reset_mechanism == "subtract" and not self.reset_delay
            and not self.inhibition and not self.state_quant)
        return (own and plain and mem.dtype == inputs.dtype
                and all(p.dim() == 0 for p in params))

    def _block_in_place(self, inputs: Tensor, mem: Tensor, ws: Tensor, keep_mems: bool
                        ) -> tuple[Tensor, Tensor | None, Tensor]:
        """:meth:`_step`'s operations over the block, written in place into the block's own
        buffers (a copy of the membrane, preallocated outputs): the in-place forms of the same
        kernels on the same operands, so the same values, with fewer allocations and passes.
        Eq. 8 (16): :math:`V = \\beta V + \\omega I`; eq. 9: :math:`s = [V \\ge
        \\omega\\vartheta]`; eq. 10: :math:`V = V - \\omega\\vartheta s`. Returns
        ``(spikes, mems or None, final mem)``. (:math:`\\beta = 1`, read once per call, skips
        the multiplication by 1.)"""
        beta = self.beta.clamp(0, 1)
        leaky = bool(beta != 1)
        thresholds = (ws * self.threshold).unbind(0)
        spikes = torch.empty_like(inputs) if self.fire_spikes else torch.zeros_like(inputs)
        mems = torch.empty_like(inputs) if keep_mems else None
        mem = mem.clone()
        for t, (x, w) in enumerate(zip(inputs, ws.unbind(0))):
            if leaky:
                mem.mul_(beta)
            mem.addcmul_(w, x)
            if self.fire_spikes:
                torch.ge(mem, thresholds[t], out=spikes[t])
                mem.addcmul_(spikes[t], thresholds[t], value=-1)
            if mems is not None:
                mems[t].copy_(mem)
        if self.fire_spikes:
            spikes.mul_(self.graded_spikes_factor)
        return spikes, mems, mem

    def extra_repr(self) -> str:
        fire = "" if self.fire_spikes else f", fire=False, skip_periods={self.skip_periods}"
        return f"num_phases={self.num_phases}{fire}"

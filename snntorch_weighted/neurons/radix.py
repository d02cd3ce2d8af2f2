"""The radix-encoded LIF neuron (Wang et al., Algorithm 1, eq. 3-5), exact for every input."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..spikegen import check_bits
from .base import SteppedLeaky
from .surrogate import ATanSurrogate, heaviside

__all__ = ["DIRECT_TRAINING_MESSAGE", "RadixLeaky"]

DIRECT_TRAINING_MESSAGE = (
    "RadixLeaky is not trained directly with surrogate gradients (BPTT): its spikes are the "
    "binary digits of exact integer codes, and a loss on them or on its membrane does not "
    "measure the value they encode. Its route is the quantised ANN: "
    "model = snntorch_weighted.quant.prepare(model, num_bits=T) -> train it (or "
    "snntorch_weighted.quant.finetune) -> snntorch_weighted.convert(model, data, "
    "coding='radix'). For direct BPTT training use WeightedLeaky or snntorch.Leaky."
)

#: snn.Leaky's keywords whose value the bit-serial dynamics fix: the one value accepted, and why.
FIXED = {
    "beta": (0.5, "the decay is kappa = 0.5, fixed by Algorithm 1 (eq. 4): each step halves the "
                  "membrane so that the next bit moves into the least significant place"),
    "threshold": (1.0, "the neuron fires on the membrane's least significant bit and subtracts "
                       "V_r = 1 (Algorithm 1, eq. 4); snntorch's subtracted threshold is that V_r"),
    "learn_beta": (False, "beta is kappa = 0.5, fixed by Algorithm 1"),
    "learn_threshold": (False, "the threshold is V_r = 1, fixed by Algorithm 1"),
    "inhibition": (False, "the spikes are the binary digits of each neuron's value: suppressing "
                          "some would change the values"),
    "reset_mechanism": ("subtract", "Algorithm 1 subtracts V_r = 1 after a spike (reset by "
                                    "subtraction); another reset would corrupt the code"),
    "state_quant": (False, "the membrane already holds an exact integer code"),
    "reset_delay": (False, "Algorithm 1 subtracts V_r in the step that fires, before the leak; "
                           "a delayed reset would corrupt the next bit"),
    "learn_graded_spikes_factor": (False, DIRECT_TRAINING_MESSAGE),
}


def check_fixed(name: str, value: object) -> None:
    """``ValueError`` with the reason unless ``value`` is the value the dynamics fix."""
    fixed, why = FIXED[name]
    if isinstance(fixed, float):
        ok = bool(torch.all(torch.as_tensor(value, dtype=torch.float64) == fixed))
    elif name == "state_quant":
        ok = not value
    else:
        ok = value == fixed
    if not ok:
        raise ValueError(f"RadixLeaky cannot take {name}={value!r}: {why} (only {fixed!r} is "
                         "accepted; the package's own options num_bits, shift, bias, fire are "
                         "keyword-only)")


class _NoDirectTraining(torch.autograd.Function):
    """Identity forward; the backward pass stops with :data:`DIRECT_TRAINING_MESSAGE`."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        raise RuntimeError(DIRECT_TRAINING_MESSAGE)


def _guard(x: Tensor) -> Tensor:
    return _NoDirectTraining.apply(x) if x.requires_grad else x


class RadixLeaky(SteppedLeaky):
    """Radix-encoded LIF neuron (Wang et al., Algorithm 1, eq. 3-5), exact for every input.

    A period is T = ``num_bits`` steps; the phase is ``p = step % T``. Input currents must be
    integers (integer weights times 0/1 spikes); bit p of the input arrives at phase p, LSB first.

    **Algorithm 1** with :math:`V_{th}` = the LSB test, :math:`V_r = 1` (``threshold``) and
    :math:`\\kappa = 0.5` (``beta``), every step: integrate :math:`u = v + I(t)` (eq. 3), fire
    :math:`o(t) = \\hat u`, the least significant bit of :math:`u`, and
    :math:`v = \\kappa (u - V_r o(t))` (eq. 4), from :math:`v = b` (eq. 5).

    **The package's exactness extension** (the paper's identity needs condition 23): the input is
    integrated scaled by :math:`2^T`, so that the membrane holds the output bits still to be sent
    in its low T bits and the integrating sum above them, and at phase 0 the sum X of the previous
    period is read out, :math:`y = \\min(\\max(\\lfloor X / 2^{\\Delta T} \\rfloor, 0), 2^T - 1)`,
    and the membrane restarts at :math:`v = y + 2^T b`. The spikes of period n are then the binary
    digits, LSB first, of ``clamp(floor((sum_p 2**p * in(p) @ w + b) / 2**shift), 0, 2**T - 1)``
    over the inputs of period n - 1 (eq. 17-22, ``shift`` = :math:`\\Delta T`): negative sums give
    zeros (ReLU), large sums saturate.

    **Timing.** A layer's latency is one period (T steps); an L-layer stack fed in period 0 emits
    its output in period L (steps L*T to L*T + T - 1), an end-to-end latency of (L + 1) * T steps;
    each spike train is T steps long.

    With ``fire=False`` (output layer) the neuron never spikes: ``v = b`` at phase 0 and
    :math:`v \\mathrel{+}= 2^p I(p)`, so at a period's last phase ``mem`` is the integer
    pre-activation X of that period's inputs.

    Exactness: float64 while all values stay below 2**53; float32 while
    ``2**T * (|b| + sum_p |I(p)|) < 2**24``; ``num_bits`` at most 24 (float32) / 53 (float64).

    **snn.Leaky's parameters** come first, in its order. Those the dynamics fix are accepted only
    at their fixed value and refused otherwise with a ``ValueError`` that says why (also on
    assignment): ``beta`` (0.5 = kappa, the default here, so ``RadixLeaky(0.5)`` is snntorch's
    ``Leaky(0.5)`` call, while ``RadixLeaky(0.9)`` is refused), ``threshold`` (1 = V_r),
    ``learn_beta``, ``learn_threshold``, ``inhibition``, ``reset_mechanism`` ("subtract"),
    ``state_quant``, ``reset_delay`` (False) and ``learn_graded_spikes_factor``. ``init_hidden``,
    ``output``, ``graded_spikes_factor`` work as in snntorch.

    **Not trained directly.** A backward pass through the neuron raises a ``RuntimeError`` that
    names its route: ``quant.prepare`` -> train -> ``convert(coding="radix")``. (``spike_grad``
    and ``surrogate_disable`` are accepted for the signature only.)

    **NIR.** ``snntorch.export_to_nir`` cannot export this neuron faithfully (it reads only
    ``beta`` / ``threshold``: the radix code is lost); :func:`snntorch_weighted.export_nir` refuses
    it with the reason.

    Args:
        beta ... reset_delay: as :class:`snntorch.Leaky`, restricted as above.
        num_bits: T, bits per spike train (steps per period; keyword-only).
        shift: :math:`\\Delta T`, low bits dropped at read-out (eq. 19; keyword-only).
        bias: integer bias b (broadcast against the input, e.g. ``[C, 1, 1]`` after a conv); the
            weight layer in front must then have no bias (keyword-only).
        fire: ``False`` for the non-firing output integrator (keyword-only).
    """

    def __init__(
        self,
        beta: float | Tensor = 0.5,
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
        num_bits: int = 8,
        shift: int = 0,
        bias: Tensor | float | None = None,
        fire: bool = True,
    ) -> None:
        for name, value in (("beta", beta), ("threshold", threshold), ("learn_beta", learn_beta),
                            ("learn_threshold", learn_threshold), ("inhibition", inhibition),
                            ("reset_mechanism", reset_mechanism), ("state_quant", state_quant),
                            ("reset_delay", reset_delay),
                            ("learn_graded_spikes_factor", learn_graded_spikes_factor)):
            check_fixed(name, value)
        check_bits("num_bits", num_bits)
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise ValueError(f"shift must be an int, got {shift!r}")
        super().__init__(
            0.5, 1.0, ATanSurrogate() if spike_grad is None else spike_grad, surrogate_disable,
            init_hidden, False, False, False, "subtract", False, output, graded_spikes_factor,
            False, False,
        )
        self.num_bits = num_bits
        self.fire_spikes = fire
        bias = torch.zeros(()) if bias is None else torch.as_tensor(bias).clone()
        self.register_buffer("bias", bias if bias.is_floating_point() else bias.double())
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.long))
        self._init_step()

    def __setattr__(self, name: str, value: object) -> None:
        if name in FIXED:
            check_fixed(name, value)
        elif name == "num_bits":
            check_bits("num_bits", value)
        super().__setattr__(name, value)

    def readout(self, total: Tensor) -> Tensor:
        """Output value of a period's sum: ``clamp(floor(total / 2**shift), 0, 2**T - 1)``."""
        scaled = torch.floor(total * torch.exp2(-self.shift.to(total.dtype)))
        return scaled.clamp(0, 2**self.num_bits - 1)

    def start_period(self, mem: Tensor, phase: Tensor) -> Tensor:
        """Eq. 5 with the read-out: at phase 0, :math:`v = y + 2^T b` with y the read-out of the
        previous period's sum (:meth:`readout`); the membrane unchanged at other phases."""
        bias = self.bias.to(mem.dtype)
        return torch.where(phase == 0, self.readout(mem) + 2.0**self.num_bits * bias, mem)

    def integrate(self, mem: Tensor, input_: Tensor) -> Tensor:
        """Eq. 3, scaled by :math:`2^T` (above the output bits): :math:`u = v + 2^T I(t)`."""
        return mem + 2.0**self.num_bits * input_

    def spike(self, mem: Tensor) -> Tensor:
        """Algorithm 1, lines 5-6: :math:`o(t) = 1` when the least significant bit
        :math:`\\hat u` of the (integer) membrane is 1."""
        return heaviside(torch.remainder(mem, 2), 0.5, self.spike_grad)

    def leak(self, mem: Tensor, spk: Tensor) -> Tensor:
        """Eq. 4: :math:`v = \\kappa (u - V_r o(t))`, with :math:`\\kappa` = ``beta`` and
        :math:`V_r` = ``threshold``."""
        return self.beta * (mem - self.threshold * spk)

    def integrate_output(self, mem: Tensor, input_: Tensor, phase: Tensor) -> Tensor:
        """The output integrator (``fire=False``): :math:`v = b` at phase 0, then
        :math:`v \\mathrel{+}= 2^p I(p)`: the integer sum X of eq. 17 at the period's end."""
        start = torch.where(phase == 0, self.bias.to(mem.dtype).expand_as(mem), mem)
        return start + torch.exp2(phase.to(input_.dtype)) * input_

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        """One step of Algorithm 1 (with the read-out at phase 0): ``spk, mem`` or ``spk``
        (``init_hidden=True``), as ``snn.Leaky``."""
        if self.num_bits > 8:  # above the smallest limit (bfloat16) only: no lookup per step
            check_bits("num_bits", self.num_bits, input_.dtype)
        mem = self._load_state(input_, mem)
        phase = self._buffers["step"] % self.num_bits
        if not self.fire_spikes:
            mem = self.integrate_output(mem, input_, phase)
            return self._store_state(torch.zeros_like(mem), _guard(mem))
        mem = self.integrate(self.start_period(mem, phase), input_)
        spk = self.spike(mem)
        mem = self.leak(mem, spk)
        return self._store_state(_guard(spk * self.graded_spikes_factor), _guard(mem))

    def extra_repr(self) -> str:
        fire = "" if self.fire_spikes else ", fire=False"
        return f"num_bits={self.num_bits}{fire}"

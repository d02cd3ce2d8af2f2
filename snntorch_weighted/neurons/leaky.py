"""Drop-in replacements for :class:`snntorch.Leaky` with weighted-phase and radix spikes.

Both neurons follow ``snntorch.Leaky``'s single-step contract (explicit ``spk, mem = neuron(cur,
mem)``, or ``init_hidden=True`` with ``output``), accept ``spike_grad`` surrogates, and keep a
**step clock** ``neuron.step`` (a 0-dim ``long`` buffer counting steps since the last reset).

The clock restarts when a new sequence starts, which the neuron recognises by its membrane buffer
``neuron.mem`` having been *replaced* since its own last step: ``reset_mem()``, ``init_leaky()``,
``snntorch.utils.reset(net)`` and :func:`snntorch_weighted.reset` all install a fresh zero tensor.
A change of input shape also restarts it. ``detach_hidden()`` detaches in place and keeps the clock.
(In the explicit-state style start each sequence with ``mem = neuron.init_leaky()``, as in
snntorch's tutorials; a hand-made zero tensor cannot be told apart from a running state.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import snntorch as snn
import torch
from snntorch import surrogate
from torch import Tensor, nn

from ..spikegen import block_phase_weights, phase_weight
from .clock import HostClock, QuickSteps, restart_clock

__all__ = ["WeightedLeaky", "RadixLeaky"]


class ATanSurrogate:
    """snntorch's default arc-tan surrogate (``surrogate.atan()``) as a picklable object.

    ``surrogate.atan()`` returns a closure, which ``torch.save(neuron)`` cannot pickle; the neurons
    use this equivalent instead when ``spike_grad`` is None.
    """

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = alpha

    def __call__(self, x: Tensor) -> Tensor:
        return surrogate.ATan.apply(x, self.alpha)


def _exact_step(x: Tensor, spike_grad) -> Tensor:
    """Heaviside ``U(x) = 1 if x >= 0`` in the forward pass, ``spike_grad``'s surrogate backward.

    snntorch's surrogates fire on ``x > 0``; Kim eq. 9 uses ``x >= 0``. The difference is added as a
    detached correction, so the forward value is exact and the gradient is the surrogate's.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        # inference: no surrogate, and one kernel writing 0/1 in x's dtype (no bool temporary)
        return torch.ge(x, 0, out=torch.empty_like(x))
    exact = (x >= 0).to(x.dtype)
    smooth = spike_grad(x)
    return smooth + (exact - smooth).detach()


def _check_block(inputs: Tensor) -> None:
    """``forward_steps`` needs a time-first tensor with at least one step."""
    if inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ValueError(f"forward_steps expects time-first inputs [t >= 1, B, ...], "
                         f"got shape {tuple(inputs.shape)}")


@contextmanager
def membranes_in_place(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, let the :class:`WeightedLeaky` neurons among ``modules`` that never hand
    out their membrane (``init_hidden=True``, ``output=False``) integrate into it in place.

    :math:`V \\leftarrow \\beta V + \\omega I` then writes the membrane tensor the neuron
    already holds instead of a new one: the same kernels on the same values (identical
    results), but one membrane-sized buffer less to allocate and fill per step, which at large
    batch saves a pass over memory. Outside the block every step makes a new membrane tensor,
    as in snntorch, so a membrane kept by the caller (``neuron.mem``) never changes afterwards;
    inside it, a kept ``neuron.mem`` follows the neuron (clone it to keep a value).
    :func:`~snntorch_weighted.simulation.runner.simulate`'s step loop uses this for the hidden
    neurons:
    nothing else sees their membranes there.
    """
    chosen = [m for m in modules
              if isinstance(m, WeightedLeaky) and m.init_hidden and not m.output]
    for module in chosen:
        module.__dict__["_mem_in_place"] = True
    try:
        yield
    finally:
        for module in chosen:
            module.__dict__.pop("_mem_in_place", None)


class _ClockedLeaky(snn.Leaky):
    """Shared state handling: membrane, step clock and the explicit / hidden calling conventions."""

    _mem_in_place = False  # see membranes_in_place

    def _init_clock(self) -> None:
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        self._last_mem = None
        self._constants_cache: tuple | None = None
        self._host_clock = HostClock()  # eager mode: the phase without tensor arithmetic

    def _constants(self) -> tuple[float | None, float | None, float | None]:
        """``(beta clamped to [0, 1], threshold, graded_spikes_factor)`` as Python floats, for
        inference; an entry is None when that attribute is not a 0-dim tensor or is an
        inference-mode tensor (then the tensor itself is used), all are None while
        ``torch.compile`` traces.

        Cached per tensor object and version counter: replacing an attribute or changing it in
        place is noticed (one host read per change, none per step).
        """
        if torch.compiler.is_compiling():
            return None, None, None
        found = self._buffers  # learnable ones are parameters: found by getattr
        beta = found["beta"] if "beta" in found else self.beta
        theta = found["threshold"] if "threshold" in found else self.threshold
        gain = (found["graded_spikes_factor"] if "graded_spikes_factor" in found
                else self.graded_spikes_factor)
        cached = self._constants_cache
        if cached is not None and cached[0] is beta and cached[1] is theta and cached[2] is gain:
            try:
                if cached[3] == (beta._version, theta._version, gain._version):
                    return cached[4]
            except RuntimeError:  # inference-mode tensors have no version counter
                pass
        if beta.is_inference() or theta.is_inference() or gain.is_inference():
            self._constants_cache = None
            return None, None, None
        values = tuple(float(t) if t.dim() == 0 else None for t in (beta, theta, gain))
        if values[0] is not None:
            values = (min(max(values[0], 0.0), 1.0), *values[1:])
        versions = (beta._version, theta._version, gain._version)
        self._constants_cache = (beta, theta, gain, versions, values)
        return values

    def _needs_grad(self, input_: Tensor) -> bool:
        """Whether this step must be differentiable (then the surrogate path runs)."""
        if not torch.is_grad_enabled():
            return False
        tensors = (input_, self.mem, self.beta, self.threshold, self.graded_spikes_factor)
        return any(isinstance(t, Tensor) and t.requires_grad for t in tensors)

    def _graded(self, spk: Tensor, gain: float | None) -> Tensor:
        """``spk * graded_spikes_factor`` (``gain``: its Python value, or None; skipped when 1)."""
        if gain == 1:
            return spk
        return spk * (self.graded_spikes_factor if gain is None else gain)

    def _results(self, spk: Tensor, mem: Tensor):
        """What ``forward`` returns for these spikes and membranes (snntorch's conventions)."""
        if self.output or not self.init_hidden:
            return spk, mem
        return spk

    @torch.no_grad()
    def forward_steps(self, inputs: Tensor):
        """Run ``forward(inputs[0]), forward(inputs[1]), ...`` on the neuron's own state.

        ``inputs`` is time-first ``[t, B, ...]``; returns what ``forward`` returns, stacked over
        time (``spk`` or ``(spk, mem)``, each ``[t, B, ...]``), identical to the step-by-step
        calls. Inference only (no gradients); forward hooks do not fire per step. The time-folded
        runner of :func:`snntorch_weighted.simulate` calls it; subclasses replace this loop with
        fewer kernels per step.
        """
        _check_block(inputs)
        outs = [self.forward(x) for x in inputs]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outs))
        return torch.stack(outs)

    def reset_mem(self) -> Tensor:
        """Zero the membrane and restart the step clock; returns the fresh membrane.

        Same as ``snntorch.Leaky.reset_mem`` plus the clock, written to the buffer dict directly
        (``nn.Module.__setattr__`` costs several microseconds per call).
        """
        buffers = self._buffers
        buffers["mem"] = torch.zeros_like(buffers["mem"])
        buffers["step"] = torch.zeros_like(buffers["step"])
        self._host_clock.restart(buffers["step"])  # the first step keeps this zero clock
        return buffers["mem"]

    def init_leaky(self) -> Tensor:
        """Same as :meth:`reset_mem` (snntorch's older name)."""
        return self.reset_mem()

    def _begin_step(self, input_: Tensor, mem: Tensor | None) -> Tensor:
        """Install the state for this step and return the clock value (steps already taken)."""
        # the state read from the buffer dict: nn.Module.__getattr__ costs ~1 us per lookup
        buffers = self._buffers
        fresh = buffers["mem"] is not self._last_mem
        if mem is not None:
            if self.init_hidden:
                raise TypeError("`mem` should not be passed as an argument while "
                                "`init_hidden=True`")
            self.mem = mem
        if buffers["mem"].shape != input_.shape:
            buffers["mem"] = torch.zeros_like(input_)  # dict writes: __setattr__ costs us
            fresh = True
        if fresh or buffers["step"].device != input_.device:
            restart_clock(buffers, self._host_clock, input_.device)
        return buffers["step"]

    def _end_step(self, spk: Tensor, mem: Tensor, clock: Tensor, steps: int = 1,
                  count: int | None = None):
        """Store the new state after ``steps`` steps from ``clock`` (``count``: its host value,
        if read in this step); what ``forward`` returns."""
        # plain dict writes: nn.Module.__setattr__ costs a few microseconds per call
        self._buffers["mem"] = mem
        self.__dict__["_last_mem"] = mem
        self._buffers["step"] = self._host_clock.advance(clock, steps, count)
        return self._results(spk, mem)

    def _fire(self, x: Tensor) -> Tensor:
        """Binary spike U(x >= 0) with the configured surrogate gradient."""
        return _exact_step(x, self.spike_grad)


class WeightedLeaky(QuickSteps, _ClockedLeaky):
    """Integrate-and-fire neuron with phase-weighted spikes (Kim et al. 2018, eq. 6, 8-10).

    At step t = 1, 2, ... the phase weight is :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}`, most
    significant phase first, and

    .. math::

        V(t) &= \\beta V(t-1) + \\omega(t)\\, I(t) \\\\
        s(t) &= U\\big(V(t) - \\omega(t)\\,\\vartheta\\big) \\quad (\\text{fires on} \\ge) \\\\
        V(t) &\\leftarrow V(t) - \\omega(t)\\,\\vartheta\\, s(t)

    (reset by subtraction in the same step; ``reset_mechanism="zero"`` zeroes, ``"none"`` keeps).
    Spikes are binary (times ``graded_spikes_factor``), so snntorch losses, ``spikeplot`` and spike
    counting work unchanged; :func:`snntorch_weighted.spikegen.decode_weighted` turns a spike train
    back into values (eq. 13-14). ``beta=1`` (the default) is the paper's integrate-and-fire neuron.

    With ``fire=False`` the neuron is the output layer of eq. 16: it integrates
    :math:`\\omega(t) I(t)` without firing (``spk`` is all zeros) and ignores its input during the
    first ``skip_periods`` periods (section 5.1), so ``argmax(mem)`` is the decision (eq. 17).

    Args:
        num_phases: K, phases per period.
        fire: ``False`` for the non-firing output integrator.
        skip_periods: periods of input ignored by a ``fire=False`` neuron (a plain attribute).
        Other arguments as :class:`snntorch.Leaky`.
    """

    def __init__(
        self,
        num_phases: int = 8,
        beta: float | Tensor = 1.0,
        threshold: float | Tensor = 1.0,
        spike_grad=None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "subtract",
        state_quant=False,
        output: bool = False,
        graded_spikes_factor: float | Tensor = 1.0,
        learn_graded_spikes_factor: bool = False,
        fire: bool = True,
        skip_periods: int = 0,
    ) -> None:
        if isinstance(num_phases, bool) or not isinstance(num_phases, int) or num_phases < 1:
            raise ValueError(f"num_phases must be an int >= 1, got {num_phases!r}")
        if isinstance(skip_periods, bool) or not isinstance(skip_periods, int) or skip_periods < 0:
            raise ValueError(f"skip_periods must be an int >= 0, got {skip_periods!r}")
        super().__init__(
            beta=beta,
            threshold=threshold,
            spike_grad=ATanSurrogate() if spike_grad is None else spike_grad,
            surrogate_disable=surrogate_disable,
            init_hidden=init_hidden,
            learn_beta=learn_beta,
            learn_threshold=learn_threshold,
            reset_mechanism=reset_mechanism,
            state_quant=state_quant,
            output=output,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
        )
        self.num_phases = num_phases
        self.fire_spikes = fire
        self.skip_periods = skip_periods
        self._init_clock()

    def phase_weight(self, clock: Tensor, dtype: torch.dtype) -> Tensor:
        """:math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` for the step after ``clock`` steps."""
        return phase_weight(clock, self.num_phases, dtype)

    def _fast(self, input_: Tensor) -> bool:
        """Inference with the few-kernel path: subtractive reset and no state quantisation, or
        the non-firing integrator."""
        return not self._needs_grad(input_) and (not self.fire_spikes or (
            self._reset_mechanism == "subtract" and not self.state_quant))

    def _leak(self, mem: Tensor, leak: float | None) -> Tensor:
        """:math:`\\beta V` (``leak``: beta's Python value clamped to [0, 1], or None; skipped
        when 1)."""
        if leak == 1:
            return mem
        return mem * (self.beta.clamp(0, 1) if leak is None else leak)

    def _integrate(self, input_: Tensor, w: float, leak: float | None) -> Tensor:
        """:math:`\\beta V + \\omega I` as a new tensor, or written into the membrane itself
        inside :func:`membranes_in_place` (same kernels, same values) when the membrane is
        writable there: same dtype as the input, a scalar leak, not an inference tensor outside
        inference mode."""
        mem = self._buffers["mem"]
        if (self._mem_in_place and leak is not None and mem.dtype == input_.dtype
                and (not mem.is_inference() or torch.is_inference_mode_enabled())):
            if leak != 1:
                mem.mul_(leak)
            return mem.add_(input_, alpha=w)
        return torch.add(self._leak(mem, leak), input_, alpha=w)

    def _phase_step(self, input_: Tensor, n: int, leak: float | None, theta: float | None,
                    gain: float | None) -> tuple[Tensor, Tensor]:
        """One inference step with the clock known on the host (``n``) and the constants of
        :meth:`_constants`: the phase weight and scalar constants are Python numbers, so only the
        membrane-sized kernels run (integrate :math:`\\beta V + \\omega I`, compare, reset).
        Same values as the tensor-clock path (:math:`\\omega I` and :math:`\\omega \\vartheta`
        are exact: :math:`\\omega = 2^{-k}`). Returns ``(spk, new_mem)``; stores nothing."""
        w = phase_weight(n, self.num_phases)
        if not self.fire_spikes:
            if n < self.skip_periods * self.num_phases:
                w = 0.0
            new_mem = self._integrate(input_, w, leak)
            return torch.zeros_like(new_mem), new_mem
        new_mem = self._integrate(input_, w, leak)
        if theta is None:
            threshold = w * self.threshold
            spk = torch.ge(new_mem, threshold, out=torch.empty_like(new_mem))
            new_mem = torch.addcmul(new_mem, spk, threshold, value=-1)
        else:
            spk = torch.ge(new_mem, self._threshold_of(n, theta, new_mem),
                           out=torch.empty_like(new_mem))
            new_mem.sub_(spk, alpha=w * theta)  # this step's own tensor, not yet handed out
        return self._graded(spk, gain), new_mem

    def _threshold_of(self, n: int, theta: float, like: Tensor) -> Tensor | float:
        """The threshold :math:`\\omega\\vartheta` of the step after ``n`` steps as ``torch.ge``
        takes it: from :meth:`_phase_thresholds` where there is one, else the Python float."""
        table = self._phase_thresholds(theta, like)
        return phase_weight(n, self.num_phases) * theta if table is None else table[
            n % self.num_phases]

    def _eager_step(self, input_: Tensor, clock: Tensor, n: int):
        """:meth:`_phase_step` with the constants read now, then the state stored."""
        spk, new_mem = self._phase_step(input_, n, *self._constants())
        return self._end_step(spk, new_mem, clock, count=n)

    def _quick_constants(self, input_: Tensor) -> tuple | None:
        """Quick steps (:func:`~snntorch_weighted.neurons.clock.quick_steps`) for the plain
        converted
        neurons, on the eager path with ``beta = 1`` and the spikes binary: a hidden neuron that
        fires with a scalar threshold, writes its membrane in place (:func:`membranes_in_place`)
        and runs in float32 / float64, or the output integrator with no skipped periods. Then
        ``(theta, thresholds, zeros)``: the threshold as :meth:`_phase_step` uses it and
        :meth:`_phase_thresholds` (None for the integrator), and the integrator's spikes (all
        zeros, one tensor for the whole run)."""
        leak, theta, gain = self._constants()
        if not self._fast(input_) or leak != 1 or gain != 1:
            return None
        mem = self._buffers["mem"]
        if not self.fire_spikes:
            return None if self.skip_periods else (None, None, torch.zeros_like(mem))
        if not (self._mem_in_place and theta is not None and mem.dtype == input_.dtype
                and (not mem.is_inference() or torch.is_inference_mode_enabled())):
            return None
        thresholds = self._phase_thresholds(theta, mem)
        return None if thresholds is None else (theta, thresholds, None)

    def _phase_thresholds(self, theta: float, like: Tensor) -> tuple[Tensor, ...] | None:
        """:math:`\\omega(k)\\,\\vartheta` of the K phases as 0-dim tensors of ``like``'s
        dtype and device: the values a Python float threshold is rounded to in ``torch.ge``, which
        then compares without converting a scalar at every call. Cached per threshold, dtype and
        device; float32 / float64 only (else None)."""
        if like.dtype not in (torch.float32, torch.float64):
            return None
        key = (theta, self.num_phases, like.dtype, like.device)
        cached = self.__dict__.get("_thresholds")
        if cached is None or cached[0] != key:
            values = [phase_weight(k, self.num_phases) * theta for k in range(self.num_phases)]
            table = torch.tensor(values, dtype=like.dtype, device=like.device).unbind(0)
            cached = self.__dict__["_thresholds"] = (key, table)
        return cached[1]

    def _quick_stopped(self) -> None:
        self.__dict__["_last_mem"] = self._buffers["mem"]

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        quick = self._quick
        if (quick and mem is None and input_.shape == quick.shape
                and input_.dtype is quick.dtype and not torch.is_grad_enabled()):
            # a quick step (clock.quick_steps): _phase_step's kernels for the cases of
            # _quick_constants (V += w I, s = [V >= w theta], V -= w theta s), host clock
            n = quick.count
            quick.count = n + 1
            w = phase_weight(n, self.num_phases)
            theta, thresholds, zeros = quick.constants
            if theta is None:  # the integrator: V + w I, a new membrane
                new_mem = self._buffers["mem"] = torch.add(self._buffers["mem"], input_, alpha=w)
                return self._results(zeros, new_mem)
            new_mem = self._buffers["mem"].add_(input_, alpha=w)
            spk = torch.ge(new_mem, thresholds[n % self.num_phases],
                           out=torch.empty_like(new_mem))
            new_mem.sub_(spk, alpha=w * theta)
            return spk
        return self._step_normally(input_, mem)

    def _regular_forward(self, input_: Tensor, mem: Tensor | None):
        clock = self._begin_step(input_, mem)
        n = self._host_clock.read(clock)
        if n is not None and self._fast(input_):
            return self._eager_step(input_, clock, n)
        w = self.phase_weight(clock, input_.dtype)
        if self._fast(input_):  # tensor clock (torch.compile, or the mirror out of sync)
            leak, _, gain = self._constants()
            mem = self._leak(self.mem, leak)
            if not self.fire_spikes:
                active = clock >= self.skip_periods * self.num_phases
                new_mem = torch.addcmul(mem, torch.where(active, w, torch.zeros_like(w)), input_)
                return self._end_step(torch.zeros_like(new_mem), new_mem, clock)
            # same values as below: V - w*theta >= 0 iff V >= w*theta, w*I is exact (w = 2^-k)
            new_mem = torch.addcmul(mem, w, input_)
            threshold = w * self.threshold
            spk = torch.ge(new_mem, threshold, out=torch.empty_like(new_mem))
            new_mem = torch.addcmul(new_mem, spk, threshold, value=-1)
            return self._end_step(self._graded(spk, gain), new_mem, clock)

        new_mem = self.beta.clamp(0, 1) * self.mem + w * input_
        if self.state_quant:
            new_mem = self.state_quant(new_mem)
        threshold = w * self.threshold
        spk = self._fire(new_mem - threshold)
        if self._reset_mechanism == "subtract":
            new_mem = new_mem - spk.detach() * threshold
        elif self._reset_mechanism == "zero":
            new_mem = new_mem * (1 - spk.detach())
        return self._end_step(spk * self.graded_spikes_factor, new_mem, clock)

    @torch.no_grad()
    def forward_steps(self, inputs: Tensor):
        r"""``t`` steps at once (see :meth:`_ClockedLeaky.forward_steps`), identical results.

        The phase weights of the block are computed once; per step run the same fused kernels as
        :meth:`forward` (integrate, compare, reset: three kernels; the integrator: one).
        """
        _check_block(inputs)
        if not self._fast(inputs):
            return super().forward_steps(inputs)
        steps = inputs.shape[0]
        clock = self._begin_step(inputs[0], None)
        n = self._host_clock.read(clock)
        skipped = 0 if self.fire_spikes else self.skip_periods * self.num_phases
        ws = block_phase_weights(clock if n is None else n, steps, self.num_phases, inputs.dtype,
                                 start=skipped)
        leak, theta, gain = self._constants()
        mems = torch.empty_like(inputs) if self.output or not self.init_hidden else None
        spikes = torch.zeros_like(inputs) if not self.fire_spikes else torch.empty_like(inputs)
        mem = self.mem
        for t, (w, x, spk) in enumerate(zip(ws, inputs.unbind(0), spikes.unbind(0))):
            leaked = self._leak(mem, leak)
            scalar = isinstance(w, float)
            # written where it is kept (mems[t]), or into the block's own membrane after the
            # first step (the neuron's membrane may be held by the caller): same kernel
            target = mems[t] if mems is not None else (mem if t and leaked is mem else None)
            mem = (torch.add(leaked, x, alpha=w, out=target) if scalar
                   else torch.addcmul(leaked, w, x, out=target))
            if self.fire_spikes:
                if scalar and theta is not None:  # scalar w: the clock n is on the host
                    torch.ge(mem, self._threshold_of(n + t, theta, mem), out=spk)
                    mem.sub_(spk, alpha=w * theta)  # mem is this step's own tensor
                else:
                    threshold = w * self.threshold
                    torch.ge(mem, threshold, out=spk)
                    mem.addcmul_(spk, threshold, value=-1)
        if self.fire_spikes:
            spikes = self._graded(spikes, gain)
        self._end_step(spikes, mem if mems is None else mem.clone(), clock, steps)
        return self._results(spikes, mems)


class RadixLeaky(_ClockedLeaky):
    """Radix-encoded LIF neuron (Wang et al., Algorithm 1, eq. 3-5), exact for every input.

    A period is T = ``num_bits`` steps; the phase is ``p = step % T``. Input currents must be
    integers (integer weights times 0/1 spikes); bit p of the input arrives at phase p, LSB first.
    The membrane ``V`` holds the output bits still to be sent in its low T bits and the integrating
    sum above them:

    * phase 0 (read-out, eq. 5): the sum X of the previous period becomes the output value
      :math:`y = \\min(\\max(\\lfloor X / 2^{\\Delta T} \\rfloor, 0), 2^T - 1)` and the membrane
      restarts at the bias: :math:`V = y + 2^T b`;
    * every step (Algorithm 1, :math:`V_{th}` = LSB test, :math:`V_r = 1`, :math:`\\kappa = 0.5`):
      :math:`V \\mathrel{+}= 2^T I(t)`, :math:`s(t) = V \\bmod 2`, :math:`V = (V - s(t)) / 2`.

    After T steps the output bits are gone and :math:`V = X = b + \\sum_p 2^p I(p)` (eq. 17), so
    the spikes of period n are the binary digits, LSB first, of
    ``clamp(floor((sum_p 2**p * in(p) @ w + b) / 2**shift), 0, 2**T - 1)`` computed from the inputs
    of period n - 1 (eq. 17-22 with ``shift`` = :math:`\\Delta T`). Negative sums give zeros (ReLU)
    and large sums saturate, for every input: the paper's neuron needs condition (23) for that.

    **Timing.** A layer's latency is exactly one period (T steps). An L-layer stack fed its input in
    period 0 emits the output in period L (steps L*T to L*T + T - 1); the end-to-end latency is
    (L + 1) * T steps, and fed the same input every period, every period from L on is correct.
    Each spike train is T steps long.

    With ``fire=False`` (output layer) the neuron never spikes: ``V = b`` at phase 0 and
    :math:`V \\mathrel{+}= 2^p I(p)`, so at the last phase of a period ``mem`` is the integer
    pre-activation X of that period's inputs.

    Exactness: float64 is exact while all values stay below 2**53; float32 while
    ``2**T * (|b| + sum_p |I(p)|) < 2**24``.

    Args:
        num_bits: T, bits per spike train (steps per period).
        shift: :math:`\\Delta T`, low bits dropped at read-out (power-of-two rescaling, eq. 19).
        bias: integer bias b (broadcast against the input, e.g. ``[C, 1, 1]`` after a conv); the
            weight layer in front of the neuron must then have no bias.
        fire: ``False`` for the non-firing output integrator.
    """

    def __init__(
        self,
        num_bits: int = 8,
        shift: int = 0,
        bias: Tensor | float | None = None,
        fire: bool = True,
        spike_grad=None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        output: bool = False,
        graded_spikes_factor: float | Tensor = 1.0,
        learn_graded_spikes_factor: bool = False,
    ) -> None:
        if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 1 <= num_bits <= 52:
            raise ValueError(f"num_bits must be an int in [1, 52], got {num_bits!r}")
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise ValueError(f"shift must be an int, got {shift!r}")
        super().__init__(
            beta=0.5,
            threshold=1.0,
            spike_grad=ATanSurrogate() if spike_grad is None else spike_grad,
            surrogate_disable=surrogate_disable,
            init_hidden=init_hidden,
            reset_mechanism="subtract",
            output=output,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
        )
        self.num_bits = num_bits
        self.fire_spikes = fire
        bias = torch.zeros(()) if bias is None else torch.as_tensor(bias).clone()
        if not bias.is_floating_point():
            bias = bias.double()
        self.register_buffer("bias", bias)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.long))
        self._init_clock()

    def readout(self, total: Tensor) -> Tensor:
        """Output value of a period's sum: ``clamp(floor(total / 2**shift), 0, 2**T - 1)``."""
        scaled = torch.floor(total * torch.exp2(-self.shift.to(total.dtype)))
        return scaled.clamp(0, 2**self.num_bits - 1)

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        clock = self._begin_step(input_, mem)
        phase = clock % self.num_bits
        bias = self.bias.to(input_.dtype)
        if not self.fire_spikes:
            start = torch.where(phase == 0, bias.expand_as(self.mem), self.mem)
            new_mem = start + torch.exp2(phase.to(input_.dtype)) * input_
            return self._end_step(torch.zeros_like(new_mem), new_mem, clock)

        top = 2.0**self.num_bits
        start = torch.where(phase == 0, self.readout(self.mem) + top * bias, self.mem)
        new_mem = start + top * input_
        lsb = torch.remainder(new_mem, 2)
        spk = self._fire(lsb - 0.5)
        new_mem = (new_mem - spk.detach()) * 0.5
        return self._end_step(spk * self.graded_spikes_factor, new_mem, clock)

"""The converted spiking network: :class:`SpikingNetwork`, the object ``convert`` returns."""

from __future__ import annotations

import math

import snntorch
import snntorch.spikegen as snn_spikegen
import torch
from torch import Tensor, fx, nn

from .. import spikegen

__all__ = ["SpikingNetwork", "CODINGS"]

CODINGS = ("weighted", "rate", "radix")
SIMULATE_CACHE = "_plan_cache"
"""Attribute under which :func:`snntorch_weighted.simulate` keeps a network's fan-out profile and
what it was computed from (reused only while all of that is unchanged)."""
SIMULATE_RUNNING = "_simulate_running"
"""Attribute set while :func:`snntorch_weighted.simulate` runs on a network."""


def _is_neuron(module: nn.Module) -> bool:
    return isinstance(module, snntorch.SpikingNeuron)


class SpikingNetwork(nn.Module):
    """A converted SNN: a ``torch.fx`` graph of torch layers and spiking neurons, run step by step.

    ``graph(x_t)`` computes one time step: it takes the input spikes of step t (``[B, ...]``) and
    returns the membrane of the non-firing output integrator, ``[B, C]``. All neurons use
    ``init_hidden=True``, so the state lives in the modules; call :func:`snntorch_weighted.reset`
    before each new input (it restarts membranes, step clocks and max-pool accumulators).

    Decoding (:meth:`decode`):

    * ``weighted`` (Kim eq. 16): after ``steps`` steps the output integrator holds
      :math:`V^L = \\sum_t \\omega(t) z^L(t) \\approx n\\, a^L` for ``n`` integrated periods, so the
      estimate of the ANN output is ``output_scale * mem / n`` with
      ``n = (steps - skip_periods * K) / K``;
    * ``rate``: ``output_scale * mem / steps`` (the mean input current per step);
    * ``radix``: ``output_scale * mem`` (the integrator's membrane read at the end of a period).

    Args:
        graph: the step graph (``GraphModule``); its output is the output neuron's membrane.
        coding: ``"weighted"``, ``"rate"`` or ``"radix"``.
        num_phases: K for weighted coding.
        num_bits: T for radix coding.
        output_scale: factor from the decoded membrane to ANN output units.
        latency: steps before the output is meaningful (default: K for weighted, 1 for rate,
            T for radix; radix conversions pass ``(L + 1) * T``).
        output_neuron: qualified name of the output integrator in ``graph`` (default: the only
            neuron created with ``output=True``).
    """

    def __init__(
        self,
        graph: fx.GraphModule,
        coding: str,
        num_phases: int | None = None,
        num_bits: int | None = None,
        output_scale: float = 1.0,
        latency: int | None = None,
        output_neuron: str | None = None,
    ) -> None:
        super().__init__()
        if coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
        if coding == "weighted" and not (isinstance(num_phases, int) and num_phases >= 1):
            raise ValueError(f"weighted coding needs num_phases >= 1, got {num_phases!r}")
        if coding == "radix" and not (isinstance(num_bits, int) and num_bits >= 1):
            raise ValueError(f"radix coding needs num_bits >= 1, got {num_bits!r}")
        self.coding = coding
        self.graph = graph
        self.num_phases = num_phases if coding == "weighted" else None
        self.num_bits = num_bits if coding == "radix" else None
        self.output_scale = float(output_scale)
        self._output_name = output_neuron or self._find_output_neuron()
        if latency is None:
            latency = {"weighted": num_phases, "rate": 1, "radix": num_bits}[coding]
        self.latency = int(latency)

    def _find_output_neuron(self) -> str:
        names = [n for n, m in self.graph.named_modules() if _is_neuron(m) and m.output]
        if len(names) != 1:
            raise ValueError(f"cannot tell the output neuron among {names}; pass output_neuron=")
        return names[0]

    @property
    def output_neuron(self) -> nn.Module:
        """The non-firing output integrator."""
        return self.graph.get_submodule(self._output_name)

    @property
    def skip_periods(self) -> int:
        """Periods the weighted output integrator ignores (Kim section 5.1); 0 otherwise."""
        return int(getattr(self.output_neuron, "skip_periods", 0))

    @skip_periods.setter
    def skip_periods(self, value: int) -> None:
        if self.coding != "weighted":
            raise ValueError("skip_periods applies to weighted coding only")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"skip_periods must be an int >= 0, got {value!r}")
        self.output_neuron.skip_periods = value

    def neurons(self) -> list[tuple[str, nn.Module]]:
        """The spiking (hidden) neurons, in graph order (the output integrator excluded)."""
        out = []
        for node in self.graph.graph.nodes:
            if node.op != "call_module" or node.target == self._output_name:
                continue
            module = self.graph.get_submodule(node.target)
            if _is_neuron(module):
                out.append((node.target, module))
        return out

    def encode(self, x: Tensor, num_steps: int) -> Tensor:
        """Input spike train ``[num_steps, *x.shape]`` for inputs ``x`` in ``[0, 1]``.

        ``weighted``: :func:`snntorch_weighted.spikegen.weighted` (K-bit code, MSB first, every
        period); ``rate``: :func:`snntorch.spikegen.rate` (Bernoulli, p = x); ``radix``:
        :func:`snntorch_weighted.spikegen.radix` (T bits, LSB first) repeated every period.
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        if self.coding == "weighted":
            return spikegen.weighted(x, num_steps, self.num_phases)
        if self.coding == "radix":
            train = spikegen.radix(x, self.num_bits)
            reps = math.ceil(num_steps / self.num_bits)
            return train.repeat(reps, *([1] * x.dim()))[:num_steps]
        spikegen._check_data(x)
        return snn_spikegen.rate(x, num_steps=num_steps)

    def __getstate__(self) -> dict:
        """Pickled and deep-copied without ``simulate``'s cache (:data:`SIMULATE_CACHE`, copies
        of the weights, rebuilt by the next run) and its running mark (:data:`SIMULATE_RUNNING`:
        a copy made during a run is free to run)."""
        state = super().__getstate__()
        state.pop(SIMULATE_CACHE, None)
        state.pop(SIMULATE_RUNNING, None)
        return state

    def forward(self, x_t: Tensor) -> Tensor:
        """One time step: input spikes ``[B, ...]`` -> output membrane ``[B, C]``."""
        return self.graph(x_t)

    def decode(self, mem: Tensor, steps: int) -> Tensor:
        """Estimate of the ANN output from the output membrane after ``steps`` steps."""
        return mem * self._decode_factors([steps])[0]

    def decode_trace(self, mems: Tensor) -> Tensor:
        """``decode(mems[t], t + 1)`` for every step of a time-first trace ``[T, B, ...]``, as one
        product (the same values: each step's factor, rounded to ``mems.dtype``, times its
        membranes)."""
        factors = self._decode_factors(range(1, mems.shape[0] + 1))
        factors = torch.tensor(factors, dtype=mems.dtype, device=mems.device)
        return mems * factors.view(-1, *[1] * (mems.dim() - 1))

    def _decode_factors(self, steps) -> list[float]:
        """The factor :meth:`decode` multiplies the membrane by, after each of ``steps`` steps."""
        if self.coding == "radix":
            return [self.output_scale for _ in steps]
        if self.coding == "rate":
            return [self.output_scale / max(n, 1) for n in steps]
        k, skipped = self.num_phases, self.skip_periods * self.num_phases
        return [self.output_scale / max((n - skipped) / k, 1.0 / k) for n in steps]

    def extra_repr(self) -> str:
        extra = f"coding={self.coding!r}, latency={self.latency}"
        if self.num_phases is not None:
            extra += f", num_phases={self.num_phases}"
        if self.num_bits is not None:
            extra += f", num_bits={self.num_bits}"
        return extra

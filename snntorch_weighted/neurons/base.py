"""What both neurons share: snntorch's calling conventions and a step counter for the phase.

The conventions are :class:`snntorch.Leaky`'s: ``spk, mem = neuron(cur, mem)`` (explicit state),
or ``init_hidden=True`` where the neuron keeps ``mem`` and returns ``spk`` (``output=True``: also
``mem``); a ``mem`` argument with ``init_hidden=True`` is a ``TypeError``; the state starts as zeros
shaped like the first input.

The phase of a step comes from one plain counter, the buffer ``step`` (a 0-dim ``long`` tensor: the
steps taken since the state was last restarted). It restarts, with the membrane, when the state is
restarted: :meth:`reset_mem` / :meth:`init_leaky`, any assignment ``neuron.mem = ...`` (what
``snntorch.utils.reset`` does), and a change of input shape. Nothing else is cached: every step
reads ``step``, ``beta``, ``threshold`` and ``graded_spikes_factor`` afresh, so an edit such as
``neuron.threshold.data.mul_(0.25)`` or ``neuron.step.data.fill_(5)`` takes effect at the next step.
"""

from __future__ import annotations

import snntorch as snn
import torch
from torch import Tensor

__all__ = ["SteppedLeaky", "check_int"]


def check_int(name: str, value: object, low: int) -> None:
    """``ValueError`` unless ``value`` is an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


class SteppedLeaky(snn.Leaky):
    """:class:`snntorch.Leaky` with a step counter ``step`` and the state handling described in
    the module docstring; subclasses compute one step in ``forward`` between :meth:`_load_state`
    and :meth:`_store_state`."""

    def _init_step(self) -> None:
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "mem" and "step" in self._buffers:  # a new membrane: a new sequence
            self._buffers["step"] = torch.zeros_like(self._buffers["step"])

    def reset_mem(self) -> Tensor:
        """Zero the membrane and restart the step counter; returns the fresh membrane."""
        self.mem = torch.zeros_like(self.mem)
        return self.mem

    def init_leaky(self) -> Tensor:
        """Same as :meth:`reset_mem` (snntorch's older name)."""
        return self.reset_mem()

    def _load_state(self, input_: Tensor, mem: Tensor | None) -> Tensor:
        """The membrane this step starts from: ``mem`` if given (explicit state), else the kept
        one; zeros (and the counter at 0) when its shape is not the input's."""
        if mem is not None:
            if self.init_hidden:
                raise TypeError("`mem` should not be passed as an argument while "
                                "`init_hidden=True`")
            self._buffers["mem"] = mem  # the caller's running state: the counter goes on
        if self._buffers["mem"].shape != input_.shape:
            self.mem = torch.zeros_like(input_)  # a new sequence
        return self._buffers["mem"]

    def _store_state(self, spk: Tensor, mem: Tensor, steps: int = 1):
        """Keep ``mem``, count ``steps`` steps; what ``forward`` returns (snntorch's rule)."""
        self._buffers["mem"] = mem
        self._buffers["step"] = self._buffers["step"] + steps
        if self.output or not self.init_hidden:
            return spk, mem
        return spk

"""Early decision (Kim et al. 2018, section 5.3, Algorithm 1), vectorised over the batch.

For every sample the algorithm watches the output membranes :math:`V^L(t)` from step
:math:`T_1` on and stops as soon as the current decision has been stable for long enough relative
to how hard the sample is:

.. code-block:: text

    D(T1-1) = none, delta_EMA(T1-1) = 0, count = 0
    for t = T1 .. T2:
        D(t)         = argmax_i V_i(t)                       # line 3
        delta(t)     = top-2 difference of V(t)               # line 4
        delta_EMA(t) = (delta(t) + delta_EMA(t-1)) / 2        # line 5
        if D(t) == D(t-1):                                    # line 6
            count += 1                                        # line 7
            if count >= theta / delta_EMA(t): stop at t       # lines 8-9
        else:
            count = 0                                         # line 11

Conventions (the paper leaves them open):

* steps are 1-based: ``trace[t - 1]`` is the membrane after step ``t``; the decision time ``t`` is
  the number of steps the sample needed (its spikes are counted over steps ``1..t``);
* at ``t = T1`` the previous decision is "none", so ``count`` starts at 0 there;
* ``argmax`` ties go to the lowest class index (``torch.argmax``); tied top-2 gives ``delta = 0``;
* ``theta / delta_EMA`` is evaluated in float64 with IEEE semantics: ``delta_EMA = 0`` gives
  ``+inf`` (never stable enough) for ``theta > 0``, and ``NaN`` (no stop) for ``theta = 0``;
* a sample that never stops is decided at ``T2`` with ``D(T2)`` (``decided`` is ``False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EarlyDecision", "early_decision", "gather_at_time"]


@dataclass
class EarlyDecision:
    """Result of :func:`early_decision` (all tensors ``[B]``, on the trace's device).

    Attributes:
        decision: class decided per sample (``long``).
        time: decision time per sample, 1-based steps in ``[T1, T2]`` (``long``).
        decided: ``True`` where the stability test fired, ``False`` where the sample ran to ``T2``.
        theta: the stable-decision threshold used.
        start_step: ``T1``.
        end_step: ``T2``.
    """

    decision: Tensor
    time: Tensor
    decided: Tensor
    theta: float
    start_step: int
    end_step: int

    def mean_time(self) -> Tensor:
        """Average decision time over the batch (a 0-dim float tensor)."""
        return self.time.double().mean()


def _check_args(trace: Tensor, theta: float, start_step: int, end_step: int | None) -> int:
    if not isinstance(trace, Tensor) or trace.dim() != 3:
        shape = tuple(trace.shape) if isinstance(trace, Tensor) else type(trace).__name__
        raise ValueError(f"trace must be a [T, B, C] tensor of output membranes, got {shape}")
    num_steps, _, num_classes = trace.shape
    if num_steps < 1 or num_classes < 2:
        raise ValueError(f"trace needs T >= 1 steps and C >= 2 classes, got {tuple(trace.shape)}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta >= 0:
        raise ValueError(f"theta must be a number >= 0, got {theta!r}")
    end = num_steps if end_step is None else end_step
    for name, value in (("start_step", start_step), ("end_step", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if not 1 <= start_step <= end <= num_steps:
        raise ValueError(
            f"need 1 <= start_step <= end_step <= T, got start_step={start_step}, "
            f"end_step={end}, T={num_steps}"
        )
    return end


def early_decision(
    trace: Tensor, theta: float, start_step: int = 1, end_step: int | None = None
) -> EarlyDecision:
    """Kim et al. Algorithm 1 for a whole batch at once.

    Loops over time only; each step is a few tensor ops over ``[B, C]`` with no host sync.

    Args:
        trace: output membranes ``[T, B, C]`` (``trace[t-1]`` is :math:`V^L(t)`).
        theta: stable decision threshold :math:`\\theta \\ge 0` (larger: later, safer decisions).
        start_step: :math:`T_1`, first step (1-based) the algorithm looks at.
        end_step: :math:`T_2` (default ``T``), the last step; undecided samples stop there.

    Returns:
        :class:`EarlyDecision` with per-sample decision, decision time and ``decided`` flags.
    """
    end = _check_args(trace, theta, start_step, end_step)
    device = trace.device
    batch = trace.shape[1]
    values = trace.detach().double()
    prev = torch.full((batch,), -1, dtype=torch.long, device=device)
    ema = torch.zeros(batch, dtype=torch.float64, device=device)
    count = torch.zeros(batch, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    time = torch.full((batch,), end, dtype=torch.long, device=device)
    decision = torch.zeros(batch, dtype=torch.long, device=device)
    for t in range(start_step, end + 1):
        v = values[t - 1]
        current = v.argmax(dim=1)
        top2 = v.topk(2, dim=1).values
        ema = (top2[:, 0] - top2[:, 1] + ema) / 2
        same = current == prev
        count = torch.where(same, count + 1, torch.zeros_like(count))
        stop = same & (count >= theta / ema) & ~done
        time = torch.where(stop, torch.full_like(time, t), time)
        decision = torch.where(stop, current, decision)
        done = done | stop
        prev = current
    decision = torch.where(done, decision, prev)
    return EarlyDecision(decision, time, done, float(theta), start_step, end)


def gather_at_time(per_step: Tensor, time: Tensor) -> Tensor:
    """Totals up to each sample's decision time: ``sum_{t <= time[b]} per_step[t, b, ...]``.

    Args:
        per_step: per-step values ``[T, B, ...]`` (e.g. spike counts per step and sample).
        time: 1-based decision times ``[B]`` in ``[1, T]``.

    Returns:
        ``[B, ...]`` cumulative sums gathered at ``time`` (one ``cumsum`` and one ``gather``).
    """
    if per_step.dim() < 2 or time.shape != per_step.shape[1:2]:
        raise ValueError(
            f"per_step must be [T, B, ...] and time [B], got {tuple(per_step.shape)} and "
            f"{tuple(time.shape)}"
        )
    cumulative = per_step.cumsum(0)
    index = (time.long() - 1).clamp(0, per_step.shape[0] - 1)
    index = index.view(1, -1, *([1] * (per_step.dim() - 2))).expand(1, *per_step.shape[1:])
    return cumulative.gather(0, index.to(per_step.device)).squeeze(0)

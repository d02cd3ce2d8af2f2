"""Weighted-phase and radix spike codes, time-first like :mod:`snntorch.spikegen`.

Both codes carry the same fixed-point code of a value ``x`` in ``[0, 1]``:

.. math::

    q(x) = \\min\\left(\\lfloor x \\cdot 2^{B} + \\tfrac12 \\rfloor,\\; 2^{B} - 1\\right),
    \\qquad \\mathrm{quantize}(x) = q(x) / 2^{B}

(round half up; values above :math:`1 - 2^{-B-1}` saturate at the top code :math:`1 - 2^{-B}`).

* :func:`weighted` (Kim et al. 2018, eq. 6 and 11): the B = K bits of ``q`` MSB first, so that step
  ``t`` (1-based) carries weight :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}`; the period repeats.
* :func:`radix` (Wang et al., eq. 1 and 19): the B = T bits of ``q`` LSB first, step ``t`` (0-based)
  carries weight :math:`2^t`, ``T`` steps in all.

The decoders invert them exactly: ``decode_weighted(weighted(x, n*K, K), K) == quantize(x, K)`` and
``decode_radix(radix(x, T)) == quantize(x, T)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "EXACT_BITS",
    "check_bits",
    "phase_weight",
    "phase_weights",
    "quantize",
    "quantize_code",
    "weighted",
    "radix",
    "decode_weighted",
    "decode_radix",
]


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


#: Integers up to ``2**bits`` that each floating dtype represents exactly (its significand bits).
EXACT_BITS = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}


def check_bits(name: str, value: int, dtype: torch.dtype = torch.float64) -> None:
    """The one check of a bit count (``num_phases`` K, ``num_bits`` T) against the dtype that
    carries the code.

    A K- or T-bit code of values in [0, 1] is exact in a floating dtype only while K (T) is at most
    the dtype's significand bits (:data:`EXACT_BITS`: float32 24, float64 53); above that
    ``decode(encode(x)) == quantize(x)`` and the neurons' exact dynamics break. Raises
    ``ValueError`` naming the limit and the dtype, or when ``value`` is not an int >= 1. Integer
    dtypes are checked against float64 (the decoders sum in float64).
    """
    _check_count(name, value)
    limit = EXACT_BITS.get(dtype, 53)
    if value > limit:
        shown = dtype if dtype in EXACT_BITS else torch.float64
        raise ValueError(
            f"{name}={value} is above what {shown} represents exactly: at most {limit} bits "
            f"(float32: 24, float64: 53); use fewer bits or a wider dtype"
        )


def _check_data(data: Tensor) -> None:
    if not isinstance(data, Tensor):
        raise ValueError(f"data must be a torch.Tensor, got {type(data).__name__}")
    if not data.is_floating_point():
        raise ValueError(
            f"data must be a floating-point tensor with values in [0, 1], got dtype {data.dtype}"
        )
    if not data.numel():
        return
    # one pass, one host read; NaN anywhere makes both NaN (and both comparisons False)
    low, high = torch.stack(torch.aminmax(data)).tolist()
    if low >= 0 and high <= 1:
        return
    if torch.isnan(data).any():
        raise ValueError("data contains NaN")
    raise ValueError(
        f"data must lie in [0, 1], got values in [{low:g}, {high:g}]; "
        "normalise it first (e.g. divide 8-bit images by 255)"
    )


def _check_spikes(spikes: Tensor) -> None:
    if not isinstance(spikes, Tensor):
        raise ValueError(f"spikes must be a torch.Tensor, got {type(spikes).__name__}")
    if spikes.dim() < 1 or spikes.shape[0] < 1:
        raise ValueError("spikes must be time-first [num_steps, ...] with num_steps >= 1")


def phase_weight(done: int | Tensor, num_phases: int, dtype: torch.dtype = torch.float32
                 ) -> float | Tensor:
    """Weight :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` (Kim eq. 6) of step ``t = done + 1``,
    the step after ``done`` steps: a Python float (exact) for an int ``done``, a tensor of
    ``dtype`` for a tensor (a step clock, or a range of them)."""
    if isinstance(done, Tensor):
        return torch.exp2(-(1 + done % num_phases).to(dtype))
    return 2.0 ** -(1 + done % num_phases)


def phase_weights(
    num_steps: int, num_phases: int, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """Spike weights :math:`\\omega(t) = 2^{-(1 + (t-1) \\bmod K)}` of steps 1..num_steps
    (Kim eq. 6)."""
    _check_count("num_steps", num_steps)
    check_bits("num_phases", num_phases, dtype)
    return phase_weight(torch.arange(num_steps, device=device), num_phases, dtype)


def quantize_code(data: Tensor, num_bits: int) -> Tensor:
    """Integer code :math:`q = \\min(\\lfloor x 2^B + 1/2 \\rfloor, 2^B - 1)` of ``data`` in [0, 1].

    Returned as ``torch.long``. Raises ``ValueError`` for NaN, values outside [0, 1], integer
    dtypes, ``num_bits < 1`` and ``num_bits > 53`` (:func:`check_bits`: computed in float64).
    """
    check_bits("num_bits", num_bits)
    _check_data(data)
    scaled = data.double() * 2.0**num_bits  # exact: a power-of-two scaling
    whole = torch.floor(scaled)
    rounded = whole + (scaled - whole >= 0.5)  # exact; floor(scaled + 0.5) could round up wrongly
    return rounded.clamp_(max=2**num_bits - 1).long()


def quantize(data: Tensor, num_bits: int) -> Tensor:
    """The value both codes carry: ``quantize_code(data, num_bits) / 2**num_bits``, data's dtype
    (``num_bits`` at most what that dtype represents exactly, :func:`check_bits`)."""
    _check_data(data)
    check_bits("num_bits", num_bits, data.dtype)
    return (quantize_code(data, num_bits).double() / 2.0**num_bits).to(data.dtype)


def _bits(code: Tensor, num_bits: int, dtype: torch.dtype, msb_first: bool = False) -> Tensor:
    """Bits of an integer code, LSB (or MSB) first: ``[num_bits, *code.shape]``."""
    shifts = (torch.arange(num_bits - 1, -1, -1, device=code.device) if msb_first
              else torch.arange(num_bits, device=code.device))
    return ((code.unsqueeze(0) >> shifts.view(-1, *([1] * code.dim()))) & 1).to(dtype)


def weighted(data: Tensor, num_steps: int, num_phases: int = 8) -> Tensor:
    """Weighted-phase spike train of ``data`` (Kim et al. eq. 6, 11): ``[num_steps, *data.shape]``.

    Step t (1-based) carries bit ``(t-1) % K`` of the K-bit code, most significant first, so
    that :math:`\\sum_{t \\in \\text{period}} \\omega(t) s(t) = \\mathrm{quantize}(x, K)`.
    The period of K steps repeats for ``num_steps`` steps (the last period may be cut short).
    """
    _check_count("num_steps", num_steps)
    _check_data(data)
    check_bits("num_phases", num_phases, data.dtype)
    period = _bits(quantize_code(data, num_phases), num_phases, data.dtype, msb_first=True)
    if num_steps <= num_phases:
        return period[:num_steps]
    reps = -(-num_steps // num_phases)
    return period.repeat(reps, *([1] * data.dim()))[:num_steps]


def radix(data: Tensor, num_bits: int = 8) -> Tensor:
    """Radix spike train of ``data`` (Wang et al. eq. 19): ``[num_bits, *data.shape]``, LSB first.

    Step t (0-based) carries bit t of the code, so :math:`\\sum_t 2^t s(t) = q(x)`.
    """
    _check_data(data)
    check_bits("num_bits", num_bits, data.dtype)
    return _bits(quantize_code(data, num_bits), num_bits, data.dtype)


def decode_weighted(spikes: Tensor, num_phases: int = 8) -> Tensor:
    """Average value per period of a weighted spike train (Kim et al. eq. 13-14).

    :math:`\\hat a = \\frac{1}{n} \\sum_{t=1}^{nK} \\omega(t) s(t)` with n = num_steps / K periods.
    ``num_steps`` must be a whole number of periods.
    """
    _check_spikes(spikes)
    dtype = spikes.dtype if spikes.is_floating_point() else torch.float32
    check_bits("num_phases", num_phases, dtype)
    num_steps = spikes.shape[0]
    if num_steps % num_phases:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of num_phases ({num_phases}) to decode "
            "whole periods"
        )
    w = phase_weights(num_steps, num_phases, dtype, spikes.device)
    total = torch.tensordot(w, spikes.to(dtype), dims=([0], [0]))
    return total / (num_steps // num_phases)


def decode_radix(spikes: Tensor, integer: bool = False) -> Tensor:
    """Value of a radix spike train, LSB first (Wang et al. eq. 19, WDT of Table 1).

    :math:`S = \\sum_{t=0}^{T-1} 2^t s(t)`; returns ``S / 2**T`` or, with ``integer=True``, ``S``
    as ``torch.long``.
    """
    _check_spikes(spikes)
    num_bits = spikes.shape[0]
    dtype = spikes.dtype if spikes.is_floating_point() else torch.float32
    check_bits("num_bits (the train's length)", num_bits, torch.float64 if integer else dtype)
    weights = torch.exp2(torch.arange(num_bits, device=spikes.device, dtype=torch.float64))
    total = torch.tensordot(weights, spikes.double(), dims=([0], [0]))
    if integer:
        return total.round().long()
    return (total / 2.0**num_bits).to(dtype)

"""The modules of the radix twin: STE primitives, input quantiser, neurons (joins), path layers
and sum pools (the integer semantics are in :mod:`snntorch_weighted.quant`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..conversion.graph import UnsupportedLayerError
from ..conversion.ops import ChannelAffine
from ..spikegen import quantize_code

__all__ = ["SHIFT_MIN", "SHIFT_MAX", "round_ste", "floor_ste", "fake_quantize", "InputQuant",
           "QuantReLU", "QuantOutput", "QuantLayer", "IdentityScale", "SumPool2d"]

SHIFT_MIN = -16
SHIFT_MAX = 30

# --------------------------------------------------------------------------- STE primitives


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad


def round_ste(x: Tensor) -> Tensor:
    """Round half up, ``floor(x + 1/2)``, exact in the forward pass; identity gradient (STE)."""
    return _RoundSTE.apply(x)


def floor_ste(x: Tensor) -> Tensor:
    """``floor(x)`` exact in the forward pass; identity gradient (STE)."""
    return _FloorSTE.apply(x)


def _check_bits(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def fake_quantize(x: Tensor, step: Tensor | float, num_bits: int) -> Tensor:
    """T-bit activation quantiser with STE: ``step * round(clamp(x / step, 0, 2**T - 1))``.

    The value equals ``step * clamp(round(x / step), 0, 2**T - 1)`` (round half up); the gradient
    w.r.t. ``x`` is 1 where the clip is inactive (``0 <= x / step <= 2**T - 1``) and 0 where it is
    active (Yin et al. 2019). This is what every hidden neuron computes, in real units.
    """
    _check_bits("num_bits", num_bits, 1, 52)
    top = 2.0**num_bits - 1
    return step * round_ste(torch.clamp(x / step, 0.0, top))


# --------------------------------------------------------------------------- twin modules


class InputQuant(nn.Module):
    """Neuron 0: the input code ``quantize_code(x, T)`` (as ``x``'s float dtype), step ``2**-T``."""

    def __init__(self, num_bits: int) -> None:
        super().__init__()
        _check_bits("num_bits", num_bits, 1, 52)
        self.num_bits = num_bits
        self.register_buffer("delta", torch.tensor(2.0**-num_bits), persistent=False)

    def step(self) -> Tensor:
        """The input step :math:`\\Delta_0 = 2^{-T}`."""
        return self.delta

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"the input must be floating point, got {x.dtype}")
        return quantize_code(x, self.num_bits).to(x.dtype)


@dataclass(eq=False)
class _Path:
    """One term of a neuron's pre-activation: ``layer`` (a QuantLayer or IdentityScale) fed by
    the codes of ``sources`` (neurons; more than one where branches were concatenated), followed
    by sum pools with total factor ``post`` (``1/area`` each) before the join."""

    sources: tuple[nn.Module, ...]  # InputQuant / QuantReLU modules
    source_names: tuple[str, ...]
    layer: nn.Module  # QuantLayer or IdentityScale
    layer_name: str
    post: float = 1.0

    def unit_steps(self) -> Tensor:
        """The real value of one code unit at each input unit of the layer, shaped to broadcast
        against its weight (IdentityScale: against its input)."""
        steps = torch.stack([s.step().reshape(()) for s in self.sources])
        full = steps[self.layer.src_ids] * self.layer.src_factor.to(steps.dtype)
        return self.layer.per_unit(full)


class _Join(nn.Module):
    """Common code of :class:`QuantReLU` and :class:`QuantOutput`: paths, weights and bias."""

    def __init__(self, num_bits: int, weight_bits: int) -> None:
        super().__init__()
        _check_bits("num_bits", num_bits, 1, 52)
        _check_bits("weight_bits", weight_bits, 2, 24)
        self.num_bits = num_bits
        self.weight_bits = weight_bits
        self._paths: tuple[_Path, ...] = ()  # plain references, not submodules

    @property
    def qmax(self) -> float:
        """Largest integer weight magnitude, ``2**(weight_bits - 1) - 1``."""
        return 2.0 ** (self.weight_bits - 1) - 1

    def _set_paths(self, paths: Iterable[_Path]) -> None:
        self._paths = tuple(paths)

    def _ratios(self) -> Tensor:
        """``max|W_k Delta_src_k| f_k`` for every path (detached), as one tensor."""
        values = []
        for path in self._paths:
            unit = path.unit_steps().detach()
            if isinstance(path.layer, QuantLayer):
                unit = path.layer.weight.detach().to(unit.dtype) * unit
            values.append(unit.abs().max() * path.post)
        return torch.stack(values)

    def shift(self) -> Tensor:
        """The shift ``s`` (float tensor holding an integer; 0 for the output)."""
        raise NotImplementedError

    def acc_scale(self) -> Tensor:
        """The accumulator scale ``A`` (real value of one accumulator unit)."""
        raise NotImplementedError

    def int_weight(self, path: _Path) -> Tensor:
        """Integer weight of ``path`` (STE): ``clamp(round(W Delta_src f / A), -qmax, qmax)``."""
        scale = path.unit_steps() * path.post / self.acc_scale()
        if isinstance(path.layer, QuantLayer):
            real = path.layer.weight * scale.to(path.layer.weight.dtype)
        else:
            real = scale
        return torch.clamp(round_ste(real), -self.qmax, self.qmax)

    def real_bias(self) -> Tensor | None:
        """The paths' float biases where they reach the accumulator (``[1, *acc shape]``: a
        bias map, exact through concatenation and padded average pools)."""
        total = None
        for path in self._paths:
            layer = path.layer
            if isinstance(layer, QuantLayer) and layer.bias is not None:
                bias = layer.bias[layer.bias_index] * layer.bias_weight.to(layer.bias.dtype)
                total = bias if total is None else total + bias
        return total

    def int_bias(self) -> Tensor:
        """Integer bias (STE): ``round(B / A)`` plus ``2**(s-1)`` when ``s >= 1``."""
        shift = self.shift()
        offset = torch.where(shift >= 1, torch.exp2(shift - 1), torch.zeros_like(shift))
        bias = self.real_bias()
        if bias is None:
            return offset
        return round_ste(bias / self.acc_scale().to(bias.dtype)) + offset.to(bias.dtype)


class QuantReLU(_Join):
    """Hidden neuron l: ``y = clamp(floor((acc + b) / 2**s), 0, 2**T - 1)`` (module docs).

    ``clip`` (:math:`c_l`) is an ``nn.Parameter`` when ``learn_clip`` else a buffer; the step is
    :math:`\\Delta_l = c_l / (2^T - 1)`. The input ``acc`` is the bias-free integer accumulator
    :math:`\\sum_k w_k * y_{src_k}`; the output is the integer code (float dtype).
    """

    def __init__(self, num_bits: int, weight_bits: int, clip: float, learn_clip: bool,
                 ceiling: float = math.inf) -> None:
        super().__init__(num_bits, weight_bits)
        if not math.isfinite(clip) or clip <= 0:
            raise ValueError(f"clip must be finite and > 0, got {clip}")
        self.ceiling = float(ceiling)  # ReLU6 / Hardtanh(0, a): the clip never exceeds a
        clip = min(clip, self.ceiling)
        clip_t = torch.tensor(float(clip))
        if learn_clip:
            self.clip = nn.Parameter(clip_t)
        else:
            self.register_buffer("clip", clip_t)

    def step(self) -> Tensor:
        """:math:`\\Delta_l = c_l / (2^T - 1)` (``c_l`` kept in ``[1e-8, ceiling]``)."""
        return self.clip.clamp(1e-8, self.ceiling) / (2.0**self.num_bits - 1)

    def shift(self) -> Tensor:
        """Largest ``s`` with ``max_k ratio_k * 2**s / Delta_l <= qmax`` (in the shift range)."""
        delta = self.step().detach()
        ratio = self._ratios().max().to(delta.dtype)
        s = torch.floor(torch.log2(self.qmax * delta / ratio))
        s = s.clamp(SHIFT_MIN, SHIFT_MAX)
        # guard against log2 rounding: enforce ratio * 2**s <= qmax * delta, and maximality
        s = torch.where(ratio * torch.exp2(s) > self.qmax * delta, s - 1, s)
        grow = (ratio * torch.exp2(s + 1) <= self.qmax * delta) & (s < SHIFT_MAX)
        s = torch.where(grow, s + 1, s)
        return s.clamp(SHIFT_MIN, SHIFT_MAX)

    def acc_scale(self) -> Tensor:
        """:math:`A_l = \\Delta_l / 2^{s_l}` (gradient flows to the clip)."""
        return self.step() * torch.exp2(-self.shift())

    def forward(self, acc: Tensor) -> Tensor:
        shift = self.shift().to(acc.dtype)
        total = acc + self.int_bias().to(acc.dtype)
        top = 2.0**self.num_bits - 1
        return floor_ste(torch.clamp(total * torch.exp2(-shift), 0.0, top))

    def extra_repr(self) -> str:
        clip = float(self.clip.detach())
        return f"num_bits={self.num_bits}, weight_bits={self.weight_bits}, clip={clip:.4g}"


class QuantOutput(_Join):
    """Output neuron: integer ``X = acc + b`` (no shift, no clamp); returns logits ``A * X``."""

    def shift(self) -> Tensor:
        """Always 0 (the output is not re-quantised)."""
        return torch.zeros(())

    def acc_scale(self) -> Tensor:
        """:math:`A = \\max_k \\max|W_k| \\Delta_{src_k} f_k / q_{max}` (detached)."""
        return (self._ratios().max() / self.qmax).clamp(min=1e-30)

    def integer(self, acc: Tensor) -> Tensor:
        """The integer output ``X = acc + b``."""
        return acc + self.int_bias().to(acc.dtype)

    def forward(self, acc: Tensor) -> Tensor:
        return self.integer(acc) * self.acc_scale().to(acc.dtype)

    def extra_repr(self) -> str:
        return f"weight_bits={self.weight_bits}"


class _PathLayer(nn.Module):
    """Common buffers of a path layer: where its input codes come from and where its bias goes.

    ``src_ids`` / ``src_factor`` (``[1, *input shape]``): for each input element, the index of its
    source neuron in the path's ``sources`` and the product of ``1/divisor`` of the sum pools on the
    way; ``bias_index`` / ``bias_weight`` (``[1, *accumulator shape]``): the bias channel reaching
    each accumulator element and its weight (0 where none, < 1 at padded pool borders). Set by
    :func:`snntorch_weighted.quant.prepare`; not in ``state_dict``.
    """

    def __init__(self) -> None:
        super().__init__()
        for name, dtype in (("src_ids", torch.long), ("src_factor", None),
                            ("bias_index", torch.long), ("bias_weight", None)):
            self.register_buffer(name, torch.zeros((), dtype=dtype), persistent=False)
        self._link: tuple[_Join, _Path] | None = None  # plain tuple: not a submodule

    def int_weight(self) -> Tensor:
        """This layer's integer weight (computed by its join neuron)."""
        join, path = self._link
        return join.int_weight(path)


class QuantLayer(_PathLayer):
    """A ``Linear`` / ``Conv1d`` / ``Conv2d`` / ``ChannelAffine`` applied with its join's integer
    weights, no bias.

    Holds the *same* ``weight`` / ``bias`` Parameters as the float layer it replaces (so optimisers
    and ``state_dict`` keys are unchanged); computes ``op(y, w_int)``.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, ChannelAffine)):
            raise TypeError("QuantLayer wraps Linear/Conv1d/Conv2d/ChannelAffine, got "
                            f"{type(layer).__name__}")
        if isinstance(layer, nn.Conv1d | nn.Conv2d) and layer.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"{type(layer).__name__} with padding_mode={layer.padding_mode!r}: only zero "
                "padding keeps the currents integer"
            )
        self.kind = type(layer).__name__
        self.weight = layer.weight
        self.bias = layer.bias
        self.spatial_dims = {"Linear": 0, "Conv1d": 1, "Conv2d": 2, "ChannelAffine": 0}[self.kind]
        self.conv_args = {}
        if self.kind.startswith("Conv"):
            self.conv_args = {
                "stride": layer.stride,
                "padding": layer.padding,
                "dilation": layer.dilation,
                "groups": layer.groups,
            }

    def per_unit(self, full: Tensor) -> Tensor:
        """``full`` (``[1, *input shape]``, the same value over each unit's elements) as one value
        per weight entry's input unit: per feature (Linear), per channel (else)."""
        if self.kind == "Linear":
            return full.reshape(-1, full.shape[-1])[0].view(1, -1)
        per_channel = full.reshape(full.shape[1], -1)[:, 0]
        if self.kind == "ChannelAffine":
            return per_channel
        out_ch, in_per_group = self.weight.shape[:2]
        groups = self.conv_args["groups"]
        group = torch.arange(out_ch, device=full.device) // (out_ch // groups)
        idx = group[:, None] * in_per_group + torch.arange(in_per_group, device=full.device)
        return per_channel[idx].view(out_ch, in_per_group, *([1] * self.spatial_dims))

    def to_float_layer(self, weight: Tensor) -> nn.Module:
        """A bias-free torch layer of the same geometry holding ``weight`` (for the SNN)."""
        if self.kind == "ChannelAffine":
            return ChannelAffine(weight.detach().clone()).requires_grad_(False)
        if self.kind == "Linear":
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        else:
            cls = nn.Conv1d if self.kind == "Conv1d" else nn.Conv2d
            c_out, c_in_g = weight.shape[:2]
            layer = cls(c_in_g * self.conv_args["groups"], c_out, tuple(weight.shape[2:]),
                        bias=False, **self.conv_args)
        layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        return layer

    def forward(self, y: Tensor) -> Tensor:
        w = self.int_weight().to(y.dtype)
        if self.kind == "Linear":
            return F.linear(y, w)
        if self.kind == "ChannelAffine":
            return y * w.view(1, -1, *([1] * (y.dim() - 2)))
        if self.kind == "Conv1d":
            return F.conv1d(y, w, None, **self.conv_args)
        return F.conv2d(y, w, None, **self.conv_args)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight.shape)}"


class IdentityScale(_PathLayer):
    """Codes entering a join directly (identity shortcut, concatenated codes, codes as output):
    multiplies them by the path's integer scale (per element)."""

    def per_unit(self, full: Tensor) -> Tensor:
        return full

    def forward(self, y: Tensor) -> Tensor:
        return y * self.int_weight().to(y.dtype)


class SumPool2d(nn.Module):
    """Sum pooling: an ``AvgPool2d`` / ``AdaptiveAvgPool2d`` without its division (integer in,
    integer out). :meth:`divisor` gives the ANN pool's divisor per output position (the window
    area, the valid count without ``count_include_pad``, an adaptive bin's size); the converters
    fold ``1 / divisor`` into the next weight.
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        if not isinstance(pool, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            raise TypeError(f"SumPool2d wraps an average pool, got {type(pool).__name__}")
        if isinstance(pool, nn.AvgPool2d) and pool.divisor_override is not None:
            raise UnsupportedLayerError("AvgPool2d with divisor_override is not supported")
        self.pool = copy.deepcopy(pool)

    def forward(self, x: Tensor) -> Tensor:
        pool = self.pool
        if isinstance(pool, nn.AvgPool2d):
            return F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                                True, 1)
        return _adaptive_sum(x, pool.output_size)

    def divisor(self, like: Tensor) -> Tensor:
        """The ANN pool's divisor per output position, for inputs shaped like ``like``."""
        ones = torch.ones_like(like[:1, :1], dtype=torch.float64)
        return self(ones) / self.pool(ones).clamp(min=1e-300)

    def extra_repr(self) -> str:
        return repr(self.pool)


def _bins(size: int, out: int | None) -> tuple[Tensor, Tensor]:
    out = size if out is None else out
    i = torch.arange(out)
    return torch.div(i * size, out, rounding_mode="floor"), -torch.div(
        -(i + 1) * size, out, rounding_mode="floor")


def _adaptive_sum(x: Tensor, output_size) -> Tensor:
    """Exact sums over adaptive-pool bins (integral image: integers in, integers out)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) or output_size is None \
        else output_size
    h, w = x.shape[-2:]
    (h0, h1), (w0, w1) = _bins(h, oh), _bins(w, ow)
    s = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    s = s.index_select(-2, torch.cat([h0, h1]).to(x.device))
    top, bottom = s[..., : len(h0), :], s[..., len(h0):, :]
    rows = bottom - top
    rows = rows.index_select(-1, torch.cat([w0, w1]).to(x.device))
    return rows[..., len(w0):] - rows[..., : len(w0)]

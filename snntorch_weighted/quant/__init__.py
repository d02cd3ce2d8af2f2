"""STE quantised fine-tuning of T-bit radix models and their integer semantics (Wang et al. 2-3).

:func:`prepare` turns a trained float model into its **radix twin**: a ``torch.fx`` graph that
computes, in floating point but on integer values, exactly what the radix SNN built by
:func:`snntorch_weighted.conversion.radix.convert_radix` computes. It trains with any ordinary
PyTorch
loop through straight-through estimators (STE, Yin et al. 2019); :func:`finetune` is such a loop.

Integer semantics (what the twin, the SNN and the tests agree on)
-----------------------------------------------------------------
* **Input** (neuron 0): the code ``y_0 = quantize_code(x, T) = clamp(floor(x 2^T + 1/2), 0,
  2^T - 1)`` of :mod:`snntorch_weighted.spikegen`, step :math:`\\Delta_0 = 2^{-T}`; ``x`` must
  lie in ``[0, 1]``.
* **Hidden neuron l** (every ReLU): clip :math:`c_l` (calibrated, optionally learnable, PACT-style)
  and step :math:`\\Delta_l = c_l / (2^T - 1)`, so the top code is the clip; the real activation
  is :math:`a_l = \\Delta_l y_l` with ``y_l`` in ``0 .. 2^T - 1``.
* **Power-of-two rescaling** (eq. 19-22): the pre-activation of neuron l is a sum over *paths* k,
  each a weight layer ``W_k`` (or an identity shortcut, ``W = 1``) fed by neuron ``src_k`` through
  optional sum pools (factor :math:`f_k = 1/\\text{area}` for every average pool, folded into the
  path's weight). All paths share the accumulator scale :math:`A_l = \\Delta_l / 2^{s_l}`; the
  shift ``s_l`` is the largest integer with
  :math:`\\max_k \\max|W_k| \\Delta_{src_k} f_k / A_l \\le 2^{B_w - 1} - 1` (``B_w`` = weight bits,
  symmetric), clamped to ``[SHIFT_MIN, SHIFT_MAX]``. Integer weights and bias:

  .. math::

      w_k = \\mathrm{clamp}(\\mathrm{round}(W_k \\Delta_{src_k} f_k / A_l), \\pm(2^{B_w-1}-1)),
      \\qquad b_l = \\mathrm{round}(B_l / A_l) + [s_l \\ge 1]\\, 2^{s_l - 1}

  (``round`` is round half up, ``floor(v + 1/2)``; the half offset in ``b`` turns the neuron's floor
  into round-half-up), and the neuron computes the RadixLeaky read-out (eq. 17-22 made exact)

  .. math::

      X_l = \\sum_k w_k * \\mathrm{sumpool}_k(y_{src_k}) + b_l,\\qquad
      y_l = \\mathrm{clamp}(\\lfloor X_l / 2^{s_l} \\rfloor, 0, 2^T - 1).

  In real units this is the T-bit quantiser
  :math:`a_l = \\Delta_l\\,\\mathrm{clamp}(\\mathrm{round}(z_l / \\Delta_l), 0, 2^T - 1)`
  of the fake-quantised pre-activation :math:`z_l = A_l X'_l`.
* **Max pooling** acts on codes (``max`` commutes with the monotone quantiser); **average pooling**
  becomes a sum pool (its ``1/area`` is folded into the next weight, as above).
* **Output** (the model's last weight layer(s), no ReLU): ``X = sum_k w_k * y_src_k + b`` with no
  shift and no clamp, :math:`A = \\max_k \\max|W_k| \\Delta_{src_k} f_k / (2^{B_w-1} - 1)`,
  ``b = round(B / A)``; the logits are ``A * X``.

The twin carries integer codes and integer accumulators (float tensors holding integers) between
its layers, in training and in eval mode alike, so ``prepared.double()(x)`` reproduces the integer
pipeline exactly (float64 holds integers below 2**53); in float32 the sums are exact while they
stay below 2**24 (``|X| < 2**24``; true for small nets, not guaranteed for wide 8-bit layers).
Integer parameters are functions of the float parameters *in the model's dtype* (a tie in
``round`` can fall differently in float32 and float64): extract them from the model you compare.

Gradients (STE): ``round`` and ``floor`` pass the gradient unchanged; the clamps to ``[0, 2^T-1]``
(activations) pass it where the clip is inactive and block it where it is active (Yin et al. 2019).
With ``learn_clip=True`` the clip :math:`c_l` receives the PACT gradient through
:math:`\\Delta_l`. The shifts ``s_l`` are recomputed every forward (detached), so they follow the
weights as they train.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, fx, nn

from ..conversion.calibration import calibrate, first_batch
from ..conversion.graph import UnsupportedLayerError, capture, is_add, module_of
from ..spikegen import quantize_code

__all__ = [
    "SHIFT_MIN",
    "SHIFT_MAX",
    "round_ste",
    "floor_ste",
    "fake_quantize",
    "InputQuant",
    "QuantReLU",
    "QuantOutput",
    "QuantLayer",
    "IdentityScale",
    "SumPool2d",
    "PathParams",
    "NeuronParams",
    "prepare",
    "is_prepared",
    "twin",
    "integer_params",
    "integer_activations",
    "finetune",
]

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
    """One term of a neuron's pre-activation: ``layer`` (None = identity) fed by ``source``."""

    source: nn.Module  # InputQuant or QuantReLU
    source_name: str
    layer: nn.Module | None  # QuantLayer or IdentityScale
    layer_name: str
    factor: float  # product of 1/area of the average pools on the path


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
        """``max|W_k| * Delta_src_k * f_k`` for every path (detached), as one tensor."""
        values = []
        for path in self._paths:
            delta = path.source.step().detach()
            if isinstance(path.layer, QuantLayer):
                mag = path.layer.weight.detach().abs().max()
            else:
                mag = torch.ones((), dtype=delta.dtype, device=delta.device)
            values.append(mag.to(delta.device, delta.dtype) * delta * path.factor)
        return torch.stack(values)

    def shift(self) -> Tensor:
        """The shift ``s`` (float tensor holding an integer; 0 for the output)."""
        raise NotImplementedError

    def acc_scale(self) -> Tensor:
        """The accumulator scale ``A`` (real value of one accumulator unit)."""
        raise NotImplementedError

    def int_weight(self, path: _Path) -> Tensor:
        """Integer weight of ``path`` (STE): ``clamp(round(W Delta_src f / A), -qmax, qmax)``."""
        scale = path.source.step() * path.factor / self.acc_scale()
        if isinstance(path.layer, QuantLayer):
            real = path.layer.weight * scale.to(path.layer.weight.dtype)
        else:
            real = scale
        return torch.clamp(round_ste(real), -self.qmax, self.qmax)

    def real_bias(self) -> Tensor | None:
        """Sum of the paths' float biases, shaped to broadcast against the accumulator."""
        total = None
        for path in self._paths:
            layer = path.layer
            if isinstance(layer, QuantLayer) and layer.bias is not None:
                bias = layer.bias.view(-1, *([1] * layer.spatial_dims))
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

    def __init__(self, num_bits: int, weight_bits: int, clip: float, learn_clip: bool) -> None:
        super().__init__(num_bits, weight_bits)
        if not math.isfinite(clip) or clip <= 0:
            raise ValueError(f"clip must be finite and > 0, got {clip}")
        clip_t = torch.tensor(float(clip))
        if learn_clip:
            self.clip = nn.Parameter(clip_t)
        else:
            self.register_buffer("clip", clip_t)

    def step(self) -> Tensor:
        """:math:`\\Delta_l = c_l / (2^T - 1)` (``c_l`` kept >= 1e-8)."""
        return self.clip.clamp(min=1e-8) / (2.0**self.num_bits - 1)

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


class QuantLayer(nn.Module):
    """A ``Linear`` / ``Conv1d`` / ``Conv2d`` applied with its join's integer weights, no bias.

    Holds the *same* ``weight`` / ``bias`` Parameters as the float layer it replaces (so optimisers
    and ``state_dict`` keys are unchanged); computes ``op(y, w_int)``.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            raise TypeError(f"QuantLayer wraps Linear/Conv1d/Conv2d, got {type(layer).__name__}")
        if isinstance(layer, nn.Conv1d | nn.Conv2d) and layer.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"{type(layer).__name__} with padding_mode={layer.padding_mode!r}: only zero "
                "padding keeps the currents integer"
            )
        self.kind = type(layer).__name__
        self.weight = layer.weight
        self.bias = layer.bias
        self.spatial_dims = {"Linear": 0, "Conv1d": 1, "Conv2d": 2}[self.kind]
        self.conv_args = {}
        if self.spatial_dims:
            self.conv_args = {
                "stride": layer.stride,
                "padding": layer.padding,
                "dilation": layer.dilation,
                "groups": layer.groups,
            }
        self._link: tuple[_Join, _Path] | None = None  # plain tuple: not a submodule

    def to_float_layer(self, weight: Tensor) -> nn.Module:
        """A bias-free torch layer of the same geometry holding ``weight`` (for the SNN)."""
        if self.kind == "Linear":
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        else:
            cls = nn.Conv1d if self.kind == "Conv1d" else nn.Conv2d
            c_out, c_in_g = weight.shape[:2]
            layer = cls(c_in_g * self.conv_args["groups"], c_out, tuple(weight.shape[2:]),
                        bias=False, **self.conv_args)
        layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        return layer

    def int_weight(self) -> Tensor:
        """This layer's integer weight (computed by its join neuron)."""
        join, path = self._link
        return join.int_weight(path)

    def forward(self, y: Tensor) -> Tensor:
        w = self.int_weight().to(y.dtype)
        if self.kind == "Linear":
            return F.linear(y, w)
        if self.kind == "Conv1d":
            return F.conv1d(y, w, None, **self.conv_args)
        return F.conv2d(y, w, None, **self.conv_args)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight.shape)}"


class IdentityScale(nn.Module):
    """Identity shortcut into a join: multiplies the codes by the path's integer scale."""

    def __init__(self) -> None:
        super().__init__()
        self._link: tuple[_Join, _Path] | None = None  # plain tuple: not a submodule

    def int_weight(self) -> Tensor:
        """The integer scale ``round(Delta_src f / A)`` (8-bit, computed by the join)."""
        join, path = self._link
        return join.int_weight(path)

    def forward(self, y: Tensor) -> Tensor:
        return y * self.int_weight().to(y.dtype)


class SumPool2d(nn.Module):
    """Sum pooling (an ``AvgPool2d`` without its ``1/area``): integer in, integer out.

    ``AvgPool2d`` (with ``count_include_pad=True`` when padded, ``ceil_mode=False``) and an
    ``AdaptiveAvgPool2d`` whose input size is a multiple of its output size are sum pools times
    ``factor = 1/area``; the factor is folded into the next weight.
    """

    def __init__(self, kernel_size, stride, padding=0) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)

    @property
    def factor(self) -> float:
        """``1 / area`` of the window."""
        return 1.0 / (self.kernel_size[0] * self.kernel_size[1])

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, False, True, 1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


# --------------------------------------------------------------------------- calibration


def _calibrate(gm: fx.GraphModule, data, percentile: float, progress: bool = False
               ) -> tuple[dict[str, float], dict[str, tuple[int, ...]]]:
    """Clip per ReLU module (percentile of its positive activations) and adaptive-pool inputs.

    The clips come from :func:`snntorch_weighted.conversion.calibration.calibrate` (the same
    statistics as
    the weighted-spike conversion); the input shapes of adaptive pools from one batch.
    """
    scales = calibrate(gm, data, "percentile", percentile, progress=progress)
    clips = {node.target: scales[node.name] for node in gm.graph.nodes if node.name in scales}
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        module.register_forward_hook(
            lambda m, i, o, n=name: shapes.__setitem__(n, tuple(i[0].shape)))
        for name, module in gm.named_modules() if isinstance(module, nn.AdaptiveAvgPool2d)
    ]
    try:
        with torch.no_grad():
            first = first_batch(data)
            gm(first.to(next((p.dtype for p in gm.parameters()), first.dtype)))
    finally:
        for handle in handles:
            handle.remove()
    return clips, shapes


# --------------------------------------------------------------------------- graph rewriting


@dataclass
class _Value:
    """What a node carries: integer codes of a neuron (maybe sum-pooled) or an accumulator."""

    kind: str  # "code" (neuron output, maybe max-pooled), "pooled" (sum-pooled codes) or "acc"
    source: fx.Node | None = None  # neuron node (code / pooled)
    factor: float = 1.0
    terms: list[tuple[fx.Node | None, fx.Node, float]] = field(default_factory=list)  # acc


def _set_module(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)


def _fresh_name(gm: nn.Module, base: str) -> str:
    name, k = base, 0
    names = {n for n, _ in gm.named_modules()}
    while name in names:
        k += 1
        name = f"{base}_{k}"
    return name


def _err(node: fx.Node, kind: str, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"node '{node.name}' ({kind}): {why}")


def _as_acc(gm: fx.GraphModule, node: fx.Node, value: _Value, join: fx.Node) -> _Value:
    """An add operand: an accumulator as is, codes through an inserted identity shortcut."""
    if value.kind == "acc":
        return value
    name = _fresh_name(gm, f"{join.name}_shortcut")
    gm.add_submodule(name, IdentityScale())
    with gm.graph.inserting_after(node):
        scaled = gm.graph.call_module(name, (node,))
    join.replace_input_with(node, scaled)
    return _Value("acc", terms=[(scaled, value.source, value.factor)])


def _rewrite(gm: fx.GraphModule, num_bits: int, weight_bits: int, clips: dict[str, float],
             pool_shapes: dict[str, tuple[int, ...]], learn_clip: bool) -> None:
    """Replace the captured modules by twin modules and wire joins to their paths."""
    values: dict[fx.Node, _Value] = {}
    joins: list[tuple[fx.Node, _Join, list]] = []
    for node in list(gm.graph.nodes):
        module = module_of(gm, node)
        kind = type(module).__name__ if module is not None else node.op
        if node.op == "placeholder":
            gm.add_submodule("input_quant", InputQuant(num_bits))
            with gm.graph.inserting_after(node):
                q = gm.graph.call_module("input_quant", (node,))
            node.replace_all_uses_with(q)
            q.args = (node,)
            values[q] = _Value("code", source=q)
            continue
        if node.op == "output":
            arg = node.args[0]
            value = values.get(arg)
            if value is None or value.kind != "acc":
                raise _err(node, "output", "the model must end in a Linear/Conv layer (the "
                           "output integrator), not a ReLU or pooling layer")
            out = QuantOutput(num_bits, weight_bits)
            gm.add_submodule("output_quant", out)
            with gm.graph.inserting_before(node):
                q = gm.graph.call_module("output_quant", (arg,))
            node.args = (q,)
            joins.append((q, out, value.terms))
            continue
        if node in values:  # the inserted input quantiser
            continue
        args = [values[a] for a in node.args if isinstance(a, fx.Node)]
        if is_add(node):
            a = _as_acc(gm, node.args[0], args[0], node)
            b = _as_acc(gm, node.args[1], args[1], node)
            values[node] = _Value("acc", terms=a.terms + b.terms)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if args[0].kind == "acc":
                raise _err(node, kind, "two weight layers in a row without a ReLU between them "
                           "cannot be mapped to radix neurons; insert a ReLU or merge the layers")
            _set_module(gm, node.target, QuantLayer(module))
            values[node] = _Value("acc", terms=[(node, args[0].source, args[0].factor)])
        elif isinstance(module, nn.ReLU):
            if args[0].kind != "acc":
                raise _err(node, kind, "a ReLU must follow a Linear/Conv layer or a residual add")
            join = QuantReLU(num_bits, weight_bits, clips[node.target], learn_clip)
            _set_module(gm, node.target, join)
            joins.append((node, join, args[0].terms))
            values[node] = _Value("code", source=node)
        elif isinstance(module, nn.MaxPool2d):
            if args[0].kind != "code":
                raise _err(node, kind, "max pooling must act on neuron outputs (after a ReLU or "
                           "on the input), not on sums or sum-pooled values")
            values[node] = args[0]
        elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if args[0].kind == "acc":
                raise _err(node, kind, "average pooling between a weight layer and its ReLU is "
                           "not supported; pool after the ReLU")
            pool = _sum_pool(node, module, pool_shapes.get(node.target))
            _set_module(gm, node.target, pool)
            values[node] = _Value("pooled", args[0].source, args[0].factor * pool.factor)
        elif isinstance(module, nn.Flatten):
            if args[0].kind == "acc":
                raise _err(node, kind, "flatten between a weight layer and its ReLU is not "
                           "supported")
            values[node] = args[0]
        else:  # capture() only produces the node kinds above
            raise _err(node, kind, "unsupported node in the captured graph")
    _wire(gm, joins)
    gm.graph.lint()
    gm.recompile()


def _sum_pool(node: fx.Node, module: nn.Module, in_shape) -> SumPool2d:
    kind = type(module).__name__
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode:
            raise _err(node, kind, "ceil_mode=True gives windows of different sizes")
        if module.divisor_override is not None:
            raise _err(node, kind, "divisor_override is not supported")
        if _pair(module.padding) != (0, 0) and not module.count_include_pad:
            raise _err(node, kind, "padding with count_include_pad=False divides border "
                       "windows by different counts")
        return SumPool2d(module.kernel_size, module.stride, module.padding)
    if in_shape is None:
        raise _err(node, kind, "its input size is unknown (the calibration data never reached "
                   "it)")
    h, w = in_shape[-2:]
    out = module.output_size
    oh, ow = (out, out) if isinstance(out, int) else out
    oh, ow = oh or h, ow or w
    if h % oh or w % ow:
        raise _err(node, kind, f"input {h}x{w} is not a multiple of the output {oh}x{ow}")
    return SumPool2d((h // oh, w // ow), (h // oh, w // ow))


def _wire(gm: fx.GraphModule, joins) -> None:
    """Give every join neuron its paths and every path layer its join."""
    for _, join, terms in joins:
        paths = []
        for layer_node, source_node, factor in terms:
            layer = gm.get_submodule(layer_node.target)
            source = gm.get_submodule(source_node.target)
            path = _Path(source, source_node.target, layer, layer_node.target, factor)
            layer._link = (join, path)
            paths.append(path)
        join._set_paths(paths)


def _relink_parameters(model: nn.Module, gm: fx.GraphModule) -> None:
    """Make the twin share the user's Parameters where the captured layer is unchanged."""
    for name, module in gm.named_modules():
        if not isinstance(module, QuantLayer):
            continue
        try:
            original = model.get_submodule(name)
        except AttributeError:
            continue
        for attr in ("weight", "bias"):
            mine, theirs = getattr(module, attr), getattr(original, attr, None)
            if (
                isinstance(mine, nn.Parameter)
                and isinstance(theirs, nn.Parameter)
                and mine.shape == theirs.shape
                and torch.equal(mine.detach(), theirs.detach())
            ):
                setattr(module, attr, theirs)


def prepare(
    model: nn.Module,
    num_bits: int = 8,
    weight_bits: int = 8,
    calibration_data=None,
    learn_clip: bool = False,
    percentile: float = 99.99,
) -> fx.GraphModule:
    """The T-bit radix twin of a trained float ``model`` (see the module docs for the math).

    Args:
        model: trained float model with inputs in ``[0, 1]`` (captured by
            :func:`snntorch_weighted.conversion.graph.capture`: BatchNorm folded, Dropout removed).
        num_bits: T, activation bits (= radix spike-train length), 1 .. 16.
        weight_bits: bits of the symmetric integer weights (8 in Wang et al.).
        calibration_data: input batches in ``[0, 1]`` (a tensor, an ``(x, y)`` pair, a Dataset or a
            DataLoader) for the activation clips and the sizes of adaptive pools. Required.
        learn_clip: make each clip :math:`c_l` a trainable ``nn.Parameter`` (PACT).
        percentile: clip = this percentile of each ReLU's activations (100 = max).

    Returns:
        ``model`` itself, prepared in place: its ``forward`` now runs the twin, an
        ``fx.GraphModule`` registered as ``model.radix_twin`` (in train mode if ``model`` was), so
        ``model(x)``, ``model.parameters()``, ``state_dict``, ``.to()`` and ``train()`` /
        ``eval()`` all act on the quantised model. The twin shares the user's ``weight`` /
        ``bias`` Parameter objects for every Linear / Conv that
        capture left unchanged (no BatchNorm folded into it, called once), so an optimiser built
        on ``model.parameters()`` trains the twin, and ``model`` sees the fine-tuned weights.
        Layers with folded BatchNorm get new Parameters (the float model cannot express them):
        build the optimiser on ``model.parameters()`` after ``prepare`` (the replaced originals
        stay in the module, unused). To load a saved state_dict, ``prepare`` a fresh model with
        the same arguments first.

    Raises:
        ValueError: bad ``num_bits`` / ``weight_bits`` / ``percentile``, missing or empty
            calibration data, inputs outside ``[0, 1]``.
        UnsupportedLayerError: a layer or op the radix SNN cannot express (names the node).
    """
    _check_bits("num_bits", num_bits, 1, 16)
    _check_bits("weight_bits", weight_bits, 2, 16)
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if calibration_data is None:
        raise ValueError("prepare needs calibration_data (input batches in [0, 1]) to set the "
                         "activation clips")
    if is_prepared(model):
        raise ValueError("model is already prepared")
    was_training = model.training
    gm = capture(model)
    clips, shapes = _calibrate(gm, calibration_data, percentile)
    _rewrite(gm, num_bits, weight_bits, clips, shapes, learn_clip)
    _relink_parameters(model, gm)
    gm.train(was_training)
    model.radix_twin = gm  # registered: parameters, state_dict, .to(), train()/eval() follow
    model.forward = gm.forward  # the user's module now computes the twin
    return model


def _twin_or_none(model: nn.Module) -> fx.GraphModule | None:
    model = getattr(model, "module", model)  # a DDP wrapper
    model = getattr(model, "radix_twin", model)
    if isinstance(model, fx.GraphModule) and any(isinstance(m, QuantOutput)
                                                 for m in model.modules()):
        return model
    return None


def is_prepared(model: nn.Module) -> bool:
    """True for a module prepared by :func:`prepare` (or a DDP wrapper of one)."""
    return _twin_or_none(model) is not None


def twin(model: nn.Module) -> fx.GraphModule:
    """The quantised twin graph of a prepared model (``model.radix_twin``)."""
    gm = _twin_or_none(model)
    if gm is None:
        raise TypeError("expected a model prepared by snntorch_weighted.quant.prepare")
    return gm


_check_prepared = twin


# --------------------------------------------------------------------------- inspection


@dataclass
class PathParams:
    """One input path of a neuron: integer weight (tensor; 0-dim for an identity shortcut)."""

    source: str  # module name of the source neuron ("input_quant" or a ReLU's name)
    layer: str  # module name of the QuantLayer / IdentityScale
    weight: Tensor  # int64
    factor: float


@dataclass
class NeuronParams:
    """Integer parameters of one neuron: ``y = clamp(floor((sum w_k*y_k + b) / 2**s), 0, 2**T-1)``.

    For the output neuron ``shift == 0``, no clamp, and ``scale`` maps ``X`` to logits; for hidden
    neurons ``step`` is :math:`\\Delta_l` and ``scale`` is :math:`A_l = \\Delta_l / 2^{s_l}`.
    """

    name: str
    shift: int
    bias: Tensor  # int64, broadcastable against the accumulator
    paths: list[PathParams]
    step: float | None
    scale: float
    output: bool


@torch.no_grad()
def integer_params(model: nn.Module) -> dict[str, NeuronParams]:
    """Integer weights, biases and shifts of every neuron of a prepared model, in graph order."""
    gm = _check_prepared(model)
    out = {}
    for node in gm.graph.nodes:
        module = module_of(gm, node)
        if not isinstance(module, _Join):
            continue
        paths = [PathParams(p.source_name, p.layer_name, module.int_weight(p).long(), p.factor)
                 for p in module._paths]
        is_out = isinstance(module, QuantOutput)
        out[node.target] = NeuronParams(
            name=node.target,
            shift=int(module.shift()),
            bias=module.int_bias().long(),
            paths=paths,
            step=None if is_out else float(module.step()),
            scale=float(module.acc_scale()),
            output=is_out,
        )
    return out


@torch.no_grad()
def integer_activations(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Integer codes of the input and of every hidden neuron, and the output integers ``X``.

    Keys: ``"input_quant"``, each ReLU's module name, ``"output_quant"``; values ``int64``.
    Runs the model once (in its current dtype; use ``model.double()`` for exactness).
    """
    gm = _check_prepared(model)
    found: dict[str, Tensor] = {}
    handles = []
    for name, module in gm.named_modules():
        if isinstance(module, QuantOutput):
            handles.append(module.register_forward_hook(
                lambda m, i, o, n=name: found.__setitem__(n, m.integer(i[0]))))
        elif isinstance(module, (InputQuant, QuantReLU)):
            handles.append(module.register_forward_hook(
                lambda m, i, o, n=name: found.__setitem__(n, o)))
    try:
        dtype = next(gm.parameters()).dtype
        gm(x.to(dtype))
    finally:
        for h in handles:
            h.remove()
    return {k: v.round().long() for k, v in found.items()}


# --------------------------------------------------------------------------- fine-tuning


def _ddp_batches(train_data, batch_size: int, epoch: int, seed: int):
    """Batches for this process: a DistributedSampler shard when distributed."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from ..train import iterate_batches

    distributed = dist.is_available() and dist.is_initialized()
    if isinstance(train_data, (tuple, list)):
        train_data = TensorDataset(*train_data)
    if isinstance(train_data, DataLoader):
        sampler = getattr(train_data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        return iterate_batches(train_data, batch_size)
    if distributed:
        sampler = DistributedSampler(train_data, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return iter(DataLoader(train_data, batch_size=batch_size, sampler=sampler))
    generator = torch.Generator().manual_seed(seed + epoch)
    return iterate_batches(train_data, batch_size, shuffle=True, generator=generator)


def _num_batches(train_data, batch_size: int) -> int:
    from torch.utils.data import DataLoader

    if isinstance(train_data, DataLoader):
        return len(train_data)
    n = train_data[0].shape[0] if isinstance(train_data, (tuple, list)) else len(train_data)
    if dist.is_available() and dist.is_initialized():
        n = math.ceil(n / dist.get_world_size())
    return math.ceil(n / batch_size)


def finetune(
    model: nn.Module,
    train_data,
    epochs: int = 3,
    lr: float = 1e-3,
    val_data=None,
    device: str | torch.device | None = None,
    progress: bool = True,
    optimizer: str = "adam",
    batch_size: int = 64,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    seed: int = 0,
    teacher: nn.Module | None = None,
    temperature: float = 1.0,
    keep_best: bool = False,
) -> list[dict[str, float]]:
    """STE fine-tuning of a prepared model (Adam or SGD, cosine LR per batch).

    The loss is the cross-entropy with the labels or, given a ``teacher`` (typically a copy of
    the float model taken before :func:`prepare`), knowledge distillation (Hinton et al. 2015):

    .. math::

        \\mathcal{L} = \\tau^2\\, \\mathrm{KL}\\big(\\mathrm{softmax}(z_t/\\tau)\\,\\|\\,
        \\mathrm{softmax}(z_s/\\tau)\\big)

    with teacher logits :math:`z_t` and twin logits :math:`z_s`: the twin learns to reproduce the
    float model rather than to re-fit the (often small) fine-tuning set, which keeps T-bit models
    close to the float accuracy.

    Under ``torch.distributed`` (initialised process group) the model is wrapped in
    ``DistributedDataParallel`` (gradients averaged across processes, replicas stay identical) and
    a ``Dataset`` / ``(x, y)`` pair is sharded with a ``DistributedSampler``; a ``DataLoader`` is
    used as configured (give it a ``DistributedSampler`` yourself).

    Args:
        model: the module returned by :func:`prepare` (trained in place).
        train_data: ``(x, y)`` tensors, a Dataset or a DataLoader; inputs in ``[0, 1]``.
        epochs: passes over the data (>= 1).
        lr: peak learning rate of the cosine schedule.
        val_data: optional, evaluated after every epoch (top-1 accuracy of the twin).
        device: where to train (default: the model's device).
        progress: show a tqdm progress bar (rank 0 only).
        optimizer: ``"adam"`` (AdamW) or ``"sgd"`` (Nesterov momentum).
        teacher: float model for distillation (evaluated in eval mode, no gradients); None
            trains on the labels.
        temperature: distillation temperature :math:`\tau > 0`.
        keep_best: with ``val_data``, restore at the end the parameters and buffers of the best
            validation accuracy, the state before fine-tuning (epoch 0) included, so fine-tuning
            never leaves the model worse on ``val_data`` (early stopping; take ``val_data`` from
            held-out training data, not from the test set).

    Returns:
        One dict per epoch: ``{"epoch", "loss", "val_acc"}`` (``val_acc`` is NaN without
        ``val_data``). With ``val_data`` the first record is epoch 0, the model before
        fine-tuning (``loss`` NaN); with ``keep_best`` every record has ``"kept"``, true for
        the epoch whose state the model ends with.
    """
    from ..train import evaluate

    gm = _check_prepared(model)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if teacher is model or teacher is gm:
        raise ValueError("teacher is the model being fine-tuned (prepare works in place): "
                         "pass a copy of the float model taken before prepare")
    if keep_best and val_data is None:
        raise ValueError("keep_best=True needs val_data (held-out data to pick the best epoch)")
    if device is not None:
        gm.to(device)
    device = next(gm.parameters()).device
    distributed = dist.is_available() and dist.is_initialized()
    net: nn.Module = gm
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            gm, device_ids=None if device.type == "cpu" else [device])
    params = [p for p in gm.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                              weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    per_epoch = _num_batches(train_data, batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * per_epoch))
    show = progress and (not distributed or dist.get_rank() == 0)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    history = []
    best = None  # (val_acc, epoch, state) of the best epoch so far
    if val_data is not None:
        history.append({"epoch": 0, "loss": math.nan,
                        "val_acc": evaluate(gm, val_data, device=device)})  # fmt: skip
        if keep_best:
            best = (history[0]["val_acc"], 0, copy.deepcopy(gm.state_dict()))
    dtype = next(gm.parameters()).dtype
    for epoch in range(epochs):
        net.train()
        total = torch.zeros((), device=device, dtype=torch.float64)
        count = 0
        batches = _ddp_batches(train_data, batch_size, epoch, seed)
        if show:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=per_epoch, desc=f"finetune {epoch + 1}/{epochs}",
                           leave=False, dynamic_ncols=True)
        for x, y in batches:
            x, y = x.to(device, dtype), y.to(device).long()
            loss = _finetune_loss(net(x), x, y, teacher, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * y.shape[0]
            count += y.shape[0]
        record = {"epoch": epoch + 1, "loss": float(total) / max(count, 1), "val_acc": math.nan}
        if val_data is not None:
            record["val_acc"] = evaluate(gm, val_data, device=device)
        history.append(record)
        if best is not None and record["val_acc"] > best[0]:
            best = (record["val_acc"], epoch + 1, copy.deepcopy(gm.state_dict()))
        if show:
            from tqdm.auto import tqdm

            val = "" if val_data is None else f", val acc {record['val_acc']:.4f}"
            tqdm.write(f"finetune epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}{val}")
    if best is not None:
        gm.load_state_dict(best[2])
        for record in history:
            record["kept"] = record["epoch"] == best[1]
    gm.eval()
    return history


def _finetune_loss(logits: Tensor, x: Tensor, y: Tensor, teacher: nn.Module | None,
                   temperature: float) -> Tensor:
    """Cross-entropy with ``y``, or ``tau^2 KL(softmax(teacher(x)/tau) || softmax(logits/tau))``."""
    if teacher is None:
        return F.cross_entropy(logits, y)
    with torch.no_grad():
        target = F.log_softmax(teacher(x).to(logits.dtype) / temperature, dim=1)
    student = F.log_softmax(logits / temperature, dim=1)
    kl = F.kl_div(student, target, reduction="batchmean", log_target=True)
    return kl * temperature**2

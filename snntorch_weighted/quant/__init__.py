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
* **Concatenation, reshapes, adaptive pools** (model zoo): a path's input may hold the codes of
  several neurons (branches joined by ``torch.cat``, moved by ``view`` / ``transpose`` / ``chunk``
  ...) and pass sum pools whose divisor differs per position (an adaptive pool whose output does
  not divide its input): :math:`\\Delta_{src_k} f_k` is then a per-element map, absorbed per input
  unit of the path's weight (per channel of a convolution, per feature of a Linear). A sum pool
  after a weight layer needs one divisor (its bins of one size). A neuron's bias is the map of the
  float biases where they reach its accumulator (through concatenations and padded pools).
* **Linear chains** (a weight layer fed by a sum: linear bottlenecks, depthwise + 1x1, BatchNorm
  before a ReLU) are merged into single layers first (:mod:`snntorch_weighted.quant.merge`);
  ``ReLU6`` / ``Hardtanh(0, a)`` neurons keep their clip at most ``a``.
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

from .finetune import finetune
from .modules import (
    SHIFT_MAX,
    SHIFT_MIN,
    IdentityScale,
    InputQuant,
    QuantLayer,
    QuantOutput,
    QuantReLU,
    SumPool2d,
    fake_quantize,
    floor_ste,
    round_ste,
)
from .prepare import (
    NeuronParams,
    PathParams,
    integer_activations,
    integer_params,
    is_prepared,
    prepare,
    twin,
)

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

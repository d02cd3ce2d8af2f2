"""ANN -> SNN conversion with data-based normalisation (weighted-spike and rate coding).

``convert(model, calibration_data, coding="weighted")`` builds the SNN-WS of Kim et al. (2018):

1. :func:`snntorch_weighted.conversion.graph.capture` traces the model (BatchNorm folded, dropout
removed,
   every ReLU a node of its own; unsupported layers raise naming the node).
2. Data-based normalisation (Diehl et al. 2015; Rueckauer et al. 2017): on the calibration data
   each ReLU l gets the scale :math:`\\lambda_l`, the maximum or the ``percentile`` (default
   99.9 %, nearest rank, over the *positive* activations as in Rueckauer's SNN toolbox) of its
   ANN activations. The input has scale 1 and the network output scale 1.
3. Every value in the graph is carried in the units of its scale: a weight layer with input scale
   :math:`\\lambda_{in}` whose output feeds ReLU l gets :math:`W \\leftarrow W \\lambda_{in} /
   \\lambda_l`, :math:`b \\leftarrow b / \\lambda_l`, so the SNN's activations are
   :math:`a_l / \\lambda_l \\in [0, 1]` (mostly). The last layer keeps scale 1, so the output
   membrane per period approximates the ANN logits. Where a train in one scale meets a sum in
   another (an identity shortcut into a residual join, Kim Fig. 6: the join neurons integrate
   both paths) a constant :class:`~snntorch_weighted.conversion.layers.Scale` of
   :math:`\\lambda_{src} / \\lambda_l` is inserted.
4. Weighted coding: each ReLU becomes a :class:`~snntorch_weighted.WeightedLeaky` (``num_phases``
   K, threshold 1), each bias is divided by :math:`1 - 2^{-K}` (eq. 8) so that a period adds
   exactly ``b``, ``MaxPool2d`` becomes :class:`~snntorch_weighted.conversion.layers.SpikeMaxPool2d`
   (section 4.5), and the output is a non-firing ``WeightedLeaky(fire=False)`` integrator
   (eq. 16): after n periods its membrane is :math:`\\approx n\\,a^L` (eq. 12-16).
   Rate coding (the baseline): ``snntorch.Leaky(beta=1, threshold=1, reset_mechanism="subtract")``
   integrate-and-fire neurons, biases unchanged, Bernoulli input (``snntorch.spikegen.rate``),
   and a ``snntorch.Leaky`` output integrator that never fires (membrane / steps = logits).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import snntorch as snn
import torch
from torch import Tensor, fx, nn

from ..neurons import WeightedLeaky
from ..spikegen import check_bits
from .calibration import calibrate, check_batch, first_batch
from .graph import (
    POOL_LAYERS,
    WEIGHT_LAYERS,
    _set_submodule,
    capture,
    is_add,
    is_cat,
    is_move,
    module_of,
)
from .layers import Scale, SpikeMaxPool2d
from .network import SpikingNetwork
from .ops import ChannelAffine, ClippedReLU, replay_move

__all__ = ["convert", "calibrate", "fold_input_normalization"]

_CODINGS = ("weighted", "rate", "radix")
_NORMALIZATIONS = ("percentile", "max")


def convert(
    model: nn.Module,
    calibration_data: Tensor | Iterable,
    coding: str = "weighted",
    num_phases: int = 8,
    num_bits: int | None = None,
    normalization: str = "percentile",
    percentile: float = 99.9,
    input_mean: Sequence[float] | Tensor | float | None = None,
    input_std: Sequence[float] | Tensor | float | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    **kw,
) -> SpikingNetwork:
    """Convert a trained ReLU network into a spiking network.

    Args:
        model: trained ``nn.Module`` (not modified). Supported layers: see
            :func:`snntorch_weighted.conversion.graph.capture`.
        calibration_data: inputs in ``[0, 1]``: a tensor ``[N, ...]`` or an iterable of tensors or
            ``(x, y, ...)`` batches (e.g. a ``DataLoader``).
        coding: ``"weighted"`` (Kim et al.), ``"rate"`` (baseline) or ``"radix"`` (dispatched to
            :func:`snntorch_weighted.conversion.radix.convert_radix` with ``num_bits`` and
            ``**kw``).
        num_phases: K, phases per period (weighted coding).
        num_bits: T, bits per spike train (radix coding); default: the prepared model's T, 8
            for a float model.
        normalization: ``"percentile"`` or ``"max"`` (per-ReLU scale from the calibration data).
        percentile: the percentile in ``(0, 100]`` for ``normalization="percentile"``.
        input_mean, input_std: the mean/std normalisation the model expects on its input
            (scalar or per channel). It is folded into the first weight layer, so the SNN takes
            raw ``[0, 1]`` input: ``W' = W / std``, ``b' = b - W' mean``. This is exact except at
            the zero-padded border of a first convolution with ``padding > 0`` (there the ANN
            sees padded zeros in normalised units, the folded layer zeros in raw units); a
            warning says so.
        device: where to calibrate and put the SNN (default: the device of the first batch).
        progress: show a tqdm progress bar during calibration.
        **kw: weighted coding accepts ``skip_periods`` (output skipping, Kim section 5.1);
            radix options are passed through.

    Returns:
        A :class:`~snntorch_weighted.conversion.network.SpikingNetwork`.

    Raises:
        ValueError: unknown option, empty calibration data, NaN, inputs outside ``[0, 1]``.
        UnsupportedLayerError: (a ``ValueError``) a layer or op that cannot be converted.
    """
    if coding not in _CODINGS:
        raise ValueError(f"coding must be one of {_CODINGS}, got {coding!r}")
    if coding == "radix":
        from .radix import convert_radix

        if num_bits is not None:
            check_bits("num_bits", num_bits, torch.float64)  # the radix SNN is float64

        return convert_radix(model, calibration_data, num_bits=num_bits, **kw)
    skip_periods = kw.pop("skip_periods", 0)
    if kw:
        raise TypeError(f"convert() got unexpected keyword arguments {sorted(kw)}")
    if coding == "rate" and skip_periods:
        raise ValueError("skip_periods applies to coding='weighted' only")
    _check_options(num_phases, normalization, percentile)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    check_bits("num_phases", num_phases, dtype)
    if (input_mean is None) != (input_std is None):
        raise ValueError("pass both input_mean and input_std, or neither")

    first = first_batch(calibration_data)
    device = torch.device(device) if device is not None else first.device
    check_batch(first, normalized_input=input_mean is not None)  # before running the model on it
    model_device = next((p.device for p in model.parameters()), first.device)
    gm = capture(model, first.to(model_device)).to(device)
    if input_mean is not None:
        fold_input_normalization(gm, input_mean, input_std, tuple(first.shape[1:]))
    scales = calibrate(gm, calibration_data, normalization, percentile, device, progress,
                       normalized_input=input_mean is not None)
    for node in gm.graph.nodes:  # a saturating neuron's scale is at most its ceiling
        if isinstance(module_of(gm, node), ClippedReLU):
            scales[node.name] = min(scales[node.name], gm.get_submodule(node.target).ceiling)
    return _build(gm, scales, coding, num_phases, skip_periods)


def _check_options(num_phases: int, normalization: str, percentile: float) -> None:
    if isinstance(num_phases, bool) or not isinstance(num_phases, int) or num_phases < 1:
        raise ValueError(f"num_phases must be an int >= 1, got {num_phases!r}")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")


# ------------------------------------------------------------------------ input normalisation


def fold_input_normalization(
    gm: fx.GraphModule, mean, std, sample_shape: tuple[int, ...]
) -> None:
    """Fold ``x_n = (x - mean) / std`` (scalar or per channel, dim 1) into the first weight layer.

    The input may pass through ``Flatten`` first. ``W' = W / std`` and ``b' = b - W' mean`` per
    input element (exact except at a convolution's zero-padded border). Modifies ``gm`` in place.
    """
    node = next(n for n in gm.graph.nodes if n.op == "placeholder")
    flattened = False
    while len(node.users) == 1 and isinstance(module_of(gm, next(iter(node.users))), nn.Flatten):
        node, flattened = next(iter(node.users)), True
    users = list(node.users)
    layer = module_of(gm, users[0]) if len(users) == 1 else None
    if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        raise ValueError(
            "cannot fold input_mean/input_std: the input must feed exactly one Linear/Conv "
            f"(optionally through Flatten), but it feeds {[u.name for u in users]}")
    channels = sample_shape[0] if sample_shape else 1
    mean_c, std_c = (_per_channel(v, channels, name) for v, name in ((mean, "input_mean"),
                                                                      (std, "input_std")))
    if (std_c <= 0).any():
        raise ValueError("input_std must be > 0")
    with torch.no_grad():
        weight = layer.weight
        if flattened:
            spatial = [1] * (len(sample_shape) - 1)
            m = mean_c.view(-1, *spatial).expand(sample_shape).reshape(-1)
            s = std_c.view(-1, *spatial).expand(sample_shape).reshape(-1)
            if m.numel() != weight.shape[1]:
                raise ValueError(f"input shape {sample_shape} does not match {users[0].name}")
            m_w, s_w = m.view(1, -1), s.view(1, -1)
        else:
            idx = _input_channel_index(layer, channels)
            m_w, s_w = mean_c[idx], std_c[idx]
            m_w = m_w.view(*m_w.shape, *([1] * (weight.dim() - 2)))
            s_w = s_w.view(*s_w.shape, *([1] * (weight.dim() - 2)))
        new_weight = weight / s_w.to(weight)
        shift = (new_weight * m_w.to(weight)).flatten(1).sum(1)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
        layer.weight.copy_(new_weight)
        layer.bias = nn.Parameter(bias - shift)
    padding = getattr(layer, "padding", 0)
    if not flattened and isinstance(layer, nn.Conv1d | nn.Conv2d) and (
        padding == "same" or any(p != 0 for p in _tuple(padding))
    ):
        warnings.warn(
            f"input_mean/input_std folded into zero-padded {type(layer).__name__} "
            f"'{users[0].name}': exact inside the image, approximate at the padded border",
            stacklevel=3)


def _tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _per_channel(value, channels: int, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, a scalar or one value per channel ({channels})")
    return t


def _input_channel_index(layer: nn.Module, channels: int) -> Tensor:
    """[out, in/groups] index of the input channel each weight slice reads (grouped convs)."""
    groups = getattr(layer, "groups", 1)
    out_ch, in_per_group = layer.weight.shape[:2]
    if in_per_group * groups != channels:
        raise ValueError(f"the first layer expects {in_per_group * groups} channels, "
                         f"the data has {channels}")
    group = torch.arange(out_ch) // (out_ch // groups)
    return group[:, None] * in_per_group + torch.arange(in_per_group)[None, :]


# ----------------------------------------------------------------------------- SNN building


def _passes_scale(module: nn.Module | None) -> bool:
    """Layers whose output is in the units of their input (pooling, flatten)."""
    return isinstance(module, (*POOL_LAYERS, nn.Flatten))


def _demanded_scales(gm: fx.GraphModule, relu_scales: dict[str, float]) -> dict[fx.Node, float]:
    """Scale each node's consumers want (ReLU: lambda, output: 1, through pools/adds/moves)."""
    demand: dict[fx.Node, float] = {}
    for node in reversed(list(gm.graph.nodes)):
        for user in node.users:
            module = module_of(gm, user)
            if user.op == "output":
                want = 1.0
            elif isinstance(module, nn.ReLU):
                want = relu_scales[user.name]
            elif _passes_scale(module) or is_add(user) or is_cat(user) or is_move(user):
                want = demand.get(user)
            else:
                want = None
            if want is not None:
                demand.setdefault(node, want)
    return demand


def _ones(node: fx.Node) -> Tensor:
    """``[1, *per-sample shape]`` ones (the shape capture recorded)."""
    return torch.ones((1, *node.meta["shape"]), dtype=torch.float64)


def _insert_scale(gm: fx.GraphModule, user: fx.Node, source: fx.Node, factor: Tensor) -> None:
    """Insert ``Scale(factor)`` (scalar when uniform) on the edge ``source -> user``."""
    name = f"{source.name}_to_{user.name}_scale"
    uniform = bool((factor == factor.flatten()[0]).all())
    gm.add_submodule(name, Scale(factor.flatten()[0] if uniform else factor.float()))
    with gm.graph.inserting_before(user):
        scaled = gm.graph.call_module(name, (source,))
    scaled.meta["shape"] = source.meta.get("shape")
    user.replace_input_with(source, scaled)


def _match(gm, node, actual, target: Tensor | float) -> None:
    """Insert a Scale on every input of ``node`` whose scale map is not ``target``."""
    for source in [a for a in node.all_input_nodes if isinstance(actual.get(a), Tensor)]:
        want = torch.as_tensor(target, dtype=torch.float64).expand_as(actual[source])
        if not torch.allclose(actual[source], want, rtol=1e-9, atol=0.0):
            _insert_scale(gm, node, source, actual[source] / want)


def _uniform(gm, node: fx.Node, source: fx.Node, actual, per_unit: Tensor) -> Tensor:
    """Make ``actual[source]`` equal ``per_unit`` broadcast (a Scale on the edge when not) and
    return ``per_unit`` (the scale per input unit that the layer ``node`` absorbs)."""
    full = actual[source]
    if not torch.allclose(full, per_unit.expand_as(full), rtol=1e-9, atol=0.0):
        per_unit = full.max().expand_as(per_unit)
        _insert_scale(gm, node, source, full / full.max())
    return per_unit


def _input_units(gm, node: fx.Node, module: nn.Module, actual) -> Tensor:
    """Scale of each input unit of a weight layer: per feature (Linear), per channel (else)."""
    source = node.args[0]
    full = actual[source]
    if isinstance(module, nn.Linear):
        vec = full.reshape(-1, full.shape[-1])[0]
        return _uniform(gm, node, source, actual, vec).reshape(-1)
    vec = full.reshape(full.shape[0], full.shape[1], -1)[..., :1]
    shaped = vec.reshape(1, -1, *([1] * (full.dim() - 2)))
    return _uniform(gm, node, source, actual, shaped).reshape(-1)


def _rescale(module: nn.Module, s_in: Tensor, s_out: float, bias_gain: float) -> None:
    """``W <- W s_in / s_out`` (per input unit), ``b <- b gain / s_out``."""
    weight = module.weight
    if isinstance(module, ChannelAffine):
        factor = s_in
    elif isinstance(module, nn.Linear):
        factor = s_in.view(1, -1)
    else:
        idx = _input_channel_index(module, s_in.numel())
        factor = s_in[idx].view(*idx.shape, *([1] * (weight.dim() - 2)))
    with torch.no_grad():
        weight.mul_((factor / s_out).to(weight))
        if module.bias is not None:
            module.bias.mul_(bias_gain / s_out)


def _normalize(gm: fx.GraphModule, relu_scales: dict[str, float], bias_gain: float) -> None:
    """Rescale weights/biases in place so each node carries ``value / scale`` (module docs).

    Every tensor node has a scale map (``[1, *shape]``): the units its values are carried in.
    Moves and ``cat`` replay their op on the maps, so concatenated branches keep per-channel
    scales that the next weight layer absorbs per input channel (no Scale needed)."""
    demand = _demanded_scales(gm, relu_scales)
    actual: dict[fx.Node, object] = {}
    for node in list(gm.graph.nodes):
        module = module_of(gm, node)
        if node.op == "placeholder":
            actual[node] = _ones(node)
        elif isinstance(module, nn.ReLU):
            lam = relu_scales[node.name]
            _match(gm, node, actual, lam)
            actual[node] = lam * _ones(node)
        elif isinstance(module, WEIGHT_LAYERS):
            s_in = _input_units(gm, node, module, actual)
            s_out = demand.get(node, float(s_in.max()))
            _rescale(module, s_in, s_out, bias_gain)
            actual[node] = s_out * _ones(node)
        elif isinstance(module, POOL_LAYERS):
            full = actual[node.args[0]]
            vec = full.reshape(1, full.shape[1], -1)[..., :1].reshape(1, -1, 1, 1)
            vec = _uniform(gm, node, node.args[0], actual, vec)
            actual[node] = vec * _ones(node)
        elif is_add(node):
            maps = [actual[a] for a in node.args]
            target = demand.get(node)
            target = torch.maximum(*maps) if target is None else target * _ones(node)
            _match(gm, node, actual, target)
            actual[node] = target
        elif node.op == "output":
            _match(gm, node, actual, 1.0)
        elif module is not None:  # Flatten
            actual[node] = module(actual[node.args[0]])
        else:  # moves and cat: the same op on the maps
            actual[node] = replay_move(node, actual)


def _build(
    gm: fx.GraphModule, relu_scales: dict[str, float], coding: str, num_phases: int,
    skip_periods: int,
) -> SpikingNetwork:
    """Normalise ``gm`` in place; swap in neurons, spiking max pools and the output integrator."""
    weighted = coding == "weighted"
    _normalize(gm, relu_scales, 1.0 / (1.0 - 2.0**-num_phases) if weighted else 1.0)
    device = next(iter(gm.parameters()), torch.zeros(())).device
    for node in list(gm.graph.nodes):
        module = module_of(gm, node)
        if isinstance(module, nn.ReLU):
            neuron = (WeightedLeaky(num_phases=num_phases, init_hidden=True) if weighted else
                      snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract",
                                init_hidden=True))
            _set_submodule(gm, node.target, neuron.to(device))
        elif isinstance(module, nn.MaxPool2d):
            pool = SpikeMaxPool2d.from_maxpool(module, weighted=weighted, num_phases=num_phases)
            _set_submodule(gm, node.target, pool.to(device))
    out = next(n for n in gm.graph.nodes if n.op == "output")
    if weighted:
        integrator = WeightedLeaky(num_phases=num_phases, fire=False, init_hidden=True,
                                   output=True, skip_periods=skip_periods)
    else:
        integrator = snn.Leaky(beta=1.0, threshold=float("inf"), reset_mechanism="none",
                               init_hidden=True, output=True)
    name = "output_integrator"
    gm.add_submodule(name, integrator.to(device))
    last = out.args[0]
    with gm.graph.inserting_before(out):
        result = gm.graph.call_module(name, (last,))
        mem = gm.graph.call_function(_membrane, (result,))
    out.args = (mem,)
    gm.graph.lint()
    gm.recompile()
    return SpikingNetwork(gm, coding, num_phases=num_phases if weighted else None,
                          output_neuron=name)


def _membrane(result: tuple[Tensor, Tensor]) -> Tensor:
    """The membrane from a neuron's ``(spk, mem)`` return value."""
    return result[1]

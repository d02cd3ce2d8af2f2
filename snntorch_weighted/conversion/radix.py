"""Exact conversion of a prepared (T-bit quantised) model to a radix SNN of ``RadixLeaky`` neurons.

:func:`convert_radix` maps the radix twin of :func:`snntorch_weighted.quant.prepare` node by node
(Wang et al. sec. 2.3, Table 1, made exact):

* each ``QuantLayer`` becomes the same ``Linear`` / ``Conv`` with the integer weights ``w_k`` and no
  bias; an identity shortcut becomes :class:`~snntorch_weighted.conversion.layers.Scale` (its
  integer scale);
  a sum pool stays a sum pool (``avg_pool2d`` with ``divisor_override=1``), ``Flatten`` stays;
* each hidden neuron becomes ``RadixLeaky(num_bits=T, shift=s_l, bias=b_l, init_hidden=True)``;
  its spikes in period n are the bits (LSB first) of
  ``y_l = clamp(floor((sum_k w_k * y_k + b_l) / 2**s_l), 0, 2**T - 1)`` of the inputs of period
  n - 1, i.e. exactly the twin's integer code (see :mod:`snntorch_weighted.quant`);
* ``MaxPool2d`` becomes :class:`RadixMaxPool2d`: it decodes one period of input bits, pools the
  integer codes and re-emits the result LSB first during the next period (one period of latency);
* the output layer becomes ``RadixLeaky(fire=False, bias=b, output=True)``; at the last phase of
  a period its membrane is the integer output ``X`` and the logits are ``A * X``;
* where paths of different depth meet at a residual add, the shallower one gets a
  :class:`Delay` of whole periods, so both carry the same input's codes in the same period.

**Timing.** Every neuron and every max pool adds one period (T steps). With ``D`` = the number of
neurons and max pools on the longest path from the input to the output layer (``D = L - 1`` for
an L-weight-layer MLP), the input fed in period 0 (steps 0 .. T-1) reaches the output integrator
in period D, whose membrane holds ``X`` after step ``(D + 1) * T - 1``: the end-to-end latency is
``(D + 1) * T`` steps (``SpikingNetwork.latency``); every spike train is T steps long. Fed the same
input every period (``SpikingNetwork.encode``), every later period repeats the result.

Exactness: the SNN is built in float64 (integers below 2**53 are exact); in float32 it stays exact
while ``2**T * (|b| + sum_p |I(p)|) < 2**24`` in every neuron (see ``RadixLeaky``).
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import Tensor, fx, nn

from .. import quant
from ..neurons import RadixLeaky
from ..neurons.reset import reset
from .graph import UnsupportedLayerError, is_add, module_of
from .layers import ClockedLayer, Scale
from .network import SpikingNetwork
from .ops import is_cat, is_move, is_size_expr

__all__ = ["Delay", "RadixMaxPool2d", "convert_radix", "radix_infer"]


class Delay(ClockedLayer):
    """FIFO delay of ``num_steps`` steps: ``out(t) = in(t - num_steps)`` (zeros before).

    State (a ``[num_steps, *shape]`` ring buffer and a step clock) restarts as described in
    :class:`~snntorch_weighted.conversion.layers.ClockedLayer`.
    """

    state_names = ("fifo",)

    def __init__(self, num_steps: int) -> None:
        super().__init__()
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        self.num_steps = num_steps

    def init_state(self, x: Tensor) -> None:
        self.fifo = torch.zeros((self.num_steps, *x.shape), dtype=x.dtype, device=x.device)

    def forward(self, x: Tensor) -> Tensor:
        self.begin_step(x)
        slot = (self.step % self.num_steps).view(1)
        out = self.fifo.index_select(0, slot).squeeze(0)
        self.fifo.index_copy_(0, slot, x.unsqueeze(0).to(self.fifo.dtype))  # out is a copy
        self.step = self.step + 1
        return out

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}"


class RadixMaxPool2d(ClockedLayer):
    """Exact max pooling of radix spike trains, with one period (T steps) of latency.

    During period n it accumulates the input code :math:`S = \\sum_p 2^p s(p)` (eq. 19) of every
    input neuron; at phase 0 of period n + 1 it pools the codes of period n with ``max_pool2d`` and
    emits the pooled code's bits, LSB first, during period n + 1. Since max pooling commutes with
    the neurons' monotone read-out this equals pooling the twin's integer codes. State (accumulator,
    pooled code, clock) restarts as described in
    :class:`~snntorch_weighted.conversion.layers.ClockedLayer`.
    """

    state_names = ("acc", "value")

    def __init__(self, pool: nn.MaxPool2d, num_bits: int) -> None:
        super().__init__()
        if pool.return_indices:
            raise ValueError("MaxPool2d with return_indices=True cannot be converted")
        self.pool = copy.deepcopy(pool)
        self.num_bits = num_bits

    def init_state(self, x: Tensor) -> None:
        self.acc = torch.zeros_like(x)
        self.value = torch.zeros_like(self.pool(x))

    def forward(self, x: Tensor) -> Tensor:
        self.begin_step(x)
        phase = self.step % self.num_bits
        start = phase == 0
        self.value = torch.where(start, self.pool(self.acc), self.value)
        weight = torch.exp2(phase.to(x.dtype))
        self.acc = torch.where(start, torch.zeros_like(self.acc), self.acc) + weight * x
        self.step = self.step + 1
        return torch.remainder(torch.floor(self.value / weight), 2)

    def extra_repr(self) -> str:
        return f"num_bits={self.num_bits}"


def heaviside(x: Tensor) -> Tensor:
    """``U(x >= 0)`` with no gradient: the spike function of converted (inference) neurons.

    A module-level function, unlike snntorch's default surrogate closures, so that a converted
    network can be pickled whole with ``torch.save``.
    """
    return (x >= 0).to(x.dtype)


def _add_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent = root
    *parents, attr = name.split(".")
    for part in parents:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(attr, module)


class _Builder:
    """Builds the SNN step graph from the float64 twin, tracking each value's period (depth)."""

    def __init__(self, twin: fx.GraphModule, num_bits: int) -> None:
        self.twin = twin
        self.num_bits = num_bits
        self.params = quant.integer_params(twin)
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, tuple[fx.Node, int]] = {}
        self.periods: dict[str, int] = {}
        self.names: set[str] = set()
        self.output_period = 0
        self.output_scale = 1.0

    def module(self, name: str, module: nn.Module, *args) -> fx.Node:
        base, k = name, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        _add_module(self.root, name, module)
        return self.graph.call_module(name, tuple(args))

    def delayed(self, node: fx.Node, periods: int, name: str) -> fx.Node:
        if periods == 0:
            return node
        return self.module(f"{name}_delay", Delay(periods * self.num_bits), node)

    def visit(self, node: fx.Node) -> None:
        module = module_of(self.twin, node)
        if node.op == "placeholder":
            self.env[node] = (self.graph.placeholder("x_t"), 0)
            return
        if node.op == "output":
            out, _ = self.env[node.args[0]]
            self.graph.output(out)
            return
        args = [self.env[a] for a in node.args if isinstance(a, fx.Node)]
        if module is None and (is_move(node) or is_cat(node)):
            self._copy(node)
        elif isinstance(module, quant.InputQuant):
            self.env[node] = args[0]
            self.periods[node.target] = 0
        elif is_add(node):
            depth = max(d for _, d in args)
            ins = [self.delayed(n, depth - d, node.name) for n, d in args]
            self.env[node] = (self.graph.call_function(operator.add, tuple(ins)), depth)
        elif isinstance(module, (quant.QuantLayer, quant.IdentityScale)):
            weight = module.int_weight().detach().to(torch.float64)
            layer = module.to_float_layer(weight) if isinstance(module, quant.QuantLayer) \
                else Scale(weight)
            src, depth = args[0]
            self.env[node] = (self.module(node.target, layer, src), depth)
        elif isinstance(module, quant.SumPool2d):
            src, depth = args[0]
            self.env[node] = (self.module(node.target, copy.deepcopy(module), src), depth)
        elif isinstance(module, nn.Flatten):
            src, depth = args[0]
            self.env[node] = (self.module(node.target, copy.deepcopy(module), src), depth)
        elif isinstance(module, nn.MaxPool2d):
            src, depth = args[0]
            pool = RadixMaxPool2d(module, self.num_bits)
            self.env[node] = (self.module(node.target, pool, src), depth + 1)
        elif isinstance(module, quant.QuantReLU):
            p = self.params[node.target]
            neuron = RadixLeaky(num_bits=self.num_bits, shift=p.shift,
                                bias=p.bias.to(torch.float64), init_hidden=True,
                                spike_grad=heaviside)
            src, depth = args[0]
            self.env[node] = (self.module(node.target, neuron, src), depth + 1)
            self.periods[node.target] = depth + 1
        elif isinstance(module, quant.QuantOutput):
            p = self.params[node.target]
            neuron = RadixLeaky(num_bits=self.num_bits, shift=0, bias=p.bias.to(torch.float64),
                                fire=False, init_hidden=True, output=True, spike_grad=heaviside)
            src, depth = args[0]
            both = self.module(node.target, neuron, src)
            self.env[node] = (self.graph.call_function(operator.getitem, (both, 1)), depth)
            self.periods[node.target] = depth
            self.output_period = depth
            self.output_scale = p.scale
        else:
            kind = type(module).__name__ if module is not None else node.op
            raise UnsupportedLayerError(
                f"node '{node.name}' ({kind}) is not part of a prepared radix twin")

    def _copy(self, node: fx.Node) -> None:
        """A move, size read or concatenation: the same op on the spike trains; the inputs of a
        concatenation are delayed to the deepest one (like a residual add)."""
        tensors = [a for a in node.all_input_nodes if not is_size_expr(a)]
        depth = max((self.env[a][1] for a in tensors), default=0)
        if is_cat(node):
            parts = [self.delayed(self.env[a][0], depth - self.env[a][1], node.name)
                     for a in node.args[0]]
            new = self.graph.call_function(torch.cat, (parts, *node.args[1:]), dict(node.kwargs))
        else:
            new = self.graph.node_copy(node, lambda n: self.env[n][0])
        self.env[node] = (new, depth)

    def build(self) -> SpikingNetwork:
        for node in self.twin.graph.nodes:
            self.visit(node)
        gm = fx.GraphModule(self.root, self.graph, class_name="RadixStep")
        gm = gm.double()
        latency = (self.output_period + 1) * self.num_bits
        snn = SpikingNetwork(gm, "radix", num_bits=self.num_bits, output_scale=self.output_scale,
                             latency=latency, output_neuron="output_quant")
        snn.periods = dict(self.periods)
        return snn


def convert_radix(
    model: nn.Module,
    calibration_data=None,
    num_bits: int | None = None,
    weight_bits: int = 8,
    percentile: float = 99.99,
) -> SpikingNetwork:
    """Radix SNN of ``model`` whose decoded outputs equal the twin's, bit for bit (module docs).

    Args:
        model: a module returned by :func:`snntorch_weighted.quant.prepare` (fine-tuned or not), or
            a float model, which is then prepared first (without fine-tuning) on
            ``calibration_data``.
        calibration_data: required for a float model; ignored for a prepared one.
        num_bits: T; defaults to the prepared model's (8 for a float model); must match it.
        weight_bits, percentile: passed to ``prepare`` for a float model.

    Returns:
        A float64 :class:`~snntorch_weighted.conversion.network.SpikingNetwork`
        (``coding="radix"``) with
        ``latency = (D + 1) * T`` steps, ``output_scale = A`` (logits = ``A * mem``) and an extra
        attribute ``periods``: neuron name -> the period in which it emits the codes of the input
        fed in period 0 (the output neuron: the period at whose last step ``mem == X``).
    """
    if quant.is_prepared(model):
        twin = quant.twin(model)
        prepared_bits = twin.get_submodule("input_quant").num_bits
        if num_bits is not None and num_bits != prepared_bits:
            raise ValueError(f"num_bits={num_bits} but the model was prepared with "
                             f"num_bits={prepared_bits}")
    else:
        if not isinstance(model, nn.Module):
            raise TypeError(f"convert_radix expects an nn.Module, got {type(model).__name__}")
        if calibration_data is None:
            raise ValueError("convert_radix of a float model needs calibration_data (input "
                             "batches in [0, 1]) to prepare it")
        twin = quant.prepare(copy.deepcopy(model), num_bits=8 if num_bits is None else num_bits,
                             weight_bits=weight_bits, calibration_data=calibration_data,
                             percentile=percentile).radix_twin
    twin = copy.deepcopy(twin).double().eval()
    return _Builder(twin, twin.get_submodule("input_quant").num_bits).build()


@torch.no_grad()
def radix_infer(snn: SpikingNetwork, x: Tensor, num_steps: int | None = None) -> Tensor:
    """Run ``snn`` on inputs ``x`` in ``[0, 1]`` for ``num_steps`` (default: its latency) steps.

    Resets the network, feeds ``snn.encode(x, num_steps)`` step by step and returns the decoded
    output ``A * mem`` after the last step (the logits, when ``num_steps`` is a multiple of T and at
    least the latency).
    """
    steps = snn.latency if num_steps is None else num_steps
    train = snn.encode(x.to(torch.float64), steps)
    reset(snn)
    mem = None
    for t in range(steps):
        mem = snn(train[t])
    return snn.decode(mem, steps)

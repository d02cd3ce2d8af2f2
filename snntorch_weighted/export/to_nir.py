"""Export a converted rate-coded network to NIR (the Neuromorphic Intermediate Representation).

:func:`export_nir` writes what NIR expresses faithfully and refuses the rest. It maps the
``torch.fx`` step graph of a :class:`~snntorch_weighted.SpikingNetwork` from
``sw.convert(..., coding="rate")`` node by node:

* input spikes of one step -> ``Input`` (per-sample shape of ``sample``);
* ``nn.Linear`` -> ``Affine`` (``Linear`` without bias); ``nn.Conv1d`` / ``nn.Conv2d`` ->
  ``Conv1d`` / ``Conv2d`` (zero bias where there is none);
* ``nn.AvgPool2d`` -> ``AvgPool2d`` (with a ``divisor_override``: ``SumPool2d`` then ``Scale``);
  ``nn.AdaptiveAvgPool2d`` -> ``AvgPool2d`` (input size a multiple of the output size);
* ``nn.Flatten`` -> ``Flatten`` (batch dimension dropped);
  :class:`~snntorch_weighted.conversion.layers.Scale` -> ``Scale`` (one factor per element);
* residual ``a + b`` -> both edges into the consumer (NIR sums the edges into a node);
* hidden ``snn.Leaky(beta=1, reset_mechanism="subtract")`` -> ``IF`` (``r = 1``, one
  ``v_threshold`` per neuron, ``v_reset = 0``, ``metadata["reset"] = "subtract"``);
* the output integrator (never fires) -> ``I`` (``r = 1``), whose membrane is the ``Output``.

**Discrete-time reading.** NIR's equations are continuous; the converted network runs in steps.
With one step as the time unit (``dt = 1``) and spikes as unit impulses, NIR's ``IF``
(:math:`\\dot v = R I`, fire on :math:`v > v_{thr}`) reads, per step t,
:math:`v \\leftarrow v + r \\odot I(t)`, :math:`z(t) = [v > v_{thr}]`,
:math:`v \\leftarrow v - v_{thr} \\odot z(t)` (reset by subtraction), and ``I`` reads
:math:`v \\leftarrow v + r \\odot I(t)`. These are exactly the converted neurons' steps
(``snn.Leaky(beta=1, reset_mechanism="subtract")`` and the non-firing integrator), so the spikes
and the output membrane are identical. In continuous time a subtraction of :math:`v_{thr}` at the
crossing and NIR's reset to ``v_reset = 0`` coincide (the membrane never exceeds the threshold);
in steps they differ, so each ``IF`` node and the graph carry ``metadata["reset"] =
"subtract"`` and ``metadata["dt"] = 1.0``. The input encoding (Bernoulli rate coding,
``net.encode``) and the read-out (``output_scale * mem / steps``, ``net.decode``) stay outside
the graph; the graph's metadata records them.

Everything else is refused with :class:`NIRExportError`, naming each node and why: phase-weighted
:class:`~snntorch_weighted.WeightedLeaky` neurons (Kim et al. 2018), radix
:class:`~snntorch_weighted.RadixLeaky` neurons (Wang et al.), spike max-pooling, leaky or
reset-to-zero neurons, and any other layer.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import snntorch as snn
import torch
from torch import Tensor, fx, nn

from ..conversion.convert import _membrane
from ..conversion.layers import Scale
from ..conversion.network import SpikingNetwork
from ..neurons import RadixLeaky, WeightedLeaky

__all__ = ["NIRExportError", "export_nir", "require_nir"]

_EXPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
             Scale)


class NIRExportError(ValueError):
    """A network (or a node of it) that NIR cannot express faithfully; the message names each
    refused node and the reason."""


def require_nir():
    """The ``nir`` package, or an ``ImportError`` saying how to install it."""
    try:
        import nir
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("NIR export needs the 'nir' package: "
                          "pip install 'snntorch-weighted[nir]'") from err
    return nir


def export_nir(net: SpikingNetwork, sample: Tensor) -> Any:
    """Export a rate-coded converted network as a ``nir.NIRGraph`` (module docs: the mapping).

    Args:
        net: a :class:`~snntorch_weighted.SpikingNetwork` from ``sw.convert(...,
            coding="rate")`` (not modified, its state untouched).
        sample: an input of one time step, ``[B, ...]`` with a batch dimension (e.g. the first
            step of ``net.encode(x, steps)``); only its shape is used. NIR types are per sample.

    Returns:
        A ``nir.NIRGraph``: one ``Input``, one ``Output`` (the output integrator's membrane),
        node names from the ``torch.fx`` graph, metadata on the discrete-time reading.

    Raises:
        NIRExportError: (a ``ValueError``) a node NIR cannot express; every such node is listed
            with its reason, e.g. a phase-weighted ``WeightedLeaky`` or a spike max-pool.
        TypeError: ``net`` is not a ``SpikingNetwork`` or ``sample`` not a tensor.
        ImportError: ``nir`` is not installed.
    """
    nir = require_nir()
    if not isinstance(net, SpikingNetwork):
        raise TypeError(f"export_nir takes a SpikingNetwork from sw.convert, got "
                        f"{type(net).__name__}")
    if not isinstance(sample, Tensor) or sample.dim() < 2 or sample.shape[0] < 1:
        raise TypeError("sample must be a tensor [B, ...] with a batch dimension, got "
                        f"{getattr(sample, 'shape', type(sample).__name__)}")
    gm = net.graph
    _refuse_unsupported(net)
    shapes = _shapes(gm, sample[:1])
    return _Writer(nir, net, shapes).graph()


# ---------------------------------------------------------------------------------- refusals


def _refuse_unsupported(net: SpikingNetwork) -> None:
    """Raise :class:`NIRExportError` listing every node NIR cannot express."""
    gm, output = net.graph, net._output_name
    problems = []
    for node in gm.graph.nodes:
        why = _refusal(gm, node, node.op == "call_module" and node.target == output)
        if why:
            problems.append(f"node '{node.name}' ({_describe(gm, node)}): {why}")
    if problems or net.coding != "rate":
        coding = (f"a {net.coding}-coded network; only rate-coded conversions export. "
                  if net.coding != "rate" else "")
        raise NIRExportError(f"cannot export to NIR faithfully ({coding}{len(problems)} "
                             "node(s) refused):\n  - " + "\n  - ".join(problems))


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} at '{node.target}'"
    if node.op == "call_function":
        return getattr(node.target, "__name__", repr(node.target))
    return f"{node.op} {node.target}"


def _refusal(gm: fx.GraphModule, node: fx.Node, is_output: bool) -> str | None:
    """Why ``node`` cannot be exported faithfully, or None."""
    if node.op in ("placeholder", "output"):
        return None
    if node.op == "call_function":
        if node.target is _membrane or node.target is operator.add:
            args = [a for a in node.args if isinstance(a, fx.Node)]
            if node.target is operator.add and (len(args) != 2 or args[0] is args[1]):
                return "only the sum of two different nodes maps to NIR's summed edges"
            return None
        return "an operation NIR export does not map"
    if node.op != "call_module":
        return f"a '{node.op}' node NIR export does not map"
    module = gm.get_submodule(node.target)
    if isinstance(module, snn.SpikingNeuron):
        return _neuron_refusal(module, is_output)
    if isinstance(module, _EXPORTED):
        return _layer_refusal(module)
    if type(module).__name__ == "SpikeMaxPool2d":
        return ("spike max-pooling (Kim et al. 2018, section 4.5) passes the spikes of the "
                "input with the largest accumulated count: a stateful gate, and NIR has no "
                "max-pooling node")
    return (f"{type(module).__name__} is not a layer NIR export maps (supported: Linear, "
            "Conv1d/2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Scale, residual add, "
            "integrate-and-fire snntorch.Leaky)")


def _neuron_refusal(neuron: nn.Module, is_output: bool) -> str | None:
    """Why a spiking neuron is not an ``IF`` (hidden) or ``I`` (output integrator) of NIR."""
    if isinstance(neuron, WeightedLeaky):
        return _weighted_refusal(neuron)
    if isinstance(neuron, RadixLeaky):
        return ("radix neuron (Wang et al.): each step it adds 2^T x its input, emits the "
                "membrane's lowest bit and halves the membrane, and it reloads at every "
                "period's first phase; NIR's neuron models (IF, LIF, ...) fire on a threshold "
                "and have no such clocked bit-serial dynamics")
    if type(neuron) is not snn.Leaky:
        return (f"{type(neuron).__name__} is not snntorch.Leaky: export_nir maps only the "
                "integrate-and-fire snntorch.Leaky neurons of a rate-coded conversion")
    beta = neuron.beta.detach()
    if not bool((beta.clamp(0, 1) == 1).all()):
        return (f"beta={_short(beta)} makes a leaky neuron; a rate-coded conversion uses "
                "integrate-and-fire neurons (beta=1), which map to NIR's IF / I")
    if neuron.graded_spikes_factor.numel() != 1 or float(neuron.graded_spikes_factor) != 1:
        return "graded spikes (graded_spikes_factor != 1): NIR's IF emits unit spikes"
    if neuron.state_quant:
        return "state_quant quantises the membrane: NIR's IF has no such step"
    if is_output:
        threshold = neuron.threshold.detach()
        if neuron.reset_mechanism != "none" and not bool(torch.isinf(threshold).all()):
            return ("the output neuron resets its membrane (reset_mechanism="
                    f"{neuron.reset_mechanism!r}, finite threshold): NIR's I integrates only")
        return None
    if neuron.inhibition:
        return "inhibition (only the largest membrane fires): no NIR neuron model has it"
    if neuron.reset_mechanism != "subtract":
        return (f"reset_mechanism={neuron.reset_mechanism!r}: the rate-coded conversion's IF "
                "neurons reset by subtraction, the only reset export_nir writes")
    if not neuron.reset_delay:
        return ("reset_delay=False: export_nir verifies the default reset_delay=True "
                "(the converted neurons') only")
    if not bool(torch.isfinite(neuron.threshold.detach()).all()):
        return "a hidden neuron with an infinite threshold never fires"
    return None


def _weighted_refusal(neuron: WeightedLeaky) -> str:
    k = neuron.num_phases
    if not neuron.fire_spikes:
        return (f"phase-weighted output integrator (Kim et al. 2018, eq. 16, K={k}): it adds "
                "w(t) x its input with the time-varying phase weight w(t) = 2^-(1 + (t-1) mod "
                "K), a gain NIR's I / LI have no parameter for")
    if k > 1:
        return (f"phase-weighted neuron (Kim et al. 2018, eq. 6-10, K={k}): its input and "
                "threshold are scaled by the phase weight w(t) = 2^-(1 + (t-1) mod K), which "
                "changes every step; NIR's neuron models have constant parameters (exporting it "
                "as a plain IF/LIF would drop the coding)")
    return ("WeightedLeaky with K=1 fires on V >= threshold / 2 (Kim et al. 2018, eq. 9: U(x) = 1 "
            "for x >= 0), NIR's IF on v > v_threshold; the two differ where the membrane "
            "equals the threshold")


def _layer_refusal(module: nn.Module) -> str | None:
    """Why a stateless layer cannot be written as its NIR node, or None."""
    if isinstance(module, nn.Conv1d | nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}: NIR's convolutions pad with zeros"
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode:
            return "ceil_mode=True: NIR's AvgPool2d has no ceil mode"
        padded = any(p != 0 for p in _pair(module.padding))
        if padded and not module.count_include_pad:
            return "count_include_pad=False with padding: NIR's AvgPool2d divides by the kernel"
        if padded and module.divisor_override:
            return "divisor_override with padding: NIR's SumPool2d has no defined padding"
    if isinstance(module, nn.Flatten) and module.start_dim == 0:
        return "Flatten(start_dim=0) flattens the batch dimension"
    return None


def _short(t: Tensor) -> str:
    return f"{float(t):g}" if t.numel() == 1 else f"tensor{tuple(t.shape)}"


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


# ------------------------------------------------------------------------------------ shapes


class _ShapeRun(fx.Interpreter):
    """Runs the step graph's stateless layers on a sample and records every node's per-sample
    shape; neurons keep their input's shape and are not called (their state stays untouched)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def call_module(self, target, args, kwargs):
        module = self.module.get_submodule(target)
        if isinstance(module, snn.SpikingNeuron):
            return (args[0], args[0]) if getattr(module, "output", False) else args[0]
        return super().call_module(target, args, kwargs)

    def run_node(self, node: fx.Node):
        value = super().run_node(node)
        first = value[0] if isinstance(value, tuple) else value
        if isinstance(first, Tensor):
            self.shapes[node.name] = tuple(first.shape[1:])
        return value


def _shapes(gm: fx.GraphModule, sample: Tensor) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every node (batch dimension dropped)."""
    reference = next(iter(gm.parameters()), None)
    x = torch.zeros(sample.shape, dtype=reference.dtype if reference is not None else None,
                    device=reference.device if reference is not None else None)
    run = _ShapeRun(gm)
    try:
        with torch.no_grad():
            run.run(x)
    except RuntimeError as err:
        raise ValueError(f"sample of shape {tuple(sample.shape)} does not fit the network: "
                         f"{err}") from err
    return run.shapes


# ----------------------------------------------------------------------------------- writing


class _Writer:
    """Builds the NIR nodes and edges of a checked rate-coded step graph."""

    def __init__(self, nir, net: SpikingNetwork, shapes: dict[str, tuple[int, ...]]) -> None:
        self.nir, self.net, self.shapes = nir, net, shapes
        self.gm = net.graph
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.sources: dict[fx.Node, list[str]] = {}  # NIR nodes whose sum is an fx node's value

    def graph(self):
        for node in self.gm.graph.nodes:
            self._emit(node)
        metadata = {
            "exporter": "snntorch_weighted.export_nir",
            "coding": "rate",
            "dt": 1.0,
            "reset": "subtract",
            "input": "one time step of rate-coded (Bernoulli) input spikes: net.encode(x, steps)",
            "output": "membrane of the output integrator I; decode: output_scale * mem / steps",
            "output_scale": float(self.net.output_scale),
        }
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)

    def _emit(self, node: fx.Node) -> None:
        inputs = [a for a in node.args if isinstance(a, fx.Node)]
        if node.op == "placeholder":
            self._add(node, "input", self.nir.Input(input_type=self._array(node)), [])
        elif node.op == "output":
            shape = self._array(inputs[0])
            self._add(node, "output", self.nir.Output(output_type=shape), inputs)
        elif node.op == "call_function":  # add: NIR sums the edges into a node; _membrane: I
            self.sources[node] = [s for a in inputs for s in self.sources[a]]
        else:
            module = self.gm.get_submodule(node.target)
            for name, nir_node, node_inputs in self._nodes_of(node, module, inputs):
                self._add(node, name, nir_node, node_inputs)

    def _add(self, node: fx.Node, name: str, nir_node, inputs) -> None:
        """Register ``nir_node`` as ``name`` fed by ``inputs`` (fx nodes or NIR names); it
        becomes the value of ``node``."""
        nir_node.metadata.setdefault("torch_node", node.name)
        self.nodes[name] = nir_node
        for source in inputs:
            names = [source] if isinstance(source, str) else self.sources[source]
            self.edges.extend((s, name) for s in names)
        self.sources[node] = [name]

    def _nodes_of(self, node: fx.Node, module: nn.Module, inputs: list[fx.Node]):
        """``(name, NIR node, inputs)`` for the module of a ``call_module`` node."""
        nir, name = self.nir, node.name
        in_shape, out_shape = self.shapes[inputs[0].name], self.shapes[node.name]
        if isinstance(module, snn.SpikingNeuron):
            yield name, self._neuron(node, module, out_shape), inputs
        elif isinstance(module, nn.Linear):
            weight = _numpy(module.weight)
            if len(in_shape) != 1:
                raise NIRExportError(f"node '{name}' (Linear): NIR's Affine takes 1-d inputs, "
                                     f"this one gets {in_shape}")
            layer = (nir.Linear(weight=weight) if module.bias is None else
                     nir.Affine(weight=weight, bias=_numpy(module.bias)))
            yield name, layer, inputs
        elif isinstance(module, nn.Conv1d | nn.Conv2d):
            yield name, self._conv(module, in_shape), inputs
        elif isinstance(module, nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            yield from self._pool(name, module, inputs, in_shape, out_shape)
        elif isinstance(module, nn.Flatten):
            end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
            yield name, nir.Flatten(input_type={"input": np.array(in_shape)},
                                    start_dim=module.start_dim - 1, end_dim=end), inputs
        elif isinstance(module, Scale):
            scale = np.broadcast_to(_numpy(module.scale), out_shape).copy()
            yield name, nir.Scale(scale=scale), inputs
        else:  # _refusal has refused it already
            raise NIRExportError(f"node '{name}': {type(module).__name__} is not mapped")

    def _neuron(self, node: fx.Node, neuron: snn.Leaky, shape: tuple[int, ...]):
        threshold = neuron.threshold.detach()
        if not threshold.is_floating_point():
            threshold = threshold.to(torch.get_default_dtype())
        ones = np.ones(shape, dtype=_numpy(threshold).dtype)
        if node.target == self.net._output_name:
            return self.nir.I(r=ones, metadata={"dt": 1.0, "role": "output integrator"})
        threshold = np.broadcast_to(_numpy(threshold), shape).copy()
        return self.nir.IF(r=ones, v_threshold=threshold, v_reset=np.zeros_like(ones),
                           metadata={"reset": "subtract", "dt": 1.0})

    def _conv(self, conv: nn.Conv1d | nn.Conv2d, in_shape: tuple[int, ...]):
        weight = _numpy(conv.weight)
        bias = (_numpy(conv.bias) if conv.bias is not None
                else np.zeros(weight.shape[0], dtype=weight.dtype))
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        if isinstance(conv, nn.Conv1d):
            node = self.nir.Conv1d(input_shape=in_shape[-1], weight=weight,
                                   stride=conv.stride[0],
                                   padding=padding if isinstance(padding, str) else padding[0],
                                   dilation=conv.dilation[0], groups=conv.groups, bias=bias)
        else:
            node = self.nir.Conv2d(input_shape=tuple(in_shape[-2:]), weight=weight,
                                   stride=tuple(conv.stride), padding=padding,
                                   dilation=tuple(conv.dilation), groups=conv.groups, bias=bias)
        # nir 1.0.8 types the input with weight.shape[1] = C_in / groups channels: the true one
        node.input_type = {"input": np.array(in_shape)}
        return node

    def _pool(self, name, pool, inputs, in_shape, out_shape):
        """``AvgPool2d`` (``SumPool2d`` then ``Scale`` for a ``divisor_override``)."""
        nir = self.nir
        if isinstance(pool, nn.AdaptiveAvgPool2d):
            kernel = _adaptive_kernel(name, in_shape, out_shape)
            stride, padding, divisor = kernel, (0, 0), None
        else:
            kernel = _pair(pool.kernel_size)
            stride = _pair(pool.stride) if pool.stride is not None else kernel
            padding, divisor = _pair(pool.padding), pool.divisor_override
        args = {"kernel_size": np.array(kernel), "stride": np.array(stride),
                "padding": np.array(padding)}
        if not divisor:
            yield name, nir.AvgPool2d(**args), inputs
            return
        dtype = _numpy(torch.zeros(())).dtype
        yield f"{name}_sum", nir.SumPool2d(**args), inputs
        scale = np.full(out_shape, 1.0 / divisor, dtype=dtype)
        yield name, nir.Scale(scale=scale), [f"{name}_sum"]

    def _array(self, node: fx.Node) -> np.ndarray:
        return np.array(self.shapes[node.name])


def _adaptive_kernel(name: str, in_shape, out_shape) -> tuple[int, int]:
    """The kernel (= stride) of the ``AvgPool2d`` an ``AdaptiveAvgPool2d`` equals, if any."""
    size_in, size_out = tuple(in_shape[-2:]), tuple(out_shape[-2:])
    if any(i % o for i, o in zip(size_in, size_out)):
        raise NIRExportError(
            f"node '{name}' (AdaptiveAvgPool2d): input {size_in} is not a multiple of output "
            f"{size_out}, so its windows overlap unevenly and no NIR AvgPool2d equals it")
    return tuple(i // o for i, o in zip(size_in, size_out))


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()

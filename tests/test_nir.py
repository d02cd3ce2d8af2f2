"""NIR export of rate-coded converted networks (``export_nir`` / ``import_nir``).

Each exported graph is checked two ways over 40 steps:

* against :func:`import_nir` (torch modules wired by ``nirtorch``): spikes of every hidden layer
  and the output membrane identical to the converted network's, on the converted weights;
* against an interpreter of the NIR equations written here in numpy (float64, its own graph
  walk, convolution and pooling), read as ``docs/nir.md`` states: per step ``v += r * I``,
  ``z = v > v_threshold``, ``v -= v_threshold * z`` (IF), ``v += r * I`` (I). Its summation order
  differs from torch's, so these networks get dyadic weights (multiples of 2**-5, small): every
  sum is then exact in float32 and float64 and any order gives the same bits.

Refusals name the node and the reason. The last tests pin what snntorch 1.0.0's own
``export_to_nir`` / ``import_from_nir`` do with these neurons, as ``docs/nir.md`` reports.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
import snntorch as snn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

import snntorch_weighted as sw  # noqa: E402
from snntorch_weighted.export import NIRExportError, export_nir, import_nir  # noqa: E402
from snntorch_weighted.export.from_nir import IFNeuron  # noqa: E402

STEPS = 40

# ------------------------------------------------------------------------------- networks


class ResMLP(nn.Module):
    """fc1 -> relu -> (fc2 + identity) -> relu -> fc3: a residual join with a Scale edge."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc3(torch.relu(self.fc2(h) + h))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 5))


def _convert(ann: nn.Module, shape: tuple[int, ...], seed: int = 0, coding: str = "rate",
             **kw):
    torch.manual_seed(seed)
    for p in ann.parameters():  # weights that make the hidden layers spike
        nn.init.uniform_(p, -0.2, 0.6)
    data = torch.rand(32, *shape)
    return sw.convert(ann, data, coding=coding, progress=False, **kw), data


def _dyadic(net: sw.SpikingNetwork) -> sw.SpikingNetwork:
    """Round every weight, bias and Scale to a multiple of 2**-5 (exact sums in any order)."""
    with torch.no_grad():
        for t in [*net.graph.parameters(), *(b for n, b in net.graph.named_buffers()
                                             if n.endswith("scale"))]:
            t.copy_(torch.round(t.clamp(-4, 4) * 32) / 32)
    return net


# ------------------------------------------------------------------ running the three versions


def _run_converted(net: sw.SpikingNetwork, spikes: torch.Tensor):
    """The converted network: hidden spikes by fx node name, and the output membranes."""
    names = {n.target: n.name for n in net.graph.graph.nodes if n.op == "call_module"}
    trains: dict[str, list] = {names[t]: [] for t, _ in net.neurons()}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=names[t]: trains[n].append(out))
             for t, m in net.neurons()]
    sw.reset(net)
    with torch.no_grad():
        mems = torch.stack([net(s) for s in spikes])
    for h in hooks:
        h.remove()
    return {k: torch.stack(v) for k, v in trains.items()}, mems


def _run_imported(graph, spikes: torch.Tensor):
    """:func:`import_nir`'s module: IF spikes by NIR node name, and the graph's output."""
    model = import_nir(graph)
    trains: dict[str, list] = {}
    for name, m in model.module.named_children():
        if isinstance(m, IFNeuron):
            trains[name] = []
            m.register_forward_hook(lambda _m, _i, out, n=name: trains[n].append(out[0]))
    with torch.no_grad():
        outs = torch.stack([model(s) for s in spikes])
    return {k: torch.stack(v) for k, v in trains.items()}, outs


class NumpyNIR:
    """The NIR equations stepped with dt = 1 in float64 numpy, independent of torch."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.order = self._topological(graph)
        self.state: dict[str, np.ndarray] = {}

    @staticmethod
    def _topological(graph) -> list[str]:
        preds = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
        order: list[str] = []
        while len(order) < len(preds):
            ready = [n for n in preds if n not in order and all(p in order for p in preds[n])]
            assert ready, "cycle"
            order.extend(ready)
        return order

    def step(self, x: np.ndarray):
        out: dict[str, np.ndarray] = {}
        for name in self.order:
            node = self.graph.nodes[name]
            inputs = [out[a] for a, b in self.graph.edges if b == name]
            total = x if isinstance(node, nir.Input) else sum(inputs)  # NIR sums the edges
            out[name] = self._node(name, node, total)
        spikes = {n: out[n] for n in self.order if isinstance(self.graph.nodes[n], nir.IF)}
        return spikes, out["output"]

    def _node(self, name: str, node, x: np.ndarray) -> np.ndarray:
        f64 = np.float64
        if isinstance(node, nir.Input | nir.Output):
            return x
        if isinstance(node, nir.Affine | nir.Linear):
            y = x @ node.weight.astype(f64).T
            return y + node.bias.astype(f64) if isinstance(node, nir.Affine) else y
        if isinstance(node, nir.Conv1d | nir.Conv2d):
            bias = node.bias.astype(f64)
            return _np_conv(x, node) + bias.reshape(-1, *[1] * (x.ndim - 2))
        if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
            summed = _np_sumpool(x, tuple(node.kernel_size), tuple(node.stride))
            area = np.prod(node.kernel_size)
            return summed / area if isinstance(node, nir.AvgPool2d) else summed
        if isinstance(node, nir.Flatten):
            assert (node.start_dim, node.end_dim) == (0, -1)
            return x.reshape(len(x), -1)
        if isinstance(node, nir.Scale):
            return x * node.scale.astype(f64)
        v = self.state.get(name, np.zeros_like(x)) + node.r.astype(f64) * x
        if isinstance(node, nir.I):
            self.state[name] = v
            return v
        assert isinstance(node, nir.IF) and node.metadata["reset"] == "subtract"
        theta = node.v_threshold.astype(f64)
        z = (v > theta).astype(f64)
        self.state[name] = v - theta * z
        return z


def _np_conv(x: np.ndarray, node) -> np.ndarray:
    """Zero-padded grouped 1-d / 2-d convolution (dilation 1) by summing shifted slices; 1-d
    runs as 2-d with height 1."""
    one_d = isinstance(node, nir.Conv1d)
    w = node.weight.astype(np.float64)
    if one_d:
        x, w = x[:, :, None, :], w[:, :, None, :]
    assert tuple(np.atleast_1d(node.dilation)) in ((1,), (1, 1))
    pad, stride = (np.broadcast_to(v, 2 - one_d) for v in (node.padding, node.stride))
    (ph, pw), (sh, sw_) = ((0, *pad), (1, *stride)) if one_d else (pad, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw_ + 1
    y = np.zeros((len(x), w.shape[0], oh, ow))
    cin, cout = w.shape[1], w.shape[0] // node.groups
    for g in range(node.groups):
        xg, wg = xp[:, g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i:i + sh * oh:sh, j:j + sw_ * ow:sw_]
                y[:, g * cout:(g + 1) * cout] += np.einsum("bchw,oc->bohw", patch, wg[:, :, i, j])
    return y[:, :, 0] if one_d else y


def _np_sumpool(x: np.ndarray, kernel, stride) -> np.ndarray:
    (kh, kw), (sh, sw_) = kernel, stride
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw_ + 1
    return sum(x[:, :, i:i + sh * oh:sh, j:j + sw_ * ow:sw_] for i in range(kh)
               for j in range(kw))


def _run_numpy(graph, spikes: torch.Tensor):
    interp = NumpyNIR(graph)
    steps = [interp.step(s.double().numpy()) for s in spikes]
    trains = {k: np.stack([s[0][k] for s in steps]) for k in steps[0][0]}
    return trains, np.stack([s[1] for s in steps])


def _check_nontrivial(trains: dict) -> None:
    """A comparison of spike trains that are all zero (or all one) could not fail."""
    for name, train in trains.items():
        rate = float(torch.as_tensor(train).float().mean())
        assert 0 < rate < 1, f"layer {name} spikes at rate {rate}"


# --------------------------------------------------------------------------------- round trip

def _conv1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv1d(4, 4, 3, stride=2, groups=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(12, 3))


NETWORKS = [("mlp", ResMLP, (6,)), ("cnn", _cnn, (1, 8, 8)), ("conv1d", _conv1d, (2, 8))]


@pytest.mark.parametrize(("kind", "make", "shape"), NETWORKS)
def test_round_trip_through_import_nir_gives_identical_spikes(kind, make, shape):
    net, data = _convert(make(), shape)
    spikes = net.encode(data[:6], STEPS)
    graph = export_nir(net, spikes[0])
    ref_trains, ref_mems = _run_converted(net, spikes)
    trains, outs = _run_imported(graph, spikes)
    assert set(trains) == set(ref_trains) and len(trains) == 2
    _check_nontrivial(ref_trains)
    for name in ref_trains:
        assert torch.equal(trains[name], ref_trains[name]), name
    assert torch.equal(outs, ref_mems)


@pytest.mark.parametrize(("kind", "make", "shape"), NETWORKS)
def test_nir_equations_reproduce_the_converted_network(kind, make, shape):
    net, data = _convert(make(), shape)
    _dyadic(net)
    spikes = net.encode(data[:6], STEPS)
    graph = export_nir(net, spikes[0])
    ref_trains, ref_mems = _run_converted(net, spikes)
    trains, outs = _run_numpy(graph, spikes)
    _check_nontrivial(ref_trains)
    for name in ref_trains:
        np.testing.assert_array_equal(trains[name], ref_trains[name].double().numpy(), name)
    np.testing.assert_array_equal(outs, ref_mems.double().numpy())


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), thresholds=st.booleans())
def test_per_neuron_thresholds_round_trip(seed, thresholds):
    """Random weights and inputs; optionally one threshold per neuron (dyadic, 0.5 .. 1.5)."""
    net, data = _convert(ResMLP(), (6,), seed=seed)
    _dyadic(net)
    if thresholds:
        neuron = net.graph.get_submodule(net.neurons()[0][0])
        neuron.threshold = torch.randint(16, 49, (8,)).float() / 32
    spikes = net.encode(data[:4], STEPS)
    graph = export_nir(net, spikes[0])
    first_if = next(n for n in graph.nodes.values() if isinstance(n, nir.IF))
    expected = net.graph.get_submodule(net.neurons()[0][0]).threshold.expand(8).numpy()
    np.testing.assert_array_equal(first_if.v_threshold, expected)
    ref_trains, ref_mems = _run_converted(net, spikes)
    for trains, outs in (_run_numpy(graph, spikes), _run_imported(graph, spikes)):
        for name in ref_trains:
            np.testing.assert_array_equal(np.asarray(trains[name], dtype=np.float64),
                                          ref_trains[name].double().numpy())
        np.testing.assert_array_equal(np.asarray(outs, dtype=np.float64),
                                      ref_mems.double().numpy())


def test_graph_nodes_and_metadata():
    net, data = _convert(ResMLP(), (6,))
    graph = export_nir(net, data[:2])
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert sorted(kinds.values()) == sorted(
        ["Input", "Affine", "IF", "Affine", "Scale", "IF", "Affine", "I", "Output"])
    assert kinds[net._output_name] == "I"  # the output integrator does not fire
    assert graph.metadata["reset"] == "subtract" and graph.metadata["dt"] == 1.0
    for node in graph.nodes.values():
        if isinstance(node, nir.IF):
            assert node.metadata["reset"] == "subtract"
            np.testing.assert_array_equal(node.r, np.ones(8))
    # the residual join: the Scale edge and fc2 both enter the second IF (NIR sums them)
    join = [b for _, b in graph.edges if kinds[b] == "IF"]
    assert max(join.count(b) for b in set(join)) == 2
    assert graph.nodes["input"].input_type["input"].tolist() == [6]


def test_divisor_override_becomes_sumpool_and_scale():
    ann = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                        nn.AvgPool2d(2, divisor_override=2), nn.Flatten(), nn.Linear(48, 4))
    net, data = _convert(ann, (1, 8, 8))
    _dyadic(net)
    spikes = net.encode(data[:4], STEPS)
    graph = export_nir(net, spikes[0])
    assert any(isinstance(n, nir.SumPool2d) for n in graph.nodes.values())
    ref_trains, ref_mems = _run_converted(net, spikes)
    _check_nontrivial(ref_trains)
    for trains, outs in (_run_numpy(graph, spikes), _run_imported(graph, spikes)):
        for name in ref_trains:
            np.testing.assert_array_equal(np.asarray(trains[name], dtype=np.float64),
                                          ref_trains[name].double().numpy())
        np.testing.assert_array_equal(np.asarray(outs, dtype=np.float64),
                                      ref_mems.double().numpy())


@pytest.mark.parametrize(("kind", "make", "shape"), NETWORKS)
def test_written_file_reads_back(tmp_path, kind, make, shape):
    net, data = _convert(make(), shape)
    spikes = net.encode(data[:3], STEPS)
    path = tmp_path / f"{kind}.nir"
    nir.write(path, export_nir(net, spikes[0]))
    _, outs = _run_imported(str(path), spikes)
    _, ref_mems = _run_converted(net, spikes)
    assert torch.equal(outs, ref_mems)


def test_export_leaves_the_network_state_alone():
    net, data = _convert(ResMLP(), (6,))
    spikes = net.encode(data[:4], STEPS)
    _, whole = _run_converted(net, spikes)
    sw.reset(net)
    with torch.no_grad():
        first = [net(s) for s in spikes[:5]]
        export_nir(net, spikes[0][:1])
        rest = [net(s) for s in spikes[5:]]
    assert torch.equal(torch.stack(first + rest), whole)


# ----------------------------------------------------------------------------------- refusals


def _refusal(net, sample) -> str:
    with pytest.raises(NIRExportError) as info:
        export_nir(net, sample)
    return str(info.value)


@pytest.mark.parametrize("k", [1, 4])
def test_weighted_network_is_refused_naming_its_neurons(k):
    net, data = _convert(ResMLP(), (6,), coding="weighted", num_phases=k)
    message = _refusal(net, data[:1])
    for target, _ in net.neurons():
        assert f"WeightedLeaky at '{target}'" in message
    assert "output_integrator" in message and "weighted-coded" in message
    assert ("phase weight" in message) if k > 1 else (">=" in message)


def test_radix_network_is_refused_naming_its_neurons():
    net, data = _convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), (6,),
                         coding="radix", num_bits=4)
    message = _refusal(net, data[:1])
    assert "RadixLeaky at" in message and "radix neuron" in message


def test_spike_max_pool_is_refused():
    ann = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(48, 4))
    net, data = _convert(ann, (1, 8, 8))
    message = _refusal(net, data[:1])
    assert "SpikeMaxPool2d at '2'" in message and "max-pooling" in message
    assert message.count("\n  - ") == 1  # only the pool: the rest maps


@pytest.mark.parametrize(("change", "words"), [
    (lambda m: setattr(m, "beta", torch.tensor(0.9)), "beta=0.9"),
    (lambda m: setattr(m, "reset_mechanism", "zero"), "reset_mechanism='zero'"),
    (lambda m: setattr(m, "graded_spikes_factor", torch.tensor(2.0)), "graded spikes"),
    (lambda m: setattr(m, "inhibition", True), "inhibition"),
    (lambda m: setattr(m, "reset_delay", False), "reset_delay=False"),
])
def test_hidden_neuron_nir_cannot_express_is_refused(change, words):
    net, data = _convert(ResMLP(), (6,))
    target = net.neurons()[0][0]
    change(net.graph.get_submodule(target))
    message = _refusal(net, data[:1])
    assert f"Leaky at '{target}'" in message and words in message


def test_resetting_output_neuron_is_refused():
    net, data = _convert(ResMLP(), (6,))
    out = net.output_neuron
    out.threshold = torch.tensor(1.0)
    out.reset_mechanism = "subtract"
    assert "NIR's I integrates only" in _refusal(net, data[:1])


def test_uneven_adaptive_pool_is_refused():
    ann = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                        nn.Linear(32, 3))
    net, data = _convert(ann, (1, 7, 7))  # 5x5 -> 4x4: overlapping windows
    with pytest.raises(NIRExportError, match="AdaptiveAvgPool2d.*not a multiple"):
        export_nir(net, data[:1])


def test_bad_arguments():
    net, data = _convert(ResMLP(), (6,))
    with pytest.raises(TypeError, match="SpikingNetwork"):
        export_nir(net.graph, data[:1])
    with pytest.raises(TypeError, match="batch dimension"):
        export_nir(net, data[0])
    with pytest.raises(ValueError, match=r"sample of shape \(1, 5\) does not fit"):
        export_nir(net, data[:1, :5])


def test_add_of_a_node_with_itself_is_refused():
    net, data = _convert(ResMLP(), (6,))
    graph = net.graph.graph
    add = next(n for n in graph.nodes if n.target is operator.add)
    add.args = (add.args[0], add.args[0])
    net.graph.recompile()
    assert "two different nodes" in _refusal(net, data[:1])


# ---------------------------------------------------------- snntorch 1.0.0's own NIR functions


def test_snntorch_export_to_nir_drops_the_coding():
    """docs/nir.md: export_to_nir reads beta / threshold only, so a WeightedLeaky (any K, and
    the fire=False integrator) exports as the very LIF a snn.Leaky gives."""
    from snntorch.export_nir import export_to_nir

    def exported(neuron):
        graph = export_to_nir(nn.Sequential(nn.Linear(4, 3), neuron), torch.rand(4))
        (lif,) = [n for n in graph.nodes.values() if not isinstance(n, nir.Input | nir.Output
                                                                    | nir.Affine)]
        return type(lif), {k: getattr(lif, k).tolist() for k in ("tau", "r", "v_threshold")}

    kw = {"beta": torch.full((3,), 0.9), "threshold": torch.ones(3), "init_hidden": True}
    plain = exported(snn.Leaky(**kw))
    assert plain[0] is nir.LIF
    for k in (1, 4, 8):
        assert exported(sw.WeightedLeaky(num_phases=k, **kw)) == plain
    assert exported(sw.WeightedLeaky(num_phases=4, fire=False, output=True, **kw)) == plain


def test_snntorch_import_from_nir_is_not_faithful_to_if():
    """docs/nir.md: import_from_nir builds an IF as snn.Leaky(beta=0.9) returning (spk, mem),
    asserts one threshold per layer and has no mapping for I."""
    from snntorch.import_nir import import_from_nir

    net, data = _convert(ResMLP(), (6,))
    graph = export_nir(net, data[:1])
    with pytest.raises(ValueError, match="Unknown node type"):
        import_from_nir(graph)  # the output integrator, nir.I
    one_if = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([8])), "if": graph.nodes[
            net.graph.graph.find_nodes(op="call_module", target=net.neurons()[0][0])[0].name],
            "output": nir.Output(output_type=np.array([8]))},
        edges=[("input", "if"), ("if", "output")])
    leaky = [m for m in import_from_nir(one_if).modules() if isinstance(m, snn.Leaky)]
    assert len(leaky) == 1 and float(leaky[0].beta) == pytest.approx(0.9)
    assert not leaky[0].init_hidden

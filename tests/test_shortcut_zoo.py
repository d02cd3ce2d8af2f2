"""The radix shortcut on model-zoo graphs (issue 21 ops): ``simulate(..., shortcut=True)`` gives
the step-by-step simulation's result field by field (output membranes after every step, spikes
and SynOps per step, layer and sample) and the quantised model's integers.

Graphs: every model of tests/test_zoo_ops.py (concatenation, mean over H, W, ReLU6 / Hardtanh /
clamp neurons, pre-activation batch norm, chunk / split / channel shuffle, linear bottlenecks
with an unequal-depth residual add, adaptive pools) plus concatenations and residual adds of
branches of unequal depth, a residual stream of sums through several blocks (a delayed sum
feeding the next sum), and reshapes whose sizes are read off the same, the input or another
node (``x.view(x.size(0), -1)``, ``y.reshape(b, c * h * w)`` with ``b, c, h, w = s.shape``).
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st
from test_speed_paths import assert_same
from test_zoo_ops import MODELS as ZOO
from test_zoo_ops import _conv
from torch import fx, nn

from snntorch_weighted import quant
from snntorch_weighted.conversion.radix import convert_radix
from snntorch_weighted.simulation.runner import simulate

C = 4


class UnequalCat(nn.Module):
    """Branches of one and of two neuron layers concatenated (the short one is delayed)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b1, self.b2 = _conv(2, C), _conv(2, C), _conv(C, C)
        self.mix, self.fc = nn.Conv2d(2 * C, C, 1), nn.Linear(C, 3)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b2(F.relu(self.b1(x))))], 1)
        return self.fc(F.relu(self.mix(y)).mean((2, 3)))


class UnequalAdd(nn.Module):
    """An identity residual around two neuron layers, then a ReLU and a hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.c1, self.c2 = _conv(2, C), _conv(C, C), _conv(C, C)
        self.hidden, self.fc = nn.Linear(C * 16, 8), nn.Linear(8, 3)

    def forward(self, x):
        s = F.relu(self.stem(x))
        y = F.relu(s + F.relu(self.c2(F.relu(self.c1(s)))))
        return self.fc(F.relu(self.hidden(F.avg_pool2d(y, 2).flatten(1))))


class SizeView(nn.Module):
    """``y.view(y.size(0), -1)`` (becomes a Flatten), ``x.size(0)`` read off the input and
    ``s.shape`` of a shallower node with size arithmetic, each before a hidden layer."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.c1, self.c2 = _conv(2, C), _conv(C, C)
        self.hidden, self.fc = nn.Linear(C * 64, 8), nn.Linear(8, 3)
        with torch.no_grad():  # positive biases: the pipeline filling is not all zeros
            self.c2.bias.copy_(torch.linspace(0.1, 0.8, C))
            self.hidden.bias.copy_(torch.linspace(0.05, 0.4, 8))

    def forward(self, x):
        s = F.relu(self.c1(x))
        y = F.relu(self.c2(s))
        if self.source == "same":
            y = y.view(y.size(0), -1)
        elif self.source == "input":
            y = y.view(x.size(0), -1)
        else:
            b, c, h, w = s.shape
            y = y.reshape(b, c * h * w)
        return self.fc(F.relu(self.hidden(y)))


class DeepShuffle(nn.Module):
    """torchvision's channel shuffle (sizes of its own input, view / transpose / view) and a
    chunk, each feeding a neuron layer, so the moved codes of the pipeline filling are used."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.c2 = _conv(2, 2 * C), nn.Conv2d(C, C, 1)
        self.mix, self.fc = nn.Conv2d(2 * C, C, 1), nn.Linear(C, 3)

    def forward(self, x):
        y = F.relu(self.stem(x))
        b, c, h, w = y.size()
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        left, right = y.chunk(2, dim=1)
        y = torch.cat([left, F.relu(self.c2(right))], 1)
        return self.fc(F.relu(self.mix(y)).mean((2, 3)))


class LinearStream(nn.Module):
    """MobileNet-v2 / MnasNet stages: a residual stream of sums (no ReLU) through three blocks, so
    the delayed sum of one block feeds the next block's sum (a delay of a delayed current)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(2, C), nn.ReLU6(), nn.Conv2d(C, C, 1))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(C, 2 * C, 1), nn.ReLU6(), nn.Conv2d(2 * C, C, 1))
            for _ in range(3))
        self.head, self.fc = nn.Conv2d(C, C, 1), nn.Linear(C, 3)

    def forward(self, x):
        stream = self.stem(x)
        for block in self.blocks:
            stream = stream + block(stream)
        return self.fc(F.relu(self.head(stream)).mean((2, 3)))


MODELS = {
    **ZOO,
    "unequal_cat": UnequalCat,
    "unequal_add": UnequalAdd,
    "view_size_same": lambda: SizeView("same"),
    "view_size_input": lambda: SizeView("input"),
    "reshape_shape_other": lambda: SizeView("other"),
    "deep_shuffle": DeepShuffle,
    "linear_stream": LinearStream,
}


def _data(n: int, seed: int) -> torch.Tensor:
    x = torch.rand(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[0] = 1.0  # the top code (saturation)
    return x


@cache
def _radix(name: str):
    """The radix SNN of model ``name`` (4 bits, calibrated on 4 samples) and its quantised twin."""
    torch.manual_seed(0)
    prepared = quant.prepare(MODELS[name]().eval(), num_bits=4, calibration_data=_data(4, 0))
    return convert_radix(prepared), prepared


def _integers(prepared: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return quant.integer_activations(copy.deepcopy(prepared).double(), x.double())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shortcut_equals_steps_and_the_quantised_model(name: str) -> None:
    snn, prepared = _radix(name)
    x = _data(3, 1)
    for steps in (snn.latency, snn.latency + 6, snn.latency - 5):
        full = simulate(snn, x, steps, fold=False)
        assert_same(simulate(snn, x, steps, shortcut=True), full)
    full = simulate(snn, x, snn.latency, fold=False)
    want = _integers(prepared, x)["output_quant"].double()
    assert want.abs().sum() > 0
    assert torch.equal(full.mem[-1], want)
    assert torch.equal(simulate(snn, x, snn.latency, shortcut=True).mem[-1], want)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shortcut_spike_counts_are_popcounts(name: str) -> None:
    """In the period a layer carries the input's codes, its spikes are their popcounts."""
    snn, prepared = _radix(name)
    x = _data(3, 2)
    codes = _integers(prepared, x)
    result = simulate(snn, x, shortcut=True)
    layers = set(codes) - {"input_quant", "output_quant"}
    assert layers and layers <= set(result.spikes)
    for layer in layers:
        period = snn.periods[layer]
        counted = result.spikes[layer][period * 4:(period + 1) * 4].sum(0)
        code = codes[layer].flatten(1)
        popcount = sum(((code >> p) & 1).sum(1) for p in range(4))
        assert torch.equal(counted, popcount), layer


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(["unequal_cat", "unequal_add", "view_size_input",
                             "reshape_shape_other", "deep_shuffle", "linear_stream", "shuffle"]),
       seed=st.integers(0, 2**16), batch=st.integers(1, 3), extra=st.integers(-9, 9))
def test_shortcut_equals_steps_on_random_inputs(name: str, seed: int, batch: int,
                                                extra: int) -> None:
    snn, _ = _radix(name)
    x = torch.rand(batch, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    steps = max(snn.latency + extra, 1)
    kw = dict(labels=torch.arange(batch) % 3, early_decision=(0.0, 2), record_layers=True)
    short = simulate(snn, x, steps, shortcut=True, **kw)
    full = simulate(snn, x, steps, fold=False, **kw)
    assert_same(short, full)
    assert torch.equal(short.accuracy, full.accuracy)
    assert torch.equal(short.decision.time, full.decision.time)
    assert short.layer_trains.keys() == full.layer_trains.keys()
    for layer, train in full.layer_trains.items():
        assert torch.equal(short.layer_trains[layer], train), layer


def test_a_join_without_its_delay_is_refused_by_name() -> None:
    """Inputs of a concatenation that arrive in different periods (its delay removed) break the
    shortcut's pipeline filling: it refuses the graph, naming the node."""
    snn, _ = _radix("unequal_cat")
    snn = copy.deepcopy(snn)
    graph: fx.Graph = snn.graph.graph
    delay = next(n for n in graph.nodes if n.op == "call_module" and n.target.endswith("_delay"))
    delay.replace_all_uses_with(delay.args[0])
    graph.erase_node(delay)
    snn.graph.recompile()
    with pytest.raises(ValueError, match=r"node 'cat'.*different numbers of periods \[1, 2\]"):
        simulate(snn, _data(2, 3), shortcut=True)

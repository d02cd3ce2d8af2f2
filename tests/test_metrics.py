"""Fan-out, SynOps, spike counting, the fan-out profile's reuse, ANN MACs and steps-to-accuracy
against brute-force counts."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.layers import Scale, SpikeMaxPool2d
from snntorch_weighted.neurons import WeightedLeaky
from snntorch_weighted.simulation import counting
from snntorch_weighted.simulation.metrics import (
    INPUT,
    ann_macs,
    fanout,
    is_stateful,
    steps_to_accuracy,
)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return is_stateful(m) or super().is_leaf_module(m, name)


def trace(module: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(module, _Tracer().trace(module))


def neuron() -> WeightedLeaky:
    return WeightedLeaky(num_phases=4, init_hidden=True)


def conv_fanout_brute(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """Synapses per input pixel by enumerating every (output, kernel tap) pair."""
    c_in, c_out, g = conv.in_channels, conv.out_channels, conv.groups
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = conv.padding
    oh = (height + 2 * ph - kh) // sh + 1
    ow = (width + 2 * pw - kw) // sw + 1
    w = conv.weight.detach()
    count = torch.zeros(c_in, height, width, dtype=torch.long)
    taps = itertools.product(range(c_out), range(oh), range(ow), range(kh), range(kw))
    for o, y, x, i, j in taps:
        h, v = y * sh - ph + i, x * sw - pw + j
        if not (0 <= h < height and 0 <= v < width):
            continue
        group = o // (c_out // g)
        for ci in range(c_in // g):
            if w[o, ci, i, j] != 0:
                count[group * (c_in // g) + ci, h, v] += 1
    return count


def test_linear_fanout_counts_nonzero_weights() -> None:
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(6, 5), nn.Linear(5, 3)
    with torch.no_grad():
        fc1.weight[:, 2] = 0  # input 2 drives nothing
        fc1.weight[1, 4] = 0
        fc2.weight[0, 0] = 0
    gm = trace(nn.Sequential(fc1, neuron(), fc2, neuron()))
    fan = fanout(gm, torch.rand(3, 6))
    assert fan[INPUT].tolist() == (fc1.weight != 0).sum(0).tolist()
    assert fan["1"].tolist() == (fc2.weight != 0).sum(0).tolist()
    assert fan["3"].tolist() == [0, 0, 0]  # last neurons feed nothing


@settings(max_examples=15, deadline=None)
@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    groups=st.sampled_from([1, 2]),
    size=st.integers(3, 6),
    seed=st.integers(0, 100),
)
def test_conv_fanout_brute_force(kernel, stride, padding, groups, size, seed) -> None:
    torch.manual_seed(seed)
    conv = nn.Conv2d(2, 4, kernel, stride, padding, groups=groups)
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) < 0.2] = 0
    gm = trace(nn.Sequential(neuron(), conv, neuron()))
    fan = fanout(gm, torch.rand(1, 2, size, size))
    assert torch.equal(fan["0"], conv_fanout_brute(conv, size, size))


def test_avgpool_flatten_linear_and_adaptive() -> None:
    fc = nn.Linear(2 * 2 * 2, 7)
    gm = trace(nn.Sequential(neuron(), nn.AvgPool2d(2), nn.Flatten(), fc, neuron()))
    fan = fanout(gm, torch.rand(1, 2, 5, 5))
    # the 5th row / column falls outside every 2x2 window: no synapse
    expect = torch.zeros(2, 5, 5, dtype=torch.long)
    expect[:, :4, :4] = 7
    assert torch.equal(fan["0"], expect)

    gm = trace(nn.Sequential(neuron(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4),
                             neuron()))
    assert torch.equal(fanout(gm, torch.rand(1, 3, 5, 3))["0"], torch.full((3, 5, 3), 4))
    gm = trace(nn.Sequential(neuron(), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
                             nn.Linear(12, 4), neuron()))
    # 5 -> 2 windows overlap at the middle row (rows 0-2 and 2-4), 3 -> 2 at the middle column
    # (columns 0-1 and 1-2): 2 or 4 paths there
    rows, cols = torch.tensor([1, 1, 2, 1, 1]), torch.tensor([1, 2, 1])
    expect = (rows[:, None] * cols * 4).expand(3, 5, 3)
    assert torch.equal(fanout(gm, torch.rand(1, 3, 5, 3))["0"], expect)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n0 = neuron()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.scale = Scale(0.5)
        self.n1 = neuron()
        self.pool = SpikeMaxPool2d(2, num_phases=4)
        self.fc = nn.Linear(2 * 2 * 2, 3)
        self.out = WeightedLeaky(num_phases=4, fire=False, init_hidden=True, output=True)

    def forward(self, x):
        s = self.n0(x)
        s = self.n1(self.conv(s) + self.scale(s))
        _, mem = self.out(self.fc(self.pool(s).flatten(1)))
        return mem


def test_residual_scale_and_maxpool_cut() -> None:
    torch.manual_seed(0)
    net = _Residual()
    gm = trace(net)
    fan = fanout(gm, torch.rand(1, 2, 4, 4))
    conv = conv_fanout_brute(net.conv, 4, 4)
    assert torch.equal(fan["n0"], conv + 1)  # conv synapses + the (scaled) identity synapse
    assert torch.equal(fan["n1"], torch.zeros(2, 4, 4, dtype=torch.long))  # routed by the pool
    assert torch.equal(fan["pool"], torch.full((2, 2, 2), 3))
    assert torch.equal(fan[INPUT], torch.ones(2, 4, 4, dtype=torch.long))


def _brute(outs: torch.Tensor, fan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes (non-zero entries) and SynOps per step and sample of ``outs`` ``[T, B, ...]``."""
    ones = (outs != 0).flatten(2).long()
    return ones.sum(-1), (ones * fan.flatten()).sum(-1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 7), st.integers(1, 3), st.booleans(),
       st.sampled_from([torch.float32, torch.float64, torch.float16]), st.booleans(),
       st.sampled_from([1, 2, 10**9]), st.booleans())
def test_counter_counts_like_brute_force(seed, steps, batch, graded, dtype, blocks, flush,
                                         binary):
    """Counter: spikes = non-zero entries, SynOps = sum of the fan-outs of the non-zero entries,
    per step and sample, whether the outputs come step by step or as blocks, in any dtype, and
    whatever the block size the masks are counted in; 0 / 1 outputs declared binary are counted
    as they are."""
    gen = torch.Generator().manual_seed(seed)
    fan = torch.randint(0, 9, (2, 3, 5), generator=gen)
    outs = (torch.rand(steps, batch, 2, 3, 5, generator=gen) < 0.4).float()
    if graded:
        outs = outs * (torch.rand(outs.shape, generator=gen) - 0.5)  # negative ones too
    outs = outs.to(dtype)
    counter = counting.Counter({"n": counting.counting_fans({"n": fan})["n"]}, {"n"},
                               keep_trains=True, binary={"n"} if binary and not graded else None)
    old = counting.BLOCK_BYTES
    counting.BLOCK_BYTES = flush * batch * 30  # small: blocks counted during the run
    try:
        if blocks:
            counter.add("n", outs[:1], steps=1)
            if steps > 1:
                counter.add("n", outs[1:], steps=steps - 1)
        else:
            for out in outs:
                counter.add("n", (out, out * 7))  # a (spk, mem) tuple: the spikes count
    finally:
        counting.BLOCK_BYTES = old
    spikes, synops, trains = counter.results()
    expect_spikes, expect_synops = _brute(outs, fan)
    assert torch.equal(spikes["n"], expect_spikes) and torch.equal(synops["n"], expect_synops)
    assert torch.equal(trains["n"], outs) and counter.num_neurons == {"n": 30}


def test_counter_reports_only_what_is_asked_and_checks_sizes() -> None:
    """A routing layer (no spikes reported) gets SynOps only, a neuron without fan-out spikes
    only; an output of the wrong size is refused."""
    fans = counting.counting_fans({"pool": torch.tensor([1, 2, 0, 4])})
    counter = counting.Counter(fans, {"n"}, keep_trains=False)
    outs = torch.tensor([[[1.0, 0.0, 2.0, 1.0]], [[0.0, 0.0, 1.0, 0.0]]])
    counter.add("pool", outs, steps=2)
    counter.add("n", outs, steps=2)
    spikes, synops, _ = counter.results()
    assert spikes.keys() == {"n"} and synops.keys() == {"pool"}
    assert torch.equal(spikes["n"], torch.tensor([[3], [1]]))
    assert torch.equal(synops["pool"], torch.tensor([[5], [0]]))
    counter.add("pool", torch.ones(1, 1, 5), steps=1)
    with pytest.raises(ValueError, match="emitted 5 values per sample"):
        counter.results()


def test_network_profile_is_reused_only_while_its_inputs_are_unchanged() -> None:
    """The fan-out profile is kept on the network and recomputed after a ``.data`` edit of a
    weight, an in-place graph edit, a changed layer setting or another input shape."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 3)).eval()
    x = torch.rand(2, 1, 4, 4)
    snn = convert(model, x, num_phases=4, progress=False)
    first, _ = counting.network_profile(snn, x)
    assert counting.network_profile(snn, x)[0] is first
    snn.graph.get_submodule("0").weight.data[:, 0, 0, 0] = 0
    second, _ = counting.network_profile(snn, x)
    assert second is not first and not torch.equal(second.fanout[INPUT], first.fanout[INPUT])
    assert counting.network_profile(snn, x)[0] is second
    snn.graph.get_submodule("0").padding = (0, 0)  # a setting the fan-out depends on
    assert counting.network_profile(snn, torch.rand(2, 1, 6, 6))[0] is not second
    third, _ = counting.network_profile(snn, torch.rand(2, 1, 6, 6))
    node = next(n for n in snn.graph.graph.nodes if n.op == "call_module" and n.target == "2")
    node.args = (node.args[0],)  # rebuilt, equal arguments: the nodes are compared, not names
    assert counting.network_profile(snn, torch.rand(2, 1, 6, 6))[0] is third
    with snn.graph.graph.inserting_before(node):
        half = snn.graph.graph.call_function(torch.mul, (node.args[0], 0.5))
    node.args = (half,)
    assert counting.network_profile(snn, torch.rand(2, 1, 6, 6))[0] is not third


def test_ann_macs() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=4),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 10),
    )
    macs = ann_macs(model, torch.rand(5, 3, 8, 8))
    expect = 8 * 8 * 8 * 3 * 9 + 8 * 3 * 3 * 2 * 9 + 72 * 10
    assert macs == expect
    with pytest.raises(TypeError):
        ann_macs("model", torch.rand(1, 3))


def test_steps_to_accuracy() -> None:
    curve = torch.tensor([0.1, 0.95, 0.5, 0.96, 0.97, 0.99])
    assert steps_to_accuracy(curve, 0.95) == 4  # reached at 2 but lost at 3
    assert steps_to_accuracy(curve, 0.95, stay=False) == 2
    assert steps_to_accuracy(curve, 0.05) == 1
    assert steps_to_accuracy(curve, 0.995) is None
    assert steps_to_accuracy(curve, 0.995, stay=False) is None
    with pytest.raises(ValueError):
        steps_to_accuracy(torch.tensor([]), 0.5)


def test_unsupported_layer_is_named() -> None:
    gm = trace(nn.Sequential(neuron(), nn.LayerNorm(4), neuron()))
    with pytest.raises(ValueError, match=r"'1'.*LayerNorm"):
        fanout(gm, torch.rand(1, 4))

"""Fan-out, SynOps, spike recording, ANN MACs and steps-to-accuracy against brute-force counts."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from snntorch_weighted.conversion.layers import Scale, SpikeMaxPool2d
from snntorch_weighted.neurons import WeightedLeaky
from snntorch_weighted.simulation.metrics import (
    DEFER_STEP_BYTES,
    INPUT,
    SpikeRecorder,
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


def test_recorder_counts_and_synops() -> None:
    torch.manual_seed(0)
    n = neuron()
    fan = torch.tensor([3, 0, 5, 1])
    rec = SpikeRecorder({"n": n}, {"n": fan}, {"n"}, keep_trains=True)
    inputs = torch.rand(6, 2, 4) * 2
    with rec:
        outs = [n(x) for x in inputs]
    n(inputs[0])  # after the context: not recorded
    spikes, synops, trains = rec.stacked()
    expect = torch.stack(outs)
    assert torch.equal(trains["n"], expect)
    assert torch.equal(spikes["n"], (expect != 0).sum(-1))
    assert torch.equal(synops["n"], ((expect != 0).long() * fan).sum(-1))
    assert rec.num_neurons == {"n": 4}


def test_recorder_computes_only_what_is_reported() -> None:
    """A neuron whose spikes drive no synapse reports zero SynOps (no product is computed), a
    routing layer reports SynOps but no spikes; the others are counted as usual."""
    torch.manual_seed(2)
    quiet, busy, pool = neuron(), neuron(), nn.Identity()
    fans = {"quiet": torch.zeros(4, dtype=torch.long), "busy": torch.tensor([1, 0, 2, 9]),
            "pool": torch.tensor([4, 4, 1, 0])}
    rec = SpikeRecorder({"quiet": quiet, "busy": busy, "pool": pool}, fans, {"quiet", "busy"})
    inputs = torch.rand(5, 3, 4) * 2
    with rec:
        outs = {"quiet": torch.stack([quiet(x) for x in inputs]),
                "busy": torch.stack([busy(x) for x in inputs]),
                "pool": torch.stack([pool(x) for x in inputs])}
    assert all(s is None for _, s in rec.records["quiet"])
    assert all(c is None for c, _ in rec.records["pool"])
    spikes, synops, _ = rec.stacked()
    assert spikes.keys() == {"quiet", "busy"} and synops.keys() == set(fans)
    for name, out in outs.items():
        assert torch.equal(synops[name], ((out != 0).long() * fans[name]).sum(-1)), name
        if name in spikes:
            assert torch.equal(spikes[name], (out != 0).sum(-1)), name
    assert outs["quiet"].sum() > 0 and synops["busy"].sum() > 0


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 4), st.booleans(), st.booleans())
def test_recorder_shared_channel_fanout_counts_like_the_product(seed, steps, batch, shared, large):
    """When every channel has the same fan-out per position (a convolution with all weights
    non-zero), the recorder sums the spikes over channels first and multiplies per position;
    counts and SynOps equal the independent ``sum(train)`` / ``sum(train * fan)`` either way,
    for per-step counting (large steps) and blocks (small steps)."""
    gen = torch.Generator().manual_seed(seed)
    channels, height, width = 3, (160 if large else 4), (160 if large else 5)  # > 256 KiB
    per_position = torch.randint(0, 9, (height * width,), generator=gen)
    fan = per_position.repeat(channels)
    if not shared:
        fan[int(torch.randint(0, fan.numel(), (1,), generator=gen))] += 1
    n = neuron()
    rec = SpikeRecorder({"n": n}, {"n": fan}, {"n"})
    inputs = torch.rand(steps, batch, channels, height, width, generator=gen) * 2
    with rec:
        outs = torch.stack([n(x) for x in inputs])
    spikes, synops, _ = rec.stacked()
    ones = (outs != 0).flatten(2).long()
    assert torch.equal(spikes["n"], ones.sum(-1))
    assert torch.equal(synops["n"], (ones * fan).sum(-1))
    (position_fan,) = rec._position_fans.values()
    assert (position_fan is not None) == shared  # the channel sum ran iff shared


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 7), st.integers(1, 3),
       st.sampled_from(["shared", "per neuron", "silent"]), st.booleans(), st.booleans(),
       st.sampled_from([1, 2, 64]))
def test_recorder_reduces_each_step_to_what_the_counts_need(seed, steps, batch, fan_kind,
                                                            graded, keep, block):
    """take() reduces a step of 0/1 spikes right away: to per-position channel sums when the
    fan-out is the same in every channel, to per-sample counts when no SynOps are reported (a
    silent neuron), and keeps the spikes otherwise (fan-out per neuron, graded spikes, trains
    kept). Counts and SynOps equal the independent ``sum(train != 0)`` / ``sum((train != 0) *
    fan)`` either way, with blocks flushed during the run and at the end."""
    gen = torch.Generator().manual_seed(seed)
    channels, height, width = 3, 2, 5
    per_position = torch.randint(1, 9, (height * width,), generator=gen)
    fan = {"shared": per_position.repeat(channels),
           "per neuron": torch.randint(0, 9, (channels * height * width,), generator=gen),
           "silent": torch.zeros(channels * height * width, dtype=torch.long)}[fan_kind]
    if fan_kind == "per neuron":
        fan[0] = fan[height * width] + 1  # channels 0 and 1 differ
    n = WeightedLeaky(num_phases=4, init_hidden=True, graded_spikes_factor=0.5 if graded else 1)
    rec = SpikeRecorder({"n": n}, {"n": fan}, {"n"}, keep_trains=keep)
    rec._limits["n"] = block  # blocks of this many steps
    inputs = torch.rand(steps, batch, channels, height, width, generator=gen) * 2
    with rec:
        outs = torch.stack([n(x) for x in inputs])
        if steps % block:
            kept = rec._pending["n"][-1]
            reduced = {"shared": (batch, height, width), "silent": (batch,)}
            expect = reduced.get(fan_kind) if not (graded or keep) else None
            assert kept.shape == (expect or (batch, channels, height, width))
    spikes, synops, trains = rec.stacked()
    ones = (outs != 0).flatten(2).long()
    assert torch.equal(spikes["n"], ones.sum(-1))
    assert torch.equal(synops["n"], (ones * fan).sum(-1))
    assert rec.num_neurons["n"] == channels * height * width
    if keep:
        assert torch.equal(trains["n"], outs)


def test_recorder_defers_small_steps_and_counts_large_ones_at_once() -> None:
    """Steps of at most DEFER_STEP_BYTES wait for a block; a larger step is counted at once;
    both give the same counts."""
    fan_small, fan_large = torch.tensor([1, 2, 0, 4]), torch.arange(70_000) % 5
    small, large = neuron(), neuron()
    rec = SpikeRecorder({"small": small, "large": large},
                        {"small": fan_small, "large": fan_large}, {"small", "large"})
    assert 4 * 4 <= DEFER_STEP_BYTES < 4 * 70_000
    x_small, x_large = torch.rand(3, 1, 4) * 2, torch.rand(3, 1, 70_000) * 2
    with rec:
        outs_small = torch.stack([small(x) for x in x_small])
        outs_large = []
        for x in x_large:
            outs_large.append(large(x))
            assert len(rec.records["large"]) == len(outs_large)  # counted at once
        assert len(rec._pending["small"]) == 3 and not rec.records["small"]
        assert not rec._pending["large"]
    spikes, synops, _ = rec.stacked()
    for name, out, fan in (("small", outs_small, fan_small),
                           ("large", torch.stack(outs_large), fan_large)):
        assert torch.equal(spikes[name], (out != 0).sum(-1))
        assert torch.equal(synops[name], ((out != 0).long() * fan).sum(-1))


def test_renewed_recorder_counts_each_run_alone() -> None:
    """A renewed recorder shares the tables but not the counts: every run counts only its own
    steps, equal to a fresh recorder's (here with a batch size that changes between runs and
    blocks of 3 steps, so deferred blocks are flushed mid-run and at the end)."""
    torch.manual_seed(1)
    n = neuron()
    fan = torch.tensor([2, 7, 0, 1])
    first = SpikeRecorder({"n": n}, {"n": fan}, {"n"})
    for batch, steps in ((2, 7), (5, 3), (1, 10)):
        inputs = torch.rand(steps, batch, 4) * 2
        results = []
        for rec in (first.renewed(), SpikeRecorder({"n": n}, {"n": fan}, {"n"})):
            n.reset_mem()
            rec._limits["n"] = 3  # deferred blocks of 3 steps
            with rec:
                outs = torch.stack([n(x) for x in inputs])
            results.append(rec.stacked())
        for spikes, synops, _ in results:
            assert torch.equal(spikes["n"], (outs != 0).sum(-1))
            assert torch.equal(synops["n"], ((outs != 0).long() * fan).sum(-1))
    assert not first.records["n"]  # the template itself never counted
    rec = first.renewed()
    with rec, pytest.raises(RuntimeError, match="already recording"):
        rec.__enter__()


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

"""One small graph per model-zoo op (issue 21): the weighted SNN converges to the ANN as steps
grow, and the radix SNN equals the quantised model bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import snntorch_weighted as sw
from snntorch_weighted import quant
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.graph import UnsupportedLayerError, capture, check
from snntorch_weighted.conversion.ops import ChannelAffine, ClippedReLU
from snntorch_weighted.conversion.radix import convert_radix
from snntorch_weighted.neurons.reset import reset

C = 4


def _conv(cin: int, cout: int, k: int = 3, **kw) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, **kw)


class Cat(nn.Module):
    """Two branches with a ``gap``-fold scale difference, concatenated along channels."""

    def __init__(self, gap: float = 20.0) -> None:
        super().__init__()
        self.a, self.b = _conv(2, C), _conv(2, C)
        with torch.no_grad():
            self.b.weight.mul_(gap)
            self.b.bias.mul_(gap)
        self.mix = _conv(2 * C, C, 1)
        self.fc = nn.Linear(C, 3)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        return self.fc(F.relu(self.mix(y)).mean((2, 3)))


class Mean(nn.Module):
    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        self.keepdim = keepdim
        self.conv, self.head = _conv(2, C), nn.Conv2d(C, 3, 1)

    def forward(self, x):
        y = F.relu(self.conv(x)).mean([2, 3], keepdim=self.keepdim)
        return self.head(y).flatten(1) if self.keepdim else self.head(y[..., None, None]).flatten(1)


class Clipped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv, self.fc = _conv(2, C), nn.Linear(C * 16, 3)
        self.act = {"relu6": nn.ReLU6(), "hardtanh": nn.Hardtanh(0.0, 0.5)}.get(kind)
        with torch.no_grad():
            self.conv.weight.mul_(6)

    def forward(self, x):
        y = self.conv(x)
        y = torch.clamp(y, 0, 0.7) if self.act is None else self.act(y)
        return self.fc(F.max_pool2d(y, 2).flatten(1))


class PreActBN(nn.Module):
    """BatchNorm before a ReLU, after a concatenation of a neuron and a sum (DenseNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.grow = _conv(2, C), _conv(C, C)
        self.bn = nn.BatchNorm2d(2 * C)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(2 * C * 16, 3)
        _randomize_bn(self.bn)

    def forward(self, x):
        s = F.relu(self.stem(x))
        y = torch.cat([s, self.grow(s)], 1)
        return self.fc(self.pool(F.relu(self.bn(y))).flatten(1))


class Shuffle(nn.Module):
    """ShuffleNet-v2 unit: chunk, depthwise + 1x1 (a linear chain), channel shuffle by view /
    transpose / view, then split, indexing, permute and a view with -1 first."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv(2, 2 * C)
        self.dw = _conv(C, C, groups=C)
        self.pw = nn.Conv2d(C, C, 1, groups=2)
        self.fc = nn.Linear(2 * C * 64, 3)

    def forward(self, x):
        x1, x2 = F.relu(self.stem(x)).chunk(2, dim=1)
        y = torch.cat([x1, F.relu(self.pw(self.dw(x2)))], 1)
        b, c, h, w = y.size()
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        first, second = torch.split(y, [C, C], dim=1)
        y = torch.cat([second[:, :, :, :], first], 1).permute(0, 2, 3, 1)
        return self.fc(y.reshape(-1, 2 * C * 64))


class Bottleneck(nn.Module):
    """MobileNet-v2 linear bottlenecks: projections without ReLU, a residual stream of sums."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(2, C), nn.BatchNorm2d(C), nn.ReLU6())
        self.proj = nn.Sequential(nn.Conv2d(C, C, 1), nn.BatchNorm2d(C))
        self.expand = nn.Sequential(nn.Conv2d(C, 2 * C, 1), nn.ReLU6(), _conv(2 * C, 2 * C,
                                    groups=2 * C), nn.ReLU6(), nn.Conv2d(2 * C, C, 1))
        self.head = nn.Sequential(nn.Conv2d(C, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
                                  nn.Flatten(), nn.Linear(72, 3))
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                _randomize_bn(m)

    def forward(self, x):
        stream = self.proj(self.stem(x))
        stream = stream + self.expand(stream)
        return self.head(stream)


class Adaptive(nn.Module):
    """Adaptive average pools whose output does not divide the input (bins of sizes 1 and 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(2, C)
        self.pool = nn.AdaptiveAvgPool2d((3, 5))
        self.fc = nn.Linear(C * 15, 3)

    def forward(self, x):
        return self.fc(self.pool(F.relu(self.conv(x))).flatten(1))


def _randomize_bn(bn: nn.BatchNorm2d) -> None:
    g = torch.Generator().manual_seed(1)
    n = bn.num_features
    bn.running_mean.copy_(torch.rand(n, generator=g) * 0.2)
    bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
    bn.bias.data.copy_(torch.rand(n, generator=g) * 0.2)


MODELS = {
    "cat_20x": lambda: Cat(20.0),
    "mean": lambda: Mean(False),
    "mean_keepdim": lambda: Mean(True),
    "relu6": lambda: Clipped("relu6"),
    "hardtanh": lambda: Clipped("hardtanh"),
    "clamp": lambda: Clipped("clamp"),
    "preact_bn": PreActBN,
    "shuffle": Shuffle,
    "bottleneck": Bottleneck,
    "adaptive": Adaptive,
}


def _data(n: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 2, 8, 8, generator=g)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().eval()


def _weighted_outputs(snn, x, checkpoints):
    outs = {}
    with torch.no_grad():
        reset(snn)
        train = snn.encode(x, max(checkpoints))
        for t in range(max(checkpoints)):
            mem = snn(train[t])
            if t + 1 in checkpoints:
                outs[t + 1] = snn.decode(mem, t + 1)
    return outs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weighted_converges_to_the_ann(name):
    model, x = _model(name), _data()
    with torch.no_grad():
        ref = model(x)
    snn = convert(model, x, coding="weighted", num_phases=8, normalization="max", progress=False)
    outs = _weighted_outputs(snn, x, (16, 256))
    scale = ref.abs().max()
    early, late = ((outs[s] - ref).abs().max() / scale for s in (16, 256))
    assert late < 0.05, (name, float(late))
    assert late < early or early < 0.01, (name, float(early), float(late))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_radix_equals_the_quantised_model(name):
    model, x = _model(name), _data()
    prepared = quant.prepare(copy.deepcopy(model), num_bits=4, calibration_data=x)
    snn = convert_radix(prepared)
    want = quant.integer_activations(copy.deepcopy(prepared).double(), x.double())
    with torch.no_grad():
        reset(snn)
        train = snn.encode(x.double(), snn.latency)
        for t in range(snn.latency):
            mem = snn(train[t])
    assert torch.equal(mem, want["output_quant"].double())
    # and the twin is a quantisation of the model, not something else
    with torch.no_grad():
        ann, q = model(x), prepared(x)
    assert F.cosine_similarity(ann.flatten(), q.flatten(), dim=0) > 0.9


def test_cat_keeps_per_channel_scales():
    """A 20x scale gap between concatenated branches: each branch keeps its own scale (the next
    layer absorbs them per input channel), so both branches stay resolved."""
    model, x = Cat(20.0).eval(), _data()
    snn = convert(model, x, coding="weighted", num_phases=8, normalization="max", progress=False)
    weight = snn.graph.get_submodule("mix").weight.detach()
    per_branch = weight[:, :C].abs().mean(), weight[:, C:].abs().mean()
    ratio = float(per_branch[1] / per_branch[0])
    assert 5 < ratio < 80, ratio  # the big branch's train is worth ~20x more per spike
    assert not any(type(m).__name__ == "Scale" for m in snn.graph.modules())


def test_capture_canonical_forms():
    gm = capture(Clipped("relu6"), _data(2))
    assert any(isinstance(m, ClippedReLU) and m.ceiling == 6.0 for m in gm.modules())
    gm = capture(PreActBN(), _data(2))
    assert any(isinstance(m, ChannelAffine) for m in gm.modules())
    gm = capture(Mean(False), _data(2))
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in gm.modules())


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(F.relu(x.view(-1, 8)).transpose(0, 1).reshape(-1, 8))


def test_moves_that_mix_the_batch_are_refused_by_name():
    x = torch.rand(4, 2, 2, 2)
    blockers = check(Mixer(), x)
    assert [b.node for b in blockers] == ["transpose"], blockers
    with pytest.raises(UnsupportedLayerError, match=r"node 'transpose'.*mixes samples"):
        capture(Mixer(), x)


class Refused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(2, C)
        self.act = nn.SiLU()
        self.gate = nn.Sigmoid()
        self.norm = nn.LayerNorm(C)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(C, 3)

    def forward(self, x):
        y = self.act(self.conv(x))
        y = y * self.gate(y.mean((2, 3), keepdim=True))
        y = self.norm(y.mean((2, 3)))
        return self.fc(F.hardswish(self.gelu(y)))


def test_one_error_lists_every_blocker_with_a_hint():
    blockers = check(Refused(), _data(2))
    ops = [b.op for b in blockers]
    assert ops == ["SiLU at 'act'", "Sigmoid at 'gate'", "operator.mul", "LayerNorm at 'norm'",
                   "GELU at 'gelu'", "torch.nn.functional.hardswish"], ops
    assert all(b.hint for b in blockers)
    assert "ReLU" in blockers[0].hint and "BatchNorm" in blockers[3].hint
    with pytest.raises(UnsupportedLayerError) as info:
        convert(Refused(), _data(2), progress=False)
    message = str(info.value)
    assert all(f"node '{b.node}'" in message for b in blockers)
    assert info.value.blockers == blockers
    assert check(Cat(), _data(2)) == []


def test_radix_adaptive_pool_after_a_sum_names_the_bins():
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = _conv(2, C), nn.Linear(C * 9, 3)

        def forward(self, x):
            return self.fc(F.relu(F.adaptive_avg_pool2d(self.conv(x), 3)).flatten(1))

    pattern = r"bins have different sizes \[9.0, 12.0, 16.0\] \(bins \[\(0, 1\)"
    with pytest.raises(UnsupportedLayerError, match=pattern):
        quant.prepare(Bad().eval(), num_bits=4, calibration_data=_data(2))


def test_precision_limit():
    with pytest.raises(ValueError, match="num_phases=25 is above what torch.float32 represents"):
        convert(Cat(), _data(2), num_phases=25, progress=False)


@pytest.mark.parametrize(
    ("outer", "inner", "shape"),
    [
        (ChannelAffine(torch.rand(6) + 0.5, torch.rand(6)), _conv(3, 6), (2, 3, 5, 5)),
        (nn.Conv2d(6, 4, 1, groups=2), _conv(6, 6, groups=6, stride=2), (2, 6, 5, 5)),
        (nn.Linear(5, 3), nn.Linear(4, 5), (2, 4)),
        (nn.Conv2d(3, 4, 3), ChannelAffine(torch.rand(3) + 0.5, torch.rand(3)), (2, 3, 5, 5)),
    ],
)
def test_merged_layer_computes_the_chain(outer, inner, shape):
    from snntorch_weighted.quant.merge import merge

    x = torch.rand(shape)
    with torch.no_grad():
        torch.testing.assert_close(merge(outer, inner)(x), outer(inner(x)), rtol=1e-5, atol=1e-5)
    assert merge(_conv(3, 3), _conv(3, 3)) is None  # a 3x3 after a 3x3 is not one 3x3


@pytest.mark.parametrize("name", ["preact_bn", "shuffle", "bottleneck"])
def test_finetuned_twin_stays_bit_exact(name):
    """STE fine-tuning (learnable clips) through concatenations, moves and merged chains: the
    weights and clips move, and the radix SNN still equals the fine-tuned quantised model."""
    model, x = _model(name), _data(16)
    y = torch.arange(16) % 3
    prepared = quant.prepare(copy.deepcopy(model), num_bits=4, calibration_data=x,
                             learn_clip=True)
    before = {k: v.detach().clone() for k, v in prepared.state_dict().items()}
    quant.finetune(prepared, (x, y), epochs=2, lr=1e-2, batch_size=8, progress=False)
    after = prepared.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "clip" in k)
    snn = convert_radix(prepared)
    want = quant.integer_activations(copy.deepcopy(prepared).double(), x.double())
    with torch.no_grad():
        reset(snn)
        train = snn.encode(x.double(), snn.latency)
        for t in range(snn.latency):
            mem = snn(train[t])
    assert torch.equal(mem, want["output_quant"].double())


class _PreActBN(nn.Module):
    """A batch norm between two ReLUs (a ChannelAffine synapse after conversion) and a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6 * 2, 3)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        c = torch.relu(self.c2(torch.relu(self.bn(a))))
        return self.fc(torch.cat([a, c], 1).flatten(1))


def test_simulate_counts_synops_through_a_channel_affine() -> None:
    """The SynOps of a spike reaching a ChannelAffine are one per element (none where the
    channel's scale is 0): both runners count them and agree."""
    torch.manual_seed(0)
    model = _PreActBN().eval()
    model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 1, 6, 6)
    snn = convert(model, x, coding="weighted", num_phases=4, progress=False)
    loop = sw.simulate(snn, x, 16, fold=False)
    folded = sw.simulate(snn, x, 16, fold=True)
    assert torch.equal(loop.synops_per_step, folded.synops_per_step)
    with torch.no_grad():
        snn.graph.bn.weight[0] = 0.0
    fewer = sw.simulate(snn, x, 16, fold=False)
    assert fewer.synops_per_step.sum() < loop.synops_per_step.sum()

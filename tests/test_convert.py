"""ANN -> SNN conversion (weighted and rate coding) against independent ANN computations.

The SNN is run with a tiny step loop written here (reset, encode, loop); each hidden layer's
spike train is decoded with ``decode_weighted`` and compared with the ANN activation divided by
an independently computed normalisation scale (max over the calibration data).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from torch import nn

from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.graph import UnsupportedLayerError
from snntorch_weighted.conversion.layers import Scale, SpikeMaxPool2d
from snntorch_weighted.neurons import WeightedLeaky
from snntorch_weighted.neurons.reset import reset
from snntorch_weighted.spikegen import decode_weighted

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return x[:1200], y[:1200], x[1200:1500], y[1200:1500]


def _train(model: nn.Module, x, y, steps: int = 150) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for i in range(steps):
        idx = torch.arange(i * 128, (i + 1) * 128) % len(y)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def _quantize(x: torch.Tensor, k: int) -> torch.Tensor:
    """Independent K-bit input quantiser (round half up, saturate at 1 - 2**-K)."""
    return torch.clamp(torch.floor(x * 2**k + 0.5), max=2**k - 1) / 2**k


def _run(snn, x: torch.Tensor, num_steps: int):
    """Tiny simulation loop: output membranes per step and every hidden neuron's spike train."""
    reset(snn)
    trains: dict[str, list[torch.Tensor]] = {name: [] for name, _ in snn.neurons()}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=name: trains[n].append(out))
             for name, m in snn.neurons()]
    spikes = snn.encode(x, num_steps)
    mems = []
    with torch.no_grad():
        for t in range(num_steps):
            mems.append(snn(spikes[t]))
    for h in hooks:
        h.remove()
    return torch.stack(mems), {k: torch.stack(v) for k, v in trains.items()}


def _relu_activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """ANN ReLU outputs by module name (each test model uses every ReLU module once)."""
    acts: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=name: acts.__setitem__(n, out))
             for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    acts["__out__"] = logits
    return acts


def _layer_errors(model, x, k: int, periods: int):
    """Mean |decoded SNN layer - ANN layer / lambda| per hidden layer, and the output error."""
    snn = convert(model, x, coding="weighted", num_phases=k, normalization="max",
                  progress=False)
    lam = {n: a.max().item() for n, a in _relu_activations(model, x).items()}
    ref = _relu_activations(model, _quantize(x, k))
    mems, trains = _run(snn, x, periods * k)
    errs = {}
    for name, train in trains.items():
        target = (ref[name] / lam[name]).clamp(max=1 - 2**-k)
        errs[name] = (decode_weighted(train, k) - target).abs().mean().item()
    out = snn.decode(mems[-1], periods * k)
    out_err = ((out - ref["__out__"]).abs().mean() / ref["__out__"].abs().mean()).item()
    return snn, errs, out_err


class Residual(nn.Module):
    """conv-BN-ReLU stem, a block with identity shortcut, a block with a 1x1 conv shortcut."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.a1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.a2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.relu_a = nn.ReLU()
        self.b1 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), nn.ReLU())
        self.b2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.short = nn.Sequential(nn.Conv2d(c, 2 * c, 1, 2), nn.BatchNorm2d(2 * c))
        self.relu_b = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 10))
        nn.init.constant_(self.stem[1].weight, 0.2)  # stem and join scales differ (Scale != 1)
        nn.init.constant_(self.a2[1].weight, 3.0)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu_a(self.a2(self.a1(x)) + x)
        x = self.relu_b(self.b2(self.b1(x)) + self.short(x))
        return self.head(x)


def _bn_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


LAYER_MODELS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16),
                                 nn.ReLU(), nn.Linear(16, 10)),
    "conv_maxpool": lambda: nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(24, 10)),
    "avgpool_depthwise": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 10)),
    "conv1d": lambda: nn.Sequential(  # input reshaped to [B, 1, 64]
        nn.Conv1d(1, 4, 5, stride=2), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 30, 10)),
    "residual": Residual,
}


def _model_input(name: str, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), 1, 64) if name == "conv1d" else x


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_layer_by_layer_matches_normalised_ann(name, digits):
    """Every hidden layer's decoded train approaches a_l / lambda_l as 1/periods; no bias left.

    A systematic error (a wrong weight/bias normalisation, eq. 8 missing, a wrong shortcut
    scale) does not shrink with the number of periods, so both checks below catch it.
    """
    torch.manual_seed(0)
    k = 3
    x = _model_input(name, digits[0][:48])
    model = _bn_stats(LAYER_MODELS[name](), x)
    _, errs_short, out_short = _layer_errors(model, x, k, periods=2)
    snn, errs_long, out_long = _layer_errors(model, x, k, periods=16)
    assert list(errs_long) == [n for n, _ in snn.neurons()]
    for depth, layer in enumerate(errs_long, start=1):
        assert errs_long[layer] <= 0.2 * depth / 16, (layer, errs_long)
        assert errs_long[layer] < 0.5 * errs_short[layer], (layer, errs_short, errs_long)
    assert out_long < 0.05 and out_long < out_short
    kinds = {type(m) for m in snn.modules()}
    assert (SpikeMaxPool2d in kinds) == (name == "conv_maxpool")
    assert (Scale in kinds) == (name == "residual")  # the identity shortcut into relu_a


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), periods=st.integers(1, 4),
       skip=st.integers(0, 2))
def test_output_integrator_is_exact(seed, k, periods, skip):
    """Eq. 8 + 16: a single layer's output membrane is (periods - skip) * (W x_q + b) exactly."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(5, 3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 5, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64) * 3)
    x = torch.rand(4, 5, generator=g, dtype=torch.float64)
    snn = convert(layer, x, num_phases=k, skip_periods=skip, progress=False)
    mems, _ = _run(snn, x, (periods + skip) * k)
    expected = periods * (_quantize(x, k) @ layer.weight.T + layer.bias)
    torch.testing.assert_close(mems[-1], expected.detach(), rtol=1e-9, atol=1e-9)
    decoded = snn.decode(mems[-1], (periods + skip) * k)
    torch.testing.assert_close(decoded, expected.detach() / periods)
    assert snn.latency == k and snn.num_phases == k and snn.coding == "weighted"


def test_rate_output_integrator_is_exact():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    x = torch.rand(5, 2, 3)
    snn = convert(layer, x, coding="rate", progress=False)
    assert snn.num_phases is None and snn.neurons() == []
    reset(snn)
    spikes = snn.encode(x, 40)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        for t in range(40):
            mem = snn(spikes[t])
    expected = layer(spikes.sum(0)) + 39 * layer[1].bias  # sum_t (W s_t + b)
    torch.testing.assert_close(mem, expected.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(snn.decode(mem, 40), expected.detach() / 40)


@pytest.fixture(scope="module")
def trained(digits):
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(64, 10))
    return {"mlp": _train(mlp, xtr, ytr, 100), "cnn": _train(cnn, xtr, ytr, 100)}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_digits_snn_reaches_ann_accuracy(name, trained, digits):
    """Output membrane / periods approaches the ANN logits; accuracy within a few periods."""
    xtr, _, xte, yte = digits
    model = trained[name]
    with torch.no_grad():
        logits = model(xte)
    ann_acc = (logits.argmax(1) == yte).float().mean().item()
    assert ann_acc > 0.85
    k, periods = 8, 8
    snn = convert(model, xtr[:300], num_phases=k, progress=False)
    mems, _ = _run(snn, xte, periods * k)
    rel, acc = {}, {}
    for n in range(1, periods + 1):
        out = snn.decode(mems[n * k - 1], n * k)
        rel[n] = ((out - logits).abs().mean() / logits.abs().mean()).item()
        acc[n] = (out.argmax(1) == yte).float().mean().item()
    assert max(acc[n] for n in range(2, 5)) >= ann_acc - 0.01, (acc, ann_acc)
    assert min(acc[n] for n in range(4, periods + 1)) >= ann_acc - 0.03, (acc, ann_acc)
    assert rel[8] < 0.1 and rel[8] < rel[2] < rel[1], rel
    # the rate-coded baseline is further from the logits after the same number of steps
    rate = convert(model, xtr[:300], coding="rate", progress=False)
    torch.manual_seed(0)
    rate_mems, _ = _run(rate, xte, 4 * k)
    rate_rel = ((rate.decode(rate_mems[-1], 4 * k) - logits).abs().mean()
                / logits.abs().mean()).item()
    assert rate_rel > rel[4], (rate_rel, rel)


def test_percentile_normalisation_is_the_nearest_rank_of_positive_activations(digits):
    torch.manual_seed(0)
    x = digits[0][:100]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10))
    with torch.no_grad():
        act = model[2](model[1](model[0](x))).flatten()
    pos = act[act > 0].sort().values
    lam = pos[int(torch.ceil(torch.tensor(0.9 * len(pos)))) - 1].item()
    snn = convert(model, x, normalization="percentile", percentile=90.0, progress=False)
    first = snn.graph.get_submodule("1")
    torch.testing.assert_close(first.weight, model[1].weight / lam)
    k = 8
    torch.testing.assert_close(first.bias, model[1].bias / lam / (1 - 2**-k))
    last = snn.graph.get_submodule("3")
    torch.testing.assert_close(last.weight, model[3].weight * lam)
    torch.testing.assert_close(last.bias, model[3].bias / (1 - 2**-k))
    assert not torch.equal(model[1].weight, first.weight)  # the user's model is untouched


def test_input_mean_std_folding(digits):
    torch.manual_seed(0)
    x = digits[0][:64]
    mean, std = 0.3, 0.4
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match=r"inputs must be in \[0, ?1\].*input_mean/input_std"):
        convert(model, (x - mean) / std, progress=False)
    snn = convert(model, x, input_mean=mean, input_std=std, num_phases=8, progress=False)
    with torch.no_grad():
        logits = model((_quantize(x, 8) - mean) / std)
    mems, _ = _run(snn, x, 128)
    rel = (snn.decode(mems[-1], 128) - logits).abs().mean() / logits.abs().mean()
    assert rel < 0.05
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 10))
    with pytest.warns(UserWarning, match="padded border"):
        convert(conv, x, input_mean=[mean], input_std=[std], progress=False)
    with pytest.raises(ValueError, match="both"):
        convert(model, x, input_mean=mean, progress=False)


def test_torchvision_resnet18_converts():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    _bn_stats(model, torch.rand(4, 3, 16, 16))
    x = torch.rand(2, 3, 16, 16)
    snn = convert(model, x, num_phases=4, progress=False)
    names = [n for n, _ in snn.neurons()]
    assert len(names) == 17 and all(isinstance(m, WeightedLeaky) for _, m in snn.neurons())
    assert sum(isinstance(m, Scale) for m in snn.modules()) == 5  # identity shortcuts
    assert sum(isinstance(m, SpikeMaxPool2d) for m in snn.modules()) == 1
    mems, trains = _run(snn, x, 8)
    assert mems.shape == (8, 2, 10) and torch.isfinite(mems).all()
    # the stem neuron already tracks the normalised ANN activation
    lam = _relu_activations(model, x)
    with torch.no_grad():
        stem = F.relu(snn.graph.get_submodule("conv1")(_quantize(x, 4)))
    decoded = decode_weighted(trains["relu"], 4)
    err = (decoded - stem.clamp(max=1 - 2**-4)).abs().mean()
    assert err < 0.2 / 2, err  # layer 1 after 2 periods (cf. the layer-by-layer tolerance)
    assert lam  # ANN still runs (the conversion left it alone)


def test_mobilenet_v3_names_every_unsupported_node():
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    with pytest.raises(UnsupportedLayerError) as info:
        convert(model, torch.rand(2, 3, 32, 32), progress=False)
    assert "node 'features_0_2' (Hardswish at 'features.0.2'): replace it" in str(info.value)
    kinds = {b.op.split(" at ")[0] for b in info.value.blockers}
    assert kinds == {"Hardswish", "Hardsigmoid", "operator.mul"}, kinds


@pytest.mark.parametrize(
    ("data", "kwargs", "pattern"),
    [
        (torch.zeros(0, 1, 8, 8), {}, "empty"),
        ([], {}, "empty"),
        (torch.full((2, 1, 8, 8), float("nan")), {}, "NaN"),
        (torch.full((2, 1, 8, 8), 2.0), {}, r"\[0, 1\]"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.long), {}, "floating point"),
        (torch.rand(2, 1, 8, 8), {"coding": "phase"}, "coding"),
        (torch.rand(2, 1, 8, 8), {"normalization": "mean"}, "normalization"),
        (torch.rand(2, 1, 8, 8), {"percentile": 0}, "percentile"),
        (torch.rand(2, 1, 8, 8), {"num_phases": 0}, "num_phases"),
        (iter([torch.rand(2, 1, 8, 8)]), {}, "re-iterable"),
        (["x"], {}, "Tensor"),
    ],
)
def test_bad_inputs_raise(data, kwargs, pattern):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=pattern):
        convert(model, data, progress=False, **kwargs)


def test_dataloader_and_unknown_kwargs(digits):
    x, y = digits[0][:40], digits[1][:40]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    a = convert(model, loader, normalization="max", progress=False)
    b = convert(model, x, normalization="max", progress=False)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        torch.testing.assert_close(pa, pb)
    with pytest.raises(TypeError, match="unexpected"):
        convert(model, x, progress=False, bogus=1)
    with pytest.raises(ValueError, match="weighted"):
        convert(model, x, coding="rate", skip_periods=1, progress=False)

"""Tests for graph capture and canonicalisation (snntorch_weighted.graph)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snntorch_weighted.conversion.graph import (
    SUPPORTED_MODULES,
    UnsupportedLayerError,
    capture,
    is_move,
)
from snntorch_weighted.conversion.ops import ChannelAffine, ClippedReLU


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


class FunctionalNet(nn.Module):
    """Every spelling the canonicaliser has to recognise."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn_dw = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.idn = nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 4 * 4, 6)
        self.bn1d = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        a = self.relu(self.bn(self.conv(x)))
        b = F.relu(self.bn_dw(self.dw(a)))
        b = torch.relu(self.drop(b) + a)
        b += self.idn(a)
        b = F.max_pool2d(b, 2)
        b = F.dropout(b, 0.3, self.training)
        c = b.view(b.size(0), -1).relu()
        d = torch.flatten(b, 1) + c.reshape(c.shape[0], -1)
        e = self.relu(self.bn1d(self.fc(torch.add(d, d.relu_()))))
        return self.out(e)


class MulNet(nn.Module):
    def forward(self, x):
        return x * 2


def _allowed(gm) -> None:
    for node in gm.graph.nodes:
        if node.op == "call_module":
            assert isinstance(gm.get_submodule(node.target), SUPPORTED_MODULES), node.name
        else:
            assert node.op in ("placeholder", "output") or node.target is operator.add or \
                is_move(node), node


def test_capture_residual_and_bn_folding_is_exact():
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(3)
            self.conv2 = nn.Conv1d(3, 4, 2, groups=1)
            self.bn2 = nn.BatchNorm1d(4)

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)) + x)
            z = F.relu(self.bn2(self.conv2(y.flatten(2))))
            return nn.functional.adaptive_avg_pool2d(z, 1)

    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.AvgPool2d(2), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Dropout(), nn.Linear(12, 5), nn.BatchNorm1d(5))
    _randomise_bn(model)
    x = torch.rand(4, 2, 8, 8)
    gm = capture(model, x)
    _allowed(gm)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)
    kinds = [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes
             if n.op == "call_module"]
    # BN folded, dropout gone, MaxPool->ReLU commuted to ReLU->MaxPool
    assert kinds == ["Conv2d", "ReLU", "AvgPool2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), batch=st.integers(1, 5))
def test_capture_functional_spellings(seed, batch):
    torch.manual_seed(seed)
    model = _randomise_bn(FunctionalNet(), seed)
    x = torch.rand(batch, 2, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = capture(model, x)
    _allowed(gm)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)
    # the user's model is untouched
    assert model.relu.inplace and isinstance(model.bn, nn.BatchNorm2d)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the shared self.relu got one module per call site
    relu_targets = [n.target for n in gm.graph.nodes
                    if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    assert len(relu_targets) == len(set(relu_targets)) == 6
    assert all(not gm.get_submodule(t).inplace for t in relu_targets)
    assert gm.training is False


def test_capture_does_not_change_training_mode():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU()).train()
    capture(model, torch.rand(4, 3))
    assert model.training and model[1].training


def test_torchvision_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 16, 16))
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    gm = capture(model, x)
    _allowed(gm)
    adds = [n for n in gm.graph.nodes if n.target is operator.add]
    relus = [n for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    assert len(adds) == 8 and len(relus) == 17
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-4)


def test_mobilenet_v2_relu6_becomes_clipped_relu():
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    gm = capture(model, x)
    clipped = [m for m in gm.modules() if isinstance(m, ClippedReLU)]
    assert len(clipped) == 35 and all(m.ceiling == 6.0 for m in clipped)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (nn.Sequential(nn.Linear(3, 3), nn.Sigmoid()), r"node '_1' \(Sigmoid at '1'\)"),
        (nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), r"node '_1' \(LayerNorm at '1'\)"),
        (MulNet(), r"node 'mul' \(operator.mul\)"),
        (nn.Sequential(nn.Linear(3, 3), nn.Hardtanh(-1.0, 1.0)), r"\(Hardtanh at "),
    ],
)
def test_unsupported_layers_are_named(model, pattern):
    with pytest.raises(UnsupportedLayerError, match=pattern):
        capture(model)
    assert issubclass(UnsupportedLayerError, ValueError)


def test_cat_is_kept_and_constant_add_is_refused():
    class Cat(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], 1)

    class AddConst(nn.Module):
        def forward(self, x):
            return x + 1.0

    gm = capture(Cat(), torch.rand(2, 3))
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [torch.cat]
    with pytest.raises(ValueError, match="needs example_input"):
        capture(Cat())
    with pytest.raises(UnsupportedLayerError, match=r"node 'add'.*constant"):
        capture(AddConst())
    with pytest.raises(TypeError):
        capture("not a model")


def test_bn_that_cannot_be_folded_becomes_an_affine_synapse():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.bn = nn.BatchNorm2d(1)
            self.bn2 = nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn2(torch.relu(self.bn(y) + y).flatten(1))

    model = _randomise_bn(Shared(), 3).eval()
    x = torch.rand(3, 1, 2, 2)
    gm = capture(model, x)
    assert isinstance(gm.get_submodule("bn"), ChannelAffine)
    assert isinstance(gm.get_submodule("bn2"), ChannelAffine)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)

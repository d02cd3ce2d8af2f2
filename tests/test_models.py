"""Tests of the model zoo: shapes, parameter counts from the paper's layer lists, fx tracing."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snntorch_weighted import models


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


CASES = [
    (models.digits_mlp, (1, 8, 8)),
    (models.digits_cnn, (1, 8, 8)),
    (models.net1, (1, 28, 28)),
    (models.net2, (1, 28, 28)),
    (models.net4, (3, 32, 32)),
    (models.resnet20, (3, 32, 32)),
]


@pytest.mark.parametrize("factory, shape", CASES, ids=[c[0].__name__ for c in CASES])
def test_output_shape_and_fx_trace(factory, shape):
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.shape == (3, 10)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_parameter_counts_match_table1_layer_lists():
    # Net1: 784-1200-1200-10 (Kim et al. Table 2 lists 2.4M synapses).
    assert _params(models.net1()) == _linear(784, 1200) + _linear(1200, 1200) + _linear(1200, 10)
    # Net2: 12c5-2s-64c5-2s-10 on 28x28 without padding: 28-24-12-8-4.
    assert _params(models.net2()) == _conv(1, 12, 5) + _conv(12, 64, 5) + _linear(64 * 16, 10)
    # Net4: 32c3-32c3-2s-64c3-64c3-2s-512-10, BN (2 params/channel) instead of conv/FC biases.
    bn = 2 * (32 + 32 + 64 + 64 + 512)
    convs = sum(_conv(a, b, 3, bias=False) for a, b in [(3, 32), (32, 32), (32, 64), (64, 64)])
    fcs = _linear(64 * 8 * 8, 512, bias=False) + _linear(512, 10)
    assert _params(models.net4()) == convs + fcs + bn
    # ResNet-20 (He et al.): 269,722 parameters with option-A shortcuts; option B adds two 1x1
    # convs (16->32, 32->64) and their BatchNorms.
    assert _params(models.resnet20()) == 269_722 + 16 * 32 + 32 * 64 + 2 * (32 + 64)


def test_net4_without_batch_norm_has_biases_and_same_shape():
    model = models.net4(batch_norm=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("factory", [models.net2, models.net4, models.digits_cnn])
def test_pool_option(factory):
    assert sum(isinstance(m, nn.MaxPool2d) for m in factory().modules()) == 2
    avg = factory(pool="avg")
    assert sum(isinstance(m, nn.AvgPool2d) for m in avg.modules()) == 2
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.modules())
    with pytest.raises(ValueError, match="pool"):
        factory(pool="median")


def test_net2_matches_independent_functional_forward():
    torch.manual_seed(1)
    model = models.net2().eval()
    c1, c2, fc = model[0], model[3], model[7]
    x = torch.rand(4, 1, 28, 28)
    h = F.max_pool2d(F.relu(F.conv2d(x, c1.weight, c1.bias)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, c2.weight, c2.bias)), 2)
    expected = h.flatten(1) @ fc.weight.T + fc.bias
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("widths", [(16, 32, 64), (16, 32, 32)])
def test_resnet20_structure(widths):
    model = models.resnet20(widths=widths)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 19  # Kim et al.: 19 conv layers
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2  # two downsampling shortcuts
    assert [m.out_channels for m in convs if m.kernel_size == (3, 3)] == (
        [widths[0]] * 7 + [widths[1]] * 6 + [widths[2]] * 6
    )
    graph = torch.fx.symbolic_trace(model).graph
    adds = [n for n in graph.nodes if n.op == "call_function" and n.target in (operator.add,)]
    assert len(adds) == 9  # one residual join per block
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)


def test_resnet_bad_config():
    with pytest.raises(ValueError, match="widths"):
        models.ResNetCIFAR(widths=(16, 32))
    with pytest.raises(ValueError, match="blocks_per_stage"):
        models.ResNetCIFAR(blocks_per_stage=0)


def test_basic_block_identity_and_projection():
    torch.manual_seed(2)
    same = models.BasicBlock(8, 8).eval()
    assert same.shortcut is None
    x = torch.rand(2, 8, 6, 6)
    inner = same.bn2(same.conv2(F.relu(same.bn1(same.conv1(x)))))
    torch.testing.assert_close(same(x), F.relu(inner + x))
    down = models.BasicBlock(8, 16, stride=2).eval()
    assert down(x).shape == (2, 16, 3, 3)


def test_batch_norm_variants_of_net1_net2():
    # BN after each hidden Linear / Conv; those layers lose their bias (BN's shift replaces it).
    n1 = _linear(784, 1200, False) + _linear(1200, 1200, False) + _linear(1200, 10) + 2 * 2400
    assert _params(models.net1(batch_norm=True)) == n1
    n2 = _conv(1, 12, 5, False) + _conv(12, 64, 5, False) + _linear(64 * 16, 10) + 2 * (12 + 64)
    assert _params(models.net2(batch_norm=True)) == n2
    for model in (models.net1(batch_norm=True), models.net2(batch_norm=True)):
        kinds = [type(m) for m in model]
        bn_after = [
            kinds[i - 1] for i, k in enumerate(kinds) if k in (nn.BatchNorm1d, nn.BatchNorm2d)
        ]
        assert bn_after and all(k in (nn.Linear, nn.Conv2d) for k in bn_after)
        model.eval()
        x = torch.rand(2, 1, 28, 28)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))

"""Independent integer reference of the radix twin (pure int64 tensor ops) and the test models.

Shared by ``test_quant.py`` and ``test_radix_convert.py``. Nothing here calls the package's
forward: the reference recomputes every layer from the extracted integer parameters (w, b, s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from snntorch_weighted.models import BasicBlock


def code(x: Tensor, num_bits: int) -> Tensor:
    """Input code ``clamp(floor(x 2^T + 1/2), 0, 2^T - 1)`` in int64."""
    return torch.floor(x.double() * 2**num_bits + 0.5).long().clamp(0, 2**num_bits - 1)


def linear(y: Tensor, w: Tensor) -> Tensor:
    return (y[:, None, :] * w[None, :, :]).sum(-1)


def conv2d(y: Tensor, w: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Integer conv by summing shifted slices (groups = 1)."""
    y = F.pad(y, (padding,) * 4)
    c_out, _, kh, kw = w.shape
    h = (y.shape[2] - kh) // stride + 1
    wd = (y.shape[3] - kw) // stride + 1
    out = torch.zeros(y.shape[0], c_out, h, wd, dtype=torch.long)
    for i in range(kh):
        for j in range(kw):
            patch = y[:, :, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (wd - 1) + 1 :
                      stride]
            out += (patch[:, None] * w[None, :, :, i, j, None, None]).sum(2)
    return out


def pool(y: Tensor, k: int, reduce: str) -> Tensor:
    """Non-overlapping k x k max or sum pool (stride k)."""
    b, c, h, w = y.shape
    blocks = y[:, :, : h // k * k, : w // k * k].reshape(b, c, h // k, k, w // k, k)
    return blocks.amax((3, 5)) if reduce == "max" else blocks.sum((3, 5))


def neuron(acc: Tensor, p, num_bits: int) -> Tensor:
    """``clamp(floor((acc + b) / 2^s), 0, 2^T - 1)`` with an arithmetic shift."""
    total = acc + p.bias
    total = total >> p.shift if p.shift >= 0 else total << -p.shift
    return total.clamp(0, 2**num_bits - 1)


def weights(params) -> dict[str, Tensor]:
    """Integer weight per layer name (over all neurons' paths)."""
    return {path.layer: path.weight for p in params.values() for path in p.paths}


# ----------------------------------------------------------------------------- models


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 10))


def mlp_reference(params, x: Tensor, num_bits: int) -> dict[str, Tensor]:
    w = weights(params)
    y0 = code(x, num_bits).flatten(1)
    y2 = neuron(linear(y0, w["1"]), params["2"], num_bits)
    y4 = neuron(linear(y2, w["3"]), params["4"], num_bits)
    out = linear(y4, w["5"]) + params["output_quant"].bias
    return {"input_quant": code(x, num_bits), "2": y2, "4": y4, "output_quant": out}


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 10),
    )


def cnn_reference(params, x: Tensor, num_bits: int) -> dict[str, Tensor]:
    w = weights(params)
    y0 = code(x, num_bits)
    y1 = neuron(conv2d(y0, w["0"], padding=1), params["1"], num_bits)
    m = pool(y1, 2, "max")
    y5 = neuron(conv2d(m, w["3"], padding=1), params["5"], num_bits)
    s = pool(y5, 2, "sum").flatten(1)
    out = linear(s, w["8"]) + params["output_quant"].bias
    return {"input_quant": y0, "1": y1, "5": y5, "output_quant": out}


class TinyResNet(nn.Module):
    """Stem conv + identity block + downsampling block + global average pool + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block1 = BasicBlock(4, 4)
        self.block2 = BasicBlock(4, 6, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_reference(params, x: Tensor, num_bits: int) -> dict[str, Tensor]:
    names = list(params)  # graph order: stem relu, b1 relu, b1 join, b2 relu, b2 join, output
    p = [params[n] for n in names]
    y0 = code(x, num_bits)

    def path_w(neuron_params, source):
        return [q.weight for q in neuron_params.paths if q.source == source]

    ya = neuron(conv2d(y0, p[0].paths[0].weight, padding=1), p[0], num_bits)
    yb = neuron(conv2d(ya, p[1].paths[0].weight, padding=1), p[1], num_bits)
    (w_main,), (w_id,) = path_w(p[2], names[1]), path_w(p[2], names[0])
    yc = neuron(conv2d(yb, w_main, padding=1) + w_id * ya, p[2], num_bits)
    yd = neuron(conv2d(yc, p[3].paths[0].weight, stride=2, padding=1), p[3], num_bits)
    (w_main,), (w_short,) = path_w(p[4], names[3]), path_w(p[4], names[2])
    ye = neuron(conv2d(yd, w_main, padding=1) + conv2d(yc, w_short, stride=2), p[4], num_bits)
    s = ye.sum((2, 3))
    out = linear(s, p[5].paths[0].weight) + p[5].bias
    return {"input_quant": y0, names[0]: ya, names[1]: yb, names[2]: yc, names[3]: yd,
            names[4]: ye, "output_quant": out}


MODELS = {"mlp": (mlp, mlp_reference), "cnn": (cnn, cnn_reference),
          "resnet": (TinyResNet, resnet_reference)}


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (so folding is not trivial)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
            if m.bias is not None:
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def test_reference_helpers_match_torch() -> None:
    """The integer helpers agree with torch's float ops on integer data (sanity of the oracle)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 16, (2, 3, 8, 8), generator=g)
    w = torch.randint(-127, 128, (5, 3, 3, 3), generator=g)
    for stride, padding in [(1, 1), (2, 1), (2, 0)]:
        expected = F.conv2d(y.double(), w.double(), stride=stride, padding=padding)
        assert torch.equal(conv2d(y, w, stride, padding), expected.long())
    assert torch.equal(pool(y, 2, "max"), F.max_pool2d(y.double(), 2).long())
    assert torch.equal(pool(y, 2, "sum"), (F.avg_pool2d(y.double(), 2) * 4).long())
    assert torch.equal(code(torch.tensor([0.0, 0.49 / 16, 0.5 / 16, 1.0]), 4),
                       torch.tensor([0, 0, 1, 15]))

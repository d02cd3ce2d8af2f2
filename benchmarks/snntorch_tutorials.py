"""snntorch tutorials 5 and 6 with the neuron class swapped: snn.Leaky, WeightedLeaky, RadixLeaky.

Tutorial 5: a fully connected net (inputs -> 1000 -> 10) trained with BPTT, the cross-entropy of
the output membrane summed over every step, the static input fed at each of 25 steps. Tutorial 6:
a small CNN with ``init_hidden=True`` neurons and ``SF.ce_rate_loss``, accuracy by spike count
(``SF.accuracy_rate``). The tutorials' MNIST is replaced by scikit-learn's digits (8x8, 1797
images, bundled: no download), scaled to [0, 1], 25 % held out; the CNN's kernels are 3x3 (padded)
for the 8x8 images. Each neuron is built the way a user swapping the class would:
``Neuron(beta=...)``; for ``RadixLeaky``, whose decay is fixed by its dynamics, ``beta`` is refused
with a ``ValueError``, so it is built without it and trained as is (the first backward pass then
stops with the message that names its route). Results go to ``results/snntorch_tutorials.json``
(one entry per tutorial and neuron, kept between runs: the script is resumable) and a markdown table
is printed.

    OMP_NUM_THREADS=1 nice python benchmarks/snntorch_tutorials.py [--epochs 20] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import snntorch as snn
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from snntorch import functional as SF  # noqa: N812
from snntorch import surrogate, utils
from torch import nn

import snntorch_weighted as sw

RESULTS = Path(__file__).parent / "results" / "snntorch_tutorials.json"
NEURONS = {"snn.Leaky": snn.Leaky, "WeightedLeaky": sw.WeightedLeaky, "RadixLeaky": sw.RadixLeaky}
NUM_STEPS = 25


def make_neuron(name: str, beta: float, **kw):
    """``Neuron(beta=beta, **kw)``; without ``beta`` when the class refuses it (RadixLeaky)."""
    try:
        return NEURONS[name](beta=beta, **kw)
    except ValueError as err:
        print(f"  {name}(beta={beta}) refused: {str(err)[:100]}... -> built without beta")
        return NEURONS[name](**kw)


def digits(seed: int = 0):
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def batches(x, y, size: int, shuffle: bool, gen: torch.Generator):
    order = torch.randperm(len(x), generator=gen) if shuffle else torch.arange(len(x))
    for i in range(0, len(x), size):
        idx = order[i:i + size]
        yield x[idx], y[idx]


class FCN(nn.Module):
    """Tutorial 5: explicit state, ``init_leaky()`` per forward, membranes of every step."""

    def __init__(self, name: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 1000), nn.Linear(1000, 10)
        self.lif1, self.lif2 = make_neuron(name, 0.95), make_neuron(name, 0.95)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def cnn(name: str) -> nn.Module:
    """Tutorial 6's CNN for 8x8 inputs: 12c3-MP2-64c3-MP2-FC10, ``init_hidden=True``."""
    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Conv2d(1, 12, 3, padding=1), nn.MaxPool2d(2),
        make_neuron(name, 0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 3, padding=1), nn.MaxPool2d(2),
        make_neuron(name, 0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(64 * 2 * 2, 10),
        make_neuron(name, 0.5, spike_grad=grad, init_hidden=True, output=True),
    )


def run_cnn(net: nn.Module, x: torch.Tensor):
    utils.reset(net)
    sw.reset(net)
    spk_rec = []
    for _ in range(NUM_STEPS):
        spk, _ = net(x)
        spk_rec.append(spk)
    return torch.stack(spk_rec)


def tutorial5(name: str, data, epochs: int, gen: torch.Generator) -> dict:
    x_tr, x_te, y_tr, y_te = data
    net = FCN(name)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.999))
    loss_fn = nn.CrossEntropyLoss()
    loss = torch.zeros(())
    for _ in range(epochs):
        for xb, yb in batches(x_tr, y_tr, 128, True, gen):
            _, mem = net(xb)
            loss = sum(loss_fn(mem[t], yb) for t in range(NUM_STEPS))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        spk, _ = net(x_te)
    acc = (spk.sum(0).argmax(1) == y_te).float().mean().item()
    return {"accuracy": acc, "final_loss": float(loss.detach())}


def tutorial6(name: str, data, epochs: int, gen: torch.Generator) -> dict:
    x_tr, x_te, y_tr, y_te = data
    net = cnn(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.9, 0.999))
    loss_fn = SF.ce_rate_loss()
    loss = torch.zeros(())
    for _ in range(epochs):
        for xb, yb in batches(x_tr, y_tr, 128, True, gen):
            loss = loss_fn(run_cnn(net, xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = SF.accuracy_rate(run_cnn(net, x_te), y_te)
    return {"accuracy": float(acc), "final_loss": float(loss.detach())}


def run_one(tutorial: str, name: str, epochs: int) -> dict:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    start = time.time()
    try:
        fn = tutorial5 if tutorial == "tutorial5" else tutorial6
        result = fn(name, digits(), epochs, gen)
    except RuntimeError as err:  # RadixLeaky: the first backward names the route
        result = {"accuracy": None, "stopped": str(err)}
    result.update(epochs=epochs, seconds=round(time.time() - start, 1))
    return result


def table(results: dict) -> str:
    lines = ["| tutorial | snn.Leaky | WeightedLeaky | RadixLeaky |", "|---|---|---|---|"]
    for tutorial in ("tutorial5", "tutorial6"):
        cells = []
        for name in NEURONS:
            r = results.get(f"{tutorial}/{name}")
            if r is None:
                cells.append("-")
            elif r["accuracy"] is None:
                cells.append("stops at the first backward (names quant.prepare -> convert)")
            else:
                cells.append(f"{100 * r['accuracy']:.1f} %")
        lines.append(f"| {tutorial} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {} if args.fresh or not RESULTS.exists() else json.loads(RESULTS.read_text())
    for tutorial in ("tutorial5", "tutorial6"):
        for name in NEURONS:
            key = f"{tutorial}/{name}"
            if key in results and results[key]["epochs"] == args.epochs:
                continue
            print(f"{key} ...", flush=True)
            results[key] = run_one(tutorial, name, args.epochs)
            print(f"  {results[key]}", flush=True)
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()

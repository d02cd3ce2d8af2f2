"""One ``WeightedLeaky`` step against one ``snn.Leaky`` step, side by side in one process.

Both neurons are built the same way (``init_hidden=True``, default options; ``beta=0.9`` for
``snn.Leaky``, which has no default), fed the same ``[batch, features]`` input, and timed in
interleaved repeats (the order alternates each repeat) so that machine noise hits both alike.
Reports the median time per step of each and their ratio, in inference (``torch.no_grad``) and
with gradients (a BPTT forward step), for batch 1 and 64.

    OMP_NUM_THREADS=1 nice python benchmarks/neuron_step.py [--repeats 31] [--steps 400]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import snntorch as snn
import torch

import snntorch_weighted as sw


def per_step(neuron, x: torch.Tensor, steps: int, grad: bool) -> float:
    """Seconds per step over ``steps`` steps of a freshly reset neuron."""
    neuron.reset_mem()
    with nullcontext() if grad else torch.no_grad():
        start = time.perf_counter()
        for _ in range(steps):
            neuron(x)
        return (time.perf_counter() - start) / steps


def compare(batch: int, features: int, grad: bool, repeats: int, steps: int) -> dict:
    x = torch.rand(batch, features, requires_grad=grad)
    neurons = {"snn.Leaky": snn.Leaky(0.9, init_hidden=True),
               "WeightedLeaky": sw.WeightedLeaky(init_hidden=True)}
    times = {name: [] for name in neurons}
    for neuron in neurons.values():  # warm-up
        per_step(neuron, x, steps // 4, grad)
    for r in range(repeats):
        order = list(neurons) if r % 2 == 0 else list(reversed(neurons))
        for name in order:
            times[name].append(per_step(neurons[name], x, steps, grad))
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"batch": batch, "grad": grad, "leaky_us": 1e6 * med["snn.Leaky"],
            "weighted_us": 1e6 * med["WeightedLeaky"],
            "ratio": med["WeightedLeaky"] / med["snn.Leaky"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--features", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, snntorch {snn.__version__}, 1 thread, "
          f"{args.features} features, median of {args.repeats} interleaved repeats of "
          f"{args.steps} steps")
    print("| batch | mode | snn.Leaky (us/step) | WeightedLeaky (us/step) | ratio |")
    print("|---|---|---|---|---|")
    for grad in (False, True):
        for batch in (1, 64):
            r = compare(batch, args.features, grad, args.repeats, args.steps)
            mode = "grad (BPTT forward)" if grad else "no_grad"
            print(f"| {batch} | {mode} | {r['leaky_us']:.1f} | {r['weighted_us']:.1f} | "
                  f"{r['ratio']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

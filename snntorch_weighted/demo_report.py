"""Reporting of :mod:`snntorch_weighted.demo`: the results table, ``results.md``, the plot and
the final summary printed under the table."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .demo import DemoResult

__all__ = ["METRICS", "checkpoints", "format_table", "plot_curves", "print_report",
           "write_results"]


def checkpoints(num_steps: int, period: int) -> list[int]:
    """Steps shown in the table: every doubling of the period, up to and including ``num_steps``."""
    steps, t = [], period
    while t < num_steps:
        steps.append(t)
        t *= 2
    return steps + [num_steps]


METRICS = """\
accuracy %: share of the test images whose output (argmax of the output integrator, decoded)
  is the label after that many time steps; steps: time steps simulated per image.
spikes/image: spikes of the hidden neurons (input excluded) per image, summed up to that step.
SynOps/image: synaptic operations per image up to that step: every spike (input included) times
  the number of synapses it reaches (its fan-out); the ANN row gives its multiply-accumulates.
radix twin: the T-bit quantised ANN (quant.prepare) that the radix SNN reproduces bit for bit."""


def format_table(result: DemoResult, args: argparse.Namespace) -> str:
    """A markdown table: coding, steps, accuracy, spikes and SynOps per image.

    The radix rows are shown once the radix stage has run (``result.twin_accuracy`` is set).
    """
    rows = [("ANN (float)", "-", f"{100 * result.ann_accuracy:.2f}", "-",
             f"{result.ann_macs:,} MACs")]
    for coding, label in (("weighted", f"weighted (K={args.phases})"), ("rate", "rate")):
        run_ = result.runs[coding]
        for t in checkpoints(len(run_.accuracy), args.phases):
            rows.append((label, str(t), f"{100 * run_.accuracy[t - 1]:.2f}",
                         f"{run_.spikes[t - 1]:,.0f}", f"{run_.synops[t - 1]:,.0f}"))
    if result.twin_accuracy is not None:
        for label, acc in zip(("before", "after"), result.twin_accuracy):
            rows.append((f"radix twin (T={args.bits} ANN), {label} fine-tuning", "-",
                         f"{100 * acc:.2f}", "-", "-"))
        radix = result.runs["radix"]
        rows.append((f"radix SNN (T={args.bits})", str(result.radix_latency),
                     f"{100 * radix.accuracy[-1]:.2f}", f"{radix.spikes[-1]:,.0f}",
                     f"{radix.synops[-1]:,.0f}"))
    header = ("coding", "steps", "accuracy %", "spikes/image", "SynOps/image")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(result: DemoResult, args: argparse.Namespace) -> Path:
    """Write the table (what exists so far) and the metric definitions to ``--out/results.md``."""
    result.table = format_table(result, args)
    path = args.out / "results.md"
    done = "" if result.twin_accuracy is not None else "\n(radix stage not finished)\n"
    if result.weights is not None:
        done += (f"\nANN: the committed {result.weights} weights "
                 f"(models.pretrained({result.weights!r})), not trained here\n")
    path.write_text(f"{result.table}\n{done}\n{METRICS}\n")
    return path


def plot_curves(result: DemoResult, args: argparse.Namespace, path: Path) -> Path:
    """Accuracy vs steps for the weighted and rate SNNs (ANN and radix for reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for coding, label in (("weighted", f"weighted spikes (K={args.phases})"),
                          ("rate", "rate coding")):
        acc = result.runs[coding].accuracy
        ax.plot(range(1, len(acc) + 1), 100 * acc, label=label)
    ax.axhline(100 * result.ann_accuracy, color="gray", linestyle="--", label="ANN")
    if result.radix_latency is not None:
        ax.plot([result.radix_latency], [100 * result.runs["radix"].accuracy[-1]], "k*",
                markersize=10, label=f"radix SNN (T={args.bits})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{args.dataset}: SNN accuracy vs time")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_report(result: DemoResult, args: argparse.Namespace, results_path: Path) -> None:
    """The table, the radix latency and bit-exactness, the metric definitions and timings."""
    print()
    print(result.table)
    print(f"\nradix SNN: latency {result.radix_latency} steps = (D + 1) x T with D = neuron "
          f"layers + max pools on the longest path; outputs bit-exact vs the quantised model on "
          f"{100 * result.bit_exact:.1f} % of the test images")
    print(METRICS)
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    print(f"results: {results_path.resolve()}\nplot: {result.plot.resolve()}")
    if not math.isclose(result.bit_exact, 1.0):
        print("WARNING: the radix SNN is not bit-exact on every image (please report this)")



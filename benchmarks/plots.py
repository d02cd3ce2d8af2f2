"""Plotting helpers shared by the benchmark scripts (matplotlib, headless ``Agg`` backend).

Every function draws one figure, saves it as a PNG at ``path`` (parent folders are created) and
returns the path, so a script can link it from its ``BENCHMARKS.md`` section::

    from plots import RESULTS_DIR, plot_accuracy_vs_steps, relative_link

    png = plot_accuracy_vs_steps(curves, ann_acc, RESULTS_DIR / "fashion_mnist_net1_acc.png")
    body += f"![accuracy vs steps]({relative_link(png, args.output)})"

Accuracies are fractions in ``[0, 1]`` on input and shown in percent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed

import matplotlib.pyplot as plt  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS_DIR",
    "plot_accuracy_vs_steps",
    "plot_radix_accuracy_vs_bits",
    "plot_spikes_vs_accuracy",
    "relative_link",
]

Curve = tuple[Sequence[float], Sequence[float]]


def relative_link(path: Path, markdown_file: Path) -> str:
    """``path`` relative to the folder of ``markdown_file``, with ``/`` separators (for links)."""
    rel = os.path.relpath(Path(path).resolve(), Path(markdown_file).resolve().parent)
    return Path(rel).as_posix()


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _percent(values: Sequence[float]) -> list[float]:
    return [100.0 * float(v) for v in values]


def _finish_accuracy_plot(
    fig: plt.Figure, ax: plt.Axes, path: Path, xlabel: str, ann_acc: float | None, title: str,
    ann_images: int | None = None,
) -> Path:
    """Common end of the accuracy plots: ANN line, labels, grid, legend, title; save."""
    if ann_acc is not None:
        on = "" if ann_images is None else f" ({ann_images} imgs)"
        ax.axhline(100.0 * ann_acc, color="k", ls="--", lw=1,
                   label=f"ANN {100 * ann_acc:.2f}%{on}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_accuracy_vs_steps(
    curves: Mapping[str, Curve],
    ann_acc: float | None,
    path: Path,
    title: str = "",
    log_x: bool = True,
    ann_images: int | None = None,
) -> Path:
    """Accuracy (%) against time steps, one line per ``label -> (steps, accuracies)``.

    ``ann_acc`` (fraction, or ``None``) is drawn as a dashed horizontal reference line, labelled
    with ``ann_images`` (the test images it was measured on) when given. The x axis is
    logarithmic (base 2) by default because rate coding needs orders of magnitude more steps.
    """
    if not curves:
        raise ValueError("plot_accuracy_vs_steps: no curves given")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (steps, acc) in curves.items():
        if len(steps) != len(acc):
            raise ValueError(f"curve {label!r}: {len(steps)} steps but {len(acc)} accuracies")
        ax.plot(list(steps), _percent(acc), marker=".", label=label)
    if log_x:
        ax.set_xscale("log", base=2)
    return _finish_accuracy_plot(fig, ax, path, "time steps", ann_acc, title, ann_images)


def plot_spikes_vs_accuracy(
    points: Mapping[str, Curve],
    path: Path,
    ann_acc: float | None = None,
    title: str = "",
    log_x: bool = True,
    ann_images: int | None = None,
) -> Path:
    """Accuracy (%) against spikes per image, one line per ``label -> (spikes, accuracies)``.

    The points of one label are joined in the given order (e.g. increasing time steps or
    decreasing early-decision threshold).
    """
    if not points:
        raise ValueError("plot_spikes_vs_accuracy: no points given")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (spikes, acc) in points.items():
        if len(spikes) != len(acc):
            raise ValueError(f"series {label!r}: {len(spikes)} spike counts but {len(acc)} accs")
        ax.plot(list(spikes), _percent(acc), marker="o", ms=3, label=label)
    if log_x:
        ax.set_xscale("log")
    return _finish_accuracy_plot(fig, ax, path, "spikes per image", ann_acc, title, ann_images)


def plot_radix_accuracy_vs_bits(
    rows: Sequence[Mapping[str, float]],
    path: Path,
    ann_acc: float | Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """Radix accuracy (%) against the number of bits T.

    Each row is a mapping with ``"bits"`` and ``"accuracy"`` and optionally ``"snn_accuracy"``
    (the converted radix SNN, drawn as crosses on top of the quantised model's line) and
    ``"model"`` (a label: rows are grouped into one line per model, e.g. ``"net1"``).
    ``ann_acc`` is the float ANN's accuracy: one value, or one per model label (dotted lines).
    """
    if not rows:
        raise ValueError("plot_radix_accuracy_vs_bits: no rows given")
    groups: dict[str, list[Mapping[str, float]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("model", "quantised")), []).append(row)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors: dict[str, str] = {}
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r["bits"])
        bits = [int(r["bits"]) for r in group]
        line = ax.plot(bits, _percent([r["accuracy"] for r in group]), marker="o", label=label)[0]
        colors[label] = line.get_color()
        snn = [(int(r["bits"]), r["snn_accuracy"]) for r in group if "snn_accuracy" in r]
        if snn:
            ax.plot(
                [b for b, _ in snn], _percent([a for _, a in snn]), ls="none", marker="x",
                ms=9, color=line.get_color(), label=f"{label} radix SNN",
            )  # fmt: skip
    if isinstance(ann_acc, Mapping):
        for label, acc in ann_acc.items():
            ax.axhline(100.0 * acc, ls=":", lw=1, color=colors.get(label, "k"))
            ax.annotate(
                f"{label} float ANN", (0.01, 100.0 * acc),
                xycoords=("axes fraction", "data"), fontsize=7, va="bottom",
            )  # fmt: skip
    elif ann_acc is not None:
        ax.axhline(100 * ann_acc, color="k", ls="--", lw=1, label=f"float ANN {100 * ann_acc:.2f}%")
    ax.set_xticks(sorted({int(r["bits"]) for r in rows}))
    ax.set_xlabel("bits T (time steps per period)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)

"""Markdown and plots of the accuracy benchmarks (``fashion_mnist.py``, ``cifar10.py``).

Every accuracy in these tables names the number of test images it was measured on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _accuracy import TOLERANCES, NetSetting, Run, decisions, ratio
from _common import markdown_table
from plots import (
    RESULTS_DIR,
    plot_accuracy_vs_steps,
    plot_radix_accuracy_vs_bits,
    plot_spikes_vs_accuracy,
    relative_link,
)

__all__ = ["ann_table", "command_line", "net_section", "pct", "radix_section", "save_json"]

TOL_NAMES = {0.01: "1%p", 0.001: "0.1%p", 0.0: "0%p"}
TOL_LOSS = {0.01: "<1%p", 0.001: "<0.1%p", 0.0: "0%p"}  # Kim Table 2's column names
KIM_NET4_DECISION = ("Kim et al. (Net4, K=8, skip 2, theta 0.9, 10000 imgs): mean decision "
                     "step 27.6, last 117, accuracy 88.16 % = 0.94 %p below the ANN's 89.1 %, "
                     "77 % spike saving.")
WANG_TABLE2 = ("Wang et al. Table 2 (CIFAR-10, 10000 imgs, fine-tuned to convergence): VGG-16 "
               "T=8 0.0 %p, T=4 -1.6 %p; ResNet-18 T=8 0.0 %p, T=4 -3.1 %p; MobileNet T=8 "
               "-0.4 %p, T=4 -1.5 %p.")


def pct(value: float | None) -> str | None:
    """A fraction as a percentage string with two decimals."""
    return None if value is None else f"{100 * value:.2f}"


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command as it was typed (``script`` relative to the repository root)."""
    return " ".join(["python", script, *argv])


def _label(run: Run) -> str:
    return f"{run.label} ({run.images} imgs)"


def curve_rows(runs: Sequence[Run], checkpoints: Sequence[int]) -> tuple[list[str], list]:
    """Accuracy (%) of every run at the ``checkpoints`` step counts (``-`` past its window)."""
    longest = max(r.steps for r in runs)
    steps = [s for s in checkpoints if s <= longest]
    rows = [[_label(r)] + [pct(float(r.accuracy[s - 1])) if s <= r.steps else None
                           for s in steps] for r in runs]  # fmt: skip
    return ["SNN (test images) \\ steps"] + [str(s) for s in steps], rows


def reach_rows(runs: Sequence[Run], found: dict) -> list[list[Any]]:
    """Per run: images, ANN and SNN accuracy, steps / spikes to each tolerance."""
    rows = []
    for run in runs:
        row: list[Any] = [run.label, run.images, pct(run.ann_acc), pct(float(run.accuracy[-1]))]
        for tol in TOLERANCES:
            r = found[(run.label, tol)]
            row += ([r.step, r.spikes] if r.step is not None
                    else [f"> {r.window}", f"> {r.window_spikes:.4g}"])
        rows.append(row)
    return rows


def table2_rows(runs: Sequence[Run], found: dict, setting: NetSetting) -> list[list[Any]]:
    """Kim Table 2: rate / weighted latency and spikes at each tolerance, and Kim's row."""
    rate = next(r for r in runs if r.label == "rate")
    rows = []
    for run in runs:
        if run is rate:
            continue
        row: list[Any] = [f"{run.label} vs rate"]
        for kind in ("steps", "spikes"):
            row += [ratio(found[("rate", t)], found[(run.label, t)], kind) for t in TOLERANCES]
        rows.append(row)
    rows.append([f"Kim et al. Table 2, {setting.kim_name} (K={setting.paper_k})",
                 *setting.kim_table2])
    return rows


def net_plots(stem: str, title: str, tag: str, runs: Sequence[Run]) -> tuple[Path, Path]:
    """Accuracy-vs-steps and spikes-vs-accuracy PNGs of one network in ``RESULTS_DIR``."""
    ann = runs[0].ann_acc
    curves = {_label(r): (list(range(1, r.steps + 1)), r.accuracy.tolist()) for r in runs}
    acc_png = plot_accuracy_vs_steps(curves, ann, RESULTS_DIR / f"{stem}_accuracy{tag}.png",
                                     title=f"{title}: SNN accuracy vs time steps",
                                     ann_images=runs[0].images)
    points = {_label(r): (r.cum_spikes().tolist(), r.accuracy.tolist()) for r in runs}
    for run in runs:
        if run.paper_k:
            dec = decisions(run)
            points[f"early decision, {_label(run)}"] = ([d["spikes"] for d in dec],
                                                        [d["accuracy"] for d in dec])
    spk_png = plot_spikes_vs_accuracy(points, RESULTS_DIR / f"{stem}_spikes{tag}.png",
                                      ann_acc=ann, ann_images=runs[0].images,
                                      title=f"{title}: accuracy vs hidden spikes per image")
    return acc_png, spk_png


def decision_rows(run: Run) -> list[list[Any]]:
    rows = [[d["theta"], f"{100 * d['accuracy']:.2f}", f"{100 * d['delta']:+.2f}",
             d["mean_step"], d["last_step"], f"{100 * d['decided']:.1f}", d["spikes"],
             f"{100 * d['saving']:.0f}"] for d in decisions(run)]
    rows.append(["none (all steps)", pct(float(run.accuracy[-1])),
                 f"{100 * (float(run.accuracy[-1]) - run.ann_acc):+.2f}", float(run.steps),
                 run.steps, "-", float(run.cum_spikes()[-1]), "0"])
    return rows


def net_section(name: str, names: tuple[str, str], setting: NetSetting, res: dict[str, Any],
                output: Path, tag: str, checkpoints: Sequence[int]) -> str:
    """Markdown for the weighted / rate part of one network; ``names``: (title, file stem),
    e.g. ``("CIFAR-10", "cifar10")``."""
    runs = res["runs"]
    acc_png, spk_png = net_plots(f"{names[1]}_{name}", f"{names[0]} {name}", tag, runs)
    link = lambda p: relative_link(p, output)  # noqa: E731
    head, rows = curve_rows(runs, checkpoints)
    tols = [TOL_NAMES[t] for t in TOLERANCES]
    reach_head = ["SNN", "test images", "ANN acc, same imgs (%)", "SNN acc at last step (%)"]
    for t in tols:
        reach_head += [f"steps to ANN-{t}", f"spikes/img at {t}"]
    losses = [TOL_LOSS[t] for t in TOLERANCES]
    ratio_head = (["weighted SNN"] + [f"latency red. {t}" for t in losses]
                  + [f"spike red. {t}" for t in losses])
    dec_head = ["theta", "accuracy (%)", "vs ANN (%p)", "mean decision step",
                "last decision step", "decided before end (%)", "spikes/img", "spike saving (%)"]
    timing = ", ".join(f"{r.label} {r.seconds:.0f} s" for r in runs)
    paper = next((r for r in runs if r.paper_k), None)
    parts = [
        f"### {name}: weighted vs rate coding",
        "ANN accuracy on the images of each run: "
        + "; ".join(f"{_label(r)}: {pct(r.ann_acc)} %" for r in runs)
        + f". Output skipping: {res['skip']} period(s). Simulation wall time: {timing}.",
        f"![{name} accuracy vs steps]({link(acc_png)})",
        "Accuracy (%) after a number of time steps:",
        markdown_table(head, rows),
        "Steps (and hidden spikes per image up to then) from which the number of correctly "
        "classified images stays at least the ANN's on the same images minus 1 / 0.1 / 0 %p of "
        "them until the end of the window (`> N`: not within the N simulated steps; the "
        "spike entry is then the count over the whole window):",
        markdown_table(reach_head, reach_rows(runs, res["found"]), "{:.4g}"),
        "Reduction of latency and spikes by weighted spikes relative to rate coding (rate / "
        "weighted, Kim et al. Table 2; `> r`: rate coding did not get there within its "
        "window, r is the lower bound), next to Kim's figures:",
        markdown_table(ratio_head, table2_rows(runs, res["found"], setting)),
    ]
    if paper is not None:
        start = next(iter(paper.result.decisions))[1]
        parts += [
            f"Early decision (Kim et al. Algorithm 1, Fig. 12-13) on {_label(paper)}, T1 = "
            f"{start}, T2 = {paper.steps}; spikes counted up to each image's decision step:",
            f"![{name} spikes vs accuracy]({link(spk_png)})",
            markdown_table(dec_head, decision_rows(paper), "{:.4g}"),
        ]
        if name == "net4":
            parts.append(KIM_NET4_DECISION)
    return "\n\n".join(parts)


def _finetune_cell(row: dict[str, Any]) -> str:
    """Fine-tuning seconds of a radix row, or where its model came from."""
    if row.get("committed"):
        return "committed"
    secs = row["finetune_seconds"]
    return "cached" if secs is None else f"{secs:.0f}"


def radix_section(rows: list[dict[str, Any]], names: tuple[str, str], output: Path, tag: str,
                  recipe: str) -> str:
    """Markdown for the radix part (all networks); ``names`` as :func:`net_section`'s."""
    title, stem = names
    png = plot_radix_accuracy_vs_bits(
        [{"model": r["net"], "bits": r["bits"], "accuracy": r["accuracy"],
          "snn_accuracy": r["shortcut"]["accuracy"]} for r in rows],
        RESULTS_DIR / f"{stem}_radix{tag}.png",
        ann_acc={r["net"]: r["float_accuracy"] for r in rows},
        title=f"{title}: radix (T-bit) accuracy after STE fine-tuning",
    )  # fmt: skip
    head = ["net", "T", "test images", "float ANN (%)", "quantised, no fine-tuning (%)",
            "fine-tuned (%)", "held-out before / after (%)", "delta vs float (%p)",
            "SNN step by step: images", "acc (%)", "bit-exact (%)",
            "SNN shortcut: images", "acc (%)", "bit-exact (%)", "latency (steps)",
            "spikes/img/period", "SynOps/img (measured)", "ops/img eq. 24", "ANN MACs/img",
            "fine-tune / step / shortcut (s)"]  # fmt: skip
    table = []
    for r in rows:
        step, short = r["step"], r["shortcut"]
        hist = r["val_history"]
        table.append([r["net"], r["bits"], r["images"], pct(r["float_accuracy"]),
                      pct(r["ptq_accuracy"]), pct(r["accuracy"]),
                      f"{100 * hist[0]:.2f} / {100 * hist[-1]:.2f}",
                      f"{100 * (r['accuracy'] - r['float_accuracy']):+.2f}",
                      step["images"], pct(step["accuracy"]), pct(step["agreement"]),
                      short["images"], pct(short["accuracy"]), pct(short["agreement"]),
                      r["latency"], r["spikes_per_period"], r["synops_per_period"],
                      r["eq24_ops"], r["ann_macs"],
                      f"{_finetune_cell(r)} / "
                      f"{step['seconds']:.0f} / {short['seconds']:.0f}"])
    return "\n\n".join([
        "### Radix encoding (Wang et al.)",
        recipe + " *Bit-exact* = fraction of images whose SNN output integers equal the "
        "quantised twin's (`quant.integer_activations`, float64); the step-by-step simulation "
        "runs on a fixed random subset of them, the exact per-period shortcut "
        "(`evaluate(..., shortcut=True)`) on all of the row's test images. Operation counts per "
        "image: *measured* SynOps = spikes x fan-out in the last pipelined period (input "
        "included); *eq. 24* = sum N*M*T = ANN MACs x T.",
        f"![radix accuracy vs T]({relative_link(png, output)})",
        markdown_table(head, table, "{:.4g}"),
        WANG_TABLE2,
    ])


def ann_table(anns: dict[str, dict[str, Any]]) -> str:
    """Markdown table of the ANNs (accuracy on the whole test set)."""
    head = ["net", "weights", "test images", "test acc (%)", "manifest acc (%)", "MACs/img"]
    rows = []
    for name, a in anns.items():
        manifest = a["info"].get("test_accuracy_percent")
        rows.append([name, a["info"]["source"], a["images"], pct(a["test_acc"]),
                     None if manifest is None else f"{manifest:.2f}", a["macs"]])
    return markdown_table(head, rows, "{:.0f}")


def save_json(anns: dict, nets: dict, radix: list, path: Path) -> None:
    """Raw numbers (ANNs, SNN curves and decisions, radix rows) for later analysis."""
    out = {"ann": anns, "radix": radix, "coding": {
        n: {"skip": res["skip"], "runs": [
            {"label": r.label, "images": r.images, "steps": r.steps, "seconds": r.seconds,
             "ann_accuracy_same_images": r.ann_acc, "accuracy": r.accuracy.tolist(),
             "cum_spikes": r.cum_spikes().tolist(), "cum_synops": r.result.cum_synops.tolist(),
             "decisions": decisions(r) if r.paper_k else []}
            for r in res["runs"]]}
        for n, res in nets.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))

"""Helpers shared by the accuracy benchmarks (``fashion_mnist.py``, ``cifar10.py``).

Both scripts follow the same plan: train (or load) an ANN, simulate its weighted-spike and
rate-coded SNNs on a test subset (:class:`Run`, :func:`run_snn`), measure when they reach the
ANN's accuracy (:func:`reach`, :func:`reach_rows`, :func:`ratio_rows`) and Kim et al.'s early
decision (:func:`decision_rows`), then quantise + fine-tune + convert to radix SNNs
(:func:`radix_benchmark`, :func:`radix_exactness`). The dataset-specific text and tables stay in
the scripts; this module holds the computations and the generic report pieces.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import Timer, load_or_train, log
from plots import RESULTS_DIR, plot_accuracy_vs_steps, plot_spikes_vs_accuracy
from torch import Tensor, nn

from snntorch_weighted import quant
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.simulation.decision import early_decision, gather_at_time
from snntorch_weighted.simulation.metrics import ann_macs, steps_to_accuracy
from snntorch_weighted.simulation.runner import simulate
from snntorch_weighted.train import evaluate, train_ann

__all__ = [
    "Reach",
    "Run",
    "command_line",
    "curve_rows",
    "decision_rows",
    "net_plots",
    "pct",
    "radix_benchmark",
    "radix_exactness",
    "ratio",
    "ratio_rows",
    "reach",
    "reach_rows",
    "run_snn",
    "save_json",
    "train_or_load",
    "finetune_recipe",
    "held_out",
]


# --------------------------------------------------------------------------- ANN


def train_or_load(
    factory: Callable[[], nn.Module],
    key: str,
    config: dict[str, Any],
    train_set: Any,
    args: argparse.Namespace,
    **train_kw: Any,
) -> tuple[nn.Module, dict]:
    """The trained ANN (from the checkpoint cache when possible) and its training info.

    ``factory`` builds the untrained network (after seeding with ``args.seed``); ``config`` is
    the checkpoint cache key and must hold ``lr`` and ``batch_size``. Training runs
    :func:`~snntorch_weighted.train.train_ann` for ``args.epochs`` epochs with ``train_kw`` as
    extra options (e.g. ``augment="cifar"``). ``info`` gets ``cached`` and ``checkpoint_config``.
    """
    torch.manual_seed(args.seed)
    model = factory()

    def train(m: nn.Module) -> dict[str, Any]:
        start = time.perf_counter()
        history = train_ann(
            m, train_set, epochs=args.epochs, lr=config["lr"], batch_size=config["batch_size"],
            device=args.device, seed=args.seed, progress=False, **train_kw,
        )  # fmt: skip
        return {"history": history.as_dict(), "train_seconds": time.perf_counter() - start}

    model, info, cached = load_or_train(model, key, config, train, args.cache_dir, args.retrain)
    info["cached"] = cached
    info["checkpoint_config"] = config
    return model, info


# --------------------------------------------------------------------------- simulation


@dataclass
class Run:
    """One SNN configuration simulated on a test subset (batches concatenated)."""

    label: str
    steps: int
    accuracy: Tensor  # [T] fraction correct per step
    spikes: Tensor  # [T, N] hidden-neuron spikes per step and sample (input excluded)
    synops: Tensor  # [T, N] synaptic operations per step and sample (input included)
    readout: Tensor  # [T, N, C] output membranes (for the early decision)
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def cum_spikes(self) -> Tensor:
        """Mean hidden spikes per image up to each step, ``[T]``."""
        return self.spikes.double().mean(1).cumsum(0)

    def cum_synops(self) -> Tensor:
        """Mean SynOps per image up to each step, ``[T]``."""
        return self.synops.double().mean(1).cumsum(0)


def run_snn(
    label: str, snn: nn.Module, x: Tensor, y: Tensor, steps: int, batch: int, **kw: Any
) -> Run:
    """``simulate`` over ``x`` in batches of ``batch`` images; curves are over all images."""
    correct, spikes, synops, readout = [], [], [], []
    with Timer() as timer:
        for start in range(0, x.shape[0], batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            res = simulate(snn, xb, steps, labels=yb, fold="auto", **kw)
            correct.append((res.predictions == res.labels).sum(1).double())
            spikes.append(res.spikes_per_step.cpu())
            synops.append(res.synops_per_step.cpu())
            readout.append(res.readout.float().cpu())
    accuracy = torch.stack(correct).sum(0) / x.shape[0]
    log(f"  {label}: {steps} steps on {x.shape[0]} images in {timer.seconds:.1f} s, "
        f"final acc {float(accuracy[-1]):.4f}")  # fmt: skip
    return Run(label, steps, accuracy.cpu(), torch.cat(spikes, 1), torch.cat(synops, 1),
               torch.cat(readout, 1), timer.seconds)  # fmt: skip


# --------------------------------------------------------------------------- reaching the ANN


@dataclass
class Reach:
    """When a run reaches ``ANN - tolerance`` (``step`` None: not within its window)."""

    step: int | None
    spikes: float | None  # hidden spikes per image up to ``step``
    window: int  # the run's simulated steps
    window_spikes: float  # hidden spikes per image over the whole window


def reach(run: Run, target: float) -> Reach:
    """Steps (accuracy stays >= target until the window's end) and spikes up to them."""
    step = steps_to_accuracy(run.accuracy, target)
    cum = run.cum_spikes()
    spikes = None if step is None else float(cum[step - 1])
    return Reach(step, spikes, run.steps, float(cum[-1]))


def reach_rows(
    runs: Sequence[Run],
    found: dict[tuple[str, float], Reach],
    tolerances: Sequence[float],
    show_window: bool = True,
) -> list[list[Any]]:
    """One row per run: final accuracy (%), then steps / spikes to reach each tolerance.

    ``found`` maps ``(label, tolerance)`` to :func:`reach`'s result. A target not reached is
    shown as ``> window`` (steps) and ``> window spikes`` when ``show_window``, else as None.
    """
    rows = []
    for run in runs:
        row: list[Any] = [run.label, pct(float(run.accuracy[-1]))]
        for tol in tolerances:
            r = found[(run.label, tol)]
            if r.step is not None or not show_window:
                row += [r.step, r.spikes]
            else:
                row += [f"> {r.window}", f"> {r.window_spikes:.4g}"]
        rows.append(row)
    return rows


def ratio(rate: Reach, weighted: Reach, kind: str, bound_prefix: str = "> ") -> str:
    """rate / weighted steps or spikes (``kind``); a lower bound when rate never got there.

    The lower bound uses rate coding's window (or its spikes over the whole window) and is
    written with ``bound_prefix``; ``-`` when the weighted run did not get there either.
    """
    if weighted.step is None:
        return "-"
    if kind == "steps":
        num, den, bound = rate.step, weighted.step, rate.window
    else:
        num, den, bound = rate.spikes, weighted.spikes, rate.window_spikes
    if not den:
        return "-"
    if num is None:
        return f"{bound_prefix}{bound / den:.1f}x"
    return f"{num / den:.1f}x"


def ratio_rows(
    found: dict[tuple[str, float], Reach],
    weighted_labels: Sequence[str],
    tolerances: Sequence[float],
    rate_label: str = "rate",
    bound_prefix: str = "> ",
) -> list[list[Any]]:
    """Kim Table 2: latency, then spike reduction (rate / weighted) at each tolerance.

    One row per weighted run in ``weighted_labels``; columns in the order of ``tolerances``.
    """
    rows = []
    for label in weighted_labels:
        row: list[Any] = [label]
        for kind in ("steps", "spikes"):
            for tol in tolerances:
                row.append(ratio(found[(rate_label, tol)], found[(label, tol)], kind,
                                 bound_prefix))  # fmt: skip
        rows.append(row)
    return rows


def decision_rows(run: Run, y: Tensor, thetas: Sequence[float], start: int) -> list[list[Any]]:
    """Kim Algorithm 1 on a run's recorded membranes for several thetas (Fig. 12 trade-off)."""
    full_spikes = float(run.cum_spikes()[-1])
    rows = []
    for theta in thetas:
        dec = early_decision(run.readout, float(theta), start_step=start)
        acc = float((dec.decision == y).double().mean())
        spk = float(gather_at_time(run.spikes, dec.time).double().mean())
        rows.append([theta, f"{100 * acc:.2f}", float(dec.mean_time()), int(dec.time.max()),
                     f"{100 * float(dec.decided.double().mean()):.1f}", spk,
                     f"{100 * (1 - spk / full_spikes):.0f}"])  # fmt: skip
    rows.append(["none (all steps)", f"{100 * float(run.accuracy[-1]):.2f}", float(run.steps),
                 run.steps, "-", full_spikes, "0"])  # fmt: skip
    return rows


# --------------------------------------------------------------------------- radix


def radix_benchmark(
    name: str,
    model: nn.Module,
    args: argparse.Namespace,
    data: dict[str, Any],
    float_acc: float,
    cache: tuple[str, str],
    finetune_size: tuple[int, int],
    lr: float,
) -> list[dict[str, Any]]:
    """Prepare + fine-tune + convert for each T in ``args.bits``: accuracies, bit-exactness, ops.

    ``data`` holds ``calib`` (calibration images), ``ft_set`` (fine-tuning set), ``val``
    (held-out training images, evaluated before and after every epoch), ``test`` (anything
    :func:`~snntorch_weighted.train.evaluate` takes) and ``exact`` (``(x, y)`` for the radix
    SNN). ``cache`` is ``(ANN cache key, checkpoint name prefix)``, ``finetune_size`` is
    ``(samples, epochs)`` of the fine-tuning, ``lr`` its learning rate. The fine-tuning distils
    the float ANN (``quant.finetune(teacher=...)``).
    """
    ann_key, prefix = cache
    samples, epochs = finetune_size
    x, y = data["exact"]
    macs = ann_macs(model, x[:1])
    rows = []
    for bits in args.bits:
        prepared = quant.prepare(copy.deepcopy(model), num_bits=bits,
                                 calibration_data=data["calib"])  # fmt: skip
        ptq_acc = evaluate(prepared, data["test"])
        config = {"ann": ann_key, "bits": bits, "samples": samples, "epochs": epochs, "lr": lr,
                  "seed": args.seed, "teacher": "float ANN"}  # fmt: skip

        def finetune(m: nn.Module) -> dict[str, Any]:
            start = time.perf_counter()
            hist = quant.finetune(m, data["ft_set"], epochs=epochs, lr=lr, device=args.device,
                                  progress=False, seed=args.seed, val_data=data["val"],
                                  teacher=copy.deepcopy(model))  # fmt: skip
            return {"history": hist, "seconds": time.perf_counter() - start}

        prepared, info, cached = load_or_train(
            prepared, f"{prefix}-{name}-radix{bits}", config, finetune, args.cache_dir,
            args.retrain,
        )  # fmt: skip
        qat_acc = evaluate(prepared, data["test"])
        row = {"net": name, "bits": bits, "ptq_accuracy": ptq_acc, "accuracy": qat_acc,
               "finetune_seconds": info.get("seconds"), "cached": cached,
               "float_accuracy": float_acc,
               "val_history": [h["val_acc"] for h in info["history"]]}  # fmt: skip
        row.update(radix_exactness(prepared, x, y, macs))
        log(f"[{name}] radix T={bits}: PTQ {ptq_acc:.4f}, fine-tuned {qat_acc:.4f} (held-out "
            f"{row['val_history'][0]:.4f} -> {row['val_history'][-1]:.4f}), "
            f"bit-exact {row['agreement']:.4f} ({row['sim_seconds']:.0f} s)")  # fmt: skip
        rows.append(row)
    return rows


def finetune_recipe(samples: int, epochs: int, lr: float, val: int) -> str:
    """One sentence describing the fine-tuning of :func:`radix_benchmark` (for the reports)."""
    return (f"`quant.finetune` for {epochs} epoch(s) on {samples} training images (AdamW, lr "
            f"{lr:g}, batch 64, cosine, distilling the float ANN: KL divergence of the softmax "
            f"outputs, temperature 1; *held-out* = accuracy on {val} other training images "
            "before / after)")


def held_out(row: dict[str, Any]) -> str:
    """``"before / after"`` held-out accuracy (%) of a radix row."""
    hist = row["val_history"]
    return f"{100 * hist[0]:.2f} / {100 * hist[-1]:.2f}"


def radix_exactness(prepared: nn.Module, x: Tensor, y: Tensor, macs: int) -> dict[str, Any]:
    """Convert ``prepared`` to a radix SNN, compare its output integers with the twin's on ``x``.

    Operation counts are per image for one pipelined period (the SNN's last period, when every
    spike source carries the codes of the image): measured event-driven SynOps and spikes, and
    Wang et al. eq. 24 ``sum N*M*T`` (every synapse once per time step) = ANN MACs x T.
    """
    twin = quant.twin(prepared)
    bits = twin.get_submodule("input_quant").num_bits
    snn = convert(prepared, None, coding="radix", num_bits=bits)
    with Timer() as timer:
        res = simulate(snn, x, labels=y, fold="auto")  # num_steps = latency
    snn_int = res.readout[-1].round().long()
    exact_twin = copy.deepcopy(twin).double().eval()
    twin_int = quant.integer_activations(exact_twin, x.double())["output_quant"]
    agree = (snn_int == twin_int.to(snn_int.device)).all(1).double().mean()
    last = slice(res.num_steps - bits, res.num_steps)
    return {
        "latency": int(snn.latency),
        "agreement": float(agree),
        "snn_images": int(x.shape[0]),
        "snn_accuracy": float(res.accuracy[-1]),
        "twin_accuracy_same_images": float((twin_int.argmax(1).cpu() == y.cpu()).double().mean()),
        "spikes_per_period": float(res.spikes_per_step[last].sum(0).double().mean()),
        "synops_per_period": float(res.synops_per_step[last].sum(0).double().mean()),
        "eq24_ops": macs * bits,
        "ann_macs": macs,
        "sim_seconds": timer.seconds,
    }


# --------------------------------------------------------------------------- report


def pct(value: float | None) -> str | None:
    """A fraction as a percentage string with two decimals."""
    return None if value is None else f"{100 * value:.2f}"


def curve_rows(
    runs: Sequence[Run], checkpoints: Sequence[int]
) -> tuple[list[str], list[list[Any]]]:
    """Accuracy (%) of every run at the ``checkpoints`` step counts within the longest window.

    A run shorter than a checkpoint gets None there (``-`` in the table).
    """
    longest = max(r.steps for r in runs)
    steps = [s for s in checkpoints if s <= longest]
    rows = [[r.label] + [pct(float(r.accuracy[s - 1])) if s <= r.steps else None for s in steps]
            for r in runs]  # fmt: skip
    return ["SNN \\ steps"] + [str(s) for s in steps], rows


def net_plots(
    stem: str,
    title: str,
    tag: str,
    runs: Sequence[Run],
    decisions: Sequence[Sequence[Any]],
    decision_label: str,
    ann_acc: float,
) -> tuple[Path, Path]:
    """Accuracy-vs-steps and spikes-vs-accuracy PNGs of one network in ``RESULTS_DIR``.

    Files ``<stem>_accuracy<tag>.png`` and ``<stem>_spikes<tag>.png`` (e.g. ``stem =
    "cifar10_net4"``, ``tag = "_quick"``); plot titles start with ``title`` (e.g. ``"CIFAR-10
    net4"``). ``decisions`` are :func:`decision_rows`; their theta rows become one more series
    of the spikes plot, labelled ``decision_label``.
    """
    curves = {r.label: (list(range(1, r.steps + 1)), r.accuracy.tolist()) for r in runs}
    acc_png = plot_accuracy_vs_steps(
        curves, ann_acc, RESULTS_DIR / f"{stem}_accuracy{tag}.png",
        title=f"{title}: SNN accuracy vs time steps",
    )  # fmt: skip
    points = {r.label: (r.cum_spikes().tolist(), r.accuracy.tolist()) for r in runs}
    dec = [row for row in decisions if not isinstance(row[0], str)]
    points[decision_label] = ([row[5] for row in dec], [float(row[1]) / 100 for row in dec])
    spk_png = plot_spikes_vs_accuracy(
        points, RESULTS_DIR / f"{stem}_spikes{tag}.png", ann_acc=ann_acc,
        title=f"{title}: accuracy vs hidden spikes per image",
    )  # fmt: skip
    return acc_png, spk_png


# --------------------------------------------------------------------------- output


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command as it was typed (``script`` relative to the repository root)."""
    return " ".join(["python", script, *argv])


def save_json(anns: dict, nets: dict, radix: list, path: Path) -> None:
    """Raw numbers (ANNs, SNN curves and decisions, radix rows) for later analysis."""
    out = {"ann": anns,
           "coding": {n: {"runs": [{"label": r.label, "steps": r.steps, "seconds": r.seconds,
                                    "accuracy": r.accuracy.tolist(),
                                    "cum_spikes": r.cum_spikes().tolist(),
                                    "cum_synops": r.cum_synops().tolist()}
                                   for r in res["coding"]["runs"]],
                          "decisions": res["coding"]["decisions"]}
                      for n, res in nets.items()},
           "radix": radix}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))

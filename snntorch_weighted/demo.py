"""End-to-end demo: train a small CNN, convert it to weighted, rate and radix SNNs, compare them.

Run ``python -m snntorch_weighted.demo`` (or ``snntorch-weighted``, or ``nox -s demo``). By default
it uses scikit-learn's bundled 8x8 digits, so it works offline, and takes well under two minutes on
two CPU cores:

1. train :func:`~snntorch_weighted.models.digits_cnn` (an ANN with ReLU and max pooling);
2. convert it with :func:`~snntorch_weighted.convert` to a weighted-spike SNN (Kim et al. 2018,
   ``WeightedLeaky`` neurons, K phases) and to a rate-coded SNN (``snntorch.Leaky``, the baseline);
3. prepare a T-bit radix twin (:func:`~snntorch_weighted.quant.prepare`), fine-tune it briefly
   with straight-through estimators (:func:`~snntorch_weighted.quant.finetune`) and convert it to a
   ``RadixLeaky`` SNN (``convert(..., coding="radix")``, Wang et al.);
4. simulate all three on the test set (:func:`~snntorch_weighted.simulate`) and print a table of
   accuracy and spikes per image versus time steps, check that the radix SNN's outputs equal the
   quantised model's bit for bit, and save a plot of accuracy vs steps.

``--dataset fashion-mnist`` (Net2) and ``--dataset cifar10`` (Net4) use the datasets under
``--data-root`` (see :mod:`snntorch_weighted.data`); they train for longer, so use
``--device cuda`` or reduce ``--train-samples`` / ``--epochs`` on a CPU.

Optional dependencies (``pip install "snntorch-weighted[demo]"``), the device and the dataset are
checked before any work starts and reported in one line; ``results.md`` is written as soon as the
weighted and rate results exist and again at the end, so a late failure keeps them.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from . import data, models, quant
from ._extras import require
from .conversion.convert import convert
from .simulation.evaluate import evaluate as evaluate_snn
from .train import evaluate, train_ann

__all__ = ["DatasetConfig", "DATASETS", "DemoError", "SnnRun", "DemoResult", "parse_args", "run",
           "main"]


class DemoError(RuntimeError):
    """A problem the user can fix (missing dataset, ...): reported in one line, no traceback."""


@dataclass(frozen=True)
class DatasetConfig:
    """Defaults of one dataset: model, training schedule and spike-code parameters."""

    model: Callable[[], nn.Module]
    epochs: int
    lr: float
    phases: int  # K of the weighted code
    bits: int  # T of the radix code
    steps: int  # steps simulated for the weighted and rate codes
    test_samples: int | None  # None: the whole test split
    batch_size: int = 64


DATASETS: dict[str, DatasetConfig] = {
    "digits": DatasetConfig(lambda: models.digits_cnn(16), epochs=30, lr=0.05, phases=4,
                            bits=4, steps=64, test_samples=None),
    "fashion-mnist": DatasetConfig(models.net2, epochs=3, lr=0.05, phases=8, bits=4, steps=128,
                                   test_samples=1000),
    "cifar10": DatasetConfig(models.net4, epochs=10, lr=0.05, phases=8, bits=6, steps=256,
                             test_samples=1000, batch_size=128),
}


@dataclass
class SnnRun:
    """One converted network simulated on the test set.

    ``accuracy``, ``spikes`` and ``synops`` are ``[T]`` curves: accuracy after each step, and the
    hidden-neuron spikes / synaptic operations (input layer included) per image up to each step.
    ``outputs`` is the decoded output after the last step, ``[N, C]``.
    """

    coding: str
    accuracy: Tensor
    spikes: Tensor
    synops: Tensor
    outputs: Tensor
    seconds: float


@dataclass
class DemoResult:
    """Everything the demo measured (returned by :func:`run`)."""

    dataset: str
    ann_accuracy: float
    ann_macs: int
    runs: dict[str, SnnRun]
    plot: Path
    table: str = ""
    # the radix stage (unset until it has run)
    twin_accuracy: tuple[float, float] | None = None  # the T-bit twin before / after fine-tuning
    radix_latency: int | None = None
    bit_exact: float | None = None  # fraction of test images whose outputs equal the twin's
    model: nn.Module | None = None  # the trained ANN
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of :mod:`snntorch_weighted.cli` (``snntorch-weighted --help``)."""
    from .cli import parse_args as cli_parse_args

    return cli_parse_args(argv)


def check_dependencies(args: argparse.Namespace) -> None:
    """Raise :class:`MissingDependencyError` (naming the extra) before any work starts."""
    modules = ["matplotlib"]
    if args.dataset == "digits":
        modules.append("sklearn")
    if args.dataset == "cifar10":
        modules.append("PIL")  # the JPEG copy is decoded with Pillow
    if args.download:
        modules.append("torchvision")
    require(*modules, extra="demo", purpose="the demo")


# --------------------------------------------------------------------------- data and training


def load_data(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` tensors with inputs in ``[0, 1]``.

    A missing dataset raises :class:`DemoError` naming the paths looked at and the options to set.
    """
    download = getattr(args, "download", False)
    try:
        if args.dataset == "digits":
            train = data.load_digits("train", seed=args.seed)
            test = data.load_digits("test", seed=args.seed)
        elif args.dataset == "fashion-mnist":
            train = data.load_fashion_mnist(args.data_root, "train", download=download)
            test = data.load_fashion_mnist(args.data_root, "test", download=download)
        else:
            train = data.load_cifar10(args.data_root, "train", download=download)
            test = data.load_cifar10(args.data_root, "test", download=download)
    except FileNotFoundError as err:
        raise DemoError(f"{err} On the command line: --data-root DIR, or --download.") from err
    x_train, y_train = data.as_tensors(train, args.train_samples, seed=args.seed)
    x_test, y_test = data.as_tensors(test, args.test_samples, seed=args.seed)
    return x_train, y_train, x_test, y_test


def train_model(args: argparse.Namespace, x: Tensor, y: Tensor) -> nn.Module:
    """The dataset's model, trained in place with SGD and a cosine schedule."""
    config = DATASETS[args.dataset]
    torch.manual_seed(args.seed)
    model = config.model()
    augment = "cifar" if args.dataset == "cifar10" else None
    train_ann(model, (x, y), epochs=args.epochs, lr=config.lr, batch_size=config.batch_size,
              device=args.device, augment=augment, progress=args.progress,
              seed=args.seed)
    return model.eval()


# --------------------------------------------------------------------------- simulation


def simulate_batches(snn: nn.Module, x: Tensor, y: Tensor, num_steps: int, batch_size: int,
                     desc: str, progress: bool | None = None, seed: int = 0) -> SnnRun:
    """Evaluate ``snn`` on ``x`` in batches (:func:`~snntorch_weighted.evaluate`): accuracy and
    cumulative spike / SynOps curves over all images; rate inputs drawn per image from ``seed``."""
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    result = evaluate_snn(snn, batches, num_steps, progress=progress, desc=desc, seed=seed)
    return SnnRun(
        coding=snn.coding,
        accuracy=result.accuracy,
        spikes=result.cum_spikes,
        synops=result.cum_synops,
        outputs=snn.decode(result.final_readout, result.num_steps),
        seconds=result.seconds,
    )


def run_radix(args: argparse.Namespace, model: nn.Module, x_train: Tensor, y_train: Tensor,
              x_test: Tensor, y_test: Tensor) -> tuple[SnnRun, tuple[float, float], int, float]:
    """Prepare, fine-tune and convert a T-bit radix model; simulate it for its latency.

    Returns ``(run, (twin accuracy before, after fine-tuning), latency in steps, bit-exact
    fraction)``. ``model`` is left unchanged (the twin is prepared from a copy).
    """
    progress = args.progress
    calib = x_train[: min(len(x_train), 1024)]
    twin = quant.prepare(copy.deepcopy(model).cpu(), num_bits=args.bits, calibration_data=calib)
    before = evaluate(twin, (x_test, y_test))
    quant.finetune(twin, (x_train, y_train), epochs=args.finetune_epochs, lr=args.finetune_lr,
                   device=args.device, progress=progress, seed=args.seed)
    twin = twin.cpu().eval()
    twin_accuracy = evaluate(twin, (x_test, y_test))
    snn = convert(twin, calib, coding="radix", num_bits=args.bits,
                  progress=progress).to(args.device)
    run = simulate_batches(snn, x_test, y_test, snn.latency, args.batch_size, "radix SNN",
                           progress)
    with torch.no_grad():
        reference = copy.deepcopy(twin).double()(x_test.double())
    exact = (run.outputs == reference).all(dim=1).double().mean().item()
    return run, (before, twin_accuracy), snn.latency, exact


# --------------------------------------------------------------------------- reporting


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


# --------------------------------------------------------------------------- main


def _rate_and_weighted(args: argparse.Namespace, model: nn.Module, calib: Tensor,
                       x_test: Tensor, y_test: Tensor) -> dict[str, SnnRun]:
    runs: dict[str, SnnRun] = {}
    for coding in ("weighted", "rate"):
        snn = convert(model, calib, coding=coding, num_phases=args.phases, device=args.device,
                      progress=args.progress)
        runs[coding] = simulate_batches(snn, x_test, y_test, args.steps, args.batch_size,
                                        f"{coding} SNN", args.progress, seed=args.seed)
    return runs


def run(args: argparse.Namespace) -> DemoResult:
    """Run the whole demo (see the module docstring) and print the table.

    Optional dependencies are checked first (:class:`MissingDependencyError`), then the dataset is
    loaded (:class:`DemoError` when it is missing); ``results.md`` is written before the radix
    stage and again at the end.
    """
    from .simulation.metrics import ann_macs

    check_dependencies(args)
    args.progress = getattr(args, "progress", not getattr(args, "no_progress", False))
    say = (lambda *a, **k: None) if getattr(args, "quiet", False) else print
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(args)
    say(f"{args.dataset}: {len(x_train)} training / {len(x_test)} test images "
        f"{tuple(x_train.shape[1:])}, device {args.device}", flush=True)

    model = train_model(args, x_train, y_train)
    ann_accuracy = evaluate(model, (x_test, y_test))
    timings["train ANN"] = time.perf_counter() - clock
    say(f"ANN test accuracy {100 * ann_accuracy:.2f} %", flush=True)

    calib = x_train[: min(len(x_train), 1024)]
    runs = _rate_and_weighted(args, model, calib, x_test, y_test)
    for coding in runs:
        timings[f"{coding} SNN"] = runs[coding].seconds
    result = DemoResult(
        dataset=args.dataset, ann_accuracy=ann_accuracy,
        ann_macs=ann_macs(model.cpu(), x_test[:1]), runs=runs,
        plot=args.out / "accuracy_vs_steps.png", timings=timings, model=model,
    )
    say(f"weighted and rate SNNs done: {write_results(result, args)}", flush=True)

    clock = time.perf_counter()
    runs["radix"], result.twin_accuracy, result.radix_latency, result.bit_exact = run_radix(
        args, model, x_train, y_train, x_test, y_test)
    timings["radix fine-tune + SNN"] = time.perf_counter() - clock
    results_path = write_results(result, args)
    plot_curves(result, args, result.plot)
    _report(result, args, results_path)
    return result


def _report(result: DemoResult, args: argparse.Namespace, results_path: Path) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snntorch_weighted.demo``: the same as the ``snntorch-weighted`` command."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

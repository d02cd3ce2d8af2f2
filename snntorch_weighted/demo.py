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
from .conversion.convert import convert
from .simulation.runner import simulate
from .train import evaluate, train_ann

__all__ = ["DatasetConfig", "DATASETS", "SnnRun", "DemoResult", "parse_args", "run", "main"]


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
    twin_accuracy: tuple[float, float]  # the T-bit radix twin before / after fine-tuning
    radix_latency: int
    bit_exact: float  # fraction of test images whose radix SNN outputs equal the twin's exactly
    table: str
    plot: Path
    model: nn.Module | None = None  # the trained ANN
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; dataset-dependent defaults are filled in from :data:`DATASETS`."""
    p = argparse.ArgumentParser(
        prog="python -m snntorch_weighted.demo",
        description="Train a small CNN, convert it to weighted / rate / radix SNNs, compare them.",
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                   help="digits (offline, default), fashion-mnist (Net2) or cifar10 (Net4)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="dataset directory for fashion-mnist / cifar10 "
                        "(default: snntorch_weighted.data.default_data_root())")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default)")
    p.add_argument("--steps", type=int, default=None,
                   help="time steps simulated for the weighted and rate codes")
    p.add_argument("--phases", type=int, default=None, help="K, phases of the weighted code")
    p.add_argument("--bits", type=int, default=None, help="T, bits of the radix code")
    p.add_argument("--epochs", type=int, default=None, help="ANN training epochs")
    p.add_argument("--finetune-epochs", type=int, default=2, help="radix STE fine-tuning epochs")
    p.add_argument("--finetune-lr", type=float, default=3e-4,
                   help="peak learning rate of the radix fine-tuning (AdamW, cosine)")
    p.add_argument("--train-samples", type=int, default=None,
                   help="random training subset (default: all)")
    p.add_argument("--test-samples", type=int, default=None,
                   help="random test subset that is simulated (default: per dataset)")
    p.add_argument("--batch-size", type=int, default=256, help="images per simulated batch")
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="directory for the plot and the table (default: ./demo_output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: 1 for digits, where a tiny net runs "
                        "fastest on one thread; torch's default otherwise)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    config = DATASETS[args.dataset]
    for name in ("steps", "phases", "bits", "epochs"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(config, name))
    if args.test_samples is None:
        args.test_samples = config.test_samples
    for name in ("steps", "phases", "bits", "epochs", "finetune_epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.steps < args.phases:
        p.error(f"--steps ({args.steps}) must cover at least one period (--phases {args.phases})")
    if args.threads is None and args.dataset == "digits":
        args.threads = 1
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# --------------------------------------------------------------------------- data and training


def load_data(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` tensors with inputs in ``[0, 1]``."""
    if args.dataset == "digits":
        train, test = data.load_digits("train", seed=args.seed), data.load_digits("test",
                                                                                  seed=args.seed)
    elif args.dataset == "fashion-mnist":
        train = data.load_fashion_mnist(args.data_root, "train")
        test = data.load_fashion_mnist(args.data_root, "test")
    else:
        train = data.load_cifar10(args.data_root, "train")
        test = data.load_cifar10(args.data_root, "test")
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
              device=args.device, augment=augment, progress=not args.no_progress,
              seed=args.seed)
    return model.eval()


# --------------------------------------------------------------------------- simulation


def _batches(n: int, size: int, desc: str, progress: bool):
    starts = range(0, n, size)
    if not progress:
        return starts
    from tqdm.auto import tqdm

    return tqdm(starts, desc=desc, leave=False, dynamic_ncols=True)


def simulate_batches(snn: nn.Module, x: Tensor, y: Tensor, num_steps: int, batch_size: int,
                     desc: str, progress: bool = True) -> SnnRun:
    """Simulate ``snn`` on ``x`` in batches; accuracy / cumulative spike curves over all images."""
    start = time.perf_counter()
    correct = spikes = synops = 0
    outputs = []
    for i in _batches(len(x), batch_size, desc, progress):
        result = simulate(snn, x[i:i + batch_size], num_steps, labels=y[i:i + batch_size])
        correct = correct + result.accuracy.cpu() * len(result.labels)
        spikes = spikes + result.spikes_per_step.sum(1).cpu()
        synops = synops + result.synops_per_step.sum(1).cpu()
        outputs.append(result.estimate[-1].cpu())
    n = len(x)
    return SnnRun(
        coding=snn.coding,
        accuracy=correct / n,
        spikes=spikes.cumsum(0).double() / n,
        synops=synops.cumsum(0).double() / n,
        outputs=torch.cat(outputs),
        seconds=time.perf_counter() - start,
    )


def run_radix(args: argparse.Namespace, model: nn.Module, x_train: Tensor, y_train: Tensor,
              x_test: Tensor, y_test: Tensor) -> tuple[SnnRun, tuple[float, float], int, float]:
    """Prepare, fine-tune and convert a T-bit radix model; simulate it for its latency.

    Returns ``(run, (twin accuracy before, after fine-tuning), latency in steps, bit-exact
    fraction)``. ``model`` is left unchanged (the twin is prepared from a copy).
    """
    progress = not args.no_progress
    calib = x_train[: min(len(x_train), 1024)]
    twin = quant.prepare(copy.deepcopy(model).cpu(), num_bits=args.bits, calibration_data=calib)
    before = evaluate(twin, (x_test, y_test))
    quant.finetune(twin, (x_train, y_train), epochs=args.finetune_epochs, lr=args.finetune_lr,
                   device=args.device, progress=progress, seed=args.seed)
    twin = twin.cpu().eval()
    twin_accuracy = evaluate(twin, (x_test, y_test))
    snn = convert(twin, calib, coding="radix", num_bits=args.bits).to(args.device)
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


def format_table(result: DemoResult, args: argparse.Namespace) -> str:
    """A markdown table: coding, steps, accuracy, spikes and SynOps per image."""
    rows = [("ANN (float)", "-", f"{100 * result.ann_accuracy:.2f}", "-",
             f"{result.ann_macs:,} MACs")]
    for coding, label in (("weighted", f"weighted (K={args.phases})"), ("rate", "rate")):
        run_ = result.runs[coding]
        for t in checkpoints(len(run_.accuracy), args.phases):
            rows.append((label, str(t), f"{100 * run_.accuracy[t - 1]:.2f}",
                         f"{run_.spikes[t - 1]:,.0f}", f"{run_.synops[t - 1]:,.0f}"))
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


def run(args: argparse.Namespace) -> DemoResult:
    """Run the whole demo (see the module docstring) and print the table."""
    from .simulation.metrics import ann_macs

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(args)
    print(f"{args.dataset}: {len(x_train)} training / {len(x_test)} test images "
          f"{tuple(x_train.shape[1:])}, device {args.device}", flush=True)

    model = train_model(args, x_train, y_train)
    ann_accuracy = evaluate(model, (x_test, y_test))
    timings["train ANN"] = time.perf_counter() - clock
    print(f"ANN test accuracy {100 * ann_accuracy:.2f} %", flush=True)

    calib = x_train[: min(len(x_train), 1024)]
    runs: dict[str, SnnRun] = {}
    torch.manual_seed(args.seed)  # the rate code's Bernoulli draws
    for coding in ("weighted", "rate"):
        snn = convert(model, calib, coding=coding, num_phases=args.phases, device=args.device,
                      progress=progress)
        runs[coding] = simulate_batches(snn, x_test, y_test, args.steps, args.batch_size,
                                        f"{coding} SNN", progress)
        timings[f"{coding} SNN"] = runs[coding].seconds

    clock = time.perf_counter()
    runs["radix"], twin_accuracy, latency, exact = run_radix(
        args, model, x_train, y_train, x_test, y_test)
    timings["radix fine-tune + SNN"] = time.perf_counter() - clock

    result = DemoResult(
        dataset=args.dataset, ann_accuracy=ann_accuracy,
        ann_macs=ann_macs(model.cpu(), x_test[:1]), runs=runs, twin_accuracy=twin_accuracy,
        radix_latency=latency, bit_exact=exact, table="", plot=args.out / "accuracy_vs_steps.png",
        timings=timings, model=model,
    )
    result.table = format_table(result, args)
    plot_curves(result, args, result.plot)
    (args.out / "results.md").write_text(result.table + "\n")
    print()
    print(result.table)
    print(f"\nradix SNN: latency {latency} steps = (D + 1) x T with D = neuron layers + max pools "
          f"on the longest path; outputs bit-exact vs the quantised model on "
          f"{100 * exact:.1f} % of the test images")
    print("spikes/image: hidden neurons, input excluded; SynOps/image: spikes x fan-out, input "
          "layer included")
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"plot: {result.plot.resolve()}")
    if not math.isclose(exact, 1.0):
        print("WARNING: the radix SNN is not bit-exact on every image (please report this)")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: parse ``argv`` and :func:`run` the demo. Returns 0."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

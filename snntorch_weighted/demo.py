"""End-to-end demo: an ANN converted to weighted, rate and radix SNNs, compared on test images.

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
``--data-root`` (see :mod:`snntorch_weighted.data`) read as ``uint8 pixel / 256`` (Kim et al.'s
range, the input of the committed weights), and by default skip step 1: the ANN is the paper
network with its committed reference weights, :func:`snntorch_weighted.models.pretrained`
(``"net2"``, ``"net4"``), built as in :data:`~snntorch_weighted.models.PRETRAINED_BUILDERS`.
Where those weights are absent (they are trained by ``python -m snntorch_weighted.reference
NAME``) the demo stops with one line naming ``--retrain`` and that command. ``--retrain`` trains
the same architecture afresh instead (long: use ``--device cuda`` or reduce ``--train-samples`` /
``--epochs`` on a CPU). The training images are still loaded: they calibrate the conversion and
fine-tune the radix twin.

Optional dependencies (``pip install "snntorch-weighted[demo]"``), the device and the dataset are
checked before any work starts and reported in one line; ``results.md`` is written as soon as the
weighted and rate results exist and again at the end, so a late failure keeps them.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from . import data, models, quant
from ._extras import require
from .conversion.convert import convert
from .demo_report import checkpoints, format_table, plot_curves, print_report, write_results
from .simulation.evaluate import evaluate as evaluate_snn
from .train import evaluate, train_ann

__all__ = ["DatasetConfig", "DATASETS", "DemoError", "SnnRun", "DemoResult", "paper_net",
           "load_committed", "parse_args", "run", "main", "checkpoints", "format_table",
           "plot_curves", "write_results"]


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
    pretrained: str | None = None  # committed weights (models.pretrained) used unless --retrain
    divisor: float = 255.0  # uint8 images are read as pixel / divisor


def paper_net(name: str) -> nn.Module:
    """The untrained network ``name`` built exactly like its committed weights' model
    (:data:`~snntorch_weighted.models.PRETRAINED_BUILDERS`, e.g. ``net2(batch_norm=True)``)."""
    builder, kwargs = models.PRETRAINED_BUILDERS[name]
    return builder(**kwargs)


DATASETS: dict[str, DatasetConfig] = {
    "digits": DatasetConfig(lambda: models.digits_cnn(16), epochs=30, lr=0.05, phases=4,
                            bits=4, steps=64, test_samples=None),
    "fashion-mnist": DatasetConfig(partial(paper_net, "net2"), epochs=3, lr=0.05, phases=8,
                                   bits=4, steps=128, test_samples=1000, pretrained="net2",
                                   divisor=256.0),
    "cifar10": DatasetConfig(partial(paper_net, "net4"), epochs=10, lr=0.05, phases=8, bits=6,
                             steps=256, test_samples=1000, batch_size=128, pretrained="net4",
                             divisor=256.0),
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
    model: nn.Module | None = None  # the ANN (trained here, or with committed weights)
    weights: str | None = None  # the committed weights used (models.pretrained), None if trained
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


def load_data(args: argparse.Namespace,
              divisor: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` tensors with inputs in ``[0, 1]``.

    Fashion-MNIST and CIFAR-10 images are read as ``uint8 pixel / divisor`` (default: the
    dataset's :attr:`DatasetConfig.divisor`, 256). A missing dataset raises :class:`DemoError`
    naming the paths looked at and the options to set.
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
    if isinstance(train, data.ImageDataset):
        divisor = divisor if divisor is not None else DATASETS[args.dataset].divisor
        train, test = train.rescaled(divisor), test.rescaled(divisor)
    x_train, y_train = data.as_tensors(train, args.train_samples, seed=args.seed)
    x_test, y_test = data.as_tensors(test, args.test_samples, seed=args.seed)
    return x_train, y_train, x_test, y_test


def load_committed(args: argparse.Namespace) -> tuple[nn.Module, dict] | None:
    """``(model, manifest)`` of the dataset's committed weights, or ``None`` when the demo trains
    (digits, or ``--retrain``).

    Missing or corrupt weights raise :class:`DemoError` naming ``--retrain`` and the command that
    trains the reference weights (``python -m snntorch_weighted.reference NAME``).
    """
    name = DATASETS[args.dataset].pretrained
    if name is None or getattr(args, "retrain", False):
        return None
    try:
        return models.pretrained(name), models.read_manifest(name)
    except models.PretrainedWeightsError as err:
        raise DemoError(f"--dataset {args.dataset} uses the committed {name} weights: {err}; "
                        f"or add --retrain to train {name} afresh in the demo") from err


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

    Optional dependencies are checked first (:class:`MissingDependencyError`), then the committed
    weights (:func:`load_committed`) and the dataset (:class:`DemoError` when either is missing);
    ``results.md`` is written before the radix stage and again at the end.
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
    committed = load_committed(args)
    divisor = committed[1]["recipe"]["pixel_divisor"] if committed else None
    x_train, y_train, x_test, y_test = load_data(args, divisor)
    say(f"{args.dataset}: {len(x_train)} training / {len(x_test)} test images "
        f"{tuple(x_train.shape[1:])}, device {args.device}", flush=True)

    if committed is None:
        if DATASETS[args.dataset].pretrained is not None:
            say(_retrain_line(args), flush=True)
        model = train_model(args, x_train, y_train)
    else:
        model = committed[0].to(args.device)
    ann_accuracy = evaluate(model, (x_test, y_test))
    timings["load ANN" if committed else "train ANN"] = time.perf_counter() - clock
    if committed is not None:
        say(_describe(committed[1]), flush=True)
    say(f"ANN test accuracy {100 * ann_accuracy:.2f} %", flush=True)

    calib = x_train[: min(len(x_train), 1024)]
    runs = _rate_and_weighted(args, model, calib, x_test, y_test)
    for coding in runs:
        timings[f"{coding} SNN"] = runs[coding].seconds
    result = DemoResult(
        dataset=args.dataset, ann_accuracy=ann_accuracy,
        ann_macs=ann_macs(model.cpu(), x_test[:1]), runs=runs,
        plot=args.out / "accuracy_vs_steps.png", timings=timings, model=model,
        weights=committed[1]["name"] if committed else None,
    )
    say(f"weighted and rate SNNs done: {write_results(result, args)}", flush=True)

    clock = time.perf_counter()
    runs["radix"], result.twin_accuracy, result.radix_latency, result.bit_exact = run_radix(
        args, model, x_train, y_train, x_test, y_test)
    timings["radix fine-tune + SNN"] = time.perf_counter() - clock
    results_path = write_results(result, args)
    plot_curves(result, args, result.plot)
    print_report(result, args, results_path)
    return result


def _describe(manifest: dict) -> str:
    """One line on committed weights: name, accuracy on the full test set, input scaling."""
    name = manifest["name"]
    return (f"ANN: the committed {name} weights, models.pretrained({name!r}), not trained here "
            f"({manifest['test_accuracy_percent']:.2f} % on its {manifest['test_images']:,} "
            f"test images; inputs uint8 pixel / {manifest['recipe']['pixel_divisor']:g})")


def _retrain_line(args: argparse.Namespace) -> str:
    """One line: the paper network is trained afresh (--retrain), and whether weights exist."""
    name = DATASETS[args.dataset].pretrained
    absent = "" if name in models.available_pretrained() else f"no committed {name} weights; "
    epochs = f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    return f"{absent}training {name} afresh ({epochs}, --retrain)"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snntorch_weighted.demo``: the same as the ``snntorch-weighted`` command."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``snntorch-weighted`` command: runs the demo (:mod:`snntorch_weighted.demo`).

``snntorch-weighted [options]``, ``snntorch-weighted demo [options]`` and
``python -m snntorch_weighted.demo [options]`` are the same; ``snntorch-weighted --help`` lists
the options with their defaults. Problems the user can fix (a bad option or ``--device``, a
missing dataset or optional dependency) end in one line on stderr and exit status 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ._extras import MissingDependencyError
from .data import DATA_ENV
from .demo import DATASETS, DemoError, run

__all__ = ["PROG", "build_parser", "main", "parse_args"]

PROG = "snntorch-weighted"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` except for flags and per-dataset defaults (``None``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _per_dataset(name: str) -> str:
    values = ", ".join(f"{key} {getattr(config, name)}" for key, config in DATASETS.items())
    return f"(default per dataset: {values})"


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line (``snntorch-weighted --help``)."""
    p = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s [demo] [options]", formatter_class=_HelpFormatter,
        description="Convert an ANN to weighted / rate / radix SNNs and compare them: digits "
                    "trains a small CNN; fashion-mnist / cifar10 load the committed Net2 / Net4 "
                    "weights (models.pretrained), or train them afresh with --retrain. Prints a "
                    "table and writes results.md and a plot to --out.",
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                   help="digits (scikit-learn's bundled 8x8 digits, offline), fashion-mnist "
                        "(Net2) or cifar10 (Net4)")
    p.add_argument("--data-root", type=Path, default=None,
                   help=f"dataset directory for fashion-mnist / cifar10 (default: "
                        f"${DATA_ENV}, else ../shared/datasets, else ./data)")
    p.add_argument("--retrain", action="store_true",
                   help="fashion-mnist / cifar10: train Net2 / Net4 afresh instead of loading "
                        "the committed weights (models.pretrained); needed where those are "
                        "absent (digits always trains)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download a missing fashion-mnist / cifar10 into "
                        "--data-root")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, ... or auto "
                                                    "(cuda when available)")
    p.add_argument("--steps", type=int, default=None,
                   help="time steps simulated for the weighted and rate codes "
                        + _per_dataset("steps"))
    p.add_argument("--phases", type=int, default=None,
                   help="K, phases of the weighted code " + _per_dataset("phases"))
    p.add_argument("--bits", type=int, default=None,
                   help="T, bits of the radix code " + _per_dataset("bits"))
    p.add_argument("--epochs", type=int, default=None,
                   help="ANN training epochs (digits, or --retrain) " + _per_dataset("epochs"))
    p.add_argument("--finetune-epochs", type=int, default=2, help="radix STE fine-tuning epochs")
    p.add_argument("--finetune-lr", type=float, default=3e-4,
                   help="peak learning rate of the radix fine-tuning (AdamW, cosine)")
    p.add_argument("--train-samples", type=int, default=None,
                   help="random training subset (default: all)")
    p.add_argument("--test-samples", type=int, default=None,
                   help="random test subset that is simulated " + _per_dataset("test_samples")
                        .replace("None", "all"))
    p.add_argument("--batch-size", type=int, default=256, help="images per simulated batch")
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="directory for results.md and accuracy_vs_steps.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, training and "
                                                       "the rate code")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: 1 for digits, where a tiny net runs "
                        "fastest on one thread; torch's default otherwise)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the results: no progress bars, no status lines")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are shown only on a terminal anyway)")
    return p


def _check_device(p: argparse.ArgumentParser, name: str) -> str:
    """``name`` resolved (``auto``) and checked; a bad one ends in a one-line usage error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        p.error(f"--device {name!r} is not a device (cpu, cuda, cuda:1, mps, ... or auto)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            p.error(f"--device {name}: CUDA is not available here (torch "
                    f"{torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= count:
            p.error(f"--device {name}: only {count} CUDA device(s) (cuda:0 ... cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        p.error(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        p.error(f"--device {name}: the demo runs on cpu, cuda or mps")
    return name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; dataset-dependent defaults are filled in from :data:`DATASETS`.

    Bad values (counts below 1, an unknown or unavailable ``--device``) end in argparse's
    one-line usage error (exit status 2).
    """
    p = build_parser()
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
    args.device = _check_device(p, args.device)
    # progress bars only on a terminal: a log file gets no bar frames
    args.progress = not (args.quiet or args.no_progress) and sys.stderr.isatty()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point declared in ``pyproject.toml``: parse ``argv``, run the demo, return 0.

    A missing optional dependency or dataset prints ``snntorch-weighted: error: ...`` (one line)
    to stderr and returns 2; bad options exit with argparse's usage error (status 2).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        args = args[1:]
    options = parse_args(args)
    try:
        run(options)
    except (MissingDependencyError, DemoError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

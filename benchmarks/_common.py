"""Shared helpers of the benchmark scripts (not part of the installed package).

Every script under ``benchmarks/`` does::

    from _common import parse_args, load_or_train, write_section, markdown_table

- :func:`parse_args`: ``--data-root``, ``--device``, ``--quick``, ``--cache-dir``, ``--retrain``,
  ``--fresh``, ``--output``, ``--seed``, ``--threads`` plus script-specific options.
- :func:`load_or_train`: trains an ANN once and caches its ``state_dict`` (and whatever the
  training reported, e.g. accuracy) under a key derived from the training configuration.
- :func:`write_section`: replaces one script's section of ``BENCHMARKS.md`` between
  ``<!-- BEGIN name -->`` / ``<!-- END name -->`` markers, leaving the other sections alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from snntorch_weighted.data import cache_dir, default_data_root  # noqa: E402

BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"

__all__ = [
    "BENCHMARKS_MD",
    "REPO_ROOT",
    "Timer",
    "checkpoint_path",
    "environment_line",
    "load_or_train",
    "log",
    "make_parser",
    "markdown_table",
    "parse_args",
    "replace_section",
    "resolve_device",
    "write_section",
]


# --------------------------------------------------------------------------- arguments


def make_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data-root", type=Path, default=None,
        help="dataset directory (default: $SNNTORCH_WEIGHTED_DATA, ../shared/datasets or ./data)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto", help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (default)"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="small subsets, few epochs and steps: a smoke run that finishes in minutes",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="trained-checkpoint cache (default: <package cache>/checkpoints)",
    )  # fmt: skip
    parser.add_argument(
        "--retrain", action="store_true",
        help="train the ANNs with the script's own short recipe (cached) instead of loading the "
             "committed reference weights (snntorch_weighted.models.pretrained)",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="ignore cached checkpoints (--retrain ANNs, radix fine-tunings) and train again",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=BENCHMARKS_MD,
        help=f"markdown file whose section this script rewrites (default: {BENCHMARKS_MD.name})",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed for init, subsets, shuffling")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    return parser


def parse_args(
    description: str,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """Parse the shared options (plus those ``configure`` adds) and resolve their defaults.

    Afterwards ``args.data_root`` and ``args.cache_dir`` are ``Path`` objects, ``args.device`` is a
    ``torch.device``; ``--threads`` has been applied.
    """
    parser = make_parser(description)
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    args.data_root = args.data_root if args.data_root is not None else default_data_root()
    args.cache_dir = args.cache_dir if args.cache_dir is not None else cache_dir() / "checkpoints"
    args.device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return args


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


# --------------------------------------------------------------------------- checkpoints


def checkpoint_path(cache: Path, name: str, config: Mapping[str, Any]) -> Path:
    """``cache/<name>-<hash of config>.pt``; any change of ``config`` gives a new file."""
    blob = json.dumps(dict(config), sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob).hexdigest()[:12]
    return Path(cache) / f"{name}-{digest}.pt"


def load_or_train(
    model: nn.Module,
    name: str,
    config: Mapping[str, Any],
    train_fn: Callable[[nn.Module], Mapping[str, Any]],
    cache: Path,
    retrain: bool = False,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Load ``model``'s weights from the cache, or train it with ``train_fn`` and cache them.

    ``config`` must hold everything that determines the trained weights (architecture name,
    epochs, lr, subset sizes, seed, ...). ``train_fn(model)`` trains in place and returns a
    JSON-serialisable dict (e.g. ANN accuracy, history) stored next to the weights. Returns
    ``(model, info, from_cache)``; the model is in eval mode on the CPU.
    """
    path = checkpoint_path(cache, name, config)
    if path.is_file() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        log(f"[{name}] loaded cached checkpoint {path}")
        return model.cpu().eval(), dict(json.loads(saved["info"])), True
    log(f"[{name}] training (checkpoint will be cached at {path})")
    info = dict(train_fn(model))
    model.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    payload = {
        "state_dict": model.state_dict(),
        "config": json.dumps(dict(config), sort_keys=True, default=str),
        "info": json.dumps(info, default=float),
    }
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return model, info, False


# --------------------------------------------------------------------------- BENCHMARKS.md


def _markers(name: str) -> tuple[str, str]:
    if not name or any(c in name for c in "<>\n") or "--" in name:
        raise ValueError(
            f"section name must be non-empty, without '<', '>', '--' or newlines: {name!r}"
        )
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` set to ``body`` (appended at the end if absent)."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    start = text.find(begin)
    if start < 0:
        return (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    stop = text.find(end, start)
    if stop < 0:
        raise ValueError(f"section {name!r}: found {begin!r} but no matching {end!r}")
    return text[:start] + block + text[stop + len(end) :]


def write_section(path: Path, name: str, body: str) -> None:
    """Rewrite section ``name`` of the markdown file ``path`` (created if missing).

    The file is locked while it is read and rewritten (POSIX), so benchmark scripts running in
    parallel do not lose each other's sections.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        with _locked(f):
            f.seek(0)
            new = replace_section(f.read(), name, body)
            f.seek(0)
            f.truncate()
            f.write(new)
    log(f"wrote section {name!r} of {path}")


@contextlib.contextmanager
def _locked(f) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], float_format: str = "{:.4g}"
) -> str:
    """A GitHub markdown table; floats formatted with ``float_format``, ``None`` as ``-``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return float_format.format(value)
        return str(value).replace("|", "\\|")

    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"row {i} has {len(row)} cells, expected {len(headers)}")
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_line(device: torch.device) -> str:
    """One line naming the machine the numbers were measured on."""
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {device.type} ({hw}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}."
    )


# --------------------------------------------------------------------------- misc


def log(message: str) -> None:
    """Progress message on stderr (stdout stays free for results)."""
    print(message, file=sys.stderr, flush=True)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``; synchronises CUDA on exit if asked."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> Timer:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

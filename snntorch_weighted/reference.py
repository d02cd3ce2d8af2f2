"""Reference training of the papers' ANNs, resumable epoch by epoch.

``python -m snntorch_weighted.reference NET [--resume] [--epochs N] [--out DIR] [--threads 1]``
trains one network of Kim et al. 2018, Table 1, with a fixed recipe (:data:`RECIPES`):

- Net1, Net2 on Fashion-MNIST; Net4, ResNet-20 on CIFAR-10; all with batch norm (folded away by
  conversion);
- inputs ``pixel / 256``, Kim et al.'s range ``[0, 1 - 2**-8]`` (eq. 13-14: every pixel is an
  exact 8-phase weighted spike train);
- zero-padded random crops (plus horizontal flips on CIFAR-10);
- SGD with Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.1, a linear warm-up and
  then a cosine decay of the learning rate, stepped per batch.

After every epoch ``OUT/NET/last.pt`` holds the model, optimiser, scheduler, all RNG states, the
epoch and the history; ``--resume`` continues from it and gives the same weights as a run that
was never interrupted. After the last epoch the float32 ``state_dict`` is written to
``snntorch_weighted/weights/NET.pt`` with a manifest ``NET.json`` (recipe, command, seed,
dataset checksums, full-test-set accuracy, sha256 of the weights, date, torch version), which
:func:`snntorch_weighted.models.pretrained` loads.

``python -m snntorch_weighted.reference NET --radix T [T ...] [--threads 1]`` instead fine-tunes
the T-bit radix models of the committed ``NET.pt`` (:mod:`snntorch_weighted.reference_radix`),
writing ``NET-radixT.pt`` / ``NET-radixT.json``; ``pretrained(NET, radix_bits=T)`` loads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as swdata
from .models import PRETRAINED_BUILDERS, WEIGHTS_DIR, file_sha256
from .train import _make_optimizer, _train_epoch, cifar_augment, evaluate

__all__ = [
    "RECIPES",
    "Recipe",
    "dataset_sha256",
    "load_data",
    "load_split",
    "main",
    "train_reference",
    "write_weights",
]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a reference training run (besides the data)."""

    net: str
    dataset: str  # "fashion_mnist" or "cifar10"
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    pad: int = 4
    flip: bool = False
    pixel_divisor: float = 256.0
    seed: int = 0


RECIPES: dict[str, Recipe] = {
    "net1": Recipe("net1", "fashion_mnist", epochs=50, pad=2),
    "net2": Recipe("net2", "fashion_mnist", epochs=30, pad=4),
    "net4": Recipe("net4", "cifar10", epochs=80, pad=4, flip=True, warmup_epochs=2),
    "resnet20": Recipe("resnet20", "cifar10", epochs=120, pad=4, flip=True, warmup_epochs=2),
}


# --------------------------------------------------------------------------- data


def load_split(recipe: Recipe, split: str, root: str | Path | None = None) -> swdata.ImageDataset:
    """The recipe's dataset ``split`` (``"train"``/``"test"``), read as ``uint8 / 256``."""
    loader = {"fashion_mnist": swdata.load_fashion_mnist, "cifar10": swdata.load_cifar10}
    if recipe.dataset not in loader:
        raise ValueError(f"unknown dataset {recipe.dataset!r}; expected one of {sorted(loader)}")
    return loader[recipe.dataset](root, split=split).rescaled(recipe.pixel_divisor)


def load_data(recipe: Recipe, root: str | Path | None = None):
    """``(train, test)`` :class:`~snntorch_weighted.data.ImageDataset` read as ``uint8 / 256``."""
    return load_split(recipe, "train", root), load_split(recipe, "test", root)


def dataset_sha256(dataset: swdata.ImageDataset) -> str:
    """sha256 of the decoded ``uint8`` images and ``int64`` labels (independent of file format)."""
    digest = hashlib.sha256()
    digest.update(dataset.images.contiguous().numpy().tobytes())
    digest.update(dataset.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- schedule & state


class WarmupCosine:
    """Learning-rate factor of batch ``i``: linear warm-up to 1, then cosine decay to 0."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, max(total, 1)

    def __call__(self, i: int) -> float:
        if i < self.warmup:
            return (i + 1) / self.warmup
        progress = min(i - self.warmup, self.total - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _rng_states(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }


def _set_rng_states(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))


def _save_atomic(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- training


def train_reference(
    recipe: Recipe,
    model: nn.Module,
    train_data: swdata.ImageDataset,
    test_data: swdata.ImageDataset,
    checkpoint: str | Path,
    resume: bool = False,
    stop_after: int | None = None,
    log=print,
) -> dict[str, list[float]]:
    """Train ``model`` in place by ``recipe``, saving ``checkpoint`` after every epoch.

    With ``resume`` the run continues from ``checkpoint`` (whose recipe must equal ``recipe``);
    ``stop_after`` ends this call after that many epochs (the checkpoint stays resumable).
    Returns the history (per epoch: loss, train/test accuracy, seconds). ``model`` must be freshly
    built under ``torch.manual_seed(recipe.seed)`` when starting afresh.
    """
    checkpoint = Path(checkpoint)
    generator = torch.Generator().manual_seed(recipe.seed)
    opt = _make_optimizer(model, "sgd", recipe.lr, recipe.momentum, recipe.weight_decay)
    n_batches = math.ceil(len(train_data) / recipe.batch_size)
    schedule = WarmupCosine(recipe.warmup_epochs * n_batches, recipe.epochs * n_batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    history: dict[str, list[float]] = {k: [] for k in ("loss", "train_acc", "test_acc", "seconds")}
    start_epoch = 0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        _check_recipe(state, recipe, checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_states(state["rng"], generator)
        history, start_epoch = state["history"], state["epoch"]
        log(f"{recipe.net}: resumed from {checkpoint} after epoch {start_epoch}/{recipe.epochs}")
    elif checkpoint.exists():
        raise FileExistsError(
            f"{checkpoint} exists: pass --resume to continue it, or remove it to start afresh"
        )
    augment = _augment_fn(recipe)
    last = recipe.epochs if stop_after is None else min(recipe.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, last):
        began = time.perf_counter()
        loss, acc = _train_epoch(
            model, train_data, opt, sched, recipe.batch_size, torch.device("cpu"), augment,
            generator, n_batches, False, "", label_smoothing=recipe.label_smoothing,
        )  # fmt: skip
        if not math.isfinite(loss):
            raise FloatingPointError(f"{recipe.net}: loss {loss} at epoch {epoch + 1}")
        test_acc = evaluate(model, test_data, batch_size=1000)
        for key, value in zip(history, (loss, acc, test_acc, time.perf_counter() - began)):
            history[key].append(value)
        state = {
            "format": CHECKPOINT_FORMAT, "recipe": dataclasses.asdict(recipe), "epoch": epoch + 1,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": _rng_states(generator), "history": history,
        }  # fmt: skip
        _save_atomic(state, checkpoint)
        log(
            f"{recipe.net} epoch {epoch + 1}/{recipe.epochs} loss {loss:.4f} "
            f"train {100 * acc:.2f} % test {100 * test_acc:.2f} % "
            f"lr {opt.param_groups[0]['lr']:.4f} {history['seconds'][-1]:.1f} s"
        )
    model.eval()
    return history


def _augment_fn(recipe: Recipe):
    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return cifar_augment(x, generator, padding=recipe.pad, flip=recipe.flip)

    return augment if recipe.pad > 0 or recipe.flip else None


def _check_recipe(state: dict, recipe: Recipe, path: Path) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')}, expected 1")
    if state["recipe"] != dataclasses.asdict(recipe):
        raise ValueError(
            f"{path} was trained with recipe {state['recipe']}, not {dataclasses.asdict(recipe)}; "
            "resume with the same options (e.g. --epochs) or use another --out to start afresh"
        )


# --------------------------------------------------------------------------- weights & manifest


def canonical_command(recipe: Recipe) -> str:
    """The command that reproduces ``recipe`` from scratch."""
    cmd = f"python -m snntorch_weighted.reference {recipe.net}"
    if recipe.epochs != RECIPES[recipe.net].epochs:
        cmd += f" --epochs {recipe.epochs}"
    if recipe.seed != RECIPES[recipe.net].seed:
        cmd += f" --seed {recipe.seed}"
    return cmd + " --threads 1"


def write_weights(
    recipe: Recipe,
    model: nn.Module,
    train_data: swdata.ImageDataset,
    test_data: swdata.ImageDataset,
    history: dict[str, list[float]],
    weights_dir: str | Path = WEIGHTS_DIR,
) -> dict:
    """Save the float32 ``state_dict`` and its manifest to ``weights_dir``; return the manifest."""
    weights_dir = Path(weights_dir)
    path = weights_dir / f"{recipe.net}.pt"
    state = {k: v.detach().float() if v.is_floating_point() else v.detach()
             for k, v in model.state_dict().items()}  # fmt: skip
    _save_atomic(state, path)
    accuracy = evaluate(model, test_data, batch_size=1000)
    builder, kwargs = PRETRAINED_BUILDERS[recipe.net]
    manifest = {
        "name": recipe.net,
        "model": {"builder": f"snntorch_weighted.models.{builder.__name__}", "kwargs": kwargs},
        "recipe": dataclasses.asdict(recipe),
        "command": canonical_command(recipe),
        "epochs": recipe.epochs,
        "seed": recipe.seed,
        "input": f"uint8 pixel / {recipe.pixel_divisor:g} (Kim et al. range [0, 1 - 2**-8])",
        "dataset": recipe.dataset,
        "dataset_sha256": {"train": dataset_sha256(train_data), "test": dataset_sha256(test_data)},
        "test_images": len(test_data),
        "test_correct": round(accuracy * len(test_data)),
        "test_accuracy_percent": round(100 * accuracy, 2),
        "history": history,
    }
    return write_manifest(manifest, path)


def write_manifest(manifest: dict, weights_file: Path) -> dict:
    """Complete ``manifest`` with the weights file's name, sha256, the date and the torch
    version, and write it atomically next to the file as ``NAME.json``; return it."""
    manifest = {
        **manifest,
        "weights_file": weights_file.name,
        "sha256": file_sha256(weights_file),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    tmp = weights_file.with_name(f".{weights_file.stem}.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, weights_file.with_suffix(".json"))
    return manifest


# --------------------------------------------------------------------------- command line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m snntorch_weighted.reference", description=__doc__.split("\n")[0]
    )
    parser.add_argument("net", choices=sorted(RECIPES))
    parser.add_argument("--resume", action="store_true", help="continue OUT/NET/last.pt")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--seed", type=int, help="override the recipe's seed (default 0)")
    parser.add_argument("--out", default="checkpoints", help="checkpoint folder")
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR), help="where NET.pt/.json go")
    parser.add_argument("--data-root", help="dataset folder (default: data.default_data_root())")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--stop-after", type=int, help="stop after this many epochs in this call")
    parser.add_argument(
        "--radix", type=int, nargs="+", metavar="T",
        help="instead of training the float ANN: fine-tune its T-bit radix models from the "
             "committed NET.pt (snntorch_weighted.reference_radix), writing NET-radixT.pt/.json",
    )  # fmt: skip
    return parser.parse_args(argv)


def _already_done(recipe: Recipe, weights_dir: Path) -> bool:
    manifest_path, weights = weights_dir / f"{recipe.net}.json", weights_dir / f"{recipe.net}.pt"
    if not (manifest_path.is_file() and weights.is_file()):
        return False
    manifest = json.loads(manifest_path.read_text())
    same = manifest.get("recipe") == dataclasses.asdict(recipe)
    return same and manifest.get("sha256") == file_sha256(weights)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.net]
    overrides = {k: getattr(args, k) for k in ("epochs", "seed") if getattr(args, k) is not None}
    recipe = dataclasses.replace(recipe, **overrides)
    if args.radix:
        from .reference_radix import run_radix

        if any(not 1 <= t <= 16 for t in args.radix):
            raise SystemExit(f"--radix takes T in 1..16, got {args.radix}")
        log = lambda msg: print(msg, flush=True)  # noqa: E731
        run_radix(args.net, args.radix, recipe.seed, args.weights_dir, args.data_root, log)
        return 0
    if recipe.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {recipe.epochs}")
    if _already_done(recipe, Path(args.weights_dir)):
        print(f"{recipe.net}: {args.weights_dir}/{recipe.net}.pt is this recipe's result; done")
        return 0
    train_data, test_data = load_data(recipe, args.data_root)
    torch.manual_seed(recipe.seed)
    builder, kwargs = PRETRAINED_BUILDERS[recipe.net]
    model = builder(**kwargs)
    checkpoint = Path(args.out) / recipe.net / "last.pt"
    print(f"{recipe.net}: {recipe} on {len(train_data)}/{len(test_data)} images", flush=True)
    history = train_reference(
        recipe, model, train_data, test_data, checkpoint, args.resume, args.stop_after,
        log=lambda msg: print(msg, flush=True),
    )  # fmt: skip
    if len(history["loss"]) < recipe.epochs:
        print(f"{recipe.net}: stopped after epoch {len(history['loss'])}; resume with --resume")
        return 0
    manifest = write_weights(recipe, model, train_data, test_data, history, args.weights_dir)
    print(
        f"{recipe.net}: done, test accuracy {manifest['test_accuracy_percent']:.2f} % "
        f"({manifest['test_correct']}/{manifest['test_images']}), weights "
        f"{Path(args.weights_dir) / manifest['weights_file']} sha256 {manifest['sha256']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Fine-tuned T-bit radix models (Wang et al.) of the committed reference ANNs.

``python -m snntorch_weighted.reference NET --radix T [T ...] [--threads 1]`` turns the committed
float ANN ``weights/NET.pt`` into its T-bit radix twin and fine-tunes it with a fixed recipe per
dataset (:class:`RadixRecipe`, :func:`default_recipe`: the radix rows of the full run of
``benchmarks/fashion_mnist.py`` resp. ``benchmarks/cifar10.py``, whose defaults are read from
:data:`DATASET_RECIPES`):

- data: the reference recipe's training set read as ``uint8 / 256``; calibration images
  ``data.as_tensors(train, calib_size, seed + calib_seed_offset)`` (offset 0 for Fashion-MNIST,
  2 for CIFAR-10), fine-tuning + held-out images
  ``data.as_tensors(train, finetune_size + finetune_val, seed + 1)`` split in that order (the
  draws of the benchmark scripts, :func:`finetune_draw`);
- :func:`snntorch_weighted.quant.prepare` (T activation bits, 8-bit symmetric weights, clips at
  the 99.99th percentile of the calibration activations);
- :func:`snntorch_weighted.quant.finetune`: STE fine-tuning, AdamW with a cosine learning rate,
  distilling the float ANN (Hinton et al. 2015, temperature 1).

It writes ``weights/NET-radixT.pt``, the float32 ``state_dict`` of the twin
(``prepared.radix_twin``: weights, biases and every clip :math:`c_l`), and a manifest
``NET-radixT.json`` (base ANN and its sha256, T, weight bits, recipe, command, dataset sha256,
accuracy of the quantised model on the full test set before and after fine-tuning, sha256, date,
torch version). :func:`snntorch_weighted.models.pretrained` (``radix_bits=T``) loads it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from . import data as swdata
from . import quant
from .models import (
    INPUT_SHAPES,
    WEIGHTS_DIR,
    available_pretrained,
    file_sha256,
    pretrained,
    radix_name,
    read_manifest,
)
from .reference import RECIPES, _save_atomic, dataset_sha256, load_data, write_manifest
from .train import evaluate

__all__ = [
    "DATASET_RECIPES",
    "RadixRecipe",
    "benchmark_full",
    "calib_seed_offset",
    "default_recipe",
    "finetune_draw",
    "finetune_radix",
    "load_committed",
    "manifest_recipe",
    "radix_command",
    "radix_data",
    "run_radix",
    "write_radix_weights",
]

#: the manifest also records the correct count on this many first test images (a fast check).
FIRST_IMAGES = 500


@dataclass(frozen=True)
class RadixRecipe:
    """Everything that determines a radix fine-tuning run (besides the base ANN and the data).

    The defaults are ``benchmarks/fashion_mnist.py``'s; :data:`DATASET_RECIPES` lists what
    differs per dataset (:func:`default_recipe`).
    """

    net: str
    num_bits: int  # T
    weight_bits: int = 8
    percentile: float = 99.99  # clip calibration
    learn_clip: bool = False
    calib_size: int = 1000
    finetune_size: int = 10000
    finetune_val: int = 5000
    epochs: int = 2
    lr: float = 1e-4
    optimizer: str = "adam"  # AdamW, cosine schedule per batch
    batch_size: int = 64
    teacher: str = "float ANN"  # distillation (quant.finetune(teacher=...))
    temperature: float = 1.0
    seed: int = 0
    calib_seed_offset: int = 0  # calibration images drawn with seed + this


#: Per dataset, the :class:`RadixRecipe` fields that differ from its defaults (which are
#: ``benchmarks/fashion_mnist.py``'s): the radix settings of each benchmark script's full run,
#: which reads them from here (:func:`benchmark_full`, :func:`calib_seed_offset`).
DATASET_RECIPES: dict[str, dict[str, int | float]] = {
    "fashion_mnist": {},
    "cifar10": {"finetune_size": 5000, "finetune_val": 2000, "calib_seed_offset": 2},
}


def _dataset_fields(dataset: str) -> dict[str, int | float]:
    if dataset not in DATASET_RECIPES:
        raise ValueError(f"no radix recipe for dataset {dataset!r}; "
                         f"expected one of {sorted(DATASET_RECIPES)}")  # fmt: skip
    return DATASET_RECIPES[dataset]


def default_recipe(net: str, num_bits: int, seed: int = 0) -> RadixRecipe:
    """The recipe of ``net``'s T-bit radix model: its dataset's :data:`DATASET_RECIPES`."""
    if net not in RECIPES:
        raise ValueError(f"unknown reference network {net!r}; expected one of {sorted(RECIPES)}")
    return RadixRecipe(net, num_bits, seed=seed, **_dataset_fields(RECIPES[net].dataset))


def benchmark_full(dataset: str) -> dict[str, int | float]:
    """The radix sizes of ``benchmarks/DATASET.py``'s full run (entries of its ``FULL`` dict)."""
    recipe = RadixRecipe("", 1, **_dataset_fields(dataset))
    return {"calib_size": recipe.calib_size, "finetune_size": recipe.finetune_size,
            "finetune_val": recipe.finetune_val, "finetune_epochs": recipe.epochs,
            "finetune_lr": recipe.lr}  # fmt: skip


def calib_seed_offset(dataset: str) -> int:
    """``benchmarks/DATASET.py`` draws its calibration images with ``--seed`` + this."""
    return int(_dataset_fields(dataset).get("calib_seed_offset", 0))


def manifest_recipe(manifest: dict) -> RadixRecipe | None:
    """The recipe a radix manifest records; None when it names fields :class:`RadixRecipe`
    lacks. Fields it lacks take their defaults: fields are only added with the default that
    reproduces the recipe before they existed (``calib_seed_offset``: 0)."""
    fields = manifest.get("recipe")
    if not isinstance(fields, dict):
        return None
    try:
        return RadixRecipe(**fields)
    except TypeError:
        return None


def radix_command(recipe: RadixRecipe) -> str:
    """The command that reproduces ``recipe``'s weights from the committed float ANN."""
    cmd = f"python -m snntorch_weighted.reference {recipe.net} --radix {recipe.num_bits}"
    if recipe.seed != 0:
        cmd += f" --seed {recipe.seed}"
    return cmd + " --threads 1"


def finetune_draw(
    train: Dataset, finetune_size: int, finetune_val: int, seed: int
) -> tuple[tuple, tuple]:
    """Fine-tuning ``(x, y)`` and held-out ``(x, y)``: one random draw of ``finetune_size +
    finetune_val`` images of ``train`` (seed ``seed + 1``), split in that order."""
    x, y = swdata.as_tensors(train, finetune_size + finetune_val, seed=seed + 1)
    n = finetune_size
    return (x[:n], y[:n]), (x[n:], y[n:])


def radix_data(recipe: RadixRecipe, train: swdata.ImageDataset) -> dict[str, tuple]:
    """``calib`` (images), ``finetune`` and ``val`` (``(x, y)``): the benchmark's random draws."""
    calib, _ = swdata.as_tensors(
        train, recipe.calib_size, seed=recipe.seed + recipe.calib_seed_offset
    )
    ft, val = finetune_draw(train, recipe.finetune_size, recipe.finetune_val, recipe.seed)
    return {"calib": calib, "finetune": ft, "val": val}


def finetune_radix(
    recipe: RadixRecipe,
    ann: nn.Module,
    data: dict[str, tuple],
    test: swdata.ImageDataset | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """Prepare a copy of ``ann`` and fine-tune it by ``recipe`` (``ann`` stays untouched).

    Returns the prepared model (eval mode, on the CPU) and ``info``: the per-epoch history of
    :func:`snntorch_weighted.quant.finetune`, the fine-tuning seconds and, given ``test``, the
    accuracy of the quantised model before fine-tuning (post-training quantisation) on it.
    """
    teacher = copy.deepcopy(ann).eval()
    prepared = quant.prepare(
        copy.deepcopy(ann).eval(), num_bits=recipe.num_bits, weight_bits=recipe.weight_bits,
        calibration_data=data["calib"], learn_clip=recipe.learn_clip,
        percentile=recipe.percentile,
    )  # fmt: skip
    info: dict = {}
    if test is not None:
        info["ptq_test_correct"] = round(evaluate(prepared, test, batch_size=1000) * len(test))
    began = time.perf_counter()
    info["history"] = quant.finetune(
        prepared, data["finetune"], epochs=recipe.epochs, lr=recipe.lr, val_data=data["val"],
        device=device, progress=False, optimizer=recipe.optimizer, batch_size=recipe.batch_size,
        seed=recipe.seed, teacher=teacher, temperature=recipe.temperature,
    )  # fmt: skip
    info["finetune_seconds"] = time.perf_counter() - began
    return prepared.cpu().eval(), info


def write_radix_weights(
    recipe: RadixRecipe,
    prepared: nn.Module,
    base_manifest: dict,
    info: dict,
    train: swdata.ImageDataset,
    test: swdata.ImageDataset,
    weights_dir: str | Path = WEIGHTS_DIR,
) -> dict:
    """Save the twin's float32 ``state_dict`` and its manifest to ``weights_dir``; return it.

    ``base_manifest`` is the manifest of the float ANN ``prepared`` was made from; ``info`` as
    returned by :func:`finetune_radix`. The test accuracy is measured here, on all of ``test``.
    """
    weights_dir = Path(weights_dir)
    name = radix_name(recipe.net, recipe.num_bits)
    path = weights_dir / f"{name}.pt"
    state = {k: v.detach().float() if v.is_floating_point() else v.detach()
             for k, v in quant.twin(prepared).state_dict().items()}  # fmt: skip
    _save_atomic(state, path)
    correct = round(evaluate(prepared, test, batch_size=1000) * len(test))
    x, y = swdata.as_tensors(test)
    first = min(FIRST_IMAGES, len(test))
    correct_first = int((prepared(x[:first]).argmax(1) == y[:first]).sum())
    manifest = {
        "name": name,
        "base": {
            k: base_manifest.get(k)
            for k in ("name", "weights_file", "sha256", "command", "test_accuracy_percent")
        },
        "num_bits": recipe.num_bits,
        "weight_bits": recipe.weight_bits,
        "input_shape": list(INPUT_SHAPES[recipe.net]),
        "recipe": dataclasses.asdict(recipe),
        "command": radix_command(recipe),
        "seed": recipe.seed,
        "threads": torch.get_num_threads(),
        "input": base_manifest.get("input"),
        "dataset": base_manifest.get("dataset"),
        "dataset_sha256": {"train": dataset_sha256(train), "test": dataset_sha256(test)},
        "test_images": len(test),
        "test_correct": correct,
        "test_accuracy_percent": round(100 * correct / len(test), 2),
        f"test_correct_first_{FIRST_IMAGES}": correct_first,
        **_ptq_fields(info, len(test)),
        "history": _finite(info["history"]),
        "finetune_seconds": round(info["finetune_seconds"], 1),
    }
    return write_manifest(manifest, path)


def _finite(history: list[dict]) -> list[dict]:
    """``history`` with NaN (epoch 0's loss) as ``None``: the manifest stays strict JSON."""
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in record.items()} for record in history]  # fmt: skip


def _ptq_fields(info: dict, images: int) -> dict:
    if "ptq_test_correct" not in info:
        return {}
    correct = info["ptq_test_correct"]
    return {
        "ptq_test_correct": correct,
        "ptq_test_accuracy_percent": round(100 * correct / images, 2),
    }


def _already_done(recipe: RadixRecipe, base_sha: str, weights_dir: Path) -> bool:
    name = radix_name(recipe.net, recipe.num_bits)
    path, manifest_path = weights_dir / f"{name}.pt", weights_dir / f"{name}.json"
    if not (path.is_file() and manifest_path.is_file()):
        return False
    manifest = json.loads(manifest_path.read_text())
    return (manifest_recipe(manifest) == recipe
            and manifest.get("base", {}).get("sha256") == base_sha
            and manifest.get("sha256") == file_sha256(path))  # fmt: skip


def run_radix(
    net: str,
    bits: list[int],
    seed: int = 0,
    weights_dir: str | Path = WEIGHTS_DIR,
    data_root: str | Path | None = None,
    log=print,
) -> list[dict]:
    """Fine-tune and write ``NET-radixT`` for each T of ``bits`` by :func:`default_recipe`
    (skipping finished ones)."""
    weights_dir = Path(weights_dir)
    base_manifest = read_manifest(net, weights_dir)
    ann = pretrained(net, weights_dir=weights_dir)
    train, test = load_data(RECIPES[net], data_root)
    manifests = []
    for t in bits:
        recipe = default_recipe(net, t, seed)
        if _already_done(recipe, base_manifest["sha256"], weights_dir):
            log(f"{radix_name(net, t)}: {weights_dir} holds this recipe's result; done")
            manifests.append(read_manifest(radix_name(net, t), weights_dir))
            continue
        log(f"{radix_name(net, t)}: {recipe}")
        prepared, info = finetune_radix(recipe, ann, radix_data(recipe, train), test)
        manifest = write_radix_weights(
            recipe, prepared, base_manifest, info, train, test, weights_dir
        )
        log(
            f"{manifest['name']}: test accuracy {manifest['test_accuracy_percent']:.2f} % "
            f"({manifest['test_correct']}/{manifest['test_images']}; before fine-tuning "
            f"{manifest.get('ptq_test_accuracy_percent')} %, float ANN "
            f"{base_manifest.get('test_accuracy_percent')} %), fine-tuned in "
            f"{manifest['finetune_seconds']:.0f} s, sha256 {manifest['sha256']}"
        )
        manifests.append(manifest)
    return manifests


def load_committed(
    recipe: RadixRecipe, base_sha256: str, weights_dir: str | Path | None = None
) -> tuple[nn.Module, dict] | None:
    """The committed ``NET-radixT`` model and its manifest if it was fine-tuned by ``recipe``
    from the float ANN whose weights have sha256 ``base_sha256``; else None."""
    name = radix_name(recipe.net, recipe.num_bits)
    if name not in available_pretrained(weights_dir):
        return None
    manifest = read_manifest(name, weights_dir)
    if manifest_recipe(manifest) != recipe:
        return None
    if manifest.get("base", {}).get("sha256") != base_sha256:
        return None
    return pretrained(name, weights_dir=weights_dir), manifest

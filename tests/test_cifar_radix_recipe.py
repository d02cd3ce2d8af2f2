"""The CIFAR-10 radix recipe: ``reference NET --radix T`` fine-tunes with the draws of
``benchmarks/cifar10.py``, which loads a committed radix model only when its recipe is the run's.

End to end on fake CIFAR-10 (random ``uint8`` images ``[3, 8, 8]``) with a tiny network in place
of Net4 and a temporary weights folder: ``reference_radix.run_radix`` writes ``net4-radix2`` by
the CIFAR recipe, then ``cifar10.main`` runs its full settings (weighted / rate SNNs and the
fine-tuning itself stubbed out) and must pick the committed model, with the very same
calibration, fine-tuning and held-out images; a model written by any other recipe is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from snntorch_weighted import data as swdata
from snntorch_weighted import models, reference, reference_radix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
cifar10 = importlib.import_module("cifar10")
accuracy = sys.modules["_accuracy"]  # the module cifar10.py calls

BITS = 2
TRAIN_IMAGES = 8000  # >= calib 1000 and fine-tune 5000 + held-out 2000 of the full run


def tiny_cifar_net() -> nn.Module:
    """Stands in for Net4: conv-ReLU-linear on ``[3, 8, 8]``."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)
    )


def _fake_split(n: int, seed: int) -> swdata.ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return swdata.ImageDataset(images, torch.randint(0, 10, (n,), generator=g))


def fake_cifar10(root=None, split: str = "train", **_) -> swdata.ImageDataset:
    """What ``data.load_cifar10`` returns (``uint8 / 255``), small and random."""
    return _fake_split(TRAIN_IMAGES, 1) if split == "train" else _fake_split(20, 2)


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A weights folder (the package's, patched) holding the tiny ``net4`` and its
    ``net4-radix2`` written by ``run_radix``; the data ``finetune_radix`` was given."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("weights")
    seen = {}

    def spy(recipe, ann, data, test=None, device="cpu"):
        seen.update(recipe=recipe, data=data)
        prepared, info = real_finetune(recipe, ann, data, test, device)
        seen.update(prepared=prepared, info=info)
        return prepared, info

    real_finetune = reference_radix.finetune_radix
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.PRETRAINED_BUILDERS, "net4", (tiny_cifar_net, {}))
        mp.setitem(models.INPUT_SHAPES, "net4", (3, 8, 8))
        mp.setattr(models, "WEIGHTS_DIR", folder)
        mp.setattr(swdata, "load_cifar10", fake_cifar10)
        mp.setattr(cifar10, "load_cifar10", fake_cifar10)
        mp.setattr(reference_radix, "finetune_radix", spy)
        train, test = reference.load_data(reference.RECIPES["net4"])
        torch.manual_seed(0)
        history = {"loss": [1.0], "train_acc": [0.1], "test_acc": [0.1], "seconds": [1.0]}
        reference.write_weights(
            reference.RECIPES["net4"], tiny_cifar_net().eval(), train, test, history, folder
        )
        (manifest,) = reference_radix.run_radix("net4", [BITS], weights_dir=folder, log=print)
        yield {"folder": folder, "manifest": manifest, "train": train, "test": test, **seen}


def _run_benchmark(monkeypatch, tmp_path, *options: str) -> dict:
    """``cifar10.main`` with the full settings (+ ``options``) for net4, T = 2: what its radix
    rows say, the data and args ``radix_benchmark`` got, and whether it fine-tuned."""
    got: dict = {"finetuned": 0}

    def radix_spy(name, model, args, data, ann_key, prefix):
        got.update(args=args, data=data)
        got["rows"] = accuracy.radix_benchmark(name, model, args, data, ann_key, prefix)
        return got["rows"]

    def no_training(model, key, config, train_fn, cache_dir, fresh):
        got["finetuned"] += 1
        return model, {"history": [], "seconds": 0.0}, False

    monkeypatch.setattr(cifar10, "radix_benchmark", radix_spy)
    monkeypatch.setattr(accuracy, "load_or_train", no_training)
    monkeypatch.setattr(cifar10, "coding_runs", lambda *a: {})
    for stub in ("net_section", "radix_section", "write_section", "save_json"):
        monkeypatch.setattr(cifar10, stub, lambda *a, **k: "")
    cifar10.main(["--nets", "net4", "--bits", str(BITS), "--device", "cpu", "--threads", "1",
                  "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "B.md"),
                  *options])  # fmt: skip
    return got


def test_cifar_recipe_is_the_cifar10_benchmark_full_run() -> None:
    recipe = reference_radix.default_recipe("net4", 4)
    assert reference_radix.default_recipe("resnet20", 4) == dataclasses.replace(
        recipe, net="resnet20"
    )
    # cifar10.py before the recipe moved here: FULL finetune_size 5000, finetune_val 2000,
    # finetune_epochs 2, calib_size 1000, lr 1e-4; calibration drawn with seed + 2.
    expected = {"calib_size": 1000, "finetune_size": 5000, "finetune_val": 2000, "epochs": 2,
                "lr": 1e-4, "seed": 0, "calib_seed_offset": 2}  # fmt: skip
    assert {k: getattr(recipe, k) for k in expected} == expected
    for key, value in reference_radix.benchmark_full("cifar10").items():
        assert cifar10.FULL[key] == value, key
    parsed = cifar10.parse_args("x", cifar10.configure, ["--device", "cpu"])
    args = cifar10.apply_defaults(parsed, cifar10.FULL, cifar10.QUICK)
    assert accuracy.run_recipe("net4", 4, args, args.seed + 2) == recipe
    assert reference_radix.radix_command(recipe) == (
        "python -m snntorch_weighted.reference net4 --radix 4 --threads 1"
    )


def test_reference_writes_the_cifar_recipe(committed) -> None:
    manifest = committed["manifest"]
    recipe = reference_radix.default_recipe("net4", BITS)
    assert committed["recipe"] == recipe
    assert manifest["recipe"] == dataclasses.asdict(recipe)
    assert manifest["recipe"]["calib_seed_offset"] == 2
    data = committed["data"]
    assert data["calib"].shape[0] == 1000
    assert data["finetune"][0].shape[0] == 5000 and data["val"][0].shape[0] == 2000


def test_benchmark_loads_the_model_of_its_recipe_with_the_same_draws(
    committed, monkeypatch, tmp_path
) -> None:
    got = _run_benchmark(monkeypatch, tmp_path)
    (row,) = got["rows"]
    assert row["committed"] and got["finetuned"] == 0
    assert row["source"].endswith(committed["manifest"]["sha256"])
    # the images reference_radix fine-tuned on are those of the benchmark's run
    ours, theirs = committed["data"], got["data"]
    assert torch.equal(ours["calib"], theirs["calib"])
    for key, bench_key in (("finetune", "ft_set"), ("val", "val")):
        assert all(torch.equal(a, b) for a, b in zip(ours[key], theirs[bench_key])), key
    # ... and not those of another seed (the comparison can fail)
    other, _ = swdata.as_tensors(committed["train"], 1000, seed=0)
    assert not torch.equal(other, theirs["calib"])
    # the committed twin is what the row evaluated: same accuracy as the fine-tuned model
    x, y = swdata.as_tensors(committed["test"])
    with torch.no_grad():
        correct = int((committed["prepared"](x).argmax(1) == y).sum())
    assert row["accuracy"] == correct / len(y)


@pytest.mark.parametrize(
    "change",
    [{"calib_seed_offset": 0}, {"finetune_val": 5000}, {"finetune_size": 10000, "finetune_val":
     5000, "calib_seed_offset": 0}],  # the last: the Fashion-MNIST recipe
)  # fmt: skip
def test_benchmark_refuses_a_model_of_another_recipe(
    committed, monkeypatch, tmp_path, change
) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    for path in committed["folder"].glob("net4.*"):
        (folder / path.name).write_bytes(path.read_bytes())
    other = dataclasses.replace(committed["recipe"], **change)
    if "finetune_size" in change:
        assert other == reference_radix.RadixRecipe("net4", BITS)  # Fashion's defaults
    reference_radix.write_radix_weights(
        other, committed["prepared"], models.read_manifest("net4", folder), committed["info"],
        committed["train"], committed["test"], folder,
    )  # fmt: skip
    monkeypatch.setattr(models, "WEIGHTS_DIR", folder)
    assert models.available_pretrained() == ["net4", "net4-radix2"]
    got = _run_benchmark(monkeypatch, tmp_path)
    (row,) = got["rows"]
    assert not row["committed"] and got["finetuned"] == 1


def test_benchmark_run_with_other_settings_refuses_the_committed_model(
    committed, monkeypatch, tmp_path
) -> None:
    got = _run_benchmark(monkeypatch, tmp_path, "--finetune-val", "3000")
    (row,) = got["rows"]
    assert not row["committed"] and got["finetuned"] == 1
    got = _run_benchmark(monkeypatch, tmp_path, "--fresh")
    assert not got["rows"][0]["committed"] and got["finetuned"] == 1
    # calibration images drawn with another seed: another recipe
    monkeypatch.setattr(reference_radix, "calib_seed_offset", lambda dataset: 0)
    got = _run_benchmark(monkeypatch, tmp_path)
    assert got["data"]["calib_seed"] == 0
    assert not got["rows"][0]["committed"] and got["finetuned"] == 1

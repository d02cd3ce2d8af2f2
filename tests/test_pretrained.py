"""Tests of the reference training (exact resume) and of the committed pretrained weights.

The committed weights are evaluated on the full test sets when the datasets are present (the
Fashion-MNIST nets take seconds; the CIFAR-10 nets only with SNNTORCH_WEIGHTED_FULL_EVAL=1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import pytest
import torch

from snntorch_weighted import data, models, reference
from snntorch_weighted.train import evaluate

MANIFEST_FIELDS = {
    "name", "model", "recipe", "command", "epochs", "seed", "input", "dataset", "dataset_sha256",
    "test_images", "test_correct", "test_accuracy_percent", "history", "weights_file", "sha256",
    "date", "torch_version",
}  # fmt: skip


def _tiny_images(n: int, seed: int = 0) -> data.ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return data.ImageDataset(images, torch.arange(n) % 10, divisor=256)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An untrained Net1 written by ``reference.write_weights`` into a temporary folder."""
    folder = tmp_path_factory.mktemp("weights")
    recipe = dataclasses.replace(reference.RECIPES["net1"], epochs=1)
    torch.manual_seed(0)
    model = models.net1(batch_norm=True).eval()
    history = {"loss": [1.0], "train_acc": [0.5], "test_acc": [0.5], "seconds": [1.0]}
    manifest = reference.write_weights(
        recipe, model, _tiny_images(30, 1), _tiny_images(20, 2), history, folder
    )
    return folder, model, manifest


def test_manifest_fields_and_sha256(written):
    folder, model, manifest = written
    assert MANIFEST_FIELDS <= set(manifest)
    assert json.loads((folder / "net1.json").read_text()) == manifest
    # sha256 recomputed independently of models.file_sha256.
    assert manifest["sha256"] == hashlib.sha256((folder / "net1.pt").read_bytes()).hexdigest()
    assert (
        manifest["command"] == "python -m snntorch_weighted.reference net1 --epochs 1 --threads 1"
    )
    assert manifest["model"] == {
        "builder": "snntorch_weighted.models.net1",
        "kwargs": {"batch_norm": True},
    }
    assert manifest["recipe"]["pixel_divisor"] == 256 and manifest["test_images"] == 20
    correct = (model(_tiny_images(20, 2).tensors()[0]).argmax(1) == torch.arange(20) % 10).sum()
    assert manifest["test_correct"] == correct.item()
    assert manifest["test_accuracy_percent"] == round(100 * correct.item() / 20, 2)


def test_pretrained_loads_exactly_what_was_written(written):
    folder, model, _ = written
    assert models.available_pretrained(folder) == ["net1"]
    loaded = models.pretrained("net1", weights_dir=folder)
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    saved = torch.load(folder / "net1.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in saved.values() if v.is_floating_point())


def test_tampered_or_missing_weights_fail_with_the_retrain_command(written, tmp_path):
    folder, model, manifest = written
    for name in ("net1.pt", "net1.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    state = torch.load(tmp_path / "net1.pt", weights_only=True)
    state["1.weight"][0, 0] += 1.0
    torch.save(state, tmp_path / "net1.pt")  # a valid file, but not the one the manifest names
    with pytest.raises(models.PretrainedWeightsError, match="sha256.*snntorch_weighted.reference"):
        models.pretrained("net1", weights_dir=tmp_path)
    unchecked = models.pretrained("net1", check=False, weights_dir=tmp_path)
    assert torch.equal(unchecked.state_dict()["1.weight"], state["1.weight"])
    (tmp_path / "net1.pt").unlink()
    with pytest.raises(models.PretrainedWeightsError, match="missing.*reference net1"):
        models.pretrained("net1", weights_dir=tmp_path)
    assert models.available_pretrained(tmp_path) == []
    with pytest.raises(models.PretrainedWeightsError, match="no manifest.*reference net2"):
        models.pretrained("net2", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown pretrained network 'net3'"):
        models.pretrained("net3")


# --------------------------------------------------------------------------- training


def _digits_run(recipe, path, **kwargs):
    torch.manual_seed(recipe.seed)
    model = models.digits_cnn()
    model.insert(1, torch.nn.BatchNorm2d(8))  # BN running statistics must resume too
    train = data.subset(data.load_digits("train"), 200)
    test = data.load_digits("test")
    history = reference.train_reference(
        recipe, model, train, test, path, log=lambda _: None, **kwargs
    )
    return model, history


def test_resume_gives_the_straight_run(tmp_path):
    recipe = reference.Recipe("net1", "digits", epochs=2, batch_size=32, pad=2, flip=True)
    straight, h_straight = _digits_run(recipe, tmp_path / "a.pt")
    _digits_run(recipe, tmp_path / "b.pt", stop_after=1)
    state = torch.load(tmp_path / "b.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]["loss"]) == 1
    resumed, h_resumed = _digits_run(recipe, tmp_path / "b.pt", resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert (
        h_straight["loss"] == h_resumed["loss"] and h_straight["test_acc"] == h_resumed["test_acc"]
    )
    with pytest.raises(FileExistsError, match="--resume"):
        _digits_run(recipe, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="recipe"):
        _digits_run(dataclasses.replace(recipe, epochs=3), tmp_path / "b.pt", resume=True)


def test_warmup_cosine_schedule():
    schedule = reference.WarmupCosine(warmup=4, total=20)
    assert [schedule(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for i in range(4, 21):
        assert schedule(i) == pytest.approx(0.5 * (1 + math.cos(math.pi * (i - 4) / 16)))
    assert schedule(12) == pytest.approx(0.5) and schedule(20) == pytest.approx(0.0)


def test_dataset_sha256_depends_on_pixels_and_labels_not_on_divisor():
    ds = _tiny_images(10)
    base = reference.dataset_sha256(ds)
    assert reference.dataset_sha256(ds.rescaled(255)) == base
    images = ds.images.clone()
    images[3, 0, 5, 5] ^= 1
    assert reference.dataset_sha256(data.ImageDataset(images, ds.labels)) != base
    labels = ds.labels.clone()
    labels[0] = (labels[0] + 1) % 10
    assert reference.dataset_sha256(data.ImageDataset(ds.images, labels)) != base


def test_recipes_cover_every_pretrained_builder():
    assert set(reference.RECIPES) == set(models.PRETRAINED_BUILDERS)
    for name, recipe in reference.RECIPES.items():
        assert recipe.net == name and recipe.pixel_divisor == 256 and recipe.label_smoothing == 0.1
        assert recipe.flip == (recipe.dataset == "cifar10")


# --------------------------------------------------------------------------- committed weights


@pytest.mark.parametrize("name", sorted(models.PRETRAINED_BUILDERS))
def test_committed_weights_reproduce_their_manifest_accuracy(name, manifest_test_split):
    if name not in models.available_pretrained():
        pytest.skip(
            f"no committed weights for {name} yet (python -m snntorch_weighted.reference {name})"
        )
    manifest = models.read_manifest(name)
    recipe = reference.Recipe(**manifest["recipe"])
    if recipe.dataset == "cifar10" and os.environ.get("SNNTORCH_WEIGHTED_FULL_EVAL") != "1":
        pytest.skip("CIFAR-10 full test set is slow on CPU: set SNNTORCH_WEIGHTED_FULL_EVAL=1")
    test = manifest_test_split(recipe, manifest)
    model = models.pretrained(name)
    accuracy = 100 * evaluate(model, test, batch_size=1000)
    assert len(test) == manifest["test_images"] == 10_000
    assert abs(accuracy - manifest["test_accuracy_percent"]) <= 0.01 + 1e-9

"""Tests of the committed fine-tuned radix models (``reference_radix``, ``pretrained(radix_bits)``).

The round trip fine-tunes an untrained Net2 on a few random images in a temporary weights folder
(no real training); the committed files are checked against their manifests, and on the first
500 Fashion-MNIST test images when the dataset is present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest
import torch

from snntorch_weighted import data, models, quant, reference, reference_radix
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.radix import radix_infer

BITS = 3
RADIX_FIELDS = {
    "name", "base", "num_bits", "weight_bits", "input_shape", "recipe", "command", "seed",
    "dataset", "dataset_sha256", "test_images", "test_correct", "test_accuracy_percent",
    "test_correct_first_500", "ptq_test_correct", "history", "finetune_seconds", "weights_file",
    "sha256", "date", "torch_version",
}  # fmt: skip


def _images(n: int, seed: int) -> data.ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return data.ImageDataset(images, torch.arange(n) % 10, divisor=256)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An untrained Net2 and its radix model (T = 3), fine-tuned on random images, written by
    ``reference.write_weights`` / ``reference_radix.write_radix_weights`` to a temporary folder."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("weights")
    train, test = _images(48, 1), _images(20, 2)
    torch.manual_seed(0)
    ann = models.net2(batch_norm=True).eval()
    history = {"loss": [1.0], "train_acc": [0.5], "test_acc": [0.5], "seconds": [1.0]}
    base = reference.write_weights(reference.RECIPES["net2"], ann, train, test, history, folder)
    recipe = reference_radix.RadixRecipe(
        "net2", BITS, calib_size=16, finetune_size=32, finetune_val=16, epochs=1, lr=1e-2
    )
    radix_data = reference_radix.radix_data(recipe, train)
    prepared, info = reference_radix.finetune_radix(recipe, ann, radix_data, test)
    manifest = reference_radix.write_radix_weights(
        recipe, prepared, base, info, train, test, folder
    )
    return folder, prepared, manifest, test


def test_manifest_names_base_recipe_and_sha256(written):
    folder, prepared, manifest, test = written
    assert RADIX_FIELDS <= set(manifest)
    assert json.loads((folder / "net2-radix3.json").read_text()) == manifest  # strict JSON too
    digest = hashlib.sha256((folder / "net2-radix3.pt").read_bytes()).hexdigest()
    assert manifest["sha256"] == digest
    assert manifest["base"]["sha256"] == models.read_manifest("net2", folder)["sha256"]
    assert manifest["command"] == "python -m snntorch_weighted.reference net2 --radix 3 --threads 1"
    assert manifest["num_bits"] == BITS and manifest["weight_bits"] == 8
    assert manifest["input_shape"] == [1, 28, 28] and manifest["recipe"]["calib_size"] == 16
    x, y = test.tensors()
    with torch.no_grad():
        correct = int((prepared(x).argmax(1) == y).sum())
    assert manifest["test_correct"] == manifest["test_correct_first_500"] == correct
    assert manifest["test_images"] == 20 and manifest["history"][0]["loss"] is None


def test_state_holds_every_quantisation_parameter(written):
    folder, prepared, _, _ = written
    saved = torch.load(folder / "net2-radix3.pt", weights_only=True)
    relus = [n for n, m in quant.twin(prepared).named_modules() if isinstance(m, quant.QuantReLU)]
    assert len(relus) == 2 and all(f"{n}.clip" in saved for n in relus)
    assert all(v.dtype == torch.float32 for v in saved.values())
    assert saved.keys() == quant.twin(prepared).state_dict().keys()


def test_loaded_model_is_the_fine_tuned_one(written):
    folder, prepared, _, test = written
    assert models.available_pretrained(folder) == ["net2", "net2-radix3"]
    loaded = models.pretrained("net2", radix_bits=BITS, weights_dir=folder)
    assert not loaded.training and quant.is_prepared(loaded)
    assert loaded.state_dict().keys() == prepared.state_dict().keys()
    for key, value in prepared.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # The buffers left out of state_dict (paths, pool factors) are structural: prepare on the
    # loader's dummy batch sets them as the calibration on real images did.
    buffers = dict(quant.twin(loaded).named_buffers())
    for key, value in quant.twin(prepared).named_buffers():
        assert torch.equal(buffers[key], value), key
    # The clips are not the dummy calibration's: loading is what makes them equal.
    dummy = models.pretrained("net2", weights_dir=folder)
    quant.prepare(dummy, num_bits=BITS, calibration_data=torch.rand(2, 1, 28, 28))
    clips = [k for k in prepared.state_dict() if k.endswith(".clip")]
    assert any(not torch.equal(dummy.state_dict()[k], prepared.state_dict()[k]) for k in clips)
    x = test.tensors()[0][:6].double()
    ints = quant.integer_activations(prepared.double(), x)
    ints_loaded = quant.integer_activations(loaded.double(), x)
    prepared.float()
    loaded.float()
    assert ints.keys() == ints_loaded.keys()
    assert all(torch.equal(ints[k], ints_loaded[k]) for k in ints)
    snn = convert(prepared, None, coding="radix", num_bits=BITS)
    snn_loaded = convert(loaded, None, coding="radix", num_bits=BITS)
    out = radix_infer(snn, x)
    assert torch.equal(out, radix_infer(snn_loaded, x))
    assert torch.equal(out, prepared.double()(x))  # the SNN computes the twin exactly
    prepared.float()
    assert torch.equal(models.pretrained("net2-radix3", weights_dir=folder)(x.float()),
                       loaded(x.float()))  # fmt: skip


def _copy(folder, tmp_path):
    for path in folder.iterdir():
        shutil.copy(path, tmp_path / path.name)


def test_tampered_or_missing_radix_weights_name_the_command(written, tmp_path):
    folder = written[0]
    _copy(folder, tmp_path)
    state = torch.load(tmp_path / "net2-radix3.pt", weights_only=True)
    state["2.clip"] += 1.0
    torch.save(state, tmp_path / "net2-radix3.pt")
    with pytest.raises(models.PretrainedWeightsError, match="sha256.*reference net2 --radix 3"):
        models.pretrained("net2", radix_bits=BITS, weights_dir=tmp_path)
    unchecked = models.pretrained("net2", radix_bits=BITS, check=False, weights_dir=tmp_path)
    assert torch.equal(quant.twin(unchecked).get_submodule("2").clip, state["2.clip"])
    (tmp_path / "net2-radix3.pt").unlink()
    with pytest.raises(models.PretrainedWeightsError, match="missing.*reference net2 --radix 3"):
        models.pretrained("net2", radix_bits=BITS, weights_dir=tmp_path)
    assert models.available_pretrained(tmp_path) == ["net2"]
    with pytest.raises(models.PretrainedWeightsError, match="no manifest.*net2 --radix 5"):
        models.pretrained("net2", radix_bits=5, weights_dir=tmp_path)
    with pytest.raises(ValueError, match="disagree"):
        models.pretrained("net2-radix3", radix_bits=4, weights_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown pretrained network 'net3'"):
        models.pretrained("net3", radix_bits=4)


def test_radix_weights_of_another_base_ann_are_refused(written, tmp_path):
    _copy(written[0], tmp_path)
    manifest = json.loads((tmp_path / "net2-radix3.json").read_text())
    manifest["base"]["sha256"] = "0" * 64
    (tmp_path / "net2-radix3.json").write_text(json.dumps(manifest))
    with pytest.raises(models.PretrainedWeightsError, match="fine-tuned from net2.pt.*--radix 3"):
        models.pretrained("net2", radix_bits=BITS, weights_dir=tmp_path)


def test_finished_runs_are_not_repeated(written, tmp_path):
    folder, _, manifest, _ = written
    recipe = reference_radix.RadixRecipe(**manifest["recipe"])
    base_sha = manifest["base"]["sha256"]
    assert reference_radix._already_done(recipe, base_sha, folder)
    assert not reference_radix._already_done(recipe, "0" * 64, folder)
    other = reference_radix.RadixRecipe(**{**manifest["recipe"], "epochs": 2})
    assert not reference_radix._already_done(other, base_sha, folder)


def test_radix_data_draws_calibration_with_the_recipe_offset():
    train = _images(40, 3)
    base = reference_radix.RadixRecipe("net4", BITS, calib_size=8, finetune_size=10,
                                       finetune_val=6, seed=5)  # fmt: skip
    shifted = dataclasses.replace(base, calib_seed_offset=2)
    plain = reference_radix.radix_data(base, train)
    moved = reference_radix.radix_data(shifted, train)
    x = train.tensors()[0]
    order = torch.randperm(40, generator=torch.Generator().manual_seed(7))  # seed 5 + 2
    assert torch.equal(moved["calib"], x[order[:8]])
    assert torch.equal(plain["calib"], data.as_tensors(train, 8, seed=5)[0])
    assert not torch.equal(plain["calib"], moved["calib"])
    order = torch.randperm(40, generator=torch.Generator().manual_seed(6))  # seed 5 + 1
    for d in (plain, moved):
        assert torch.equal(d["finetune"][0], x[order[:10]])
        assert torch.equal(d["val"][0], x[order[10:16]])


def test_manifest_recipe_fills_later_fields_with_their_defaults():
    recipe = reference_radix.default_recipe("net4", 3)
    fields = dataclasses.asdict(recipe)
    assert reference_radix.manifest_recipe({"recipe": fields}) == recipe
    older = {k: v for k, v in fields.items() if k != "calib_seed_offset"}
    assert reference_radix.manifest_recipe({"recipe": older}) == dataclasses.replace(
        recipe, calib_seed_offset=0
    )
    assert reference_radix.manifest_recipe({"recipe": {**fields, "augment": True}}) is None
    assert reference_radix.manifest_recipe({}) is None


# --------------------------------------------------------------------------- committed files

COMMITTED = [n for n in models.available_pretrained() if "-radix" in n]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_radix_manifest_matches_its_file(name):
    manifest = models.read_manifest(name)
    folder = models.WEIGHTS_DIR
    assert RADIX_FIELDS <= set(manifest)
    digest = hashlib.sha256((folder / manifest["weights_file"]).read_bytes()).hexdigest()
    assert manifest["sha256"] == digest
    base = manifest["base"]["name"]
    assert manifest["base"]["sha256"] == models.read_manifest(base)["sha256"]
    assert name == f"{base}-radix{manifest['num_bits']}" == manifest["name"]
    assert manifest["test_images"] == 10_000


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_radix_recipe_is_its_dataset_default(name):
    """The committed files were made by the recipe ``reference NET --radix T`` uses now (for
    Fashion-MNIST: ``RadixRecipe``'s defaults, unchanged), so nothing needs fine-tuning again."""
    manifest = models.read_manifest(name)
    base = manifest["base"]["name"]
    recipe = reference_radix.default_recipe(base, manifest["num_bits"], manifest["seed"])
    assert reference_radix.manifest_recipe(manifest) == recipe
    # only fields added since (default: the behaviour before them) may be missing
    assert {"calib_seed_offset": 0, **manifest["recipe"]} == dataclasses.asdict(recipe)
    if reference.RECIPES[base].dataset == "fashion_mnist":
        assert recipe == reference_radix.RadixRecipe(base, manifest["num_bits"])
    assert reference_radix.load_committed(recipe, manifest["base"]["sha256"]) is not None
    assert reference_radix._already_done(recipe, manifest["base"]["sha256"], models.WEIGHTS_DIR)


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_radix_model_on_the_first_500_test_images(name, manifest_test_split):
    torch.set_num_threads(1)
    manifest = models.read_manifest(name)
    recipe = reference.RECIPES[manifest["base"]["name"]]
    test = manifest_test_split(recipe, manifest)
    model = models.pretrained(name)
    x, y = data.as_tensors(test)
    with torch.no_grad():
        correct = int((model(x[:500]).argmax(1) == y[:500]).sum())
    # float32 twin: a different BLAS may round a rare sum differently (one image at most).
    assert abs(correct - manifest["test_correct_first_500"]) <= 1

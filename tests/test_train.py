"""Tests of snntorch_weighted.train on real tiny data (sklearn digits)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from snntorch_weighted import data, models, train


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny nets: intra-op threads only add overhead, and on a loaded 2-core machine OpenMP
    spinning made these tests ~30x slower (measured). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits("train"), data.load_digits("test")


def test_mlp_learns_digits_quickly(digits):
    train_ds, test_ds = digits
    torch.manual_seed(0)
    model = models.digits_mlp()
    # Default optimiser (SGD, lr 0.1, cosine); ~1 s on an idle 2-core CPU (no timing assert:
    # CI machines are shared).
    history = train.train_ann(
        model, train_ds, epochs=8, batch_size=64, val_data=test_ds, progress=False
    )
    assert len(history.train_loss) == len(history.val_acc) == len(history.epoch_seconds) == 8
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc[-1] > 0.9
    assert not model.training  # left in eval mode
    # Independent accuracy computation on the full test tensors.
    x, y = test_ds.tensors
    with torch.no_grad():
        manual = (model(x).argmax(1) == y).float().mean().item()
    assert history.val_acc[-1] == pytest.approx(manual)
    assert train.evaluate(model, test_ds) == pytest.approx(manual)


def test_cnn_with_adam_learns_digits(digits):
    train_ds, test_ds = digits
    torch.manual_seed(0)
    model = models.digits_cnn()
    train.train_ann(
        model, train_ds, epochs=6, batch_size=32, optimizer="adam", lr=1e-2, progress=False
    )
    assert train.evaluate(model, test_ds) > 0.9


def test_evaluate_accepts_every_data_form(digits):
    _, test_ds = digits
    torch.manual_seed(0)
    model = models.digits_mlp()
    x, y = test_ds.tensors
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).sum().item() / len(y)
    image_ds = data.ImageDataset(x, y)
    forms = [
        test_ds,
        (x, y),
        image_ds,
        Subset(test_ds, list(range(len(y)))),  # generic Dataset
        DataLoader(test_ds, batch_size=50),
    ]
    for form in forms:
        assert train.evaluate(model, form, batch_size=37) == pytest.approx(expected)


def test_evaluate_restores_training_mode(digits):
    model = models.digits_cnn().train()
    train.evaluate(model, digits[1])
    assert model.training


def test_training_is_deterministic_per_seed(digits):
    small = data.subset(digits[0], 200)

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = models.digits_mlp()
        train.train_ann(model, small, epochs=2, batch_size=32, seed=seed, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_max_batches_and_single_sample_batch_with_batchnorm():
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                     nn.Linear(8, 3))  # fmt: skip

        def forward(self, x):
            if self.training:
                calls.append(x.shape[0])
            return self.net(x)

    x, y = torch.rand(65, 4), torch.randint(0, 3, (65,))
    model = Counting()
    train.train_ann(model, (x, y), epochs=1, batch_size=16, progress=False)
    assert calls == [16, 16, 16, 16]  # last batch of 1 sample skipped (BatchNorm)
    calls.clear()
    train.train_ann(model, (x, y), epochs=2, batch_size=16, max_batches=2, progress=False)
    assert calls == [16, 16, 16, 16]


def test_progress_bar_path_runs(digits, capsys):
    model = models.digits_mlp()
    hist = train.train_ann(model, data.subset(digits[0], 64), epochs=1, batch_size=32,
                           val_data=data.subset(digits[1], 32), progress=True)  # fmt: skip
    assert len(hist.val_acc) == 1 and "epoch 1/1" in capsys.readouterr().out
    assert set(hist.as_dict()) == {"train_loss", "train_acc", "val_acc", "epoch_seconds"}


def test_bad_arguments_raise():
    model = models.digits_mlp()
    ds = (torch.rand(10, 1, 8, 8), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="epochs"):
        train.train_ann(model, ds, epochs=0, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train.train_ann(model, ds, epochs=1, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="augment"):
        train.train_ann(model, ds, epochs=1, augment="mnist", progress=False)
    with pytest.raises(ValueError, match="samples"):
        train.evaluate(model, (torch.rand(3, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(TypeError, match="pair"):
        train.evaluate(model, (torch.rand(3, 1, 8, 8),))


def test_divergence_is_reported():
    model = models.digits_mlp()
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    ds = TensorDataset(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    with pytest.raises(FloatingPointError, match="diverged"):
        train.train_ann(model, ds, epochs=1, progress=False)


# --------------------------------------------------------------------------- augmentation


def _matches_some_crop(out: torch.Tensor, x: torch.Tensor, pad: int) -> bool:
    """Brute force over every offset and flip (independent of the gather implementation)."""
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            if torch.equal(out, crop) or torch.equal(out, crop.flip(-1)):
                return True
    return False


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(2, 6),
    w=st.integers(2, 6),
    pad=st.integers(0, 3),
    seed=st.integers(0, 1000),
)
def test_cifar_augment_is_a_padded_crop_or_its_flip(b, c, h, w, pad, seed):
    x = torch.rand(b, c, h, w) + 0.1  # strictly positive, so zero padding is recognisable
    out = train.cifar_augment(x, torch.Generator().manual_seed(seed), padding=pad)
    assert out.shape == x.shape
    for i in range(b):
        assert _matches_some_crop(out[i], x[i], pad)


def test_cifar_augment_varies_per_sample_and_is_seeded():
    x = torch.rand(1, 3, 8, 8).expand(64, 3, 8, 8)
    out = train.cifar_augment(x, torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 20
    assert torch.equal(out, train.cifar_augment(x, torch.Generator().manual_seed(0)))
    flips = train.cifar_augment(x, torch.Generator().manual_seed(0), padding=0)
    n_flipped = sum(torch.equal(o, x[0].flip(-1)) for o in flips)
    n_same = sum(torch.equal(o, x[0]) for o in flips)
    assert n_flipped + n_same == 64 and 0 < n_flipped < 64
    with pytest.raises(ValueError, match="B, C, H, W"):
        train.cifar_augment(torch.rand(3, 8, 8))


def _unflipped_crops(x: torch.Tensor, pad: int) -> list[torch.Tensor]:
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = range(2 * pad + 1)
    return [padded[:, dy : dy + h, dx : dx + w] for dy in offsets for dx in offsets]


def test_cifar_augment_without_flip_is_the_same_crop_unflipped():
    x = torch.rand(64, 2, 6, 6) + 0.1
    crops = train.cifar_augment(x, torch.Generator().manual_seed(5), padding=2, flip=False)
    both = train.cifar_augment(x, torch.Generator().manual_seed(5), padding=2, flip=True)
    n_flipped = 0
    for i in range(64):
        assert any(torch.equal(crops[i], c) for c in _unflipped_crops(x[i], 2))
        # Same offsets either way: with flip on, a sample is that crop or its mirror image.
        assert torch.equal(both[i], crops[i]) or torch.equal(both[i], crops[i].flip(-1))
        n_flipped += not torch.equal(both[i], crops[i])
    assert 0 < n_flipped < 64
    unflipped = train.cifar_augment(x, torch.Generator().manual_seed(5), padding=0, flip=False)
    assert torch.equal(unflipped, x)

"""Tests of snntorch_weighted.data against independent readers (sklearn, struct, Pillow)."""

from __future__ import annotations

import gzip
import io
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_digits as sk_load_digits
from torch.utils.data import TensorDataset

from snntorch_weighted import data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


# --------------------------------------------------------------------------- digits


def test_digits_split_sizes_shapes_and_range():
    train, test = data.load_digits("train"), data.load_digits("test")
    assert len(train) + len(test) == 1797
    assert len(test) == 360
    for ds in (train, test):
        x, y = ds.tensors
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert x.min() == 0.0 and x.max() == 1.0
        assert set(y.tolist()) == set(range(10))


def test_digits_is_the_sklearn_data_divided_by_16_and_disjoint():
    bunch = sk_load_digits()
    full = [(img.astype(np.uint8).tobytes(), int(t)) for img, t in zip(bunch.images, bunch.target)]
    seen = []
    for split in ("train", "test"):
        x, y = data.load_digits(split).tensors
        raw = (x.squeeze(1).numpy() * 16).round().astype(np.uint8)
        seen += [(r.tobytes(), int(t)) for r, t in zip(raw, y)]
    # train + test is exactly the original multiset of samples: no sample lost or duplicated.
    assert Counter(seen) == Counter(full)


def test_digits_split_is_stratified():
    y_all = np.bincount(sk_load_digits().target)
    y_test = np.bincount(data.load_digits("test").tensors[1].numpy(), minlength=10)
    assert np.all(np.abs(y_test - 0.2 * y_all) <= 1)


def test_digits_deterministic_per_seed():
    a = data.load_digits("test", seed=3).tensors
    b = data.load_digits("test", seed=3).tensors
    c = data.load_digits("test", seed=4).tensors
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split"):
        data.load_digits("val")
    with pytest.raises(ValueError, match="split"):
        data.load_fashion_mnist("/nonexistent", split="validation")


# --------------------------------------------------------------------------- idx / Fashion-MNIST


def _idx_bytes(array: np.ndarray) -> bytes:
    """Independent idx writer (big-endian header: 0, 0, type 0x08, ndim, dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    compressed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_read_idx_roundtrip(tmp_path_factory, shape, compressed, seed):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compressed else "a.idx")
    raw = _idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_read_idx_rejects_garbage(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an idx file"):
        data.read_idx(path)
    path.write_bytes(_idx_bytes(np.zeros((2, 3), np.uint8))[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        data.read_idx(path)


def _write_fake_fmnist(folder: Path, n: int, gz: bool, rng: np.random.Generator) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem, arr in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        raw = _idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return images, labels


@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "fashion-mnist", "."])
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_layouts(tmp_path, layout, gz):
    images, labels = _write_fake_fmnist(tmp_path / layout, 7, gz, np.random.default_rng(0))
    ds = data.load_fashion_mnist(tmp_path, split="test")
    assert len(ds) == 7
    x, y = ds.tensors()
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    np.testing.assert_allclose(x.squeeze(1).numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)
    x3, y3 = ds[3]
    assert torch.equal(x3, x[3]) and int(y3) == int(labels[3])


def test_fashion_mnist_missing_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load_fashion_mnist(tmp_path, split="train")


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="shared Fashion-MNIST absent")
def test_real_fashion_mnist_test_split():
    ds = data.load_fashion_mnist(SHARED, split="test")
    assert len(ds) == 10_000
    assert torch.equal(torch.bincount(ds.labels), torch.full((10,), 1000))
    with gzip.open(SHARED / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", "rb") as f:
        first = np.frombuffer(f.read(16 + 784), dtype=np.uint8, offset=16).reshape(28, 28)
    np.testing.assert_allclose(ds[0][0][0].numpy(), first / 255.0, atol=1e-7)
    assert ds.images.min() == 0 and ds.images.max() == 255


# --------------------------------------------------------------------------- CIFAR-10


def _write_fake_cifar_npz(path: Path, n_per_split: int, rng: np.random.Generator) -> dict:
    arrays, pixels = {}, {}
    for split in ("train", "test"):
        blobs, offsets = [], [0]
        imgs = rng.integers(0, 256, size=(n_per_split, 32, 32, 3), dtype=np.uint8)
        for img in imgs:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
            offsets.append(offsets[-1] + len(blobs[-1]))
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.array(offsets, dtype=np.int64)
        arrays[f"{split}_labels"] = rng.integers(0, 10, n_per_split).astype(np.uint8)
        # Independent decode of the same JPEG bytes.
        decoded = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
        pixels[split] = np.stack(decoded)
    arrays["classes"] = np.array(data.CIFAR10_CLASSES)
    np.savez(path, **arrays)
    return {s: (pixels[s], arrays[f"{s}_labels"]) for s in pixels}


def test_cifar_jpeg_npz_decoded_and_cached(tmp_path):
    expected = _write_fake_cifar_npz(tmp_path / "cifar10_jpeg.npz", 5, np.random.default_rng(1))
    cache = tmp_path / "cache"
    for split in ("train", "test"):
        ds = data.load_cifar10(tmp_path, split=split, cache=cache)
        x, y = ds.tensors()
        assert x.shape == (5, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
        pixels, labels = expected[split]
        np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), pixels)
        np.testing.assert_array_equal(y.numpy(), labels)
        assert (cache / f"cifar10_jpeg_{split}.pt").is_file()
    # Second load comes from the cache: corrupt the cached tensor and see it returned.
    cached = torch.load(cache / "cifar10_jpeg_test.pt", weights_only=True)
    cached["images"] = torch.zeros_like(cached["images"])
    torch.save(cached, cache / "cifar10_jpeg_test.pt")
    assert data.load_cifar10(tmp_path, split="test", cache=cache).images.sum() == 0
    # A changed npz (different stamp) invalidates the cache.
    cached["stamp"] = [0, 0]
    torch.save(cached, cache / "cifar10_jpeg_test.pt")
    reloaded = data.load_cifar10(tmp_path, split="test", cache=cache)
    np.testing.assert_array_equal(reloaded.images.permute(0, 2, 3, 1).numpy(), expected["test"][0])


def test_cifar_missing_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load_cifar10(tmp_path, split="test")


@pytest.mark.skipif(not (SHARED / "cifar10_jpeg.npz").is_file(), reason="shared CIFAR-10 absent")
def test_real_cifar10_test_split(tmp_path):
    ds = data.load_cifar10(SHARED, split="test", cache=tmp_path)
    assert len(ds) == 10_000 and ds.images.shape[1:] == (3, 32, 32)
    assert torch.equal(torch.bincount(ds.labels), torch.full((10,), 1000))
    with np.load(SHARED / "cifar10_jpeg.npz") as z:
        buf, off = z["test_jpeg"], z["test_offsets"]
        img = np.asarray(Image.open(io.BytesIO(buf[off[-2] : off[-1]].tobytes())).convert("RGB"))
    np.testing.assert_array_equal(ds.images[-1].permute(1, 2, 0).numpy(), img)


# --------------------------------------------------------------------------- helpers


def test_default_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "x"))
    assert data.default_data_root() == tmp_path / "x"
    monkeypatch.delenv(data.DATA_ENV)
    root = data.default_data_root()
    if SHARED.is_dir():
        assert root.resolve() == SHARED.resolve()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "c"))
    assert data.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_subset_keeps_type_and_is_deterministic():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 2, 2).clone()
    ds = data.ImageDataset(images, torch.arange(20))
    sub = data.subset(ds, 6, seed=1)
    assert isinstance(sub, data.ImageDataset) and len(sub) == 6
    assert torch.equal(sub.labels, data.subset(ds, 6, seed=1).labels)
    assert not torch.equal(sub.labels, data.subset(ds, 6, seed=2).labels)
    # Pairs stay aligned: the image of label k is filled with k.
    assert torch.equal(sub.images[:, 0, 0, 0].long(), sub.labels)
    assert len(set(sub.labels.tolist())) == 6
    tds = data.subset(TensorDataset(torch.arange(10.0), torch.arange(10)), 4)
    assert isinstance(tds, TensorDataset) and torch.equal(tds.tensors[0].long(), tds.tensors[1])
    with pytest.raises(ValueError, match="subset size"):
        data.subset(ds, 21)


def test_image_dataset_validation():
    with pytest.raises(ValueError, match="N, C, H, W"):
        data.ImageDataset(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        data.ImageDataset(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.zeros(4))
    with pytest.raises(TypeError, match="uint8"):
        data.ImageDataset(torch.zeros(3, 1, 8, 8, dtype=torch.int32), torch.zeros(3))


def test_as_tensors_for_every_dataset_form():
    x = torch.rand(12, 1, 3, 3)
    y = torch.arange(12) % 5
    images = (x * 255).round().to(torch.uint8)
    forms = {
        "tensor": TensorDataset(x, y),
        "image": data.ImageDataset(images, y),
        "generic": torch.utils.data.Subset(TensorDataset(x, y), list(range(12))),
    }
    for name, ds in forms.items():
        ax, ay = data.as_tensors(ds)
        expected = images.float() / 255 if name == "image" else x
        torch.testing.assert_close(ax, expected, msg=name)
        assert torch.equal(ay, y) and ay.dtype == torch.int64 and ax.dtype == torch.float32
        sx, sy = data.as_tensors(ds, n=5, seed=3)
        assert sx.shape == (5, 1, 3, 3)
        # Each subset row is one of the original rows with its own label.
        for row, label in zip(sx, sy):
            match = [i for i in range(12) if torch.allclose(expected[i], row)]
            assert match and int(y[match[0]]) == int(label)


def test_image_dataset_divisor_gives_kims_input_range():
    images = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1)
    ds = data.ImageDataset(images, torch.zeros(256, dtype=torch.long))
    kim = ds.rescaled(256)
    x, _ = kim.tensors()
    # Every pixel p is read as p / 256, exactly representable with 8 binary phases (Kim eq. 13).
    expected = torch.tensor([p / 256 for p in range(256)], dtype=torch.float32)
    assert torch.equal(x.flatten(), expected) and x.max().item() == 1 - 2**-8
    assert torch.equal(kim.batch(torch.tensor([255]))[0].flatten(), expected[-1:])
    assert torch.equal(kim[3][0].flatten(), expected[3:4])
    assert kim.images is ds.images and ds.divisor == 255.0
    assert torch.equal(data.subset(kim, 10).tensors()[0] * 256, data.subset(kim, 10).images.float())
    with pytest.raises(ValueError, match="divisor"):
        data.ImageDataset(images, torch.zeros(256, dtype=torch.long), divisor=100)

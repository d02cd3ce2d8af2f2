"""Datasets for the demo, the tests and the benchmarks, as non-negative tensors in ``[0, 1]``.

Spiking inputs must be non-negative (a spike train encodes a value in ``[0, 1]``, Kim et al.
eq. 13-14; Wang et al. eq. 1), so every loader here returns pixel intensities scaled to ``[0, 1]``
and applies **no** mean/std normalisation.

- :func:`load_digits`: scikit-learn's 8x8 digits (ships with scikit-learn, works offline).
- :func:`load_fashion_mnist`: Fashion-MNIST from a torchvision layout or from the gzip idx files.
- :func:`load_cifar10`: CIFAR-10 from a torchvision layout or from a JPEG ``.npz`` copy, decoded
  once and cached as a ``uint8`` tensor.

Images are held in memory as ``uint8`` and converted to ``float32 / 255`` per item or per batch
(:meth:`ImageDataset.batch`), which keeps CIFAR-10 at 150 MB instead of 600 MB.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "as_tensors",
    "cache_dir",
    "decode_cifar_jpeg",
    "default_data_root",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
    "subset",
]

DATA_ENV = "SNNTORCH_WEIGHTED_DATA"
CACHE_ENV = "SNNTORCH_WEIGHTED_CACHE"

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------- locations


def default_data_root() -> Path:
    """Directory where datasets are looked for when no ``root`` is given.

    Order: ``$SNNTORCH_WEIGHTED_DATA`` (returned even if missing, so a wrong setting gives a clear
    error later); then ``../shared/datasets`` next to the package's repository or next to the
    current directory; then ``./data`` (where ``torchvision`` puts ``download=True`` files).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    for base in (repo.parent, Path.cwd().parent):
        candidate = base / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return Path("data")


def cache_dir() -> Path:
    """User cache directory of the package (decoded datasets, benchmark checkpoints).

    ``$SNNTORCH_WEIGHTED_CACHE`` if set, else ``$XDG_CACHE_HOME/snntorch_weighted``, else
    ``~/.cache/snntorch_weighted``. Created on first use.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "snntorch_weighted"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- dataset type


class ImageDataset(Dataset):
    """In-memory image classification dataset with values in ``[0, 1]``.

    Args:
        images: ``uint8`` tensor ``[N, C, H, W]`` (scaled by ``1/255`` on access) or a floating
            tensor already in ``[0, 1]``.
        labels: integer tensor ``[N]``.
        classes: optional class names.
        divisor: ``uint8`` images are divided by it: 255 maps pixels onto ``[0, 1]``; 256 gives
            Kim et al.'s input range ``[0, 1 - 2**-8]``, every pixel exactly representable by an
            8-phase weighted spike train (eq. 13-14). Ignored for floating images.

    ``dataset[i]`` returns ``(float32 image [C, H, W], int64 label)``; :meth:`batch` converts many
    samples at once (used by :func:`snntorch_weighted.train.train_ann` for speed).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: Sequence[str] | None = None,
        divisor: float = 255.0,
    ):
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes) if classes is not None else None
        if not divisor >= 255.0:
            raise ValueError(f"divisor must be >= 255 so that images lie in [0, 1], got {divisor}")
        self.divisor = float(divisor)

    def rescaled(self, divisor: float) -> ImageDataset:
        """The same images (shared storage) read as ``uint8 / divisor``."""
        return ImageDataset(self.images, self.labels, self.classes, divisor)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._to_float(self.images[index]), self.labels[index]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``[len(index), C, H, W]`` as float32 in ``[0, 1]`` and their labels."""
        return self._to_float(self.images[index]), self.labels[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images as float32 in ``[0, 1]`` and all labels."""
        return self._to_float(self.images), self.labels

    def _to_float(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            return images.float().div_(self.divisor)
        return images.float()

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return (
            f"ImageDataset(n={len(self)}, shape={shape}, dtype={self.images.dtype}, "
            f"divisor={self.divisor:g})"
        )


def subset(data: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A random subset of ``n`` samples (all of them, shuffled, when ``n`` is ``None``).

    Keeps the type for :class:`ImageDataset` and :class:`~torch.utils.data.TensorDataset`
    (cheap tensor indexing); other datasets get a :class:`~torch.utils.data.Subset`. The CIFAR-10
    JPEG copy is grouped by class, so always take subsets through this function, never by slicing.
    """
    size = len(data)  # type: ignore[arg-type]
    if n is None:
        n = size
    if not 0 < n <= size:
        raise ValueError(f"subset size must be in [1, {size}], got {n}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(size, generator=generator)[:n]
    if isinstance(data, ImageDataset):
        return ImageDataset(data.images[index], data.labels[index], data.classes, data.divisor)
    if isinstance(data, TensorDataset):
        return TensorDataset(*(t[index] for t in data.tensors))
    return torch.utils.data.Subset(data, index.tolist())


def as_tensors(data: Dataset, n: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x float32, y int64)`` tensors of ``data`` (a random subset of ``n`` samples if given).

    Handy for calibration data and for simulating a converted network on a fixed test batch.
    Without ``n`` the original order is kept.
    """
    if n is not None:
        data = subset(data, n, seed)
    if isinstance(data, ImageDataset):
        return data.tensors()
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
        return x.float(), y.long()
    samples = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(s[0]) for s in samples]).float()
    return x, torch.as_tensor([int(s[1]) for s in samples], dtype=torch.long)


def _check_split(split: str) -> bool:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split == "train"


# --------------------------------------------------------------------------- digits


def load_digits(split: str = "train", seed: int = 0, test_fraction: float = 0.2) -> TensorDataset:
    """scikit-learn's 8x8 handwritten digits as ``TensorDataset(x [N, 1, 8, 8], y [N])``.

    Pixel values ``0..16`` are divided by 16, so ``x`` lies in ``[0, 1]``. The 1,797 samples are
    split once, stratified by class, with ``seed`` (default 1,437 train / 360 test); the same
    ``seed`` always gives the same split, and train and test never overlap.
    """
    from ._extras import require

    require("sklearn", extra="data", purpose="load_digits")
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    train = _check_split(split)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    x, y = (x_train, y_train) if train else (x_test, y_test)
    return TensorDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))


# --------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzip-compressed if the name ends in ``.gz``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{path}: header says {expected} data bytes, file has {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(tuple(dims))


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root / "FashionMNIST" / "raw", root / "fashion-mnist", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_fashion_mnist(
    root: str | Path | None = None, split: str = "train", download: bool = False
) -> ImageDataset:
    """Fashion-MNIST (60,000 train / 10,000 test, ``[1, 28, 28]``, values in ``[0, 1]``).

    Looks in ``root`` (default :func:`default_data_root`) for, in order: torchvision's layout
    ``root/FashionMNIST/raw/`` (decompressed or ``.gz`` idx files), ``root/fashion-mnist/*.gz``,
    or the idx files directly in ``root``. With ``download=True`` and nothing found, torchvision
    downloads the dataset into ``root``.
    """
    train = _check_split(split)
    root = Path(root) if root is not None else default_data_root()
    image_stem, label_stem = _FMNIST_FILES[split]
    image_path, label_path = _find_idx(root, image_stem), _find_idx(root, label_stem)
    if image_path is None or label_path is None:
        if not download:
            raise FileNotFoundError(
                f"Fashion-MNIST ({split}) not found under {root}: expected {image_stem}[.gz] and "
                f"{label_stem}[.gz] in {root}/FashionMNIST/raw, {root}/fashion-mnist or {root}. "
                f"Download it with load_fashion_mnist({str(root)!r}, download=True) (calls "
                f"torchvision.datasets.FashionMNIST(root, download=True)) or set ${DATA_ENV}."
            )
        import torchvision

        tv = torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        images, labels = tv.data.clone(), tv.targets.clone()
    else:
        images = torch.from_numpy(read_idx(image_path).copy())
        labels = torch.from_numpy(read_idx(label_path).astype(np.int64))
    if images.ndim != 3 or images.dtype != torch.uint8 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST files under {root} are malformed: images {tuple(images.shape)} "
            f"{images.dtype}, labels {tuple(labels.shape)}"
        )
    return ImageDataset(images.unsqueeze(1), labels, FASHION_MNIST_CLASSES)


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


# --------------------------------------------------------------------------- CIFAR-10


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def load_cifar10(
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    cache: str | Path | None = None,
) -> ImageDataset:
    """CIFAR-10 (50,000 train / 10,000 test, ``[3, 32, 32]``, values in ``[0, 1]``).

    Looks in ``root`` (default :func:`default_data_root`) for torchvision's layout
    ``root/cifar-10-batches-py``, then for the JPEG copy ``root/cifar10_jpeg.npz`` (decoded with
    Pillow once and cached as a ``uint8`` tensor in ``cache``, default :func:`cache_dir`). With
    ``download=True`` and nothing found, torchvision downloads the dataset into ``root``. The JPEG
    copy is lossy and grouped by class: use :func:`subset` to draw samples.
    """
    train = _check_split(split)
    root = Path(root) if root is not None else default_data_root()
    npz = root / "cifar10_jpeg.npz"
    if (root / "cifar-10-batches-py").is_dir() or (download and not npz.is_file()):
        import torchvision

        tv = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
        images = torch.from_numpy(np.ascontiguousarray(tv.data.transpose(0, 3, 1, 2)))
        labels = torch.as_tensor(tv.targets, dtype=torch.int64)
        return ImageDataset(images, labels, CIFAR10_CLASSES)
    if npz.is_file():
        images, labels = _cached_cifar_jpeg(npz, split, Path(cache) if cache else cache_dir())
        return ImageDataset(images, labels, CIFAR10_CLASSES)
    raise FileNotFoundError(
        f"CIFAR-10 not found under {root}: expected {root}/cifar-10-batches-py (torchvision) or "
        f"{npz}. Download it with load_cifar10({str(root)!r}, download=True) (calls "
        f"torchvision.datasets.CIFAR10(root, download=True)) or set ${DATA_ENV}."
    )


def _cached_cifar_jpeg(npz: Path, split: str, cache: Path) -> tuple[Tensor, Tensor]:
    """Decode ``npz``'s ``split`` once; reuse the ``.pt`` cache while ``npz`` is unchanged."""
    stat = npz.stat()
    stamp = (stat.st_size, int(stat.st_mtime))
    path = cache / f"cifar10_jpeg_{split}.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if tuple(cached.get("stamp", ())) == stamp:
            return cached["images"], cached["labels"]
    images, labels = decode_cifar_jpeg(npz, split)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": images, "labels": labels, "stamp": list(stamp)}, tmp)
    os.replace(tmp, path)
    return images, labels


def decode_cifar_jpeg(npz: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Decode the JPEG copy's ``split`` to ``uint8 [N, 3, 32, 32]`` images and ``int64`` labels."""
    from PIL import Image

    _check_split(split)
    with np.load(npz) as z:
        buf, offsets, labels = z[f"{split}_jpeg"], z[f"{split}_offsets"], z[f"{split}_labels"]
    n = len(offsets) - 1
    if labels.shape != (n,):
        raise ValueError(f"{npz}: {n} images but {labels.shape[0]} labels in split {split!r}")
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        data = buf[offsets[i] : offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as img:
            out[i] = np.asarray(img.convert("RGB"))
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(labels.astype(np.int64))

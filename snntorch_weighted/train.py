"""Training and evaluating the ANNs that are converted to SNNs.

:func:`train_ann` is a plain supervised loop (cross-entropy, SGD with momentum or Adam, cosine
learning-rate schedule per batch, optional CIFAR augmentation, tqdm progress bars);
:func:`evaluate` returns top-1 accuracy. Both accept a :class:`~torch.utils.data.Dataset`, a
:class:`~torch.utils.data.DataLoader` or a pair of tensors ``(x, y)``. In-memory datasets
(:class:`~torch.utils.data.TensorDataset`, :class:`snntorch_weighted.data.ImageDataset`, tensor
pairs) are batched by tensor indexing, which is much faster than a per-sample ``DataLoader``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .data import ImageDataset

__all__ = ["TrainHistory", "cifar_augment", "evaluate", "iterate_batches", "train_ann"]

DataLike = Dataset | DataLoader | tuple[Tensor, Tensor]
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class TrainHistory:
    """Per-epoch record of :func:`train_ann`.

    ``train_loss`` / ``train_acc``: mean cross-entropy and accuracy over the epoch's batches (in
    train mode, on augmented inputs); ``val_acc``: accuracy on ``val_data`` after the epoch (empty
    without ``val_data``); ``epoch_seconds``: wall time of the epoch including validation.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        return {
            "train_loss": list(self.train_loss),
            "train_acc": list(self.train_acc),
            "val_acc": list(self.val_acc),
            "epoch_seconds": list(self.epoch_seconds),
        }


# --------------------------------------------------------------------------- batching


def _as_tensor_pair(data: DataLike) -> tuple[Tensor, Tensor] | None:
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError("tensor data must be a pair (x, y) of tensors")
        x, y = data
    elif isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    else:
        return None
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    return x, y


def _num_samples(data: DataLike) -> int:
    pair = _as_tensor_pair(data)
    if pair is not None:
        return pair[0].shape[0]
    if isinstance(data, DataLoader):
        return len(data.dataset)  # type: ignore[arg-type]
    return len(data)  # type: ignore[arg-type]


def iterate_batches(
    data: DataLike,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_single: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` batches on the CPU; x float, y int64.

    ``shuffle`` draws a permutation from ``generator``; ``drop_single`` skips a last batch of one
    sample (BatchNorm cannot train on it). A ``DataLoader`` is iterated as it is configured.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(data, DataLoader):
        for x, y in data:
            yield x.float(), y.long()
        return
    n = _num_samples(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    pair = _as_tensor_pair(data)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if drop_single and index.numel() == 1 and n > 1:
            return
        if pair is not None:
            yield pair[0][index].float(), pair[1][index].long()
        elif isinstance(data, ImageDataset):
            yield data.batch(index)
        else:
            samples = [data[i] for i in index.tolist()]  # generic Dataset: per-sample access
            yield (
                torch.stack([s[0] for s in samples]).float(),
                torch.as_tensor([int(s[1]) for s in samples], dtype=torch.long),
            )


# --------------------------------------------------------------------------- augmentation


def cifar_augment(
    x: Tensor, generator: torch.Generator | None = None, padding: int = 4, flip: bool = True
) -> Tensor:
    """Random crop with zero padding ``padding`` plus (if ``flip``) random horizontal flip, batched.

    Every sample of ``x [B, C, H, W]`` gets its own offsets ``(dy, dx)`` in ``[0, 2*padding]`` and
    flip bit; the crop is one gather from the padded batch (no per-sample Python loop). The flip
    bits are drawn even when ``flip`` is off, so the offsets do not depend on it.
    """
    if x.ndim != 4:
        raise ValueError(f"cifar_augment expects [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device) & flip
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # [B, H]
    cols = dx[:, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def _resolve_augment(augment: str | Augment | None) -> Augment | None:
    if augment is None or callable(augment):
        return augment
    if augment == "cifar":
        return cifar_augment
    raise ValueError(f"augment must be None, 'cifar' or a callable(x, generator), got {augment!r}")


# --------------------------------------------------------------------------- training


def _make_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True
        )
    if name == "adam":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    # disable=None: the bar shows only on a terminal, so logs get no bar frames
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def train_ann(
    model: nn.Module,
    train_data: DataLike,
    epochs: int = 10,
    lr: float | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    val_data: DataLike | None = None,
    augment: str | Augment | None = None,
    progress: bool = True,
    seed: int = 0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    max_batches: int | None = None,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy; return the per-epoch :class:`TrainHistory`.

    Args:
        model: a classifier returning logits ``[B, classes]``; moved to ``device``.
        train_data, val_data: Dataset, DataLoader or ``(x, y)`` tensors; ``val_data`` is evaluated
            after every epoch (top-1 accuracy).
        epochs: passes over ``train_data`` (or ``max_batches`` batches per epoch).
        lr: peak learning rate (default 0.1 for SGD, 1e-3 for Adam), annealed per batch by the
            cosine schedule ``lr_i = lr * (1 + cos(pi * i / total_batches)) / 2``.
        optimizer: ``"sgd"`` (Nesterov momentum ``momentum``) or ``"adam"`` (AdamW);
            ``weight_decay`` applies to both.
        augment: ``None``, ``"cifar"`` (:func:`cifar_augment`) or ``callable(x, generator)``.
        seed: seeds the shuffling and augmentation generator (model init is the caller's).
        max_batches: cap on batches per epoch (quick runs, timing).

    Leaves the model in eval mode. Raises ``FloatingPointError`` if the loss becomes NaN/inf.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    device = torch.device(device)
    augment_fn = _resolve_augment(augment)
    lr = lr if lr is not None else (0.1 if optimizer == "sgd" else 1e-3)
    model.to(device)
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    n_batches = math.ceil(_num_samples(train_data) / batch_size)
    if isinstance(train_data, DataLoader):
        n_batches = len(train_data)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    total = max(1, epochs * n_batches)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))
    )
    generator = torch.Generator().manual_seed(seed)
    history = TrainHistory()
    for epoch in range(epochs):
        start = time.perf_counter()
        loss, acc = _train_epoch(
            model, train_data, opt, sched, batch_size, device, augment_fn, generator,
            n_batches, progress, f"epoch {epoch + 1}/{epochs}",
        )  # fmt: skip
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1} (loss {loss}); lower lr (now {lr})"
            )
        history.train_loss.append(loss)
        history.train_acc.append(acc)
        if val_data is not None:
            val_acc = evaluate(model, val_data, device, batch_size=max(256, batch_size))
            history.val_acc.append(val_acc)
        history.epoch_seconds.append(time.perf_counter() - start)
        if progress:
            _report_epoch(history, epoch, epochs)
    model.eval()
    return history


def _train_epoch(
    model: nn.Module,
    data: DataLike,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    batch_size: int,
    device: torch.device,
    augment: Augment | None,
    generator: torch.Generator,
    n_batches: int,
    progress: bool,
    desc: str,
    label_smoothing: float = 0.0,
) -> tuple[float, float]:
    """One epoch; returns (mean loss, train accuracy). Accumulates on device, syncs once."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    batches = iterate_batches(data, batch_size, shuffle=True, generator=generator, drop_single=True)
    bar = _progress(itertools.islice(batches, n_batches), n_batches, desc, progress)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None:
            x = augment(x, generator)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        if progress and i % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
    if progress:
        bar.close()
    if seen == 0:
        raise ValueError("train_data yielded no batches")
    return loss_sum.item() / seen, correct.item() / seen


def _report_epoch(history: TrainHistory, epoch: int, epochs: int) -> None:
    from tqdm.auto import tqdm

    msg = (
        f"epoch {epoch + 1}/{epochs}: loss {history.train_loss[-1]:.4f}, "
        f"train acc {history.train_acc[-1]:.4f}"
    )
    if history.val_acc:
        msg += f", val acc {history.val_acc[-1]:.4f}"
    tqdm.write(msg + f" ({history.epoch_seconds[-1]:.1f} s)")


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: DataLike,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (fraction in ``[0, 1]``), in eval mode.

    ``device`` defaults to the device of the model's first parameter (CPU for parameterless
    models); batches are moved there. The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    try:
        for x, y in iterate_batches(data, batch_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            correct += (model(x).argmax(1) == y).sum()
            seen += y.shape[0]
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate got an empty dataset")
    return correct.item() / seen

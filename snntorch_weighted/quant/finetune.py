"""STE fine-tuning of a prepared radix twin: :func:`finetune` (AdamW / SGD, cosine LR, optional
distillation from the float model, DistributedDataParallel when a process group is up)."""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from tqdm.auto import tqdm

from .prepare import _check_prepared

__all__ = ["finetune"]

# --------------------------------------------------------------------------- fine-tuning


def _ddp_batches(train_data, batch_size: int, epoch: int, seed: int):
    """Batches for this process: a DistributedSampler shard when distributed."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from ..train import iterate_batches

    distributed = dist.is_available() and dist.is_initialized()
    if isinstance(train_data, (tuple, list)):
        train_data = TensorDataset(*train_data)
    if isinstance(train_data, DataLoader):
        sampler = getattr(train_data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        return iterate_batches(train_data, batch_size)
    if distributed:
        sampler = DistributedSampler(train_data, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return iter(DataLoader(train_data, batch_size=batch_size, sampler=sampler))
    generator = torch.Generator().manual_seed(seed + epoch)
    return iterate_batches(train_data, batch_size, shuffle=True, generator=generator)


def _num_batches(train_data, batch_size: int) -> int:
    from torch.utils.data import DataLoader

    if isinstance(train_data, DataLoader):
        return len(train_data)
    n = train_data[0].shape[0] if isinstance(train_data, (tuple, list)) else len(train_data)
    if dist.is_available() and dist.is_initialized():
        n = math.ceil(n / dist.get_world_size())
    return math.ceil(n / batch_size)


def finetune(
    model: nn.Module,
    train_data,
    epochs: int = 3,
    lr: float = 1e-3,
    val_data=None,
    device: str | torch.device | None = None,
    progress: bool = True,
    optimizer: str = "adam",
    batch_size: int = 64,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    seed: int = 0,
    teacher: nn.Module | None = None,
    temperature: float = 1.0,
    keep_best: bool = False,
) -> list[dict[str, float]]:
    """STE fine-tuning of a prepared model (Adam or SGD, cosine LR per batch).

    The loss is the cross-entropy with the labels or, given a ``teacher`` (typically a copy of
    the float model taken before :func:`prepare`), knowledge distillation (Hinton et al. 2015):

    .. math::

        \\mathcal{L} = \\tau^2\\, \\mathrm{KL}\\big(\\mathrm{softmax}(z_t/\\tau)\\,\\|\\,
        \\mathrm{softmax}(z_s/\\tau)\\big)

    with teacher logits :math:`z_t` and twin logits :math:`z_s`: the twin learns to reproduce the
    float model rather than to re-fit the (often small) fine-tuning set, which keeps T-bit models
    close to the float accuracy.

    Under ``torch.distributed`` (initialised process group) the model is wrapped in
    ``DistributedDataParallel`` (gradients averaged across processes, replicas stay identical) and
    a ``Dataset`` / ``(x, y)`` pair is sharded with a ``DistributedSampler``; a ``DataLoader`` is
    used as configured (give it a ``DistributedSampler`` yourself).

    Args:
        model: the module returned by :func:`prepare` (trained in place).
        train_data: ``(x, y)`` tensors, a Dataset or a DataLoader; inputs in ``[0, 1]``.
        epochs: passes over the data (>= 1).
        lr: peak learning rate of the cosine schedule.
        val_data: optional, evaluated after every epoch (top-1 accuracy of the twin).
        device: where to train (default: the model's device).
        progress: show a tqdm progress bar (rank 0 only).
        optimizer: ``"adam"`` (AdamW) or ``"sgd"`` (Nesterov momentum).
        teacher: float model for distillation (evaluated in eval mode, no gradients); None
            trains on the labels.
        temperature: distillation temperature :math:`\tau > 0`.
        keep_best: with ``val_data``, restore at the end the parameters and buffers of the best
            validation accuracy, the state before fine-tuning (epoch 0) included, so fine-tuning
            never leaves the model worse on ``val_data`` (early stopping; take ``val_data`` from
            held-out training data, not from the test set).

    Returns:
        One dict per epoch: ``{"epoch", "loss", "val_acc"}`` (``val_acc`` is NaN without
        ``val_data``). With ``val_data`` the first record is epoch 0, the model before
        fine-tuning (``loss`` NaN); with ``keep_best`` every record has ``"kept"``, true for
        the epoch whose state the model ends with.
    """
    from ..train import evaluate

    gm = _check_prepared(model)
    _check_arguments(model, gm, epochs, lr, temperature, teacher, keep_best, val_data)
    if device is not None:
        gm.to(device)
    device = next(gm.parameters()).device
    distributed = dist.is_available() and dist.is_initialized()
    net: nn.Module = gm
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            gm, device_ids=None if device.type == "cpu" else [device])
    opt = _optimizer([p for p in gm.parameters() if p.requires_grad], optimizer, lr,
                     weight_decay, momentum)
    per_epoch = _num_batches(train_data, batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * per_epoch))
    show = progress and (not distributed or dist.get_rank() == 0)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    history = []
    best = None  # (val_acc, epoch, state) of the best epoch so far
    if val_data is not None:
        history.append({"epoch": 0, "loss": math.nan,
                        "val_acc": evaluate(gm, val_data, device=device)})  # fmt: skip
        if keep_best:
            best = (history[0]["val_acc"], 0, copy.deepcopy(gm.state_dict()))
    for epoch in range(epochs):
        batches = _ddp_batches(train_data, batch_size, epoch, seed)
        if show:
            batches = tqdm(batches, total=per_epoch, desc=f"finetune {epoch + 1}/{epochs}",
                           leave=False, dynamic_ncols=True, disable=None)
        loss = _train_epoch(net, batches, opt, sched, teacher, temperature)
        record = {"epoch": epoch + 1, "loss": loss, "val_acc": math.nan}
        if val_data is not None:
            record["val_acc"] = evaluate(gm, val_data, device=device)
        history.append(record)
        if best is not None and record["val_acc"] > best[0]:
            best = (record["val_acc"], epoch + 1, copy.deepcopy(gm.state_dict()))
        if show:
            val = "" if val_data is None else f", val acc {record['val_acc']:.4f}"
            tqdm.write(f"finetune epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}{val}")
    if best is not None:
        gm.load_state_dict(best[2])
        for record in history:
            record["kept"] = record["epoch"] == best[1]
    gm.eval()
    return history


def _check_arguments(model: nn.Module, gm: nn.Module, epochs, lr, temperature, teacher,
                     keep_best: bool, val_data) -> None:
    """:func:`finetune`'s argument checks, each error naming the argument."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if teacher is model or teacher is gm:
        raise ValueError("teacher is the model being fine-tuned (prepare works in place): "
                         "pass a copy of the float model taken before prepare")
    if keep_best and val_data is None:
        raise ValueError("keep_best=True needs val_data (held-out data to pick the best epoch)")


def _optimizer(params: list[nn.Parameter], optimizer: str, lr: float, weight_decay: float,
               momentum: float) -> torch.optim.Optimizer:
    """AdamW (``"adam"``) or SGD with Nesterov momentum (``"sgd"``)."""
    if optimizer == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                               weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def _train_epoch(net: nn.Module, batches, opt: torch.optim.Optimizer, sched, teacher,
                 temperature: float) -> float:
    """One pass of STE training over ``batches`` (the LR schedule steps per batch); the mean
    loss per sample."""
    net.train()
    first = next(net.parameters())
    total = torch.zeros((), device=first.device, dtype=torch.float64)
    count = 0
    for x, y in batches:
        x, y = x.to(first.device, first.dtype), y.to(first.device).long()
        loss = _finetune_loss(net(x), x, y, teacher, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.detach() * y.shape[0]
        count += y.shape[0]
    return float(total) / max(count, 1)


def _finetune_loss(logits: Tensor, x: Tensor, y: Tensor, teacher: nn.Module | None,
                   temperature: float) -> Tensor:
    """Cross-entropy with ``y``, or ``tau^2 KL(softmax(teacher(x)/tau) || softmax(logits/tau))``."""
    if teacher is None:
        return F.cross_entropy(logits, y)
    with torch.no_grad():
        target = F.log_softmax(teacher(x).to(logits.dtype) / temperature, dim=1)
    student = F.log_softmax(logits / temperature, dim=1)
    kl = F.kl_div(student, target, reduction="batchmean", log_target=True)
    return kl * temperature**2

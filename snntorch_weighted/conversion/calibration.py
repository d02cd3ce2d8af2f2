"""Calibration data: validation, batching and the per-ReLU activation statistics.

Used by :func:`snntorch_weighted.convert` (data-based normalisation, Diehl et al. 2015; Rueckauer
et al. 2017) and by :func:`snntorch_weighted.quant.prepare` (activation clips). Calibration data
is a Tensor ``[N, ...]``, a ``(x, y)`` pair, a map-style Dataset, or any re-iterable of Tensors or
``(x, y)`` batches (e.g. a DataLoader); inputs must be floating point, finite and in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, fx, nn

from .graph import module_of

__all__ = ["calibrate", "iter_batches", "first_batch", "check_batch"]

_TENSOR_BATCH = 256  # calibration batch size when the data is one tensor
_SAMPLES_PER_BATCH = 1 << 16  # positive activations kept per ReLU and batch for the percentile




def _as_tensor(batch) -> Tensor:
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise ValueError(
            "calibration_data must be a Tensor or an iterable of Tensors / (x, y) batches, got "
            f"a batch of type {type(batch).__name__}")
    return batch


def iter_batches(data: Tensor | Iterable) -> Iterator[Tensor]:
    """Input batches of calibration data (labels dropped)."""
    if (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor)
            and isinstance(data[1], Tensor) and data[1].dim() == 1):
        data = data[0]  # an (x, y) pair, not a list of two batches
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(
        data, (Tensor, torch.utils.data.IterableDataset)
    ):
        data = torch.utils.data.DataLoader(data, batch_size=_TENSOR_BATCH)
    if isinstance(data, Tensor):
        if data.dim() < 2:
            raise ValueError(
                f"calibration_data must be [N, ...] with a batch dim, got {data.shape}")
        yield from data.split(_TENSOR_BATCH)
        return
    if not isinstance(data, Iterable):
        raise ValueError(f"calibration_data must be a Tensor or an iterable of batches, got "
                         f"{type(data).__name__}")
    for batch in data:
        yield _as_tensor(batch)


def first_batch(data: Tensor | Iterable) -> Tensor:
    if isinstance(data, Iterator):
        raise ValueError("calibration_data must be re-iterable (a Tensor, list or DataLoader), "
                         "not a one-shot iterator/generator")
    for batch in iter_batches(data):
        if batch.shape[0] > 0:
            return batch
    raise ValueError("calibration_data is empty: give at least one input sample")


def check_batch(x: Tensor, normalized_input: bool) -> None:
    if not x.is_floating_point():
        raise ValueError(f"calibration inputs must be floating point in [0, 1], got {x.dtype}")
    if torch.isnan(x).any():
        raise ValueError("calibration_data contains NaN")
    lo, hi = torch.aminmax(x)
    if lo < 0 or hi > 1:
        msg = f"inputs must be in [0, 1] (got values in [{float(lo):g}, {float(hi):g}])"
        if lo < 0 and not normalized_input:
            msg += ("; if your model expects mean/std-normalised input, pass raw [0, 1] data "
                    "and input_mean/input_std")
        raise ValueError(msg)




class _ActivationStats:
    """Running max and a subsample of positive activations of one ReLU."""

    def __init__(self, generator: torch.Generator) -> None:
        self.max: Tensor | None = None
        self.samples: list[Tensor] = []
        self.generator = generator

    def update(self, act: Tensor, keep_samples: bool) -> None:
        flat = act.detach().flatten()
        batch_max = flat.max()
        self.max = batch_max if self.max is None else torch.maximum(self.max, batch_max)
        if keep_samples:
            pos = flat[flat > 0]
            if pos.numel() > _SAMPLES_PER_BATCH:
                idx = torch.randint(pos.numel(), (_SAMPLES_PER_BATCH,), device=pos.device,
                                    generator=self.generator)
                pos = pos[idx]
            self.samples.append(pos.float())

    def scale(self, normalization: str, percentile: float) -> float:
        if normalization == "max":
            value = float(self.max)
        else:
            pos = torch.cat(self.samples)
            if pos.numel() == 0:
                return 1.0
            k = min(max(math.ceil(percentile / 100 * pos.numel()), 1), pos.numel())
            value = float(pos.cpu().kthvalue(k).values)
        return value if value > 0 and math.isfinite(value) else 1.0


def calibrate(
    gm: fx.GraphModule,
    calibration_data: Tensor | Iterable,
    normalization: str = "percentile",
    percentile: float = 99.9,
    device: torch.device | str | None = None,
    progress: bool = True,
    normalized_input: bool = False,
) -> dict[str, float]:
    """Per-ReLU scale :math:`\\lambda_l` of a captured graph (keys: the ReLU node names).

    :math:`\\lambda_l` is the max, or the nearest-rank ``percentile`` of the positive
    activations, of ReLU l on the calibration data (Rueckauer et al. 2017); 1 for a ReLU that
    never fires. The positive activations are subsampled to at most 2**16 per ReLU and batch.
    """
    from tqdm.auto import tqdm

    relus = [n for n in gm.graph.nodes if isinstance(module_of(gm, n), nn.ReLU)]
    dtype = next((p.dtype for p in gm.parameters() if p.is_floating_point()), None)
    generator = None
    stats: dict[str, _ActivationStats] = {}
    handles = []
    keep = normalization == "percentile"
    try:
        total = len(calibration_data) if not isinstance(calibration_data, Tensor) else None
    except TypeError:
        total = None
    if isinstance(calibration_data, Tensor):
        total = math.ceil(calibration_data.shape[0] / _TENSOR_BATCH)
    seen = 0
    try:
        bar = None if progress else True  # None: a bar only on a terminal
        for batch in tqdm(iter_batches(calibration_data), total=total, disable=bar,
                          desc="calibrating", leave=False):
            if batch.shape[0] == 0:
                continue
            check_batch(batch, normalized_input)
            batch = batch.to(device) if device is not None else batch
            batch = batch.to(dtype) if dtype is not None else batch
            if generator is None:
                generator = torch.Generator(device=batch.device).manual_seed(0)
                for node in relus:
                    stats[node.name] = _ActivationStats(generator)
                    hook = _make_hook(stats[node.name], keep)
                    handles.append(gm.get_submodule(node.target).register_forward_hook(hook))
            with torch.no_grad():
                gm(batch)
            seen += batch.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise ValueError("calibration_data is empty: give at least one input sample")
    return {name: s.scale(normalization, percentile) for name, s in stats.items()}


def _make_hook(stats: _ActivationStats, keep: bool):
    def hook(_module, _inputs, output):
        stats.update(output, keep)

    return hook

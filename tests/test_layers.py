"""Tests for the spiking helper layers (SpikeMaxPool2d, Scale) against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st

from snntorch_weighted.conversion.layers import Scale, SpikeMaxPool2d
from snntorch_weighted.neurons.reset import reset


def _weighted_train(values: torch.Tensor, num_steps: int, k: int) -> torch.Tensor:
    """Independent weighted encoder: K-bit code (round half up, saturating), MSB first."""
    code = torch.clamp(torch.floor(values.double() * 2**k + 0.5), max=2**k - 1).long()
    bits = [((code >> (k - 1 - (t % k))) & 1).float() for t in range(num_steps)]
    return torch.stack(bits)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 6),
    periods=st.integers(1, 4),
    kernel=st.sampled_from([(2, 2, 0), (3, 2, 1), (2, 1, 0)]),
)
def test_weighted_maxpool_passes_the_max_train(seed, k, periods, kernel):
    """For periodic weighted trains the pooled train decodes exactly to the max of the window.

    MSB-first prefixes are monotone in the value, so the input with the largest accumulated
    weighted sum always carries the window maximum's bits (ties carry identical bits).
    """
    size, stride, pad = kernel
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 5, 6, generator=g)
    steps = periods * k
    train = _weighted_train(x, steps, k)
    pool = SpikeMaxPool2d(size, stride, pad, weighted=True, num_phases=k)
    out = torch.stack([pool(train[t]) for t in range(steps)])
    q = torch.clamp(torch.floor(x.double() * 2**k + 0.5), max=2**k - 1) / 2**k
    expected = F.max_pool2d(q, size, stride, pad)
    w = 2.0 ** -(1 + torch.arange(steps) % k)
    decoded = (out.double() * w.view(-1, 1, 1, 1, 1)).sum(0) / periods
    torch.testing.assert_close(decoded, expected.double(), rtol=0, atol=1e-12)
    # every step's output is exactly the max input's train (first period included)
    ref = _weighted_train(expected.float(), steps, k)
    torch.testing.assert_close(out, ref)


def _rate_reference(train: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Per window and step: the spike of the input with the largest running count (first wins)."""
    steps, b, c, h, w = train.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    count = np.zeros(train.shape[1:])
    out = np.zeros((steps, b, c, oh, ow))
    for t in range(steps):
        count += train[t]
        for i in range(oh):
            for j in range(ow):
                win = count[:, :, i * stride:i * stride + size, j * stride:j * stride + size]
                flat = win.reshape(b, c, -1).argmax(-1)
                r, s = np.divmod(flat, size)
                sp = train[t][:, :, i * stride:i * stride + size, j * stride:j * stride + size]
                out[t, :, :, i, j] = np.take_along_axis(
                    sp.reshape(b, c, -1), (r * size + s)[..., None], -1)[..., 0]
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([2, 3]))
def test_rate_maxpool_matches_loop_reference(seed, size):
    g = torch.Generator().manual_seed(seed)
    train = (torch.rand(12, 2, 2, 6, 6, generator=g) < torch.rand(2, 2, 6, 6, generator=g))
    train = train.float()
    pool = SpikeMaxPool2d(size, size, weighted=False)
    out = torch.stack([pool(train[t]) for t in range(train.shape[0])])
    np.testing.assert_array_equal(out.numpy(), _rate_reference(train.numpy(), size, size))


def test_maxpool_clock_restarts_on_reset_and_shape_change():
    k = 4
    x = torch.rand(1, 2, 4, 4)
    train = _weighted_train(x, 2 * k, k)
    pool = SpikeMaxPool2d(2, weighted=True, num_phases=k)
    first = torch.stack([pool(train[t]) for t in range(2 * k)])
    assert int(pool.step) == 2 * k
    reset(torch.nn.Sequential(pool))
    assert int(pool.step) == 0
    again = torch.stack([pool(train[t]) for t in range(2 * k)])
    torch.testing.assert_close(first, again)
    pool(torch.zeros(3, 2, 4, 4))  # new shape restarts the clock
    assert int(pool.step) == 1
    assert "acc" not in pool.state_dict() and "step" not in pool.state_dict()


def test_maxpool_from_module_and_errors():
    pool = SpikeMaxPool2d.from_maxpool(torch.nn.MaxPool2d(3, 2, 1), weighted=False)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    with pytest.raises(ValueError, match="return_indices"):
        SpikeMaxPool2d.from_maxpool(torch.nn.MaxPool2d(2, return_indices=True), weighted=True)
    with pytest.raises(ValueError, match="num_phases"):
        SpikeMaxPool2d(2, num_phases=0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        SpikeMaxPool2d(2)(torch.zeros(4, 4))


def test_scale():
    s = Scale(torch.tensor([1.0, 2.0]).view(2, 1))
    expected = torch.tensor([1.0, 2.0]).view(2, 1).expand(3, 2, 4)
    torch.testing.assert_close(s(torch.ones(3, 2, 4)), expected)
    assert Scale(0.5)(torch.tensor([4.0])).item() == 2.0
    assert "scale" in Scale(2.0).state_dict()
    with pytest.raises(ValueError, match="finite"):
        Scale(float("nan"))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    weighted=st.booleans(),
    k=st.integers(1, 6),
    before=st.integers(0, 7),
    block=st.integers(1, 9),
    batched=st.booleans(),
)
def test_maxpool_forward_steps_equals_forward_calls(seed, weighted, k, before, block, batched):
    """``forward_steps(x[T])`` from any state: the spikes and the state (accumulator, counter)
    of T ``forward`` calls (the behaviour the removed quick steps guarded)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (before + block, 2, 3, 4, 4) if batched else (before + block, 3, 4, 4)
    train = (torch.rand(shape, generator=gen) < 0.5).float()
    stepped = SpikeMaxPool2d(2, weighted=weighted, num_phases=k)
    blocked = SpikeMaxPool2d(2, weighted=weighted, num_phases=k)
    for x in train[:before]:
        stepped(x)
        blocked(x)
    expected = torch.stack([stepped(x) for x in train[before:]])
    assert torch.equal(blocked.forward_steps(train[before:]), expected)
    assert torch.equal(blocked.acc, stepped.acc) and int(blocked.step) == int(stepped.step)


def test_maxpool_step_edit_sets_the_phase():
    """An in-place edit of the counter is read at the next step (no cached phase)."""
    x = torch.rand(1, 1, 2, 2)
    edited, walked = SpikeMaxPool2d(2, num_phases=4), SpikeMaxPool2d(2, num_phases=4)
    edited(x)
    walked(x)
    edited.step.data.fill_(3)
    walked.step.data.fill_(3)
    walked.acc = edited.acc.clone()
    y = torch.ones(1, 1, 2, 2)
    edited(y)
    assert torch.equal(edited.acc, walked.acc + 2.0**-4 * y)  # eq. 6 of step 4: 2**-(1 + 3)

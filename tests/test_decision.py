"""Kim et al. Algorithm 1 (early decision), against a plain per-sample Python transcription."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snntorch_weighted.simulation.decision import early_decision, gather_at_time


def reference(trace: list[list[float]], theta: float, t1: int, t2: int) -> tuple[int, int, bool]:
    """Algorithm 1 for one sample, line by line; trace[t-1] is V^L(t)."""
    prev = None
    ema = 0.0
    count = 0
    current = None
    for t in range(t1, t2 + 1):
        v = trace[t - 1]
        current = v.index(max(v))  # line 3 (first maximum)
        top = sorted(v, reverse=True)
        delta = top[0] - top[1]  # line 4
        ema = (delta + ema) / 2  # line 5
        if current == prev:  # line 6
            count += 1  # line 7
            if ema == 0:
                bound = math.inf if theta > 0 else math.nan
            else:
                bound = theta / ema
            if count >= bound:  # line 8
                return current, t, True  # line 9
        else:
            count = 0  # line 11
        prev = current
    return current, t2, False


def test_hand_computed_trace() -> None:
    # Sample 0: class 1 leads with margin 2 from t=1; theta=2:
    # t=1: D=1 (new), ema=1, count=0; t=2: same, ema=1.5, count=1 < 2/1.5;
    # t=3: same, ema=1.75, count=2 >= 2/1.75 -> decided at t=3.
    # Sample 1: the lead flips at t=2 and t=3, margins 1: t=1 ema=.5; t=2 flip count=0 ema=.75;
    # t=3 flip ema=.875; t=4 same count=1 < 2/.9375; t=5 count=2 < 2/.96875 = 2.06;
    # t=6 count=3 >= 2/.984375 -> t=6.
    s0 = [[0.0, 2.0]] * 6
    s1 = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    trace = torch.tensor([s0, s1]).transpose(0, 1)
    res = early_decision(trace, theta=2.0, start_step=1)
    assert res.decision.tolist() == [1, 0]
    assert res.time.tolist() == [3, 6]
    assert res.decided.tolist() == [True, True]
    # cut at T2=5, sample 1 is not stable yet: decided at T2 with D(T2), flagged undecided.
    cut = early_decision(trace, theta=2.0, start_step=1, end_step=5)
    assert cut.time.tolist() == [3, 5] and cut.decided.tolist() == [True, False]
    # starting later restarts the count: from T1=3 sample 0 needs t=3 (new), 4, 5 -> t=5.
    late = early_decision(trace, theta=2.0, start_step=3)
    assert late.time.tolist()[0] == 5


def test_huge_theta_runs_to_the_end() -> None:
    torch.manual_seed(0)
    trace = torch.randn(12, 7, 5).cumsum(0)
    res = early_decision(trace, theta=1e30, start_step=2)
    assert res.time.tolist() == [12] * 7
    assert torch.equal(res.decision, trace[-1].argmax(1))
    assert not res.decided.any()
    part = early_decision(trace, theta=1e30, start_step=2, end_step=6)
    assert part.time.tolist() == [6] * 7
    assert torch.equal(part.decision, trace[5].argmax(1))


def test_zero_margin_never_decides() -> None:
    trace = torch.zeros(6, 3, 4)  # all tied: delta_EMA = 0 -> theta / 0 = inf
    res = early_decision(trace, theta=0.5)
    assert res.time.tolist() == [6, 6, 6] and not res.decided.any()
    assert res.decision.tolist() == [0, 0, 0]


def test_smaller_theta_decides_no_later() -> None:
    torch.manual_seed(1)
    trace = (torch.rand(40, 16, 10) + torch.linspace(0, 0.3, 10)).cumsum(0)
    times = [early_decision(trace, theta, 1).time for theta in (0.1, 1.0, 10.0, 100.0)]
    for early, late in zip(times, times[1:]):
        assert (early <= late).all()
    assert times[0].sum() < times[-1].sum()


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    steps=st.integers(1, 12),
    batch=st.integers(1, 6),
    classes=st.integers(2, 4),
    theta=st.sampled_from([0.0, 0.25, 1.0, 3.0, 50.0]),
)
def test_matches_reference(data, steps, batch, classes, theta) -> None:
    # small integers: plenty of ties, repeated decisions and zero margins
    values = data.draw(st.lists(st.integers(-2, 3), min_size=steps * batch * classes,
                                max_size=steps * batch * classes))
    trace = torch.tensor(values, dtype=torch.float32).view(steps, batch, classes)
    t1 = data.draw(st.integers(1, steps))
    t2 = data.draw(st.integers(t1, steps))
    res = early_decision(trace, theta, t1, t2)
    for b in range(batch):
        expect = reference(trace[:, b].tolist(), theta, t1, t2)
        got = (int(res.decision[b]), int(res.time[b]), bool(res.decided[b]))
        assert got == expect


def test_gather_at_time() -> None:
    per_step = torch.arange(24).view(4, 3, 2)
    time = torch.tensor([1, 4, 2])
    out = gather_at_time(per_step, time)
    for b, t in enumerate(time.tolist()):
        assert torch.equal(out[b], per_step[:t, b].sum(0))
    flat = gather_at_time(per_step[..., 0], time)
    assert flat.tolist() == [per_step[:t, b, 0].sum().item() for b, t in enumerate(time.tolist())]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(trace=torch.zeros(3, 2)), "T, B, C"),
        (dict(trace=torch.zeros(3, 2, 1)), "C >= 2"),
        (dict(trace=torch.zeros(3, 2, 2), theta=-1.0), "theta"),
        (dict(trace=torch.zeros(3, 2, 2), start_step=0), "start_step"),
        (dict(trace=torch.zeros(3, 2, 2), start_step=2, end_step=4), "end_step"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    args = dict(theta=1.0, start_step=1) | kwargs
    with pytest.raises(ValueError, match=match):
        early_decision(**args)

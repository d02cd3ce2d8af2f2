"""Quick steps (``clock.quick_steps``): the results and the state of regular steps, checked against
independent plain-Python / NumPy references, and taken by simulate's step loop only while nothing
is hooked."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snntorch_weighted import WeightedLeaky
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.layers import SpikeMaxPool2d
from snntorch_weighted.neurons.clock import QuickRun, quick_steps
from snntorch_weighted.neurons.leaky import membranes_in_place
from snntorch_weighted.simulation.runner import simulate


def phase(t: int, num_phases: int) -> float:
    """Kim eq. 6 for the step after ``t`` steps."""
    return 2.0 ** -(1 + t % num_phases)


def reference_neuron(currents: list[float], num_phases: int, theta: float, fire: bool
                     ) -> tuple[list[float], float]:
    """Kim eq. 8-10 for one neuron in plain Python (``fire=False``: the integrator, eq. 16)."""
    v, spikes = 0.0, []
    for t, z in enumerate(currents):
        w = phase(t, num_phases)
        v += w * z
        s = 1.0 if fire and v >= w * theta else 0.0
        v -= s * w * theta
        spikes.append(s)
    return spikes, v


def reference_pool(train: np.ndarray, size: int, num_phases: int | None) -> np.ndarray:
    """Per ``size`` x ``size`` window (stride ``size``) and step: the spike of the input whose
    accumulated ``sum w(t) s(t)`` is largest (the first of equals); w = 1 without phases."""
    steps, b, c, h, w = train.shape
    acc = np.zeros(train.shape[1:])
    out = np.zeros((steps, b, c, h // size, w // size))
    for t in range(steps):
        acc += train[t] * (1.0 if num_phases is None else phase(t, num_phases))
        for i in range(h // size):
            for j in range(w // size):
                rows, cols = slice(i * size, i * size + size), slice(j * size, j * size + size)
                first = acc[:, :, rows, cols].reshape(b, c, -1).argmax(-1)
                spikes = train[t][:, :, rows, cols].reshape(b, c, -1)
                out[t, :, :, i, j] = np.take_along_axis(spikes, first[..., None], -1)[..., 0]
    return out


def run_sequences(module: nn.Module, sequences: list[torch.Tensor], hidden: bool):
    """Step ``module`` through ``sequences`` (a new input shape starts each one) inside one
    quick-steps block; checks that every step after a sequence's first is a quick step."""
    outs = []
    with torch.no_grad(), membranes_in_place([module] if hidden else []), quick_steps([module]):
        for seq in sequences:
            for t, x in enumerate(seq):
                outs.append(module(x))
                assert isinstance(module._quick, QuickRun)
                assert module._quick.count - module._quick.start == t  # quick after the first
    assert module._quick is None  # the block is over
    return outs


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_phases=st.integers(1, 8),
    theta=st.sampled_from([1.0, 0.75, 2.5]),
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=2),
    fire=st.booleans(),
)
def test_quick_neuron_steps_follow_kim_and_leave_the_regular_state(seed, num_phases, theta,
                                                                   lengths, fire):
    """Firing hidden neurons (membrane in place) and the output integrator: spikes and
    membranes of every step equal Kim eq. 8-10 / 16 per neuron; a new input shape (the second
    sequence) restarts the neuron as a regular step does; after the block the clock holds the
    steps taken and a regular step goes on from there."""
    gen = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(-64, 65, (n, len(lengths) + i, 3), generator=gen).double() / 4
                 for i, n in enumerate(lengths)]  # multiples of 1/4: exact, with ties
    neuron = WeightedLeaky(num_phases=num_phases, threshold=theta, init_hidden=True,
                           fire=fire, output=not fire)
    neuron.reset_mem()
    outs = run_sequences(neuron, sequences, hidden=fire)
    spikes = [o[0] if isinstance(o, tuple) else o for o in outs]
    last = sequences[-1]
    extra = torch.randint(-64, 65, last.shape[1:], generator=gen).double() / 4
    with torch.no_grad():
        after = neuron(extra)  # a regular step after the block
    after = after[0] if isinstance(after, tuple) else after
    offset = 0
    for i, seq in enumerate(sequences):
        steps = seq.shape[0]
        got = torch.stack(spikes[offset:offset + steps])
        offset += steps
        for idx in np.ndindex(*seq.shape[1:]):
            currents = seq[(slice(None), *idx)].tolist()
            if i == len(sequences) - 1:
                currents.append(float(extra[idx]))
            expect, v_end = reference_neuron(currents, num_phases, theta, fire)
            assert got[(slice(None), *idx)].tolist() == expect[:steps]
            if i == len(sequences) - 1:
                assert float(after[idx]) == expect[-1]
                assert float(neuron.mem[idx]) == v_end
    assert int(neuron.step) == lengths[-1] + 1


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_phases=st.sampled_from([None, 1, 3, 8]),
    lengths=st.lists(st.integers(1, 10), min_size=1, max_size=2),
)
def test_quick_pool_steps_match_the_window_reference(seed, num_phases, lengths):
    """SpikeMaxPool2d, weighted and rate: every step equals the NumPy window reference, a new
    input shape restarts the accumulator, and the clock counts the steps after the block."""
    gen = torch.Generator().manual_seed(seed)
    sequences = [(torch.rand(n, 1 + i, 2, 4, 6, generator=gen) < 0.5).float()
                 for i, n in enumerate(lengths)]
    pool = SpikeMaxPool2d(2, weighted=num_phases is not None, num_phases=num_phases or 8)
    outs = run_sequences(pool, sequences, hidden=False)
    offset = 0
    for seq in sequences:
        got = torch.stack(outs[offset:offset + seq.shape[0]]).numpy()
        offset += seq.shape[0]
        np.testing.assert_array_equal(got, reference_pool(seq.numpy(), 2, num_phases))
    assert int(pool.step) == lengths[-1]


def count_regular_steps(monkeypatch) -> dict[str, int]:
    """Count the regular (not quick) steps of WeightedLeaky and SpikeMaxPool2d."""
    counts = {"steps": 0}
    for cls in (WeightedLeaky, SpikeMaxPool2d):
        regular = cls._regular_forward

        def counted(self, *args, regular=regular):
            counts["steps"] += 1
            return regular(self, *args)

        monkeypatch.setattr(cls, "_regular_forward", counted)
    return counts


def test_simulate_takes_quick_steps_only_while_nothing_is_hooked(monkeypatch) -> None:
    """The step loop's modules take one regular step per run and quick steps after it (same
    result as the time-folded runner); with a forward hook on one of them every step is
    regular, and after the run every module's clock holds the number of steps."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8, 3)).eval()
    snn = convert(ann, torch.rand(8, 1, 4, 4), coding="weighted", num_phases=4, progress=False)
    x = torch.rand(3, 1, 4, 4)
    stateful = [m for m in snn.modules() if isinstance(m, (WeightedLeaky, SpikeMaxPool2d))]
    assert len(stateful) == 3  # hidden neuron, spike pool, output integrator
    folded = simulate(snn, x, 10, fold=True, chunk_size=3)
    counts = count_regular_steps(monkeypatch)
    quick = simulate(snn, x, 10, fold=False)
    assert counts["steps"] == len(stateful)  # one regular step each, the rest quick
    assert torch.equal(quick.mem, folded.mem)
    assert all(torch.equal(quick.spikes[k], folded.spikes[k]) for k in folded.spikes)
    assert all(int(m.step) == 10 for m in stateful)
    counts["steps"] = 0
    handle = stateful[1].register_forward_hook(lambda *args: None)
    hooked = simulate(snn, x, 10, fold=False)
    handle.remove()
    assert counts["steps"] == 10 * len(stateful)
    assert torch.equal(hooked.mem, folded.mem)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_phases=st.integers(1, 8),
       theta=st.sampled_from([0.6, 0.1, 1.3]), steps=st.integers(2, 12))
def test_quick_steps_round_thresholds_as_regular_float32_steps(seed, num_phases, theta, steps):
    """In float32 with thresholds that are not exact binary fractions, quick steps spike and
    integrate exactly as regular steps: every spike and the final membrane are equal."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps, 4, 6, generator=gen)
    regular, quick = (WeightedLeaky(num_phases=num_phases, threshold=theta, init_hidden=True)
                      for _ in range(2))
    with torch.no_grad():
        expected = torch.stack([regular(x) for x in inputs])
        got = torch.stack(run_sequences(quick, [inputs], hidden=True))
    assert torch.equal(got, expected) and torch.equal(quick.mem, regular.mem)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_phases=st.integers(1, 8),
       theta=st.floats(0.01, 10.0), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_phase_threshold_tensors_compare_as_python_floats(seed, num_phases, theta, dtype):
    """The per-phase 0-dim threshold tensors every eager path compares against give the same
    spikes as ``torch.ge`` with the Python float ``w(t) * theta`` (Kim eq. 9), on membranes
    drawn around each threshold (values just below, at and above it included)."""
    neuron = WeightedLeaky(num_phases=num_phases, threshold=theta)
    gen = torch.Generator().manual_seed(seed)
    for n in range(2 * num_phases):
        threshold = phase(n, num_phases) * theta
        exact = torch.tensor(threshold, dtype=dtype)
        near = torch.stack([torch.nextafter(exact, exact - 1), exact,
                            torch.nextafter(exact, exact + 1)])
        mem = torch.cat([near, threshold * 2 * torch.rand(64, generator=gen).to(dtype)])
        got = torch.ge(mem, neuron._threshold_of(n, theta, mem))
        assert torch.equal(got, torch.ge(mem, threshold))

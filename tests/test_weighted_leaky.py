"""WeightedLeaky against Kim et al. eq. 6-12, computed independently."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snntorch_weighted import WeightedLeaky, spikegen


def reference_weighted(currents, num_phases, threshold=1.0, beta=1.0):
    """Plain-Python Kim eq. 8-10 for one neuron: returns spikes and final membrane."""
    v, spikes = 0.0, []
    for t, z in enumerate(currents, start=1):
        w = 2.0 ** -(1 + (t - 1) % num_phases)
        v = beta * v + w * z
        s = 1 if v >= w * threshold else 0
        v -= s * w * threshold
        spikes.append(s)
    return spikes, v


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(-64, 64), min_size=1, max_size=40),
    st.integers(1, 8),
)
def test_step_by_step_matches_reference_and_fires_on_equality(currents, num_phases):
    # Currents are multiples of 1/4, so every membrane value is exact: equality cases really occur.
    cur = torch.tensor(currents, dtype=torch.float64) / 4
    neuron = WeightedLeaky(num_phases=num_phases)
    mem = neuron.init_leaky()
    got = []
    for z in cur:
        spk, mem = neuron(z.view(1), mem)
        got.append(int(spk.item()))
    expected, v_end = reference_weighted(cur.tolist(), num_phases)
    assert got == expected
    assert mem.item() == v_end


def test_fires_when_membrane_equals_scaled_threshold():
    neuron = WeightedLeaky(num_phases=4)
    spk, mem = neuron(torch.tensor([1.0]), neuron.init_leaky())  # V = 1/2 = w(1) * threshold
    assert spk.item() == 1.0 and mem.item() == 0.0


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),  # periods
    st.integers(2, 8),  # phases
    st.integers(0, 2**31 - 1),  # seed
)
def test_kim_eq12_holds_exactly_for_a_layer_fed_encoded_inputs(periods, num_phases, seed):
    """sum_t w(t) s(t) == n (W a + b) - V(nK), Kim eq. 12, with beta_i = b / (1 - 2**-K) (eq. 8)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 6, generator=gen, dtype=torch.float64)
    # Dyadic weights and biases keep every float64 sum exact, so the identity is tested with ==.
    W = torch.randint(-64, 65, (4, 6), generator=gen).double() / 64
    # Pick the normalised bias beta_i dyadic; then b = beta_i (1 - 2**-K) is dyadic too (eq. 8).
    beta_bias = torch.randint(-64, 65, (4,), generator=gen).double() / 64
    b = beta_bias * (1 - 2.0**-num_phases)
    num_steps = periods * num_phases
    spikes_in = spikegen.weighted(x, num_steps, num_phases)
    neuron = WeightedLeaky(num_phases=num_phases, init_hidden=True)
    out = torch.stack([neuron(spikes_in[t] @ W.T + beta_bias) for t in range(num_steps)])
    w = spikegen.phase_weights(num_steps, num_phases, torch.float64)
    lhs = torch.einsum("t,tbn->bn", w, out)
    a = spikegen.quantize(x, num_phases)  # eq. 11: the value each input period carries
    rhs = periods * (a @ W.T + b) - neuron.mem
    assert torch.equal(lhs, rhs)


def test_output_mode_integrates_without_firing_and_skips_periods():
    K = 4
    neuron = WeightedLeaky(num_phases=K, fire=False, skip_periods=1, init_hidden=True, output=True)
    cur = torch.tensor([[3.0, -2.0]])
    for t in range(1, 3 * K + 1):
        spk, mem = neuron(cur)
        assert torch.all(spk == 0)
        if t == K:
            assert torch.all(mem == 0)  # first period skipped
    # two integrated periods: V = sum_t w(t) * cur = 2 * (1 - 2**-K) * cur  (eq. 16)
    torch.testing.assert_close(mem, 2 * (1 - 2.0**-K) * cur, rtol=0, atol=0)


def test_beta_below_one_leaks():
    neuron = WeightedLeaky(num_phases=2, beta=0.5, threshold=10.0)
    mem = neuron.init_leaky()
    _, mem = neuron(torch.tensor([4.0]), mem)  # 0 + 1/2 * 4
    _, mem = neuron(torch.tensor([4.0]), mem)  # 0.5 * 2 + 1/4 * 4
    assert mem.item() == 2.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_phases"):
        WeightedLeaky(num_phases=0)
    with pytest.raises(ValueError, match="skip_periods"):
        WeightedLeaky(skip_periods=-1)

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


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_phases=st.integers(1, 6),
    before=st.integers(0, 9),
    block=st.integers(1, 10),
    options=st.fixed_dictionaries({
        "beta": st.sampled_from([1.0, 0.75]),
        "reset_mechanism": st.sampled_from(["subtract", "zero", "none"]),
        "reset_delay": st.booleans(),
        "init_hidden": st.booleans(),
        "output": st.booleans(),
        "graded_spikes_factor": st.sampled_from([1.0, 2.0]),
    }),
    fire=st.sampled_from([(True, 0), (False, 0), (False, 1), (False, 2)]),
    grad=st.booleans(),
)
def test_forward_steps_equals_forward_calls(seed, num_phases, before, block, options, fire, grad):
    """``forward_steps(x[T])`` from any state returns what T ``forward`` calls return and leaves
    the same state (membrane, counter): for every option, and the skipping integrator; inputs
    with gradients take the general loop, plain inference the in-place block."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(before + block, 3, 4, dtype=torch.float64, generator=gen)
    xs.requires_grad_(grad)
    kw = dict(options, num_phases=num_phases, fire=fire[0], skip_periods=fire[1])
    stepped, blocked = WeightedLeaky(**kw), WeightedLeaky(**kw)
    mem_s = mem_b = None
    for x in xs[:before]:
        out_s = stepped(x) if stepped.init_hidden else stepped(x, mem_s)
        out_b = blocked(x) if blocked.init_hidden else blocked(x, mem_b)
        if not stepped.init_hidden:
            mem_s, mem_b = out_s[1], out_b[1]
    if not blocked.init_hidden and mem_b is not None:
        blocked.mem = mem_b  # explicit state: forward_steps starts from the neuron's own
        blocked.step.data.fill_(before)
    outs = []
    for x in xs[before:]:
        outs.append(stepped(x) if stepped.init_hidden else stepped(x, mem_s))
        if not stepped.init_hidden:
            mem_s = outs[-1][1]
    got = blocked.forward_steps(xs[before:])
    if isinstance(outs[0], tuple):
        expected = tuple(torch.stack(parts).detach() for parts in zip(*outs))
        assert isinstance(got, tuple)
        assert all(torch.equal(a.detach(), b) for a, b in zip(got, expected))
    else:
        assert torch.equal(got.detach(), torch.stack(outs).detach())
    assert torch.equal(blocked.mem, stepped.mem)
    assert int(blocked.step) == int(stepped.step) == before + block


def test_state_restarts_on_reset_assignment_and_shape_change_only():
    """The counter restarts with the membrane: reset_mem / init_leaky / assigning ``mem`` (what
    snntorch.utils.reset does) / a new input shape; passing the running ``mem`` back does not."""
    neuron = WeightedLeaky(num_phases=4)
    mem = neuron.init_leaky()
    for _ in range(3):
        _, mem = neuron(torch.ones(2), mem)
    assert int(neuron.step) == 3
    neuron.mem = torch.zeros(2)
    assert int(neuron.step) == 0
    neuron(torch.ones(2), torch.zeros(2))  # a hand-made zero state continues the count
    assert int(neuron.step) == 1
    neuron(torch.ones(2), mem)
    assert int(neuron.step) == 2
    neuron(torch.ones(3))  # the kept state does not fit the new shape: restarted, then 1 step
    assert int(neuron.step) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equality_fires_at_every_phase_in_the_input_dtype(dtype):
    """V == w(t) * theta fires (eq. 9's U(0) = 1) at every phase, for thresholds exact in the
    dtype, and a value one ulp below does not."""
    k, theta = 6, 0.75
    for phase in range(k):
        w = 2.0 ** -(1 + phase)
        at = torch.tensor([w * theta], dtype=dtype)
        below = torch.nextafter(at, torch.zeros_like(at))
        neuron = WeightedLeaky(threshold=theta, num_phases=k)
        neuron.reset_mem()
        neuron.step.data.fill_(phase)
        spk_at, _ = neuron(at / w, torch.zeros(1, dtype=dtype))
        neuron.step.data.fill_(phase)
        spk_below, _ = neuron(below / w, torch.zeros(1, dtype=dtype))
        assert spk_at.item() == 1 and spk_below.item() == 0


def test_a_subclass_changing_one_equation_changes_forward_and_forward_steps_alike():
    """forward and forward_steps run the same equation methods: overriding one (here eq. 8 with
    the input doubled) changes both, identically."""

    class Doubling(WeightedLeaky):
        def integrate(self, mem, input_, w):
            return super().integrate(mem, 2 * input_, w)

    xs = torch.rand(9, 2, 5, generator=torch.Generator().manual_seed(3)) * 3
    stepped, blocked = Doubling(init_hidden=True), Doubling(init_hidden=True)
    plain = WeightedLeaky(init_hidden=True)
    expected = torch.stack([plain(2 * x) for x in xs])
    assert torch.equal(torch.stack([stepped(x) for x in xs]), expected)
    assert torch.equal(blocked.forward_steps(xs), expected)

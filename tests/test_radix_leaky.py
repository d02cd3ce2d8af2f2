"""RadixLeaky against Wang et al. eq. 17/22, exact ReLU and saturation (pure-integer reference)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snntorch_weighted import RadixLeaky, spikegen


def reference_layer(codes, W, b, shift, num_bits):
    """clamp(floor((codes @ W.T + b) / 2**shift), 0, 2**T - 1) with Python integers."""
    out = []
    for row in codes:
        out_row = []
        for w_row, bias in zip(W, b):
            total = sum(c * w for c, w in zip(row, w_row)) + bias
            y = total >> shift if shift >= 0 else total << -shift  # floor division by 2**shift
            out_row.append(min(max(y, 0), 2**num_bits - 1))
        out.append(out_row)
    return out


def bits_lsb_first(codes, num_bits):
    return torch.tensor(
        [[[(c >> t) & 1 for c in row] for row in codes] for t in range(num_bits)],
        dtype=torch.float64,
    )


layer_case = st.integers(1, 8).flatmap(
    lambda T: st.tuples(
        st.just(T),
        st.lists(st.lists(st.integers(0, 2**T - 1), min_size=3, max_size=3), min_size=1,
                 max_size=4),
        st.lists(st.lists(st.integers(-40, 40), min_size=3, max_size=3), min_size=1, max_size=4),
        st.integers(-300, 300),
        st.integers(-2, 6),
    )
)


@settings(max_examples=60, deadline=None)
@given(layer_case)
def test_output_bits_are_relu_saturated_floor_for_every_input(case):
    T, codes, W, b0, shift = case
    b = [b0 + i for i in range(len(W))]
    neuron = RadixLeaky(num_bits=T, shift=shift, bias=torch.tensor(b, dtype=torch.float64),
                        init_hidden=True)
    Wt = torch.tensor(W, dtype=torch.float64)
    spikes_in = bits_lsb_first(codes, T)
    zeros = torch.zeros_like(spikes_in[0])
    out = [neuron(spikes_in[t] @ Wt.T) for t in range(T)]  # period 0: integrate
    out += [neuron(zeros @ Wt.T) for _ in range(T)]  # period 1: emit
    out = torch.stack(out)
    assert torch.all(out[:T] == 0)  # nothing leaves before the last input bit is in
    got = spikegen.decode_radix(out[T:], integer=True).tolist()
    assert got == reference_layer(codes, W, b, shift, T)


@settings(max_examples=40, deadline=None)
@given(layer_case)
def test_output_integrator_holds_wang_eq17_sum(case):
    """fire=False: after a period, mem == sum_t 2**t in(t) @ w + b (eq. 17), negative or not."""
    T, codes, W, b0, _ = case
    b = torch.full((len(W),), float(b0), dtype=torch.float64)
    neuron = RadixLeaky(num_bits=T, bias=b, fire=False, init_hidden=True, output=True)
    Wt = torch.tensor(W, dtype=torch.float64)
    spikes_in = bits_lsb_first(codes, T)
    for t in range(T):
        spk, mem = neuron(spikes_in[t] @ Wt.T)
        assert torch.all(spk == 0)
    expected = [[sum(c * w for c, w in zip(row, w_row)) + b0 for w_row in W] for row in codes]
    assert mem.tolist() == expected


def test_paper_identity_when_condition_23_holds():
    """In range, bits from spikes equal floor(S_in W + B) of eq. 22 with W = 2**-dT w."""
    T, shift = 6, 3
    codes = torch.tensor([[5, 60, 33], [0, 1, 63]])
    w = torch.tensor([[3.0, 1.0, 2.0], [1.0, 4.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([7.0, 9.0], dtype=torch.float64)
    neuron = RadixLeaky(num_bits=T, shift=shift, bias=b, init_hidden=True)
    spk_in = spikegen.radix(codes.double() / 2**T, T)
    out = [neuron(spk_in[t] @ w.T) for t in range(T)]
    out += [neuron(torch.zeros(2, 2, dtype=torch.float64)) for _ in range(T)]
    got = spikegen.decode_radix(torch.stack(out)[T:], integer=True)
    expected = torch.floor((codes.double() @ w.T + b) / 2**shift)
    assert (expected >= 0).all() and (expected < 2**T).all()  # condition (23) and no overflow
    assert torch.equal(got, expected.long())


def test_two_layer_pipeline_latency_and_steady_state():
    """Layer l emits in period l + 1; with the input repeated, every period from L on is right."""
    torch.manual_seed(0)
    T = 4
    W1 = torch.randint(-3, 4, (5, 3)).double()
    W2 = torch.randint(-3, 4, (2, 5)).double()
    b1 = torch.randint(-8, 9, (5,)).double()
    b2 = torch.randint(-8, 9, (2,)).double()
    n1 = RadixLeaky(num_bits=T, shift=2, bias=b1, init_hidden=True)
    n2 = RadixLeaky(num_bits=T, shift=1, bias=b2, init_hidden=True)
    codes = torch.randint(0, 2**T, (4, 3))
    spikes_in = spikegen.radix(codes.double() / 2**T, T)
    periods = 4
    out = torch.stack([n2(n1(spikes_in[t % T] @ W1.T) @ W2.T) for t in range(periods * T)])
    y1 = reference_layer(codes.tolist(), W1.long().tolist(), b1.long().tolist(), 2, T)
    y2 = reference_layer(y1, W2.long().tolist(), b2.long().tolist(), 1, T)
    for p in range(2, periods):
        got = spikegen.decode_radix(out[p * T:(p + 1) * T], integer=True).tolist()
        assert got == y2


def test_float32_exact_within_documented_bound():
    T = 8
    neuron = RadixLeaky(num_bits=T, bias=torch.tensor([100.0]), init_hidden=True)
    cur = torch.tensor([250.0])  # 2**8 * (100 + 8 * 250) < 2**24
    out = torch.stack([neuron(cur) for _ in range(T)] + [neuron(cur * 0) for _ in range(T)])
    total = 100 + 250 * (2**T - 1)
    assert spikegen.decode_radix(out[T:], integer=True).item() == min(total, 2**T - 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_bits"):
        RadixLeaky(num_bits=0)
    with pytest.raises(ValueError, match="shift"):
        RadixLeaky(shift=1.5)

"""Encoders and decoders against an independent pure-Python binary expansion."""

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snntorch_weighted import spikegen

values = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=64), min_size=1, max_size=12
)


def reference_code(x: float, bits: int) -> int:
    """Round half up with exact rationals, saturating at the top code."""
    scaled = Fraction(x) * 2**bits + Fraction(1, 2)
    return min(scaled.numerator // scaled.denominator, 2**bits - 1)


@settings(max_examples=50, deadline=None)
@given(values, st.integers(1, 12))
def test_quantize_code_matches_exact_rational_rounding(xs, bits):
    x = torch.tensor(xs, dtype=torch.float64)
    got = spikegen.quantize_code(x, bits).tolist()
    assert got == [reference_code(v, bits) for v in xs]


@settings(max_examples=50, deadline=None)
@given(values, st.integers(1, 10), st.integers(1, 4), st.integers(0, 9))
def test_weighted_train_is_msb_first_binary_expansion(xs, num_phases, periods, extra):
    x = torch.tensor(xs, dtype=torch.float64)
    num_steps = periods * num_phases + extra
    spikes = spikegen.weighted(x, num_steps, num_phases)
    assert spikes.shape == (num_steps, len(xs))
    for i, v in enumerate(xs):
        bits = format(reference_code(v, num_phases), f"0{num_phases}b")  # MSB first
        expected = [int(bits[t % num_phases]) for t in range(num_steps)]
        assert spikes[:, i].tolist() == expected


@settings(max_examples=50, deadline=None)
@given(values, st.integers(1, 10), st.integers(1, 4))
def test_decode_weighted_inverts_weighted(xs, num_phases, periods):
    x = torch.tensor(xs, dtype=torch.float64)
    decoded = spikegen.decode_weighted(spikegen.weighted(x, periods * num_phases, num_phases),
                                       num_phases)
    assert torch.equal(decoded, spikegen.quantize(x, num_phases))
    assert decoded.tolist() == [reference_code(v, num_phases) / 2**num_phases for v in xs]


@settings(max_examples=50, deadline=None)
@given(values, st.integers(1, 16))
def test_radix_train_is_lsb_first_and_decodes(xs, num_bits):
    x = torch.tensor(xs, dtype=torch.float64)
    spikes = spikegen.radix(x, num_bits)
    assert spikes.shape == (num_bits, len(xs))
    for i, v in enumerate(xs):
        code = reference_code(v, num_bits)
        assert spikes[:, i].tolist() == [(code >> t) & 1 for t in range(num_bits)]
    assert torch.equal(spikegen.decode_radix(spikes), spikegen.quantize(x, num_bits))
    codes = spikegen.decode_radix(spikes, integer=True).tolist()
    assert codes == [reference_code(v, num_bits) for v in xs]


def test_time_first_shapes_and_dtype_follow_snntorch():
    x = torch.rand(3, 1, 8, 8)
    assert spikegen.weighted(x, 10, 4).shape == (10, 3, 1, 8, 8)
    assert spikegen.radix(x, 5).shape == (5, 3, 1, 8, 8)
    assert spikegen.weighted(x, 10, 4).dtype == torch.float32


def test_saturation_and_rounding_are_as_documented():
    x = torch.tensor([0.0, 1.0, 1 - 2**-5, 0.5 - 2**-5, 2**-5])
    # 4 bits: 1.0 and 1-2**-5 saturate at 15/16; 0.5-1/32 = 7.5/16 rounds half up to 8/16.
    assert spikegen.quantize(x, 4).tolist() == [0.0, 15 / 16, 15 / 16, 8 / 16, 1 / 16]


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([0.1, float("nan")]), "NaN"),
        (torch.tensor([-0.1, 0.5]), r"\[0, 1\]"),
        (torch.tensor([0.5, 1.5]), r"\[0, 1\]"),
        (torch.tensor([0, 1]), "dtype"),
    ],
)
def test_bad_data_raises_value_error_naming_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        spikegen.weighted(bad, 8, 4)
    with pytest.raises(ValueError, match=match):
        spikegen.radix(bad, 4)


def test_bad_counts_raise():
    x = torch.rand(2)
    with pytest.raises(ValueError, match="num_steps"):
        spikegen.weighted(x, 0, 4)
    with pytest.raises(ValueError, match="num_phases"):
        spikegen.weighted(x, 8, 0)
    with pytest.raises(ValueError, match="num_bits"):
        spikegen.radix(x, 0)
    with pytest.raises(ValueError, match="multiple of num_phases"):
        spikegen.decode_weighted(torch.zeros(6, 2), 4)


@settings(max_examples=50, deadline=None)
@given(done=st.integers(0, 10**6), num_phases=st.integers(1, 20))
def test_phase_weight_host_and_tensor_forms_agree_with_eq6(done: int, num_phases: int) -> None:
    """omega of step t = done + 1 is 2**-(1 + (t - 1) mod K), as a float and as a tensor."""
    expected = math.ldexp(1.0, -(1 + done % num_phases))
    assert spikegen.phase_weight(done, num_phases) == expected
    clocks = torch.tensor([done, done + 1])
    got = spikegen.phase_weight(clocks, num_phases, torch.float64)
    assert got.tolist() == [expected, math.ldexp(1.0, -(1 + (done + 1) % num_phases))]


@pytest.mark.parametrize("dtype, limit", [(torch.float32, 24), (torch.float64, 53),
                                          (torch.float16, 11), (torch.bfloat16, 8)])
def test_bit_counts_above_the_dtype_limit_are_refused_by_encoders_and_decoders(dtype, limit):
    """K / T above the dtype's significand bits: a ValueError naming the limit and the dtype
    (never an OverflowError or a silently inexact round trip)."""
    x = torch.rand(3, dtype=torch.float64).to(dtype)
    too_many = limit + 1
    calls = [
        lambda: spikegen.weighted(x, too_many, too_many),
        lambda: spikegen.radix(x, too_many),
        lambda: spikegen.quantize(x, too_many),
        lambda: spikegen.decode_weighted(torch.zeros(too_many, 3, dtype=dtype), too_many),
        lambda: spikegen.decode_radix(torch.zeros(too_many, 3, dtype=dtype)),
        lambda: spikegen.phase_weights(4, too_many, dtype),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"at most {limit} bits") as err:
            call()
        assert str(dtype) in str(err.value)
    # at the limit the round trips stay exact
    assert torch.equal(spikegen.decode_radix(spikegen.radix(x, limit)), spikegen.quantize(x, limit))
    decoded = spikegen.decode_weighted(spikegen.weighted(x, limit, limit), limit)
    assert torch.equal(decoded, spikegen.quantize(x, limit))


@pytest.mark.parametrize("bits", [54, 64, 65, 100])
def test_codes_above_53_bits_are_refused_in_any_dtype(bits):
    with pytest.raises(ValueError, match="at most 53 bits"):
        spikegen.quantize_code(torch.rand(2, dtype=torch.float64), bits)
    with pytest.raises(ValueError, match="at most 53 bits"):
        spikegen.decode_radix(torch.zeros(bits, 2), integer=True)
    with pytest.raises(ValueError, match="float64"):
        spikegen.check_bits("num_bits", bits, torch.float64)

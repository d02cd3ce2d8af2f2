"""Bit-exactness of the radix SNN (convert_radix) against an independent integer reference."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_quant_reference import MODELS, mlp, randomise
from torch import nn

from snntorch_weighted import quant, reset, spikegen
from snntorch_weighted.conversion.radix import Delay, RadixMaxPool2d, convert_radix, radix_infer
from snntorch_weighted.data import load_digits
from snntorch_weighted.neurons import RadixLeaky

LATENCY_PERIODS = {"mlp": 3, "cnn": 4, "resnet": 6}  # neurons + max pools on the longest path, +1


def run_and_record(snn, x: torch.Tensor, extra_periods: int = 1):
    """Run ``latency + extra`` steps; spikes of every hidden neuron and the output membranes."""
    steps = snn.latency + extra_periods * snn.num_bits
    spikes: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in snn.neurons():
        spikes[name] = []
        handles.append(
            module.register_forward_hook(
                lambda m, i, o, n=name: spikes[n].append(o.detach().clone())
            )
        )
    train = snn.encode(x.double(), steps)
    reset(snn)
    mems = []
    with torch.no_grad():
        for t in range(steps):
            mems.append(snn(train[t]).clone())
    for h in handles:
        h.remove()
    return train, {k: torch.stack(v) for k, v in spikes.items()}, torch.stack(mems)


def check_bit_exact(snn, twin, reference, x: torch.Tensor, num_bits: int) -> None:
    params = quant.integer_params(twin)
    expected = reference(params, x, num_bits)
    twin_acts = quant.integer_activations(twin, x.double())
    train, spikes, mems = run_and_record(snn, x)
    period = lambda d: slice(d * num_bits, (d + 1) * num_bits)  # noqa: E731
    assert torch.equal(
        spikegen.decode_radix(train[period(0)], integer=True), expected["input_quant"]
    )
    hidden = [k for k in expected if k not in ("input_quant", "output_quant")]
    assert sorted(n for n, _ in snn.neurons()) == sorted(hidden)
    for name in hidden:
        d = snn.periods[name]
        for dd in (d, d + 1):  # the period of the input fed in period 0, and the next (repeat)
            decoded = spikegen.decode_radix(spikes[name][period(dd)], integer=True)
            assert torch.equal(decoded, expected[name]), (name, dd)
            assert torch.equal(decoded, twin_acts[name]), (name, dd)
    d_out = snn.periods["output_quant"]
    assert snn.latency == (d_out + 1) * num_bits
    for step in (snn.latency - 1, snn.latency - 1 + num_bits):
        assert torch.equal(mems[step], expected["output_quant"].double()), step
    logits = snn.decode(mems[snn.latency - 1], snn.latency)
    assert torch.equal(logits, twin(x.double()))


@pytest.mark.parametrize("name", list(MODELS))
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), num_bits=st.sampled_from([1, 3, 4, 8]))
def test_random_models_are_bit_exact(name: str, seed: int, num_bits: int) -> None:
    make, reference = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 8, 8, generator=g)
    x[0] = 1.0
    twin = quant.twin(
        quant.prepare(randomise(make(), seed), num_bits=num_bits, calibration_data=x[:3])
    )
    snn = convert_radix(twin)
    assert snn.latency == LATENCY_PERIODS[name] * num_bits
    check_bit_exact(snn, twin.double(), reference, x, num_bits)


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits("train"), load_digits("test")
    return train.tensors, test.tensors


@pytest.mark.parametrize("name", list(MODELS))
def test_trained_finetuned_models_are_bit_exact(digits, name: str) -> None:
    (x, y), (xt, _) = digits
    make, reference = MODELS[name]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(20):  # a short float training on 8x8 digits
        batch = slice((i * 128) % 1280, (i * 128) % 1280 + 128)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    twin = quant.twin(quant.prepare(model.eval(), num_bits=4, calibration_data=x[:256]))
    quant.finetune(twin, (x[:128], y[:128]), epochs=1, batch_size=64, progress=False)
    snn = convert_radix(twin)
    check_bit_exact(snn, twin.double(), reference, xt[:16], 4)


def test_structure_latency_and_delays() -> None:
    x = torch.rand(4, 1, 8, 8)
    snn = convert_radix(
        quant.prepare(randomise(MODELS["resnet"][0](), 0), num_bits=4, calibration_data=x)
    )
    delays = [m for m in snn.modules() if isinstance(m, Delay)]
    assert [d.num_steps for d in delays] == [4, 4]  # both shortcuts wait one period
    assert snn.periods == {
        "input_quant": 0,
        "relu": 1,
        "relu_1": 2,
        "relu_2": 3,
        "relu_3": 4,
        "relu_4": 5,
        "output_quant": 5,
    }
    cnn = convert_radix(
        quant.prepare(randomise(MODELS["cnn"][0](), 0), num_bits=4, calibration_data=x)
    )
    assert any(isinstance(m, RadixMaxPool2d) for m in cnn.modules())
    neurons = [m for m in cnn.modules() if isinstance(m, RadixLeaky)]
    assert all(m.bias.dtype == torch.float64 for m in neurons)


def test_delay_and_maxpool_modules() -> None:
    delay = Delay(3)
    seq = torch.arange(1.0, 8.0)
    out = torch.stack([delay(v.view(1)) for v in seq]).flatten()
    assert torch.equal(out, torch.tensor([0.0, 0, 0, 1, 2, 3, 4]))
    reset(delay)
    assert delay(torch.tensor([9.0])) == 0
    pool = RadixMaxPool2d(nn.MaxPool2d(2), num_bits=3)
    codes = torch.tensor([[[[1.0, 5.0], [7.0, 2.0]]]])
    train = spikegen.radix(codes / 8, 3)
    outs = [pool(train[t % 3]) for t in range(6)]
    assert torch.equal(
        spikegen.decode_radix(torch.stack(outs[3:]), integer=True).flatten(), torch.tensor([7])
    )


def test_convert_float_model_prepares_it() -> None:
    x = torch.rand(8, 1, 8, 8)
    model = randomise(mlp(), 4)
    snn = convert_radix(model, calibration_data=x, num_bits=5)
    twin = quant.twin(quant.prepare(model, num_bits=5, calibration_data=x)).double()
    assert snn.num_bits == 5 and snn.latency == 15
    assert torch.equal(radix_infer(snn, x), twin(x.double()))


def test_snn_save_and_state_dict_round_trip() -> None:
    x = torch.rand(4, 1, 8, 8)
    snn = convert_radix(
        quant.prepare(randomise(MODELS["resnet"][0](), 1), num_bits=4, calibration_data=x)
    )
    expected = radix_infer(snn, x)
    buffer = io.BytesIO()
    torch.save(snn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(radix_infer(loaded, x), expected)
    other = convert_radix(
        quant.prepare(randomise(MODELS["resnet"][0](), 2), num_bits=4, calibration_data=x)
    )
    assert not torch.equal(radix_infer(other, x), expected)
    other.load_state_dict(snn.state_dict())
    other.output_scale = snn.output_scale
    assert torch.equal(radix_infer(other, x), expected)


def test_bad_input() -> None:
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="calibration_data"):
        convert_radix(mlp())
    twin = quant.twin(quant.prepare(mlp(), num_bits=4, calibration_data=x))
    with pytest.raises(ValueError, match="num_bits"):
        convert_radix(twin, num_bits=8)
    with pytest.raises(TypeError):
        convert_radix("not a model")

"""Fast paths give the step loop's results: the radix shortcut and the time-folded runner.

The radix shortcut (``simulate(..., shortcut=True)`` / ``radix_shortcut``) is compared with the
full step-by-step simulation field by field (output membranes after every step, per-layer spikes
and SynOps per step and sample, input spikes, predictions, early decisions), and its per-layer
spike counts with the popcounts of an independent integer reference (tests/test_quant_reference).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_quant_reference import MODELS, randomise
from torch import nn

from snntorch_weighted import WeightedLeaky, quant
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.layers import SpikeMaxPool2d
from snntorch_weighted.conversion.radix import convert_radix
from snntorch_weighted.neurons.reset import reset
from snntorch_weighted.simulation.runner import radix_shortcut, simulate


def radix_snn(name: str, seed: int, num_bits: int):
    """A converted radix SNN of a random tiny model (mlp, cnn with max pool, residual net)."""
    make, reference = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 8, 8, generator=g)
    x[0] = 1.0  # the top code (saturation) is exercised
    prepared = quant.prepare(randomise(make(), seed), num_bits=num_bits, calibration_data=x[:3])
    snn = convert_radix(prepared)
    return snn, quant.twin(prepared).double(), reference, x


def assert_same_run(a, b) -> None:
    """Every field of two simulation results is equal."""
    assert a.num_steps == b.num_steps
    for field in ("mem", "readout", "estimate", "predictions", "input_spikes"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.spikes.keys() == b.spikes.keys()
    for name in b.spikes:
        assert torch.equal(a.spikes[name], b.spikes[name]), name
    assert a.synops.keys() == b.synops.keys()
    for name in b.synops:
        assert torch.equal(a.synops[name], b.synops[name]), name
    assert a.num_neurons == b.num_neurons
    assert torch.equal(a.total_synops, b.total_synops)


def assert_same(short, full) -> None:
    assert short.shortcut and not full.shortcut
    assert_same_run(short, full)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("seed", "num_bits", "extra"),
                         [(0, 1, 0), (1, 3, -2), (2, 4, 5), (3, 8, 0)])
def test_shortcut_equals_simulation(name: str, seed: int, num_bits: int, extra: int) -> None:
    snn, _, _, x = radix_snn(name, seed, num_bits)
    steps = max(snn.latency + extra, 1)  # also shorter than the latency and partial periods
    full = simulate(snn, x, steps, fold=False)
    assert_same(simulate(snn, x, steps, shortcut=True), full)
    assert_same(radix_shortcut(snn, x, steps), simulate(snn, x, steps, fold=True, chunk_size=5))


@pytest.mark.parametrize("name", list(MODELS))
def test_shortcut_spike_counts_are_popcounts(name: str) -> None:
    """In the period a layer carries the input's codes, its spikes are their popcounts."""
    num_bits = 4
    snn, twin, reference, x = radix_snn(name, 7, num_bits)
    codes = reference(quant.integer_params(twin), x, num_bits)
    result = radix_shortcut(snn, x)
    assert set(result.spikes) == set(codes) - {"input_quant", "output_quant"}
    for layer, spikes in result.spikes.items():
        period = snn.periods[layer]
        counted = spikes[period * num_bits:(period + 1) * num_bits].sum(0)
        code = codes[layer].long().flatten(1)
        popcount = sum(((code >> p) & 1).sum(1) for p in range(num_bits))
        assert torch.equal(counted, popcount), layer
    logits = snn.decode(result.readout[-1], result.num_steps)
    assert torch.equal(logits, twin(x.double()))


def test_shortcut_labels_decision_trains_and_errors() -> None:
    snn, _, _, x = radix_snn("cnn", 3, 3)
    labels = torch.arange(x.shape[0]) % 10
    kw = dict(labels=labels, early_decision=(0.0, 1), record_layers=True)
    full = simulate(snn, x, snn.latency + 3, fold=False, **kw)
    short = simulate(snn, x, snn.latency + 3, shortcut=True, **kw)
    assert torch.equal(short.accuracy, full.accuracy)
    assert torch.equal(short.decision.time, full.decision.time)
    assert torch.equal(short.decision.decision, full.decision.decision)
    assert short.layer_trains.keys() == full.layer_trains.keys()
    for name, train in full.layer_trains.items():
        assert torch.equal(short.layer_trains[name], train), name
    with pytest.raises(ValueError, match="radix"):
        radix_shortcut(convert(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x,
                               progress=False), x, 4)
    with pytest.raises(ValueError, match="shortcut"):
        simulate(snn, snn.encode(x.double(), 6), shortcut=True, encoded=True)


def exact_weighted_cnn() -> tuple[nn.Module, torch.Tensor]:
    """A converted weighted CNN with max pooling and inputs; weights rounded to multiples of
    2**-8, so every sum is exact in float32 and comparisons are bit for bit on any BLAS (or
    compiler: no reassociation can change a result)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 16, 10)).eval()
    x = torch.rand(5, 1, 8, 8)
    snn = convert(model, x, num_phases=4, progress=False)
    with torch.no_grad():
        for module in snn.graph.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                for param in module.parameters():
                    param.copy_(torch.round(param * 2**8) / 2**8)
    return snn, x


def test_folded_equals_loop_on_a_small_cnn() -> None:
    """Folded == loop on a weighted CNN with max pooling, bit for bit (exact weights)."""
    snn, x = exact_weighted_cnn()
    loop = simulate(snn, x, 24, fold=False)
    for chunk in (None, 3, 24):
        folded = simulate(snn, x, 24, fold=True, chunk_size=chunk)
        assert folded.folded
        assert torch.equal(folded.mem, loop.mem)
        for name, spikes in loop.spikes.items():
            assert torch.equal(folded.spikes[name], spikes), name


@pytest.mark.parametrize("kind", ["weighted", "radix"])
def test_converted_network_compiles_without_graph_breaks(kind: str) -> None:
    """A whole converted network steps under ``torch.compile(fullgraph=True)`` (any graph break
    raises) with the eager network's output membranes, bit for bit: a weighted CNN with spike
    max-pooling, and a radix residual net (delays, scaled identity shortcut, radix max-pool).
    Both have exact sums, so the compiler's kernels cannot round differently; over two sequences
    (the step clocks restart)."""
    if kind == "weighted":
        snn, x = exact_weighted_cnn()
        train = snn.encode(x[:2], 6)
    else:
        snn, _, _, x = radix_snn("resnet", 3, 3)
        train = snn.encode(x[:2].double(), int(snn.latency))
    torch._dynamo.reset()
    step = torch.compile(snn, fullgraph=True)
    with torch.no_grad():
        reset(snn)
        eager = torch.stack([snn(x_t) for x_t in train])
        for _ in range(2):
            reset(snn)
            compiled = torch.stack([step(x_t) for x_t in train])
            assert torch.equal(compiled, eager)
    assert eager.abs().sum() > 0  # the network is not silent


def test_shortcut_follows_edits_of_biases_and_weights() -> None:
    """The shortcut sees a bias or a weight changed in place between two calls, also through
    ``.data`` (the output integrator's bias shows in the first periods, the pipeline filling)."""
    snn, _, _, x = radix_snn("resnet", 5, 3)
    assert_same(radix_shortcut(snn, x), simulate(snn, x, fold=False))
    neuron = snn.neurons()[-1][1]
    with torch.no_grad():
        neuron.bias.add_(5.0)  # shows in the pipeline filling: deeper layers see new codes
        next(snn.graph.parameters()).mul_(-1)
    assert_same(radix_shortcut(snn, x[:2]), simulate(snn, x[:2], fold=False))
    before = radix_shortcut(snn, x[:2])
    snn.output_neuron.bias.data.add_(3.0)
    after = radix_shortcut(snn, x[:2])
    assert torch.equal(after.mem[0], before.mem[0] + 3.0)  # the first period's membranes too
    assert_same(after, simulate(snn, x[:2], fold=False))


# --------------------------------------------------------------------------- multi-step modules


def _stepped(module: nn.Module, inputs: torch.Tensor):
    """``forward`` called once per step (the reference for ``forward_steps``), stacked."""
    outs = [module(x) for x in inputs]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*outs))
    return torch.stack(outs)


def _assert_equal_outputs(a, b) -> None:
    a, b = (a,) if isinstance(a, torch.Tensor) else a, (b,) if isinstance(b, torch.Tensor) else b
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 12), phases=st.integers(1, 6),
       beta=st.sampled_from([1.0, 0.75]), threshold=st.sampled_from([1.0, 0.6, "per-neuron"]),
       graded=st.sampled_from([1.0, 2.5]), fire=st.booleans(), output=st.booleans(),
       reset_mechanism=st.sampled_from(["subtract", "zero"]), split=st.integers(0, 12))
def test_weighted_leaky_forward_steps_equals_stepping(
    seed, steps, phases, beta, threshold, graded, fire, output, reset_mechanism, split
) -> None:
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps, 3, 5, generator=g)
    thr = torch.rand(5, generator=g) + 0.2 if threshold == "per-neuron" else threshold
    a, b = (WeightedLeaky(num_phases=phases, beta=beta, threshold=thr, init_hidden=True,
                          output=output or not fire, fire=fire, skip_periods=1,
                          graded_spikes_factor=graded, reset_mechanism=reset_mechanism)
            for _ in range(2))  # fmt: skip
    split = min(max(split, 1), steps - 1) if steps > 1 else 1  # two blocks when steps > 1
    with torch.no_grad():
        expected = _stepped(a, inputs)
        blocks = [b.forward_steps(inputs[:split])]
        held, value = b.mem, b.mem.clone()  # a membrane the caller keeps is never written
        if steps > split:
            blocks.append(b.forward_steps(inputs[split:]))
        assert torch.equal(held, value)
    got = (torch.cat(blocks) if isinstance(blocks[0], torch.Tensor)
           else tuple(torch.cat(p) for p in zip(*blocks)))  # fmt: skip
    _assert_equal_outputs(got, expected)
    with torch.no_grad():  # the same state, the phase included: the next step agrees
        assert torch.equal(a.mem, b.mem)
        _assert_equal_outputs(a(inputs[0] * 3), b(inputs[0] * 3))
    if isinstance(blocks[-1], tuple):  # the returned membranes are not the neuron's state
        state = b.mem.clone()
        blocks[-1][1].zero_()
        assert torch.equal(b.mem, state)
    with pytest.raises(ValueError, match="time-first"):
        b.forward_steps(inputs[:0])


def test_weighted_leaky_notices_a_changed_beta() -> None:
    neuron = WeightedLeaky(num_phases=2, init_hidden=True)
    x = torch.ones(4, 1, 3)
    with torch.no_grad():
        neuron.forward_steps(x)
        neuron.beta.fill_(0.5)  # in place: the cached "beta == 1" must not be trusted
        neuron.reset_mem()
        got = neuron.forward_steps(x)
    reference = WeightedLeaky(num_phases=2, beta=0.5, init_hidden=True)
    with torch.no_grad():
        assert torch.equal(got, _stepped(reference, x))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 10), weighted=st.booleans(),
       batched=st.booleans(), split=st.integers(0, 10))
def test_spike_maxpool_forward_steps_equals_stepping(seed, steps, weighted, batched, split):
    g = torch.Generator().manual_seed(seed)
    shape = (steps, 2, 3, 6, 6) if batched else (steps, 3, 6, 6)
    inputs = (torch.rand(shape, generator=g) < 0.4).float()
    a, b = (SpikeMaxPool2d(2, weighted=weighted, num_phases=3) for _ in range(2))
    split = min(max(split, 1), steps - 1) if steps > 1 else 1  # two blocks when steps > 1
    expected = _stepped(a, inputs)
    got = torch.cat([b.forward_steps(block) for block in (inputs[:split], inputs[split:])
                     if len(block)])  # fmt: skip
    assert torch.equal(got, expected)
    assert torch.equal(a(inputs[0]), b(inputs[0]))  # the same state: the next step agrees
    with pytest.raises(ValueError, match="at least one step"):
        b.forward_steps(inputs[:0])


def test_folded_runner_counts_blocks_like_the_hooks() -> None:
    """The folded runner bypasses per-step hooks; its block counts equal the loop's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 5))  # fmt: skip
    x = torch.rand(3, 1, 8, 8)
    snn = convert(model, x, num_phases=4)
    loop = simulate(snn, x, 13, fold=False, record_layers=True)
    folded = simulate(snn, x, 13, fold=True, chunk_size=5, record_layers=True)
    assert folded.folded and not loop.folded
    assert torch.equal(folded.mem, loop.mem)
    for name in loop.spikes:
        assert torch.equal(folded.spikes[name], loop.spikes[name]), name
        assert torch.equal(folded.layer_trains[name], loop.layer_trains[name]), name
    for name in loop.synops:
        assert torch.equal(folded.synops[name], loop.synops[name]), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16),
       ops=st.lists(st.sampled_from(["step", "block", "reset"]), min_size=1, max_size=14))
def test_steps_blocks_and_resets_in_any_order(seed: int, ops: list[str]) -> None:
    """Single steps, ``forward_steps`` blocks and resets in any order: a WeightedLeaky and a
    SpikeMaxPool2d give what twins stepped one call at a time give."""
    g = torch.Generator().manual_seed(seed)
    kw = {"num_phases": 3, "init_hidden": True, "output": True}
    neuron, neuron_twin = WeightedLeaky(**kw), WeightedLeaky(**kw)
    pool, pool_twin = SpikeMaxPool2d(2, num_phases=3), SpikeMaxPool2d(2, num_phases=3)
    with torch.no_grad():
        for op in ops * 2:
            if op == "reset":
                for m in (neuron, neuron_twin, pool, pool_twin):
                    m.reset_mem()
                continue
            steps = 3 if op == "block" else 1
            x = torch.randn(steps, 2, 4, generator=g)
            s = (torch.rand(steps, 2, 1, 4, 4, generator=g) < 0.5).float()
            if op == "block":
                _assert_equal_outputs(neuron.forward_steps(x), _stepped(neuron_twin, x))
                assert torch.equal(pool.forward_steps(s), _stepped(pool_twin, s))
            else:
                _assert_equal_outputs(neuron(x[0]), neuron_twin(x[0]))
                assert torch.equal(pool(s[0]), pool_twin(s[0]))

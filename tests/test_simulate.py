"""simulate(): accuracy over time, counts, early decision and the time-folded runner.

References are written out from the equations here (Kim eq. 6-10, 16-17; Wang Algorithm 1 as
integer arithmetic), not taken from the package's neurons.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from torch import fx, nn

from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.layers import SpikeMaxPool2d
from snntorch_weighted.conversion.network import SIMULATE_CACHE, SpikingNetwork
from snntorch_weighted.neurons import RadixLeaky, WeightedLeaky
from snntorch_weighted.neurons.reset import reset
from snntorch_weighted.simulation.metrics import INPUT, ann_macs, is_stateful
from snntorch_weighted.simulation.runner import auto_chunk_size, simulate

K = 4


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    return x, torch.tensor(data.target)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30) -> nn.Module:
    torch.manual_seed(0)
    x, y = x[:600], y[:600]
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    torch.manual_seed(0)
    return _train(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), *digits)


def dyadic(snn: SpikingNetwork) -> SpikingNetwork:
    """Round weights and biases to multiples of 2**-8, so every sum in the net is exact in float32.

    The folded runner calls the weight layers with ``t * B`` rows instead of ``B``; BLAS may round
    a float32 dot product differently for different row counts (e.g. gemv for one row). With exact
    sums any difference between the two runners is a real bug, on every platform.
    """
    with torch.no_grad():
        for module in snn.graph.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                for param in module.parameters():
                    param.copy_(torch.round(param * 2**8) / 2**8)
    return snn


@pytest.fixture(scope="module")
def mlp_snn(digits, mlp) -> SpikingNetwork:
    return dyadic(convert(mlp, digits[0][:300], num_phases=K, progress=False))


class ResCNN(nn.Module):
    """conv -> relu -> conv -> relu -> conv (+ shortcut) -> relu -> maxpool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c3(torch.relu(self.c2(a))) + a)
        return self.fc(torch.flatten(self.pool(b), 1))


@pytest.fixture(scope="module")
def cnn(digits) -> nn.Module:
    torch.manual_seed(0)
    x, y = digits
    return _train(ResCNN(), x.view(-1, 1, 8, 8), y, epochs=15)


def weighted_bits(x: torch.Tensor, steps: int) -> torch.Tensor:
    """K-bit code, MSB first, repeated (Kim eq. 6/11), written out bit by bit."""
    code = torch.clamp(torch.floor(x.double() * 2**K + 0.5), max=2**K - 1).long()
    phases = [(t - 1) % K for t in range(1, steps + 1)]
    return torch.stack([((code >> (K - 1 - p)) & 1).float() for p in phases])


def test_weighted_mlp_matches_reference(digits, mlp) -> None:
    x, y = digits[0][:40], digits[1][:40]
    steps, skip = 4 * K + 2, 1
    snn = convert(mlp, digits[0][:300], coding="weighted", num_phases=K, progress=False)
    res = simulate(snn, x, steps, labels=y, skip_periods=skip, fold=False)
    assert snn.output_neuron.skip_periods == 0  # restored after the run
    snn.output_neuron.skip_periods = skip  # the network's own setting is used by default
    assert torch.equal(simulate(snn, x, steps, fold=False).mem, res.mem)
    snn.output_neuron.skip_periods = 0

    fc1, fc2 = [m for m in snn.graph.modules() if isinstance(m, nn.Linear)]
    bits = weighted_bits(x, steps)
    v1 = torch.zeros(40, 32)
    out = torch.zeros(40, 10)
    mems, trains = [], []
    for t in range(1, steps + 1):
        w = 2.0 ** -(1 + (t - 1) % K)  # eq. 6
        v1 = v1 + w * fc1(bits[t - 1])  # eq. 8
        s1 = (v1 >= w * 1.0).float()  # eq. 9 (>=), threshold 1
        v1 = v1 - s1 * w  # reset by subtraction
        if t > skip * K:  # section 5.1
            out = out + w * fc2(s1)  # eq. 16
        mems.append(out)
        trains.append(s1)
    mem, train = torch.stack(mems), torch.stack(trains)
    torch.testing.assert_close(res.mem, mem, rtol=0, atol=1e-6)
    assert (res.mem[: skip * K] == 0).all()
    periods = (steps - skip * K) / K  # integrated periods (eq. 16: V ~ n a)
    torch.testing.assert_close(res.estimate[-1], mem[-1] * snn.output_scale / periods)
    assert torch.equal(res.spikes["1"], train.sum(-1).long())
    fan1 = (fc2.weight != 0).sum(0)
    fan0 = (fc1.weight != 0).sum(0)
    assert torch.equal(res.synops["1"], (train * fan1).sum(-1).long())
    assert torch.equal(res.synops[INPUT], (bits * fan0).sum(-1).long())
    assert torch.equal(res.input_spikes, bits.sum(-1).long())
    assert torch.equal(res.predictions, mem.argmax(-1))  # eq. 17
    assert torch.equal(res.accuracy, (mem.argmax(-1) == y).double().mean(1))
    assert torch.equal(res.total_spikes, train.sum((0, 2)).long())
    assert torch.equal(res.total_synops, ((train * fan1).sum((0, 2)) + (bits * fan0).sum((0, 2)))
                       .long())
    torch.testing.assert_close(res.firing_rate, train.mean((1, 2)).double())
    assert res.num_neurons == {"1": 32}
    assert res.accuracy[-1] > 0.8


def test_steps_to_accuracy_and_summary(digits, mlp) -> None:
    x, y = digits
    res = simulate(convert(mlp, x[:300], num_phases=K, progress=False), x[:200], 6 * K,
                   labels=y[:200], model=mlp)
    ann = (mlp(x[:200]).argmax(1) == y[:200]).double().mean()
    step = res.steps_to_accuracy(float(ann) - 0.01)
    assert step is not None and (res.accuracy[step - 1:] >= ann - 0.01).all()
    assert step == 1 or res.accuracy[step - 2] < ann - 0.01
    summary = res.summary()
    assert summary["ann_macs"] == 64 * 32 + 32 * 10 == ann_macs(mlp, x[:1])
    assert summary["final_accuracy"] == float(res.accuracy[-1])


@pytest.mark.parametrize("coding", ["weighted", "rate"])
def test_fold_equals_step_loop(digits, cnn, coding) -> None:
    x = digits[0].view(-1, 1, 8, 8)
    snn = dyadic(convert(cnn, x[:200], coding=coding, num_phases=K, progress=False))
    assert any(type(m).__name__ == "SpikeMaxPool2d" for m in snn.graph.modules())
    steps = 11
    torch.manual_seed(3)
    train = snn.encode(x[:16], steps)  # one Bernoulli draw for all runs (rate)
    loop = simulate(snn, train, encoded=True, fold=False, record_layers=True)
    assert not loop.folded
    for chunk in (1, 3, steps):
        fold = simulate(snn, train, encoded=True, fold=True, chunk_size=chunk, record_layers=True)
        assert fold.folded and fold.chunk_size == chunk
        assert torch.equal(fold.mem, loop.mem)
        assert fold.spikes.keys() == loop.spikes.keys() and len(loop.spikes) == 3
        for name in loop.spikes:
            assert torch.equal(fold.spikes[name], loop.spikes[name])
            assert torch.equal(fold.layer_trains[name], loop.layer_trains[name])
            assert torch.equal(loop.layer_trains[name].ne(0).sum((2, 3, 4)), loop.spikes[name])
            fan = loop.fanout[name].flatten()  # all zero for the neuron feeding the pool
            expect = (loop.layer_trains[name].ne(0).flatten(2).long() * fan).sum(-1)
            assert torch.equal(loop.synops[name], expect)
        for name in loop.synops:
            assert torch.equal(fold.synops[name], loop.synops[name])
    assert loop.total_spikes.sum() > 0 and "pool" in loop.synops
    assert any(not f.any() for f in loop.fanout.values())


@settings(max_examples=20, deadline=None)
@given(steps=st.integers(1, 3 * K + 3), chunk=st.integers(1, 3 * K + 3), batch=st.integers(1, 4))
def test_fold_equals_loop_any_chunk(digits, mlp_snn, steps, chunk, batch) -> None:
    snn = mlp_snn
    x = digits[0][:batch]
    loop = simulate(snn, x, steps, fold=False)
    fold = simulate(snn, x, steps, fold=True, chunk_size=chunk)
    assert torch.equal(fold.mem, loop.mem)
    assert torch.equal(fold.spikes["1"], loop.spikes["1"])
    assert torch.equal(fold.synops["1"], loop.synops["1"])


def test_hooked_layer_sees_every_step_in_both_runners(digits, cnn) -> None:
    """A forward hook on a stateless layer (the first conv) sees every step, one batch of rows
    each, in the step loop and in the folded runner (which calls a hooked layer once per step
    instead of folding it); ``reuse_input`` changes nothing and says so."""
    x = digits[0][:6].view(-1, 1, 8, 8)
    snn = dyadic(convert(cnn, digits[0][:200].view(-1, 1, 8, 8), num_phases=K, progress=False))
    steps = 3 * K + 1
    plain = simulate(snn, x, steps, fold=True, chunk_size=5)
    rows: list[int] = []
    handle = snn.graph.c1.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        for kw in ({"fold": False}, {"fold": True, "chunk_size": 5}, {"fold": True}):
            rows.clear()
            res = simulate(snn, x, steps, **kw)
            assert rows == [6] * steps, kw
            assert torch.equal(res.mem, plain.mem) and res.total_spikes.sum() > 0
            for name in plain.synops:
                assert torch.equal(res.synops[name], plain.synops[name])
    finally:
        handle.remove()
    rows.clear()
    simulate(snn, x, steps, fold=True, chunk_size=5)
    assert rows == []  # the hook is gone: c1 is folded again (and not hooked by simulate)
    with pytest.warns(DeprecationWarning, match="reuse_input"):
        again = simulate(snn, x, steps, fold=False, reuse_input=False)
    assert torch.equal(again.mem, plain.mem)


class _SizedMLP(nn.Module):
    """A hand-made weighted step graph whose input-only part also yields a size (not a tensor)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)
        self.n1 = WeightedLeaky(num_phases=K, init_hidden=True)
        self.out = WeightedLeaky(num_phases=K, fire=False, init_hidden=True, output=True)

    def forward(self, x):
        batch = x.size(0)
        _, mem = self.out(self.fc2(self.n1(self.fc1(x)).reshape(batch, -1)))
        return mem


def test_graph_with_a_size_node_runs_in_both_runners(digits) -> None:
    """A hand-made weighted step graph that reshapes with ``x.size(0)``: both runners give the
    membranes of the graph's own step loop (``reset``, then ``graph(x_t)`` per step)."""
    module = _SizedMLP()
    snn = SpikingNetwork(fx.GraphModule(module, _Tracer().trace(module)), "weighted",
                         num_phases=K)
    x = digits[0][:5]
    steps = 2 * K + 3
    train = snn.encode(x, steps)
    reset(snn)
    with torch.no_grad():
        reference = torch.stack([snn.graph(x_t) for x_t in train])
    loop = simulate(snn, x, steps, fold=False)
    folded = simulate(snn, x, steps, fold=True, chunk_size=4)
    assert torch.equal(loop.mem, reference) and torch.equal(folded.mem, reference)
    assert torch.equal(loop.spikes["n1"], folded.spikes["n1"])
    assert loop.total_spikes.sum() > 0


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return is_stateful(m) or super().is_leaf_module(m, name)


class _RadixMLP(nn.Module):
    def __init__(self, w1, b1, w2, b2, bits: int, shift: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False, dtype=torch.float64)
        self.fc2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.fc1.weight.copy_(w1)
            self.fc2.weight.copy_(w2)
        self.n1 = RadixLeaky(num_bits=bits, shift=shift, bias=b1, init_hidden=True)
        self.out = RadixLeaky(num_bits=bits, bias=b2, fire=False, init_hidden=True, output=True)

    def forward(self, x):
        _, mem = self.out(self.fc2(self.n1(self.fc1(x))))
        return mem


def test_radix_reads_period_ends(digits) -> None:
    torch.manual_seed(0)
    bits, shift = 4, 3
    w1, w2 = torch.randint(-3, 4, (12, 64)).double(), torch.randint(-3, 4, (10, 12)).double()
    b1, b2 = torch.randint(-8, 9, (12,)).double(), torch.randint(-8, 9, (10,)).double()
    module = _RadixMLP(w1, b1, w2, b2, bits, shift)
    snn = SpikingNetwork(fx.GraphModule(module, _Tracer().trace(module)), "radix", num_bits=bits,
                         latency=2 * bits)
    x = digits[0][:20]
    res = simulate(snn, x, fold=False, record_layers=True)
    assert res.num_steps == 2 * bits  # default: the latency

    # integer reference (Wang eq. 17-22, with ReLU / saturation)
    q = torch.clamp(torch.floor(x.double() * 2**bits + 0.5), max=2**bits - 1)
    y1 = torch.clamp(torch.floor((q @ w1.T + b1) / 2**shift), 0, 2**bits - 1)
    logits = y1 @ w2.T + b2
    assert torch.equal(res.readout[-1], logits)
    # held: steps T..2T-1 show the value read at step T, nothing is read before step T
    assert torch.equal(res.readout[bits - 1:-1], res.mem[bits - 1].expand(bits, -1, -1))
    assert (res.readout[: bits - 1] == 0).all()
    assert torch.equal(res.predictions[-1], logits.argmax(-1))
    # hidden spikes in period 1 are the bits of y1 (LSB first)
    expect = sum(((y1.long() >> p) & 1).sum(-1) for p in range(bits))
    assert torch.equal(res.spikes["n1"][bits:].sum(0), expect)
    fan = (w2 != 0).sum(0)
    assert torch.equal(res.synops["n1"], (res.layer_trains["n1"].ne(0) * fan).sum(-1))
    folded = simulate(snn, x, fold=True, chunk_size=3)
    assert torch.equal(folded.mem, res.mem)
    assert torch.equal(folded.spikes["n1"], res.spikes["n1"])


def test_early_decision_counts(digits, mlp) -> None:
    x, y = digits[0][:64], digits[1][:64]
    snn = convert(mlp, digits[0][:300], num_phases=K, progress=False)
    steps = 8 * K
    full = simulate(snn, x, steps, labels=y, early_decision=(1e30, K + 1))
    assert (full.decision.time == steps).all()
    assert torch.equal(full.decision.decision, full.predictions[-1])
    assert torch.equal(full.spikes_at_decision, full.total_spikes)
    assert full.early_accuracy == full.accuracy[-1]

    early = simulate(snn, x, steps, labels=y, skip_periods=1, early_decision=(0.5, K + 1))
    time = early.decision.time
    assert (time >= K + 1).all() and (time < steps).any()
    per_step = early.spikes_per_step
    manual = torch.stack([per_step[: int(t), b].sum() for b, t in enumerate(time)])
    assert torch.equal(early.spikes_at_decision, manual)
    assert early.spikes_at_decision.sum() < early.total_spikes.sum()
    assert (early.synops_at_decision <= early.total_synops).all()
    layer = early.layer_spikes_at_decision["1"]
    assert torch.equal(layer, early.spikes_at_decision)  # one hidden layer
    summary = early.summary()
    assert summary["mean_decision_time"] < steps and 0 < summary["early_accuracy"] <= 1


def test_auto_chunk_rule(digits, mlp) -> None:
    assert auto_chunk_size(1000, 1, 4, 500) == 500  # batch 1: fold everything
    assert auto_chunk_size(1000, 64, 4, 500) == 4 * 2**20 // (1000 * 64 * 4)
    assert auto_chunk_size(10**6, 64, 4, 500) == 1
    snn = convert(mlp, digits[0][:300], num_phases=K, progress=False)
    assert simulate(snn, digits[0][:1], 2 * K).folded
    big = digits[0][:1].expand(40000, -1)  # 40000 * 64 * 4 B > 4 MiB per step: step loop
    assert not simulate(snn, big, 2, fold="auto").folded


def test_bad_arguments(digits, mlp) -> None:
    x = digits[0][:4]
    snn = convert(mlp, digits[0][:300], num_phases=K, progress=False)
    rate = convert(mlp, digits[0][:300], coding="rate", progress=False)
    with pytest.raises(ValueError, match="num_steps is required"):
        simulate(snn, x)
    with pytest.raises(ValueError, match="skip_periods"):
        simulate(rate, x, 8, skip_periods=1)
    with pytest.raises(ValueError, match="fold"):
        simulate(snn, x, 8, fold="yes")
    with pytest.raises(ValueError, match="chunk_size"):
        simulate(snn, x, 8, fold=False, chunk_size=2)
    with pytest.raises(ValueError, match="labels"):
        simulate(snn, x, 8, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="early_decision"):
        simulate(snn, x, 8, early_decision=0.5)
    with pytest.raises(TypeError, match="SpikingNetwork"):
        simulate(nn.Linear(64, 10), x, 8)
    with pytest.raises(ValueError, match="no early decision"):
        _ = simulate(snn, x, 8).spikes_at_decision


@pytest.mark.parametrize("coding", ["weighted", "rate"])
def test_estimate_is_decode_of_every_step(digits, mlp, coding: str) -> None:
    """The estimate trace (one vectorised product) equals ``decode(readout[t], t + 1)``."""
    x = digits[0][:6]
    skip = {"skip_periods": 1} if coding == "weighted" else {}
    snn = convert(mlp, digits[0][:100], coding=coding, num_phases=K, progress=False, **skip)
    res = simulate(snn, x, 3 * K + 1)
    for t in range(res.num_steps):
        assert torch.equal(res.estimate[t], snn.decode(res.readout[t], t + 1)), t
    assert not torch.equal(res.estimate[-1], res.estimate[-2])  # the factor changes per step


def test_cached_profile_follows_a_replaced_module(digits, cnn) -> None:
    """simulate keeps the fan-outs per network; a module replaced in the graph (no parameters,
    so no weight changed) is watched instead of the old one."""
    x = digits[0][:4].view(-1, 1, 8, 8)
    snn = convert(cnn, digits[0][:200].view(-1, 1, 8, 8), num_phases=K, progress=False)
    before = simulate(snn, x, 2 * K, fold=False)
    old = snn.graph.pool
    snn.graph.pool = SpikeMaxPool2d(old.kernel_size, old.stride, weighted=True, num_phases=K)
    after = simulate(snn, x, 2 * K, fold=False)
    assert after.synops.keys() == before.synops.keys() and "pool" in after.synops
    assert torch.equal(after.synops["pool"], before.synops["pool"])
    assert torch.equal(after.mem, before.mem)


def test_step_loop_runs_the_same_modules_and_leaves_no_hooks(digits, cnn) -> None:
    """The step loop gets the watched outputs from its own copy of the step graph, which calls
    the network's modules: a user's hook on a neuron sees every step (the trains simulate
    records), and no hook of simulate's is left on any module."""
    x = digits[0][:3].view(-1, 1, 8, 8)
    snn = convert(cnn, digits[0][:200].view(-1, 1, 8, 8), num_phases=K, progress=False)
    name, neuron = snn.neurons()[0]
    seen: list[torch.Tensor] = []
    handle = neuron.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    try:
        steps = K + 3
        res = simulate(snn, x, steps, fold=False, record_layers=True)
        assert len(seen) == steps
        assert torch.equal(torch.stack(seen), res.layer_trains[name])
        assert torch.equal(res.spikes[name], (torch.stack(seen) != 0).flatten(2).sum(2))
        assert [len(m._forward_hooks) for m in snn.modules()] == [
            int(m is neuron) for m in snn.modules()]
    finally:
        handle.remove()


def test_step_loop_calls_every_module_the_ordinary_way(digits, cnn, monkeypatch) -> None:
    """The step loop calls every module of the step graph through ``nn.Module.__call__``, once
    per step; a pre-hook of the user's (zeroing the first conv's input) and a global hook fire
    at every step, and what the pre-hook changes counts."""
    x = digits[0][:3].view(-1, 1, 8, 8)
    snn = convert(cnn, digits[0][:200].view(-1, 1, 8, 8), num_phases=K, progress=False)
    steps = 2 * K + 1
    plain = simulate(snn, x, steps, fold=False)
    calls: list[nn.Module] = []
    call = nn.Module.__call__
    monkeypatch.setattr(nn.Module, "__call__",
                        lambda self, *a, **kw: calls.append(self) or call(self, *a, **kw))
    again = simulate(snn, x, steps, fold=False)
    monkeypatch.undo()
    called = [snn.graph.get_submodule(n.target) for n in snn.graph.graph.nodes
              if n.op == "call_module"]
    for module in called:
        assert sum(m is module for m in calls) == steps, type(module).__name__
    assert torch.equal(again.mem, plain.mem)

    conv = snn.graph.c1
    handle = conv.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    try:
        hooked = simulate(snn, x, steps, fold=False)
    finally:
        handle.remove()
    assert not torch.equal(hooked.mem, plain.mem)  # what the hook changed counts: as no input
    assert torch.equal(hooked.mem, simulate(snn, x * 0, steps, fold=False).mem)
    seen: list[nn.Module] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(m))
    try:
        every = simulate(snn, x, steps, fold=False)
    finally:
        handle.remove()
    assert sum(m is conv for m in seen) == steps and torch.equal(every.mem, plain.mem)


def test_network_saves_and_copies_after_simulate(digits, cnn) -> None:
    """simulate's per-network cache (the fan-outs and copies of the weights they came from) is
    not pickled or deep-copied: a network saved or copied after a run loads and runs to the
    same result, and rebuilds the cache itself."""
    x = digits[0][:3].view(-1, 1, 8, 8)
    snn = convert(cnn, digits[0][:200].view(-1, 1, 8, 8), num_phases=K, progress=False)
    before = simulate(snn, x, 2 * K, fold=False)
    buffer = io.BytesIO()
    torch.save(snn, buffer)
    buffer.seek(0)
    for other in (torch.load(buffer, weights_only=False), copy.deepcopy(snn)):
        assert SIMULATE_CACHE not in other.__dict__
        again = simulate(other, x, 2 * K, fold=False)
        assert torch.equal(again.mem, before.mem)
        assert all(torch.equal(again.synops[n], s) for n, s in before.synops.items())
        assert SIMULATE_CACHE in other.__dict__
    assert SIMULATE_CACHE in snn.__dict__  # the original keeps its own


def test_step_loop_membranes_match_a_plain_loop(digits, cnn) -> None:
    """simulate's step loop ends in the state of a plain ``snn(x_t)`` loop, and a membrane kept
    from before the run is untouched."""
    x = digits[0][:3].view(-1, 1, 8, 8)
    snn = convert(cnn, digits[0][:200].view(-1, 1, 8, 8), num_phases=K, progress=False)
    steps = 2 * K + 1
    train = snn.encode(x, steps)
    reset(snn)
    with torch.no_grad():
        plain = torch.stack([snn(x_t) for x_t in train])
    kept = {name: (n.mem, n.mem.clone()) for name, n in snn.neurons()}
    res = simulate(snn, x, steps, fold=False)
    assert torch.equal(res.mem, plain)
    for name, neuron in snn.neurons():
        before, value = kept[name]
        assert torch.equal(before, value) and neuron.mem is not before
        assert torch.equal(neuron.mem, before)  # the plain loop ended in the same state


def test_encoded_graded_input_counts_non_zero_entries(digits, mlp_snn) -> None:
    """An encoded train given by the user may carry graded values: every non-zero entry counts
    as one spike (and its SynOps), as for the hidden layers."""
    x = digits[0][:4]
    train = mlp_snn.encode(x, 2 * K)
    graded = train * torch.linspace(0.25, 1.0, train.shape[-1])
    res = simulate(mlp_snn, graded, encoded=True, fold=False)
    mask = graded != 0
    assert torch.equal(res.input_spikes, mask.sum(-1))
    fan = res.fanout[INPUT].flatten()
    assert torch.equal(res.synops[INPUT], (mask.long() * fan).sum(-1))

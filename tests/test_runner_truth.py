"""simulate honours what users do to a network: subclasses, hooks, in-place edits of thresholds,
weights and the fx graph, in both runners; it refuses concurrent runs and bad encoded inputs.

The reference is the network's own step loop, written out here: ``reset(snn)`` and then
``snn.graph(x_t)`` for every step (``GraphModule.forward``: every module called as usual), with
a recording hook on each hidden neuron registered after any hook of the test's, so it sees what
the network passed on.
"""

from __future__ import annotations

import copy
import operator
import threading

import pytest
import torch
from torch import nn

from snntorch_weighted import WeightedLeaky
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.conversion.layers import SpikeMaxPool2d
from snntorch_weighted.neurons.reset import reset
from snntorch_weighted.simulation import plain
from snntorch_weighted.simulation.metrics import INPUT
from snntorch_weighted.simulation.runner import simulate

K = 4
STEPS = 3 * K + 1
RUNNERS = [{"fold": False}, {"fold": True, "chunk_size": 3}, {"fold": True}]


def _exact(snn: nn.Module) -> nn.Module:
    """Weights and biases rounded to multiples of 2**-8: every sum is exact in float32, so the
    runners and the reference agree bit for bit on any BLAS."""
    with torch.no_grad():
        for module in snn.graph.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                for param in module.parameters():
                    param.copy_(torch.round(param * 2**8) / 2**8)
    return snn


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a) + a)
        return self.fc(torch.flatten(self.pool(b), 1))


@pytest.fixture()
def cnn() -> tuple[nn.Module, torch.Tensor]:
    """A converted weighted residual CNN with spike max-pooling, exact weights, and inputs."""
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    snn = _exact(convert(_Residual().eval(), x, num_phases=K, progress=False))
    return snn, x


@pytest.fixture()
def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    x = torch.rand(6, 16)
    return _exact(convert(model, x, num_phases=K, progress=False)), x


def reference(snn: nn.Module, x: torch.Tensor, steps: int = STEPS):
    """The output membranes ``[T, B, C]`` and each hidden neuron's spike train of the network's
    own step loop."""
    train = snn.encode(x, steps)
    trains: dict[str, list[torch.Tensor]] = {name: [] for name, _ in snn.neurons()}
    handles = [n.register_forward_hook(lambda m, i, o, name=name: trains[name].append(o.clone()))
               for name, n in snn.neurons()]
    try:
        reset(snn)
        with torch.no_grad():
            mem = torch.stack([snn.graph(x_t) for x_t in train])
    finally:
        for handle in handles:
            handle.remove()
    return mem, {name: torch.stack(t) for name, t in trains.items()}


def assert_matches(res, mem: torch.Tensor, trains: dict[str, torch.Tensor]) -> None:
    """Membranes, spike trains and spike counts equal the reference's."""
    assert torch.equal(res.mem, mem)
    for name, train in trains.items():
        assert torch.equal(res.layer_trains[name], train), name
        assert torch.equal(res.spikes[name], train.ne(0).flatten(2).sum(2)), name


def run(snn: nn.Module, x: torch.Tensor, runner: dict):
    return simulate(snn, x, STEPS, record_layers=True, **runner)


# --------------------------------------------------------------------------- subclasses, hooks


class _DoubledInput(WeightedLeaky):
    """A user's neuron: its own ``forward`` doubles the input current."""

    calls = 0

    def forward(self, input_, mem=None):
        type(self).calls += 1
        return super().forward(input_ * 2)


@pytest.mark.parametrize("runner", RUNNERS)
def test_subclass_forward_is_honoured(cnn, runner) -> None:
    snn, x = cnn
    name, old = snn.neurons()[0]
    new = _DoubledInput(num_phases=K, threshold=old.threshold.clone(), init_hidden=True)
    snn.graph.set_submodule(name, new)
    mem, trains = reference(snn, x)
    _DoubledInput.calls = 0
    res = run(snn, x, runner)
    assert _DoubledInput.calls == STEPS  # once per step, whichever runner
    assert_matches(res, mem, trains)
    snn.graph.set_submodule(name, old)
    assert not torch.equal(run(snn, x, runner).mem, mem)  # the subclass did change the run


@pytest.mark.parametrize("runner", RUNNERS)
def test_forward_hook_zeroing_spikes_is_honoured(cnn, runner) -> None:
    snn, x = cnn
    before = run(snn, x, runner)
    name, neuron = snn.neurons()[1]
    handle = neuron.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        mem, trains = reference(snn, x)
        res = run(snn, x, runner)
    finally:
        handle.remove()
    assert_matches(res, mem, trains)
    assert res.spikes[name].sum() == 0 and res.synops[name].sum() == 0
    assert before.spikes[name].sum() > 0 and not torch.equal(res.mem, before.mem)


@pytest.mark.parametrize("runner", RUNNERS)
def test_forward_pre_hook_on_a_neuron_is_honoured(cnn, runner) -> None:
    snn, x = cnn
    neuron = snn.neurons()[0][1]
    seen: list[int] = []

    def hook(module, args):
        seen.append(args[0].shape[0])
        return (args[0] * 0.5,)

    handle = neuron.register_forward_pre_hook(hook)
    try:
        mem, trains = reference(snn, x)
        seen.clear()
        res = run(snn, x, runner)
    finally:
        handle.remove()
    assert seen == [x.shape[0]] * STEPS  # every step, one batch each
    assert_matches(res, mem, trains)


def test_folded_runner_uses_forward_steps_only_for_plain_package_modules(cnn, monkeypatch
                                                                         ) -> None:
    snn, x = cnn
    blocks: list[type] = []
    for cls in (WeightedLeaky, SpikeMaxPool2d):
        original = cls.forward_steps
        monkeypatch.setattr(cls, "forward_steps", lambda self, inputs, f=original: (
            blocks.append(type(self)), f(self, inputs))[1])
    simulate(snn, x, STEPS, fold=True, chunk_size=STEPS)
    stateful = [m for m in snn.graph.modules() if isinstance(m, (WeightedLeaky, SpikeMaxPool2d))]
    assert len(blocks) == len(stateful)  # one block each
    blocks.clear()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        simulate(snn, x, STEPS, fold=True, chunk_size=STEPS)
    finally:
        handle.remove()
    assert blocks == []  # a global hook: every module is called step by step


def test_predicates() -> None:
    neuron = WeightedLeaky(num_phases=K, init_hidden=True)
    assert plain.calls_plainly(neuron) and plain.runs_as_block(neuron)
    assert plain.emits_binary(neuron) and not plain.emits_binary(nn.ReLU())
    assert not plain.runs_as_block(_DoubledInput(num_phases=K, init_hidden=True))
    assert not plain.emits_binary(_DoubledInput(num_phases=K, init_hidden=True))
    graded = WeightedLeaky(num_phases=K, graded_spikes_factor=2.0)
    assert not plain.emits_binary(graded)
    graded.graded_spikes_factor.data.fill_(1.0)  # read as a value at every run
    assert plain.emits_binary(graded)
    assert plain.runs_as_block(SpikeMaxPool2d(2, num_phases=K))
    conv = nn.Conv2d(1, 2, 3)
    assert plain.folds(conv) and not plain.runs_as_block(conv)
    assert not plain.folds(neuron) and not plain.folds(nn.Flatten(0))
    assert not plain.folds(nn.Dropout().train()) and plain.folds(nn.Dropout().eval())
    for hook in ("register_forward_hook", "register_forward_pre_hook",
                 "register_full_backward_hook"):
        for module in (neuron, conv):
            handle = getattr(module, hook)(lambda *a: None)
            assert not plain.calls_plainly(module), hook
            assert not plain.runs_as_block(module) and not plain.folds(module)
            handle.remove()
            assert plain.calls_plainly(module)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None)
    assert not plain.calls_plainly(conv) and not plain.runs_as_block(neuron)
    handle.remove()
    neuron.forward = lambda x: x  # an instance attribute: module(x) calls it
    assert not plain.calls_plainly(neuron) and not plain.emits_binary(neuron)
    conv.compile()
    assert not plain.folds(conv)


# --------------------------------------------------------------------------- edits between runs


def _scale_threshold(neuron: nn.Module, how: str) -> None:
    if how == "data":
        neuron.threshold.data.mul_(0.25)
    else:
        with torch.no_grad():
            neuron.threshold.mul_(0.25)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("how", ["no_grad", "data"])
def test_threshold_edit_between_runs_is_honoured(cnn, runner, how) -> None:
    snn, x = cnn
    before = run(snn, x, runner)
    _scale_threshold(snn.neurons()[0][1], how)
    mem, trains = reference(snn, x)
    res = run(snn, x, runner)
    assert_matches(res, mem, trains)
    assert not torch.equal(res.mem, before.mem)


@pytest.mark.parametrize("runner", RUNNERS)
def test_weight_data_edit_changes_the_run_and_the_synops(mlp, runner) -> None:
    """``fc1.weight.data[:, :4].zero_()`` between two runs: the membranes follow, and the input's
    SynOps use the new fan-out (non-zero weights per input, counted here)."""
    snn, x = mlp
    fc1 = snn.graph.get_submodule("0")
    before = simulate(snn, x, STEPS, **runner)
    fc1.weight.data[:, :4].zero_()
    mem, trains = reference(snn, x)
    res = simulate(snn, x, STEPS, record_layers=True, **runner)
    assert_matches(res, mem, trains)
    fan = (fc1.weight != 0).sum(0)
    train = snn.encode(x, STEPS)
    assert torch.equal(res.synops[INPUT], (train.ne(0).long() * fan).sum(-1))
    assert res.total_synops.sum() < before.total_synops.sum()


def test_conv_weight_data_edit_changes_the_synops(cnn) -> None:
    snn, x = cnn
    before = simulate(snn, x, STEPS)
    snn.graph.c2.weight.data[:, :2].zero_()
    fresh = copy.deepcopy(snn)  # a copy has no cache: its fan-outs are computed anew
    for runner in RUNNERS:
        res = simulate(snn, x, STEPS, **runner)
        again = simulate(fresh, x, STEPS, **runner)
        assert res.synops.keys() == again.synops.keys()
        for name in res.synops:
            assert torch.equal(res.synops[name], again.synops[name]), name
    assert not torch.equal(res.fanout[snn.neurons()[0][0]], before.fanout[snn.neurons()[0][0]])


@pytest.mark.parametrize("runner", RUNNERS)
def test_fx_graph_edit_in_place_is_honoured(cnn, runner) -> None:
    """The residual ``add`` turned into a ``sub`` in place (same node count), then recompiled."""
    snn, x = cnn
    before = run(snn, x, runner)
    (node,) = [n for n in snn.graph.graph.nodes if n.target is operator.add]
    node.target = operator.sub
    snn.graph.recompile()
    mem, trains = reference(snn, x)
    res = run(snn, x, runner)
    assert_matches(res, mem, trains)
    assert not torch.equal(res.mem, before.mem)


# --------------------------------------------------------------------------- refusals


def test_a_second_concurrent_run_is_refused(mlp) -> None:
    snn, x = mlp
    neuron = snn.neurons()[0][1]
    errors: list[BaseException] = []

    def nested(module, inputs, output):
        try:
            simulate(snn, x, 2)
        except RuntimeError as error:
            errors.append(error)

    handle = neuron.register_forward_hook(nested)
    try:
        simulate(snn, x, 2, fold=False)
    finally:
        handle.remove()
    assert len(errors) == 2 and "already running" in str(errors[0])

    inside, release = threading.Event(), threading.Event()
    handle = neuron.register_forward_hook(lambda *a: (inside.set(), release.wait(10))[0])
    thread = threading.Thread(target=simulate, args=(snn, x, 2), kwargs={"fold": False})
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(RuntimeError, match="already running on this network"):
            simulate(snn, x, 2)
    finally:
        release.set()
        thread.join(10)
        handle.remove()
    assert torch.equal(simulate(snn, x, 4).mem, simulate(snn, x, 4).mem)  # free again


@pytest.mark.parametrize(("bad", "message"), [
    (float("nan"), "NaN"), (1.5, r"\[0, 1\].*1\.5"), (-0.5, r"\[0, 1\].*-0\.5")])
def test_encoded_inputs_are_validated(mlp, bad, message) -> None:
    snn, x = mlp
    train = snn.encode(x, 5)
    train[2, 1, 3] = bad
    with pytest.raises(ValueError, match=message):
        simulate(snn, train, encoded=True)


def test_encoded_inputs_must_be_a_floating_train(mlp) -> None:
    snn, x = mlp
    train = snn.encode(x, 5)
    with pytest.raises(ValueError, match="floating-point"):
        simulate(snn, train.long(), encoded=True)
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        simulate(snn, x, encoded=True)
    graded = simulate(snn, train * 0.5, encoded=True)  # graded spikes in [0, 1] are fine
    assert torch.equal(graded.input_spikes, simulate(snn, train, encoded=True).input_spikes)


@pytest.mark.parametrize("runner", RUNNERS)
def test_compiled_neuron_runs_every_step(mlp, runner, monkeypatch) -> None:
    """A neuron compiled in place (``module.compile()``) is called, through its compiled call,
    once per step in both runners (never through ``forward_steps``), with the reference's
    results."""
    snn, x = mlp
    torch._dynamo.reset()
    neuron = snn.neurons()[0][1]
    neuron.compile(backend="eager")
    assert not plain.runs_as_block(neuron)
    mem, trains = reference(snn, x)
    calls: list[int] = []
    compiled = neuron._compiled_call_impl
    neuron._compiled_call_impl = lambda *a, **kw: calls.append(1) or compiled(*a, **kw)
    blocks: list[nn.Module] = []
    original = WeightedLeaky.forward_steps
    monkeypatch.setattr(WeightedLeaky, "forward_steps", lambda self, inputs: (
        blocks.append(self), original(self, inputs))[1])
    assert_matches(run(snn, x, runner), mem, trains)
    assert len(calls) == STEPS and neuron not in blocks

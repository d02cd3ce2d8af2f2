"""evaluate(): a DataLoader streamed through simulate equals simulate on the concatenated batches;
bounded memory; rate seeds per sample; 2-process gloo run equals one process."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import DECISIONS, STEPS, dyadic, evaluation_data, evaluation_nets, run_evaluations
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from snntorch_weighted import quant
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.simulation.decision import early_decision, gather_at_time
from snntorch_weighted.simulation.evaluate import (
    EvaluationResult,
    evaluate,
    rate_train,
    sample_seeds,
)
from snntorch_weighted.simulation.runner import SimulationResult, simulate

N = 23  # 5 batches of 5, the last one short


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 1, 6, 6, generator=g)
    x[0] = 1.0  # saturating inputs
    x[1] = 0.0
    return x, torch.randint(0, 4, (N,), generator=g)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()


@pytest.fixture(scope="module")
def nets(data) -> dict[str, tuple[nn.Module, int | None]]:
    x = data[0]
    prepared = quant.prepare(_model(), num_bits=3, calibration_data=x)
    return {
        "weighted": (dyadic(convert(_model(), x, coding="weighted", num_phases=4,
                                    progress=False)), 17),
        "rate": (dyadic(convert(_model(), x, coding="rate", progress=False)), 25),
        "radix": (convert(prepared, None, coding="radix", num_bits=3), None),  # exact, float64
    }


def _reference(snn: nn.Module, x: Tensor, y: Tensor, steps: int | None, seed: int,
               setting: tuple[float, int]) -> SimulationResult:
    """simulate on all samples at once (rate: the same per-sample trains)."""
    if snn.coding == "rate":
        train = rate_train(x, steps, torch.arange(len(y)), seed)
        return simulate(snn, train, labels=y, encoded=True, early_decision=setting)
    return simulate(snn, x, steps, labels=y, early_decision=setting)


def _check_equal(res: EvaluationResult, ref: SimulationResult, settings) -> None:
    assert res.num_samples == len(ref.labels) and res.num_steps == ref.num_steps
    assert torch.equal(res.correct, (ref.predictions == ref.labels).sum(1))
    assert torch.equal(res.accuracy, ref.accuracy)
    assert torch.equal(res.labels, ref.labels) and torch.equal(res.final_predictions,
                                                               ref.predictions[-1])
    assert torch.equal(res.final_readout, ref.readout[-1].cpu())
    assert res.spikes.keys() == ref.spikes.keys() and res.synops.keys() == ref.synops.keys()
    for name in ref.spikes:
        assert torch.equal(res.spikes[name], ref.spikes[name].sum(1)), name
    for name in ref.synops:
        assert torch.equal(res.synops[name], ref.synops[name].sum(1)), name
    assert torch.equal(res.input_spikes, ref.input_spikes.sum(1))
    assert torch.equal(res.total_spikes, ref.total_spikes)
    assert torch.equal(res.total_synops, ref.total_synops)
    torch.testing.assert_close(res.cum_spikes, ref.spikes_per_step.double().mean(1).cumsum(0),
                               rtol=1e-12, atol=0)
    assert res.num_neurons == ref.num_neurons
    for i, (theta, start) in enumerate(settings):
        dec = ref.decision if i == 0 else early_decision(ref.readout, theta, start)
        got = res.decisions[(theta, start)]
        assert torch.equal(got.decision, dec.decision) and torch.equal(got.time, dec.time)
        assert torch.equal(got.decided, dec.decided)
        assert torch.equal(res.decision_spikes[(theta, start)],
                           gather_at_time(ref.spikes_per_step, dec.time))
        assert torch.equal(res.decision_synops[(theta, start)],
                           gather_at_time(ref.synops_per_step, dec.time))
    assert torch.equal(res.decision.time, ref.decision.time)
    assert torch.equal(res.spikes_at_decision, ref.spikes_at_decision)
    assert torch.equal(res.synops_at_decision, ref.synops_at_decision)
    summary, expected = res.summary(), ref.summary()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("coding", ["weighted", "rate", "radix"])
def test_dataloader_equals_simulate_on_concatenated_batches(data, nets, coding) -> None:
    x, y = data
    snn, steps = nets[coding]
    settings = [(0.5, 2), (3.0, 4)]
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    res = evaluate(snn, loader, steps, early_decision=settings, progress=False, seed=7,
                   keep_readout=True, model=_model())
    ref = _reference(snn, x, y, steps, 7, settings[0])
    _check_equal(res, ref, settings)
    assert torch.equal(res.readout, ref.readout.cpu())
    assert res.ann_macs == simulate(snn, x[:1], steps, model=_model()).ann_macs
    assert 0 < res.accuracy[-1] < 1 and res.total_spikes.sum() > 0  # not a vacuous comparison
    # any batching gives the same result (rate: the trains are drawn per sample)
    again = evaluate(snn, [(x[:9], y[:9]), (x[9:], y[9:])], steps, early_decision=settings,
                     progress=False, seed=7)
    _check_equal(again, ref, settings)


def test_radix_shortcut_and_skip_periods(data, nets) -> None:
    x, y = data
    snn, _ = nets["radix"]
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    fast = evaluate(snn, batches, progress=False, shortcut=True, early_decision=(1.0, 4))
    _check_equal(fast, simulate(snn, x, labels=y, early_decision=(1.0, 4)), [(1.0, 4)])
    weighted, steps = nets["weighted"]
    res = evaluate(weighted, batches, steps, skip_periods=1, progress=False,
                   early_decision=(1.0, 5))
    _check_equal(res, simulate(weighted, x, steps, labels=y, skip_periods=1,
                               early_decision=(1.0, 5)), [(1.0, 5)])
    assert res.readout is None


def test_rate_trains_are_seeded_per_sample(data) -> None:
    x = data[0][:4]
    positions = torch.tensor([0, 1, 2, 3])
    train = rate_train(x, 300, positions, seed=1)
    assert train.shape == (300, *x.shape)
    assert torch.equal(train[:, 0], torch.ones_like(train[:, 0]))  # p = 1
    assert not train[:, 1].any()  # p = 0
    # a sample's train depends on its position and the seed only
    assert torch.equal(rate_train(x[2:3], 300, positions[2:3], seed=1), train[:, 2:3])
    assert not torch.equal(rate_train(x[2:3], 300, positions[3:4], seed=1), train[:, 2:3])
    assert not torch.equal(rate_train(x, 300, positions, seed=2), train)
    # Bernoulli(p): the rate over 300 steps is within 5 standard deviations of p
    p = x[2:4]
    sd = (p * (1 - p) / 300).sqrt()
    assert ((train[:, 2:4].mean(0) - p).abs() <= 5 * sd + 1e-6).all()
    seeds = sample_seeds(torch.arange(1000), 123)
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**32 for s in seeds)
    g = torch.Generator().manual_seed(seeds[5])
    half = torch.full_like(x[1:2], 0.5)
    expected = torch.bernoulli(half.expand(3, *half.shape), generator=g)  # the documented draw
    assert torch.equal(rate_train(half, 3, torch.tensor([5]), 123), expected)


def _live_tensor_bytes() -> int:
    """Bytes of every tensor storage referenced from Python (each storage once)."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if type(obj) is Tensor and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _growth(snn: nn.Module, steps: int, batches: int, **kw) -> int:
    """Live tensor bytes when the last batch is fetched minus those when the 3rd is."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
    marks: list[int] = []

    def stream():
        for i in range(batches):
            if i in (2, batches - 1):
                marks.append(_live_tensor_bytes())
            yield x, y

    evaluate(snn, stream(), steps, progress=False, early_decision=(1.0, 2), **kw)
    return marks[1] - marks[0]


def test_memory_does_not_grow_with_the_number_of_batches(nets) -> None:
    snn, _ = nets["weighted"]
    steps, batches = 64, 12
    # one batch's output membranes [T, B, C] (float32) alone are 64 * 8 * 4 * 4 = 8 KiB
    per_batch_membranes = steps * 8 * 4 * 4
    growth = _growth(snn, steps, batches)
    # the per-sample results (~10 numbers of 8 bytes and C = 4 membranes per sample) may grow,
    # nothing per step
    assert growth <= (batches - 3) * 8 * 8 * 24 < (batches - 3) * per_batch_membranes
    # the measurement sees growth where there is some: keeping the membranes
    assert _growth(snn, steps, batches, keep_readout=True) >= (batches - 3) * per_batch_membranes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_single_process_result(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               WORLD_SIZE="2", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(worker), "evaluate", str(rank),
                               str(tmp_path)], env=dict(env, RANK=str(rank)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(2)]
    outputs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    single = run_evaluations({"one": DataLoader(TensorDataset(*evaluation_data()),
                                                batch_size=4)})
    ranks = [torch.load(tmp_path / f"eval_rank{r}.pt", weights_only=False) for r in range(2)]
    x, y = evaluation_data()
    for coding, snn in evaluation_nets().items():
        ref = _reference(snn, x, y, STEPS[coding], 5, DECISIONS[0])
        _check_equal(single[f"{coding}/one"], ref, DECISIONS)
        for part in ranks:
            for mode in ("sampler", "index"):
                res = part[f"{coding}/{mode}"]
                assert res.world_size == 2
                _check_equal(res, ref, DECISIONS)  # padding dropped, every sample once


def test_bad_input(data, nets) -> None:
    x, y = data
    snn, steps = nets["weighted"]
    with pytest.raises(ValueError, match=r"\(inputs, labels\) pair"):
        evaluate(snn, (x, y), steps, progress=False)
    with pytest.raises(ValueError, match="labels"):
        evaluate(snn, [(x, y[:3])], steps, progress=False)
    with pytest.raises(ValueError, match="no samples"):
        evaluate(snn, [], steps, progress=False)
    with pytest.raises(ValueError, match="num_steps is required"):
        evaluate(nets["rate"][0], [(x, y)], progress=False)
    with pytest.raises(ValueError, match="seed"):
        evaluate(snn, [(x, y)], steps, seed=-1, progress=False)
    with pytest.raises(ValueError, match="theta, T1"):
        evaluate(snn, [(x, y)], steps, early_decision=[(1.0, 2.5)], progress=False)
    with pytest.raises(ValueError, match="inputs in"):
        rate_train(x * 2, 3, torch.arange(N))
    data_set = TensorDataset(x, y)
    shard = DataLoader(data_set, sampler=DistributedSampler(data_set, num_replicas=2, rank=0))
    with pytest.raises(ValueError, match="num_replicas=2"):
        evaluate(snn, shard, steps, progress=False)
    drops = DataLoader(data_set, sampler=DistributedSampler(data_set, num_replicas=1, rank=0),
                       batch_size=5, drop_last=True)
    with pytest.raises(ValueError, match="drop_last"):
        evaluate(snn, drops, steps, progress=False)


def test_progress_bar(data, nets, capsys) -> None:
    x, y = data
    snn, steps = nets["weighted"]
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    evaluate(snn, batches, steps, progress=True, desc="weighted SNN")
    assert "weighted SNN" in capsys.readouterr().err
    evaluate(snn, batches, steps, progress=False)
    assert capsys.readouterr().err == ""

"""Tests of snntorch_weighted.quant: STE primitives, the integer twin, fine-tuning, DDP, errors."""

from __future__ import annotations

import copy
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st
from test_quant_reference import MODELS, mlp, randomise
from torch import nn

from snntorch_weighted import quant
from snntorch_weighted.conversion.graph import UnsupportedLayerError
from snntorch_weighted.data import load_digits
from snntorch_weighted.quant.finetune import _finetune_loss
from snntorch_weighted.train import evaluate

# ----------------------------------------------------------------------------- STE


def test_round_and_floor_ste_values_and_gradients() -> None:
    x = torch.tensor([-1.5, -0.5, 0.49, 0.5, 2.5, 3.7], requires_grad=True)
    r = quant.round_ste(x)
    assert torch.equal(r, torch.tensor([-1.0, 0.0, 0.0, 1.0, 3.0, 4.0]))  # round half up
    r.sum().backward()
    assert torch.equal(x.grad, torch.ones(6))
    x.grad = None
    f = quant.floor_ste(x)
    assert torch.equal(f, torch.floor(x.detach()))
    (f * torch.arange(6.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(6.0))


def test_fake_quantize_gradient_passes_inside_and_is_blocked_at_clip() -> None:
    step, bits = 0.5, 3  # codes 0..7, clip at 3.5
    x = torch.tensor([-1.0, -0.01, 0.01, 0.26, 1.74, 3.49, 3.51, 9.0], requires_grad=True)
    y = quant.fake_quantize(x, step, bits)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 0.0, 0.5, 1.5, 3.5, 3.5, 3.5]))
    y.sum().backward()
    # Yin et al. STE: 1 where the clip is inactive (0 <= x <= clip), 0 where it is active
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


def test_twin_gradients_blocked_for_saturated_and_negative_neurons() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    twin = quant.twin(
        quant.prepare(randomise(mlp(), 1), num_bits=3, calibration_data=x, percentile=50)
    )
    acts = {}
    twin.get_submodule("2").register_forward_hook(lambda m, i, o: acts.update(acc=i[0], y=o))
    twin(x).sum().backward()
    relu = twin.get_submodule("2")
    pre = (acts["acc"] + relu.int_bias()) * torch.exp2(-relu.shift())
    active = (pre < 0) | (pre > 7)
    assert active.any() and (~active).any()
    # a unit of the first layer whose pre-activation is clipped for every sample gets no gradient
    w = twin.get_submodule("1").weight
    dead = active.all(0)
    assert w.grad is not None
    assert torch.all(w.grad[dead] == 0)
    assert torch.any(w.grad[~dead] != 0)


def test_learnable_clip_receives_gradient() -> None:
    x = torch.rand(32, 1, 8, 8)
    twin = quant.twin(
        quant.prepare(randomise(mlp(), 2), num_bits=4, calibration_data=x, learn_clip=True)
    )
    clip = twin.get_submodule("2").clip
    assert isinstance(clip, nn.Parameter)
    twin(x).pow(2).sum().backward()
    assert clip.grad is not None and torch.isfinite(clip.grad) and clip.grad != 0


# ----------------------------------------------------------------------------- bit exactness


@pytest.mark.parametrize("name", list(MODELS))
@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num_bits=st.sampled_from([1, 2, 4, 8]),
    weight_bits=st.sampled_from([4, 8]),
)
def test_twin_equals_integer_reference(
    name: str, seed: int, num_bits: int, weight_bits: int
) -> None:
    make, reference = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 1, 8, 8, generator=g)
    x[0] = 0.0
    x[1] = 1.0
    twin = quant.twin(
        quant.prepare(
            randomise(make(), seed),
            num_bits=num_bits,
            weight_bits=weight_bits,
            calibration_data=x[:4],
        )
    ).double()
    params = quant.integer_params(twin)
    qmax = 2 ** (weight_bits - 1) - 1
    for p in params.values():
        for path in p.paths:
            assert path.weight.abs().max() <= qmax
    acts = quant.integer_activations(twin, x.double())
    expected = reference(params, x, num_bits)
    assert acts.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(acts[key], value), key
    # the twin's logits are the output integers times the output scale
    logits = twin(x.double())
    assert torch.equal(logits, expected["output_quant"].double() * params["output_quant"].scale)
    # and it is the same computation in training mode
    assert torch.equal(twin.train()(x.double()), logits)


def test_shift_is_largest_that_keeps_weights_in_range() -> None:
    x = torch.rand(16, 1, 8, 8)
    twin = quant.twin(quant.prepare(randomise(mlp(), 3), num_bits=6, calibration_data=x)).double()
    for name, p in quant.integer_params(twin).items():
        if p.output:
            continue
        relu = twin.get_submodule(name)
        layer = twin.get_submodule(p.paths[0].layer)
        source = twin.get_submodule(p.paths[0].source)
        ratio = float((layer.weight.abs().max() * source.step() / relu.step()).detach())
        assert ratio * 2.0**p.shift <= 127 < ratio * 2.0 ** (p.shift + 1)
        assert p.paths[0].weight.abs().max() >= 64


# ----------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits("train"), load_digits("test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):  # full-batch Adam: a well-trained float baseline in about a second
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, train, test


@pytest.mark.parametrize("num_bits,tolerance", [(8, 0.005), (4, 0.012)])
def test_finetune_recovers_float_accuracy(digits, num_bits: int, tolerance: float) -> None:
    model, train, test = digits
    float_acc = evaluate(model, test)
    twin = quant.twin(
        quant.prepare(
            copy.deepcopy(model), num_bits=num_bits, calibration_data=train.tensors[0][:500]
        )
    )
    before = evaluate(twin, test)
    history = quant.finetune(
        twin, train, epochs=2, lr=3e-4, val_data=test, progress=False, batch_size=128
    )
    after = history[-1]["val_acc"]
    print(f"T={num_bits}: float {float_acc:.4f}, prepared {before:.4f}, finetuned {after:.4f}")
    assert [h["epoch"] for h in history] == [0, 1, 2] and history[0]["val_acc"] == before
    assert all(h["loss"] > 0 for h in history[1:])
    assert float_acc > 0.9
    assert after >= float_acc - tolerance


def test_prepare_shares_parameters_with_the_float_model(digits) -> None:
    model, train, _ = digits
    model = copy.deepcopy(model)  # the fixture stays a float model
    prepared = quant.prepare(model, num_bits=4, calibration_data=train.tensors[0][:64])
    assert prepared is model  # in place: the user's module now computes the twin
    twin = quant.twin(model)
    x = train.tensors[0][:32]
    assert torch.equal(model(x), twin(x))
    assert twin.get_submodule("1").weight is model[1].weight
    assert twin.get_submodule("3").bias is model[3].bias
    # an optimiser built on the user's model trains the twin
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[1].weight.detach().clone()
    nn.functional.cross_entropy(model(x), train.tensors[1][:32]).backward()
    opt.step()
    assert not torch.equal(model[1].weight, before)


# ----------------------------------------------------------------------------- serialisation


def test_state_dict_and_torch_save_round_trip() -> None:
    x = torch.rand(16, 1, 8, 8)
    make, _ = MODELS["resnet"]
    twin = quant.twin(
        quant.prepare(randomise(make(), 5), num_bits=4, calibration_data=x, learn_clip=True)
    )
    with torch.no_grad():
        twin.get_submodule("relu").clip.mul_(1.3)
        twin.get_submodule("fc").weight.mul_(0.9)
    expected = twin(x)
    other = quant.prepare(randomise(make(), 6), num_bits=4, calibration_data=x, learn_clip=True)
    assert not torch.equal(other(x), expected)
    other.radix_twin.load_state_dict(twin.state_dict())
    assert torch.equal(other(x), expected)
    again = quant.prepare(randomise(make(), 7), num_bits=4, calibration_data=x, learn_clip=True)
    again.load_state_dict(other.state_dict())  # the whole prepared model round-trips too
    assert torch.equal(again(x), expected)
    buffer = io.BytesIO()
    torch.save(twin, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), expected)
    assert quant.integer_params(loaded).keys() == quant.integer_params(twin).keys()


# ----------------------------------------------------------------------------- errors


def test_bad_input_raises_clear_errors() -> None:
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(ValueError, match="num_bits"):
        quant.prepare(mlp(), num_bits=0, calibration_data=x)
    with pytest.raises(ValueError, match="weight_bits"):
        quant.prepare(mlp(), num_bits=4, weight_bits=1, calibration_data=x)
    with pytest.raises(ValueError, match="calibration_data"):
        quant.prepare(mlp(), num_bits=4)
    with pytest.raises(ValueError, match="percentile"):
        quant.prepare(mlp(), num_bits=4, calibration_data=x, percentile=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quant.prepare(mlp(), num_bits=4, calibration_data=x * 2)
    with pytest.raises(UnsupportedLayerError, match=r"'_1'.*Sigmoid"):
        quant.prepare(
            nn.Sequential(nn.Flatten(), nn.Sigmoid(), nn.Linear(64, 2)), calibration_data=x
        )
    with pytest.raises(UnsupportedLayerError, match=r"'_1'.*Conv2d.*insert a ReLU"):
        quant.prepare(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1),
                                    nn.Flatten(), nn.ReLU(), nn.Linear(128, 2)),
                      calibration_data=x.view(-1, 1, 8, 8))
    # a Linear after a Linear is merged into one layer; a model may end in neurons
    chain = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 2))
    merged = quant.prepare(copy.deepcopy(chain), num_bits=8, calibration_data=x)
    assert F.cosine_similarity(merged(x).flatten(), chain(x).flatten(), dim=0) > 0.99
    ends_in_relu = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    prepared = quant.prepare(copy.deepcopy(ends_in_relu), num_bits=8, calibration_data=x)
    assert F.cosine_similarity(prepared(x).flatten(), ends_in_relu(x).flatten(), dim=0) > 0.99
    with pytest.raises(TypeError, match="prepare"):
        quant.integer_params(mlp())
    twin = quant.twin(quant.prepare(mlp(), num_bits=4, calibration_data=x))
    with pytest.raises(ValueError, match="epochs"):
        quant.finetune(twin, (x, torch.zeros(8, dtype=torch.long)), epochs=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        twin(x - 0.5)


def test_distillation_loss_matches_the_formula() -> None:
    """tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau)), computed by hand in float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    teacher = nn.Linear(4, 3).double()
    student = torch.randn(6, 3, generator=g, dtype=torch.float64)
    for tau in (1.0, 3.0):
        with torch.no_grad():
            p = torch.softmax(teacher(x) / tau, 1)
        log_q = torch.log_softmax(student / tau, 1)
        expected = tau**2 * (p * (p.log() - log_q)).sum(1).mean()
        got = _finetune_loss(student, x, torch.zeros(6, dtype=torch.long), teacher, tau)
        assert torch.allclose(got, expected, rtol=1e-12)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(_finetune_loss(student, x, labels, None, 1.0),
                       nn.functional.cross_entropy(student, labels))


def test_finetune_with_teacher_keeps_the_best_epoch(digits) -> None:
    model, train, test = digits
    twin = quant.twin(quant.prepare(copy.deepcopy(model), num_bits=4,
                                    calibration_data=train.tensors[0][:200]))  # fmt: skip
    start = copy.deepcopy(twin.state_dict())
    val = (train.tensors[0][:300], train.tensors[1][:300])
    # a learning rate that wrecks the model: keep_best must restore the state of epoch 0
    history = quant.finetune(twin, train, epochs=1, lr=5.0, val_data=val, teacher=model,
                             keep_best=True, progress=False, optimizer="sgd")  # fmt: skip
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[1]["val_acc"] < history[0]["val_acc"]
    assert [h["kept"] for h in history] == [True, False]
    assert all(torch.equal(v, start[k]) for k, v in twin.state_dict().items())
    assert evaluate(twin, val) == history[0]["val_acc"]
    # a sensible one: distillation keeps the twin at the float model's accuracy
    history = quant.finetune(twin, train, epochs=2, lr=3e-4, val_data=val, teacher=model,
                             keep_best=True, progress=False)  # fmt: skip
    assert sum(h["kept"] for h in history) == 1
    assert evaluate(twin, test) >= evaluate(model, test) - 0.012


def test_finetune_argument_errors(digits) -> None:
    model, train, _ = digits
    prepared = quant.prepare(copy.deepcopy(model), num_bits=4,
                             calibration_data=train.tensors[0][:64])  # fmt: skip
    with pytest.raises(ValueError, match="teacher is the model being fine-tuned"):
        quant.finetune(prepared, train, epochs=1, teacher=prepared, progress=False)
    with pytest.raises(ValueError, match="keep_best=True needs val_data"):
        quant.finetune(prepared, train, epochs=1, keep_best=True, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        quant.finetune(prepared, train, epochs=1, teacher=model, temperature=0, progress=False)


# ----------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_finetune_under_ddp_keeps_replicas_identical(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE="2",
        OMP_NUM_THREADS="1",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(rank), str(tmp_path)],
            env=dict(env, RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    start = torch.load(tmp_path / "start0.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], start[k]) for k in a)  # training did change the weights

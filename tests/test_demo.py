"""The demo end to end with tiny settings (digits, offline): table, plot, bit-exact radix; the
command line: program name, defaults, one-line errors, dependencies checked before any work; the
paper networks: committed weights without training (Fashion-MNIST when present), a clear error
where weights are absent, ``--retrain`` trains."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from snntorch_weighted import _extras, cli, convert, data, demo, models, simulate

TINY = ["--epochs", "3", "--steps", "8", "--finetune-epochs", "1", "--train-samples", "300",
        "--test-samples", "48", "--batch-size", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo with progress bars left on their default, its output captured as in a log file."""
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    log = io.StringIO()  # not a terminal
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            args = demo.parse_args([*TINY, "--out", str(out)])
            result = demo.run(args)
        yield args, result, log.getvalue()
    finally:
        torch.set_num_threads(threads)


def test_table_rows_and_plot(demo_run, capsys):
    args, result, _ = demo_run
    lines = result.table.splitlines()
    assert lines[0] == "| coding | steps | accuracy % | spikes/image | SynOps/image |"
    # ANN, 2 checkpoints (4, 8) per weighted / rate, twin before / after, radix SNN.
    assert len(lines) == 2 + 1 + 2 + 2 + 2 + 1
    assert [row.split("|")[2].strip() for row in lines[3:7]] == ["4", "8", "4", "8"]
    assert lines[-1].startswith("| radix SNN (T=4) | 20 |")  # (2 ReLU + 2 pools + 1) * T
    assert result.plot.is_file() and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (args.out / "results.md").read_text().startswith(result.table + "\n")
    assert "SynOps/image: synaptic operations" in (args.out / "results.md").read_text()


def test_radix_snn_is_bit_exact(demo_run):
    _, result, _ = demo_run
    assert result.bit_exact == 1.0
    radix = result.runs["radix"]
    # The SNN decides exactly like the quantised twin, so its accuracy is the twin's.
    assert radix.accuracy[-1].item() == pytest.approx(result.twin_accuracy[1])


def test_curves_match_a_direct_simulation(demo_run):
    """The batched curves equal one simulate() call on the whole test subset."""
    args, result, _ = demo_run
    x_train, _, x, y = demo.load_data(args)
    snn = convert(result.model, x_train, num_phases=args.phases, progress=False)
    direct = simulate(snn, x, args.steps, labels=y)
    run = result.runs["weighted"]
    assert torch.allclose(run.accuracy, direct.accuracy.cpu())
    assert torch.allclose(run.spikes, direct.spikes_per_step.sum(1).cumsum(0).double() / len(x))


def test_checkpoints():
    assert demo.checkpoints(64, 4) == [4, 8, 16, 32, 64]
    assert demo.checkpoints(12, 4) == [4, 8, 12]
    assert demo.checkpoints(4, 4) == [4]


def test_bad_options_are_rejected():
    with pytest.raises(SystemExit):
        demo.parse_args(["--steps", "2", "--phases", "4"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--dataset", "mnist"])


def test_console_script_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--help"])
    assert info.value.code == 0
    assert "--dataset" in capsys.readouterr().out


def test_log_without_a_terminal_has_no_progress_bar_frames(demo_run):
    args, _, log = demo_run
    assert not args.progress
    assert "ANN test accuracy" in log and "| radix SNN (T=4) |" in log
    assert "\r" not in log and "it/s" not in log


def test_help_names_the_program_and_shows_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # without argparse's line breaks
    assert out.startswith("usage: snntorch-weighted")
    assert "(default: 256)" in out and "(default: demo_output)" in out
    assert "digits 64, fashion-mnist 128, cifar10 256" in out
    assert "--quiet" in out
    assert "--retrain fashion-mnist / cifar10: train Net2 / Net4 afresh" in out


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "meta"]
                         + ([] if torch.cuda.is_available() else ["cuda"]))
def test_bad_device_is_a_one_line_error(device, capsys):
    with pytest.raises(SystemExit) as info:
        demo.parse_args(["--device", device])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("usage: snntorch-weighted")
    assert err[1].startswith(f"snntorch-weighted: error: --device {device}".replace(
        device, device if device in ("cuda", "meta") else repr(device)))


def test_quiet_and_no_progress_turn_the_bars_off():
    assert not demo.parse_args(["--quiet"]).progress
    assert not demo.parse_args(["--no-progress"]).progress


def _no_work(*_args, **_kwargs):
    raise AssertionError("work started before the check")


def test_missing_dataset_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "train_model", _no_work)
    code = cli.main(["--dataset", "cifar10", "--data-root", str(tmp_path), "--device", "cpu",
                     "--retrain"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snntorch-weighted: error: CIFAR-10 not found")
    assert str(tmp_path / "cifar10_jpeg.npz") in err[0] and "--data-root" in err[0]


def _hide(monkeypatch, module: str):
    real = _extras.importlib.util.find_spec
    monkeypatch.setattr(_extras.importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real(name, *a))


def test_missing_extra_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "matplotlib")
    monkeypatch.setattr(demo, "load_data", _no_work)
    assert cli.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "needs matplotlib" in err[0] and 'pip install "snntorch-weighted[demo]"' in err[0]


def test_load_digits_without_scikit_learn_names_the_extra(monkeypatch):
    _hide(monkeypatch, "sklearn")
    with pytest.raises(ImportError, match=r"scikit-learn: pip install \"snntorch-weighted\[data\]"):
        data.load_digits()


def test_results_are_written_before_a_late_failure(tmp_path, monkeypatch):
    def radix_fails(*_args, **_kwargs):
        raise RuntimeError("late failure")

    monkeypatch.setattr(demo, "run_radix", radix_fails)
    threads = torch.get_num_threads()
    args = demo.parse_args([*TINY, "--epochs", "1", "--out", str(tmp_path), "--quiet"])
    try:
        with pytest.raises(RuntimeError, match="late failure"):
            demo.run(args)
    finally:
        torch.set_num_threads(threads)
    written = (tmp_path / "results.md").read_text()
    assert "| weighted (K=4) | 8 |" in written and "| rate | 8 |" in written
    assert "| radix SNN" not in written and "(radix stage not finished)" in written


# --------------------------------------------------------------------------- paper networks

FASHION_TINY = ["--dataset", "fashion-mnist", "--steps", "8", "--finetune-epochs", "1",
                "--train-samples", "64", "--test-samples", "16", "--batch-size", "16",
                "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def fashion_test():
    """The Fashion-MNIST test split from the default data root (the demo's), else skip."""
    try:
        return data.load_fashion_mnist(split="test")
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST absent: {err}")


@pytest.fixture(scope="module")
def fashion_run(fashion_test, tmp_path_factory):
    """``--dataset fashion-mnist`` with the committed Net2 weights; training raises."""
    out = tmp_path_factory.mktemp("fashion")
    loaded = {}

    def spy_load_data(*args, **kwargs):
        loaded["tensors"] = real_load_data(*args, **kwargs)
        return loaded["tensors"]

    real_load_data, threads, log = demo.load_data, torch.get_num_threads(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(log):
        mp.setattr(demo, "train_model", _no_work)
        mp.setattr(demo, "train_ann", _no_work)
        mp.setattr(demo, "load_data", spy_load_data)
        try:
            args = demo.parse_args([*FASHION_TINY, "--out", str(out)])
            result = demo.run(args)
        finally:
            torch.set_num_threads(threads)
    return args, result, loaded["tensors"], log.getvalue()


def test_fashion_mnist_uses_the_committed_net2_without_training(fashion_run):
    args, result, _, log = fashion_run
    reference = models.pretrained("net2")
    assert result.weights == "net2" and "train ANN" not in result.timings
    assert any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    state = result.model.state_dict()
    assert state.keys() == reference.state_dict().keys()
    assert all(torch.equal(state[k].cpu(), v) for k, v in reference.state_dict().items())
    assert "the committed net2 weights, models.pretrained('net2'), not trained here" in log
    assert "90.67 % on its 10,000 test images; inputs uint8 pixel / 256" in log
    assert "ANN: the committed net2 weights" in (args.out / "results.md").read_text()
    assert result.bit_exact == 1.0 and len(result.runs["weighted"].accuracy) == 8


def test_fashion_mnist_inputs_are_pixels_over_256(fashion_run, fashion_test):
    """The simulated images are the manifest's ``uint8 pixel / 256``, drawn like data.subset."""
    args, result, (_, _, x_test, y_test), _ = fashion_run
    index = torch.randperm(10_000, generator=torch.Generator().manual_seed(args.seed))[:16]
    expected = fashion_test.images[index].double() / 256
    assert torch.equal(x_test.double(), expected)
    assert torch.equal(y_test, fashion_test.labels[index])
    with torch.no_grad():
        logits = models.pretrained("net2")(expected.float())
    correct = (logits.argmax(1) == fashion_test.labels[index]).double().mean().item()
    assert result.ann_accuracy == pytest.approx(correct)


def test_absent_weights_name_retrain_and_the_training_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)  # no net4 weights, whatever is committed
    for step in ("load_data", "train_model", "train_ann"):
        monkeypatch.setattr(demo, step, _no_work)
    assert cli.main(["--dataset", "cifar10", "--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snntorch-weighted: error: --dataset cifar10 uses "
                                               "the committed net4 weights: no manifest")
    assert "`python -m snntorch_weighted.reference net4 --threads 1`" in err[0]
    assert err[0].endswith("or add --retrain to train net4 afresh in the demo")


def test_corrupt_weights_are_a_demo_error(tmp_path, monkeypatch):
    (tmp_path / "net2.json").write_text((models.WEIGHTS_DIR / "net2.json").read_text())
    (tmp_path / "net2.pt").write_bytes(b"not the committed weights")
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    args = demo.parse_args(["--dataset", "fashion-mnist", "--device", "cpu"])
    with pytest.raises(demo.DemoError, match=r"sha256 .* --retrain to train net2 afresh"):
        demo.load_committed(args)


class _StopError(Exception):
    """Ends the demo right after the ANN stage."""


@pytest.mark.parametrize("dataset, shape, weights", [("cifar10", (3, 32, 32), "absent"),
                                                     ("fashion-mnist", (1, 28, 28), "committed")])
def test_retrain_trains_the_committed_architecture(dataset, shape, weights, tmp_path,
                                                   monkeypatch, capsys):
    """``--retrain`` trains (on fake data: no dataset needed) and never loads committed weights."""
    if weights == "absent":
        monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (32, *shape), generator=g) / 256, torch.arange(32) % 10
    monkeypatch.setattr(demo, "load_data", lambda *a, **k: (x, y, x[:8], y[:8]))
    monkeypatch.setattr(models, "pretrained", _no_work)
    calls = []
    real_train_ann = demo.train_ann
    monkeypatch.setattr(demo, "train_ann", lambda model, *a, **k: calls.append(
        (model, real_train_ann(model, *a, **k))))

    def stop(_args, model, *_rest):
        raise _StopError(model)

    monkeypatch.setattr(demo, "_rate_and_weighted", stop)
    args = demo.parse_args(["--dataset", dataset, "--retrain", "--epochs", "1", "--device", "cpu",
                            "--threads", "1", "--out", str(tmp_path / "out")])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(_StopError) as info:
            demo.run(args)
    finally:
        torch.set_num_threads(threads)
    (model, history), = calls
    assert info.value.args[0] is model and len(history.train_loss) == 1
    name = demo.DATASETS[dataset].pretrained
    builder, kwargs = models.PRETRAINED_BUILDERS[name]
    assert kwargs == {"batch_norm": True} and any(isinstance(m, nn.BatchNorm2d)
                                                  for m in model.modules())
    assert model.state_dict().keys() == builder(**kwargs).state_dict().keys()
    out = capsys.readouterr().out
    absent = f"no committed {name} weights; " if weights == "absent" else ""
    assert f"\n{absent}training {name} afresh (1 epoch, --retrain)\n" in out

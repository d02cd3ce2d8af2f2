"""The demo end to end with tiny settings (digits, offline): table, plot, bit-exact radix; the
command line: program name, defaults, one-line errors, dependencies checked before any work."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from snntorch_weighted import _extras, cli, convert, data, demo, simulate

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
    code = cli.main(["--dataset", "cifar10", "--data-root", str(tmp_path), "--device", "cpu"])
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

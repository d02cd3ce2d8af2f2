"""The demo end to end with tiny settings (digits, offline): table, plot, bit-exact radix."""

from __future__ import annotations

import pytest
import torch

from snntorch_weighted import cli, convert, demo, simulate

TINY = ["--epochs", "3", "--steps", "8", "--finetune-epochs", "1", "--train-samples", "300",
        "--test-samples", "48", "--batch-size", "32", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    try:
        args = demo.parse_args([*TINY, "--out", str(out)])
        yield args, demo.run(args)
    finally:
        torch.set_num_threads(threads)


def test_table_rows_and_plot(demo_run, capsys):
    args, result = demo_run
    lines = result.table.splitlines()
    assert lines[0] == "| coding | steps | accuracy % | spikes/image | SynOps/image |"
    # ANN, 2 checkpoints (4, 8) per weighted / rate, twin before / after, radix SNN.
    assert len(lines) == 2 + 1 + 2 + 2 + 2 + 1
    assert [row.split("|")[2].strip() for row in lines[3:7]] == ["4", "8", "4", "8"]
    assert lines[-1].startswith("| radix SNN (T=4) | 20 |")  # (2 ReLU + 2 pools + 1) * T
    assert result.plot.is_file() and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (args.out / "results.md").read_text().strip() == result.table


def test_radix_snn_is_bit_exact(demo_run):
    _, result = demo_run
    assert result.bit_exact == 1.0
    radix = result.runs["radix"]
    # The SNN decides exactly like the quantised twin, so its accuracy is the twin's.
    assert radix.accuracy[-1].item() == pytest.approx(result.twin_accuracy[1])


def test_curves_match_a_direct_simulation(demo_run):
    """The batched curves equal one simulate() call on the whole test subset."""
    args, result = demo_run
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

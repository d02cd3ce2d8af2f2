"""Tests of benchmarks/_common.py (argument parsing, checkpoint cache, BENCHMARKS.md sections)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snntorch_weighted.simulation.evaluate import EvaluationResult

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py"
_spec = importlib.util.spec_from_file_location("bench_common", _PATH)
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def test_parse_args_defaults_and_extras(tmp_path):
    def configure(parser):
        parser.add_argument("--steps", type=int, default=7)

    args = common.parse_args(
        "x", configure, ["--quick", "--device", "cpu", "--cache-dir", str(tmp_path)]
    )
    assert args.quick and args.steps == 7 and args.seed == 0
    assert args.device == torch.device("cpu") and args.cache_dir == tmp_path
    assert isinstance(args.data_root, Path)
    assert common.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            common.resolve_device("cuda")


def test_load_or_train_caches_by_config(tmp_path):
    calls = []

    def train_fn(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(float(len(calls)))
        return {"acc": 0.5 * len(calls)}

    cfg = {"epochs": 2, "lr": 0.1}
    m1, info1, cached1 = common.load_or_train(nn.Linear(2, 2), "lin", cfg, train_fn, tmp_path)
    m2, info2, cached2 = common.load_or_train(nn.Linear(2, 2), "lin", cfg, train_fn, tmp_path)
    assert (cached1, cached2) == (False, True) and len(calls) == 1
    assert info2 == info1 == {"acc": 0.5}
    torch.testing.assert_close(m2.weight, torch.ones(2, 2))
    torch.testing.assert_close(m2.bias, m1.bias)
    # Another config, or retrain=True, trains again.
    _, info3, cached3 = common.load_or_train(
        nn.Linear(2, 2), "lin", {**cfg, "epochs": 3}, train_fn, tmp_path
    )
    assert not cached3 and info3 == {"acc": 1.0}
    _, _, cached4 = common.load_or_train(nn.Linear(2, 2), "lin", cfg, train_fn, tmp_path, True)
    assert not cached4 and len(calls) == 3
    assert common.checkpoint_path(tmp_path, "a", {"x": 1, "y": 2}) == common.checkpoint_path(
        tmp_path, "a", {"y": 2, "x": 1}
    )


_names = st.text(alphabet="abcdefgh_0123456789 ", min_size=1, max_size=8).filter(str.strip)
_bodies = st.text(alphabet="abc |-*\n", max_size=30)


@settings(max_examples=25, deadline=None)
@given(sections=st.dictionaries(_names, st.tuples(_bodies, _bodies), min_size=1, max_size=4))
def test_write_section_replaces_only_its_section(tmp_path_factory, sections):
    path = tmp_path_factory.mktemp("md") / "B.md"
    path.write_text("# Benchmarks\n\nintro\n")
    for name, (first, _) in sections.items():
        common.write_section(path, name, first)
    for name, (_, second) in sections.items():
        common.write_section(path, name, second)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    for name, (_, second) in sections.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        assert text.count(begin) == 1 and text.count(end) == 1
        inner = text[text.index(begin) + len(begin) : text.index(end)]
        assert inner == f"\n{second.strip()}\n"


def test_write_section_errors(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("<!-- BEGIN a -->\nno end\n")
    with pytest.raises(ValueError, match="no matching"):
        common.write_section(path, "a", "x")
    with pytest.raises(ValueError, match="section name"):
        common.write_section(path, "a-->b", "x")


def test_markdown_table():
    table = common.markdown_table(["a", "b"], [[1, 0.123456], ["x|y", None]])
    assert table.splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | 0.1235 |",
        "| x\\|y | - |",
    ]
    with pytest.raises(ValueError, match="row 0"):
        common.markdown_table(["a"], [[1, 2]])


def test_timer_and_environment_line():
    with common.Timer() as t:
        sum(range(1000))
    assert 0 <= t.seconds < 5
    assert "torch" in common.environment_line(torch.device("cpu"))


# --------------------------------------------------------------------------- _accuracy helpers

sys.path.insert(0, str(_PATH.parent))  # _accuracy imports _common and plots as top-level modules
accuracy = importlib.import_module("_accuracy")


def _run(correct: list[int], images: int, ann_correct: int) -> object:
    """A Run whose curve has the given correct counts per step (one hidden spike per step)."""
    steps = len(correct)
    ones = torch.ones(steps, dtype=torch.long) * images
    res = EvaluationResult(
        coding="weighted", num_steps=steps, num_samples=images,
        correct=torch.tensor(correct), labels=torch.zeros(images, dtype=torch.long),
        final_predictions=torch.zeros(images, dtype=torch.long),
        final_readout=torch.zeros(images, 2), spikes={"1": ones}, synops={"1": ones},
        input_spikes=torch.zeros(steps, dtype=torch.long),
        total_spikes=torch.full((images,), steps), total_synops=torch.full((images,), steps),
        num_neurons={"1": 1}, fanout={})
    return accuracy.Run("weighted", res, ann_correct)


def test_reach_counts_images() -> None:
    run = _run([0, 980, 991, 989, 990, 1000, 1000], images=1000, ann_correct=1000)
    # 1 %p of 1000 images = 10: from step 5 on the count stays >= 990 (step 4 has 989)
    assert accuracy.reach(run, 0.01).step == 5
    assert accuracy.reach(run, 0.01).spikes == 5.0  # one spike per image and step
    assert accuracy.reach(run, 0.0).step == 6
    assert accuracy.reach(run, 0.001).step == 6  # 999 is never reached before 1000
    short = _run([0, 50], images=100, ann_correct=60)
    never = accuracy.reach(short, 0.001)  # 0.1 %p of 100 images: at least 60 correct
    assert never.step is None and never.window == 2 and never.window_spikes == 2.0
    assert accuracy.ratio(never, accuracy.reach(run, 0.0), "steps") == "> 0.3x"
    assert accuracy.ratio(accuracy.reach(run, 0.0), accuracy.reach(run, 0.01), "steps") == "1.2x"


def test_pretrained_missing_names_the_fallback(monkeypatch) -> None:
    monkeypatch.delattr(accuracy.models, "pretrained", raising=False)
    with pytest.raises(SystemExit, match="--retrain"):
        accuracy._pretrained("net4")

    def absent(name):
        raise RuntimeError(f"weights for {name!r} are missing")

    monkeypatch.setattr(accuracy.models, "pretrained", absent, raising=False)
    with pytest.raises(SystemExit, match="net4.*missing.*--retrain"):
        accuracy._pretrained("net4")


def test_benchmark_options() -> None:
    full = {"weighted_images": 10000, "rate_images": 2000, "rate_steps": 2048,
            "radix_images": 100, "radix_step_images": 1000, "bits": [2, 4], "epochs": 4,
            "finetune_size": 10, "finetune_epochs": 1, "finetune_val": 5, "calib_size": 10,
            "finetune_lr": 3e-4}
    quick = {**full, "weighted_images": 20, "skip": {"b": 1}}
    parser = argparse.ArgumentParser()
    accuracy.add_options(parser, ["a", "b"], full, quick)
    args = parser.parse_args(["--skip", "a=3", "--rate-images", "7"])
    args.quick = False
    args = accuracy.apply_defaults(args, full, quick)
    assert args.skip == {"a": 3} and args.rate_images == 7 and args.weighted_images == 10000
    assert args.finetune_lr == 3e-4
    args = parser.parse_args([])
    args.quick = True
    assert accuracy.apply_defaults(args, full, quick).skip == {"b": 1}
    with pytest.raises(SystemExit, match="NET=PERIODS"):
        accuracy.parse_skips(["a:3"])
    args = parser.parse_args(["--rate-images", "0"])
    args.quick = False
    with pytest.raises(SystemExit, match="rate-images"):
        accuracy.apply_defaults(args, full, quick)
    parsed = common.parse_args("x", None, ["--retrain", "--fresh"])
    assert parsed.retrain and parsed.fresh


fashion_mnist = importlib.import_module("fashion_mnist")


def _fashion_full_args() -> argparse.Namespace:
    """``benchmarks/fashion_mnist.py``'s arguments of its full run."""
    parsed = fashion_mnist.parse_args(
        "x", lambda p: accuracy.add_options(p, fashion_mnist.NETS, fashion_mnist.FULL,
                                            fashion_mnist.QUICK), ["--device", "cpu"])  # fmt: skip
    return accuracy.apply_defaults(parsed, fashion_mnist.FULL, fashion_mnist.QUICK)


def test_fashion_radix_settings_are_unchanged() -> None:
    from snntorch_weighted import reference_radix

    # fashion_mnist.py's FULL radix entries (and --finetune-lr) before the recipe moved to
    # reference_radix; calibration drawn with --seed itself.
    args = _fashion_full_args()
    before = {"finetune_size": 10000, "finetune_epochs": 2, "finetune_val": 5000,
              "calib_size": 1000, "finetune_lr": 1e-4}  # fmt: skip
    assert {k: getattr(args, k) for k in before} == before
    assert reference_radix.calib_seed_offset("fashion_mnist") == 0
    for net in ("net1", "net2"):
        recipe = reference_radix.default_recipe(net, 4)
        assert recipe == reference_radix.RadixRecipe(net, 4)
        assert accuracy.run_recipe(net, 4, args, args.seed) == recipe
    with pytest.raises(ValueError, match="no radix recipe for dataset 'mnist'"):
        reference_radix.calib_seed_offset("mnist")


def test_committed_radix_only_for_its_ann_and_recipe() -> None:
    from snntorch_weighted import models, quant

    if "net2-radix4" not in models.available_pretrained():
        pytest.skip("no committed net2-radix4 (reference net2 --radix 4)")
    sha = models.read_manifest("net2")["sha256"]
    key = f"pretrained net2 sha256 {sha}"
    args = _fashion_full_args()  # the full Fashion-MNIST run matches the committed models

    def found(bits: int, run: argparse.Namespace, ann_key: str = key, calib_seed: int = 0):
        return accuracy.committed_radix(accuracy.run_recipe("net2", bits, run, calib_seed),
                                        run, ann_key)  # fmt: skip

    info = found(4, args)
    assert info is not None and info["source"].startswith("committed")
    assert quant.is_prepared(info["model"]) and len(info["history"]) == 3
    committed = models.read_manifest("net2-radix4")
    assert info["source"].endswith(committed["sha256"])
    assert info["seconds"] == committed["finetune_seconds"]
    assert found(3, args) is None  # no such T committed
    assert found(4, args, key.replace(sha[:8], "0" * 8)) is None
    assert found(4, args, '{"net": "net2"}') is None  # --retrain ANN
    assert found(4, args, calib_seed=2) is None  # calibration images of another draw
    for change in ({"fresh": True}, {"retrain": True}, {"finetune_size": 500}, {"seed": 1},
                   {"calib_size": 200}, {"finetune_lr": 1e-3}, {"finetune_epochs": 1},
                   {"finetune_val": 2000}):
        other = argparse.Namespace(**{**vars(args), **change})
        assert found(4, other, calib_seed=other.seed) is None, change

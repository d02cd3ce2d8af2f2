"""Tests of benchmarks/_common.py (argument parsing, checkpoint cache, BENCHMARKS.md sections)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

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

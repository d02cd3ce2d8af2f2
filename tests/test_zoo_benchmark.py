"""Tests of benchmarks/zoo.py's metric: the cosine of the decoded output to the ANN's."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"
_spec = importlib.util.spec_from_file_location("bench_zoo", _PATH)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)


def _reference_cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_cosine_is_scale_free_for_tiny_outputs():
    """Outputs of norm ~1e-9 (a random-weight mobilenet_v2's logits) keep their cosine;
    torch's cosine_similarity clamps each norm to 1e-8 and reads them as nearly orthogonal."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 1000, generator=g, dtype=torch.float64)
    b = a + 0.1 * b
    want = _reference_cosine(a.flatten().tolist(), b.flatten().tolist())
    for scale in (1.0, 1e-9, 1e-12):
        small_a, small_b = (a * scale).float(), (b * scale).float()
        assert math.isclose(zoo.cosine(small_a, small_b), want, rel_tol=1e-5)
    tiny = (a * 1e-10).float()
    assert math.isclose(zoo.cosine(tiny, tiny), 1.0, rel_tol=1e-6)
    clamped = torch.nn.functional.cosine_similarity(tiny.flatten(), tiny.flatten(), dim=0)
    assert clamped < 0.5  # the defect the helper avoids


def test_cosine_of_a_zero_output_is_zero():
    x = torch.randn(1, 10)
    assert zoo.cosine(torch.zeros(1, 10), x) == 0.0
    assert math.isclose(zoo.cosine(-x, x), -1.0, rel_tol=1e-9)

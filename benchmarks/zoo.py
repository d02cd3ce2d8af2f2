"""Model zoo: which torchvision classification models convert, and how well (issue 21).

For every torchvision classification model (random weights, eval mode, 64x64 inputs, or the
smallest of 96, 128, 224 for a model whose ANN fails at 64x64; the two that do not fit in memory,
``vit_h_14`` and ``regnet_y_128gf``, are listed as skipped):

1. ``check``: :func:`snntorch_weighted.conversion.graph.check` -- the blocking nodes, if any;
2. ``weighted``: ``convert(coding="weighted", num_phases=8)`` calibrated on a few random images,
   simulated for 256 steps on one image; cosine similarity (:func:`cosine`) of the decoded output
   to the ANN's at 16 / 64 / 256 steps;
3. ``radix``: ``quant.prepare(num_bits=4)`` + ``convert(coding="radix")``, run for its latency;
   bit-exact when the SNN's output membrane equals the quantised model's integer output
   (``quant.integer_activations``, float64) element for element.

The SNNs are run with ``sw.simulate(..., fold=True)``: every time step, the same values as the
step loop. Each model runs in a subprocess with a time limit (1 thread, batch 1) and writes its own
JSON under ``runs/zoo/`` (gitignored); a rerun skips models already done, so the run is resumable.
The table is rendered to the ``zoo`` section of ``BENCHMARKS.md`` and to
``benchmarks/results/zoo.md``::

    nice python benchmarks/zoo.py                  # all models, resumable
    nice python benchmarks/zoo.py --models resnet18 squeezenet1_0
    python benchmarks/zoo.py --render              # only rewrite the table
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "zoo"
TABLE = ROOT / "benchmarks" / "results" / "zoo.md"
TOO_LARGE = {"vit_h_14", "regnet_y_128gf"}
STEPS = (16, 64, 256)
CALIBRATION = 4
SIZE = 64
SIZES = (SIZE, 96, 128, 224)  # larger only for models whose ANN fails at 64x64


def _models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _save(name: str, record: dict) -> None:
    """Merge ``record`` into the model's JSON (a run of another stage may have written it
    meanwhile) and write it atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    merged = {**(_load(name) or {}), **record}
    tmp = RESULTS / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(merged, indent=1))
    tmp.replace(RESULTS / f"{name}.json")


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _short(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"


def cosine(a, b) -> float:
    """Cosine similarity ``a . b / (|a| |b|)`` of two tensors (flattened, float64); 0 when either
    is all zeros.

    Not ``torch.nn.functional.cosine_similarity``: it divides by ``max(|a|, 1e-8) max(|b|, 1e-8)``,
    which shrinks the cosine of small vectors towards 0. Randomly initialised deep nets give
    outputs that small (``mobilenet_v2`` at 64x64: norm 4e-9, so an exact match read 0.155).
    """
    a, b = a.flatten().double(), b.flatten().double()
    norms = float(a.norm() * b.norm())
    return float(a @ b) / norms if norms > 0 else 0.0


def _weighted(model, calib, x, ref) -> dict:
    import snntorch_weighted as sw

    start = time.time()
    snn = sw.convert(model, calib, coding="weighted", num_phases=8, progress=False)
    estimate = sw.simulate(snn, x, max(STEPS), fold=True).estimate  # [T, 1, C], every step run
    cos = {str(t): cosine(estimate[t - 1], ref) for t in STEPS}
    return {"ok": True, "cos": cos, "ann_norm": float(ref.double().norm()),
            "seconds": round(time.time() - start, 1)}


def _radix(model, calib, x) -> dict:
    import torch

    import snntorch_weighted as sw
    from snntorch_weighted import quant
    from snntorch_weighted.conversion.radix import convert_radix

    start = time.time()
    prepared = quant.prepare(copy.deepcopy(model), num_bits=4, calibration_data=calib)
    snn = convert_radix(prepared)
    exact_twin = copy.deepcopy(prepared).double().eval()
    want = quant.integer_activations(exact_twin, x.double())["output_quant"]
    mem = sw.simulate(snn, x.double(), snn.latency, fold=True).mem[-1]  # every step run
    exact = torch.equal(mem.round().long(), want) and torch.equal(mem, mem.round())
    return {"ok": True, "bit_exact": bool(exact), "latency": snn.latency,
            "seconds": round(time.time() - start, 1)}


def run_one(name: str, stages: list[str]) -> None:
    """Check, weighted and radix stages of one model; each stage's result is saved at once."""
    import torch
    import torchvision

    from snntorch_weighted.conversion.graph import check

    torch.set_num_threads(1)
    torch.manual_seed(0)
    record = _load(name) or {"model": name}
    model = torchvision.models.get_model(name, weights=None).eval()
    for size in SIZES:  # the smallest input the ANN runs on, 64x64 where it can
        calib = torch.rand(CALIBRATION, 3, size, size)
        x = torch.rand(1, 3, size, size)
        try:
            with torch.no_grad():
                ref = model(x)
            break
        except Exception as err:  # the ANN itself does not run at this size
            record["ann"] = _short(err)
    else:
        _save(name, record)
        return
    record.pop("ann", None)
    record["size"] = size
    record["params"] = sum(p.numel() for p in model.parameters())
    if "check" not in record:
        record["check"] = [str(b) for b in check(model, calib)]
        _save(name, record)
    for stage, fn, args in (("weighted", _weighted, (model, calib, x, ref)),
                            ("radix", _radix, (model, calib, x))):
        if stage in record or stage not in stages:
            continue
        try:
            record[stage] = fn(*args)
        except Exception as err:
            record[stage] = {"ok": False, "error": _short(err),
                             "where": traceback.format_exc().splitlines()[-3][:200]}
        _save(name, record)


def _cell_weighted(rec: dict) -> str:
    w = rec.get("weighted")
    if not w:
        return "not run"
    if not w["ok"]:
        return "fails: " + w["error"][:80].replace("|", "/")
    return " / ".join(f"{w['cos'][str(s)]:.3f}" for s in STEPS)


def _cell_radix(rec: dict) -> str:
    r = rec.get("radix")
    if not r:
        return "not run"
    if not r["ok"]:
        return "fails: " + r["error"][:80].replace("|", "/")
    return ("bit-exact" if r["bit_exact"] else "**differs**") + f" (latency {r['latency']})"


def render(names: list[str]) -> str:
    """The markdown table of all results so far (and the counts)."""
    rows, n_weighted, n_radix, n_models = [], 0, 0, 0
    for name in names:
        if name in TOO_LARGE:
            rows.append(f"| {name} | skipped: does not fit in memory | | |")
            continue
        n_models += 1
        rec = _load(name)
        if rec is None:
            rows.append(f"| {name} | not run | | |")
            continue
        if "ann" in rec:
            rows.append(f"| {name} | the ANN fails up to 224x224: {rec['ann'][:60]} | | |")
            continue
        blockers = rec.get("check", [])
        check_cell = "ok" if not blockers else f"{len(blockers)} blockers, e.g. " + \
            blockers[0][:70].replace("|", "/")
        n_weighted += bool(rec.get("weighted", {}).get("ok"))
        n_radix += bool(rec.get("radix", {}).get("bit_exact"))
        label = name if rec.get("size", SIZE) == SIZE else f"{name} ({rec['size']}x{rec['size']})"
        rows.append(f"| {label} | {check_cell} | {_cell_weighted(rec)} | {_cell_radix(rec)} |")
    seconds = sum(rec.get(stage, {}).get("seconds") or 0 for name in names
                  for rec in [_load(name) or {}] for stage in ("weighted", "radix"))
    head = [
        f"Weighted conversion runs on **{n_weighted} of {n_models}** models; radix (T = 4) is "
        f"bit-exact on **{n_radix}**. Conversion + simulation time of all weighted and radix "
        f"stages: {seconds / 60:.0f} min (1 thread; per model and stage in `runs/zoo/*.json`).",
        "",
        "| model | check | weighted K=8: cosine to ANN at 16 / 64 / 256 steps | radix T=4 |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"


def section(table: str) -> str:
    """The ``zoo`` section of BENCHMARKS.md: what was run, how, and the table."""
    import torch
    from _common import environment_line

    return "\n\n".join([
        "## torchvision model zoo (issue 21)",
        "Command: `python benchmarks/zoo.py` (resumable; `--render` rewrites this section from "
        "`runs/zoo/`).",
        environment_line(torch.device("cpu")).replace("Measured", "Rendered"),
        "Every torchvision classification model with random weights (`torch.manual_seed(0)`), "
        "eval mode, 64x64 inputs (or the smallest of 96 / 128 / 224 the ANN accepts), 4 random "
        "calibration images, one random test image, batch 1, 1 thread. *check*: "
        "`sw.check(model, x)` (every blocking node). *weighted*: `convert(coding=\"weighted\", "
        "num_phases=8)` and `simulate(fold=True)` for 256 steps; cosine similarity of the "
        "decoded output to the ANN's. *radix*: `quant.prepare(num_bits=4)` + "
        "`convert(coding=\"radix\")`, simulated for its latency in float64; bit-exact when the "
        "output membrane equals the quantised model's integer output "
        "(`quant.integer_activations`) element for element. The cosine is computed exactly "
        "in float64 (`zoo.cosine`; `F.cosine_similarity` clamps norms below 1e-8, and random-"
        "weight MobileNet-v2 / MnasNet outputs have norms of 4e-9 to 2e-7). On the deepest nets "
        "(ResNet-101/152, wide ResNets, ResNeXt-101, RegNets) the cosine is still near 0 at "
        "16-64 steps: their outputs take more steps to build up, and they reach 0.97-0.999 by "
        "256 steps.",
        table.rstrip(),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every torchvision classifier")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    parser.add_argument("--render", action="store_true", help="only rewrite the table")
    parser.add_argument("--stages", nargs="*", default=["weighted", "radix"])
    parser.add_argument("--redo", nargs="*", default=[], help="forget these stages' results "
                        "(check, weighted, radix) of the selected models and rerun them")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.stages)
        return
    names = _models()
    todo = [n for n in (args.models or names) if n not in TOO_LARGE]
    if not args.render:
        for name in todo:
            _run_model(name, args)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    table = render(names)
    TABLE.write_text(table)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import BENCHMARKS_MD, write_section

    write_section(BENCHMARKS_MD, "zoo", section(table))
    print(table)


def _run_model(name: str, args) -> None:
    """Run the missing stages of one model in subprocesses; a stage past the limit is recorded
    as a timeout and the next stage gets its own subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rec = _load(name)
    if rec and args.redo:
        for stage in args.redo:
            rec.pop(stage, None)
        RESULTS.joinpath(f"{name}.json").write_text(json.dumps(rec, indent=1))
    for _ in range(len(args.stages) + 1):
        rec = _load(name) or {}
        missing = [s for s in args.stages if s not in rec]
        if "ann" in rec or not missing:
            return
        print(f"[zoo] {name}: {missing}", flush=True)
        try:
            subprocess.run([sys.executable, __file__, "--one", name, "--stages", *args.stages],
                           env=env, timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            rec = _load(name) or {"model": name}
            stage = next((s for s in args.stages if s not in rec), None)
            if stage is not None:
                rec[stage] = {"ok": False, "error": f"timeout ({args.timeout} s)"}
                _save(name, rec)


if __name__ == "__main__":
    main()

"""Speed of this checkout side by side with a baseline commit, in one run on one machine.

Rows (random weights, converted with random calibration data in [0, 1], weighted code K = 8,
batch 1, T = 8 unless given otherwise), for the CIFAR-10 Net4 CNN and ResNet-20:

* *step loop*: ``simulate(snn, x, T, fold=False)``, time per step (the call's time / T), and
  its split into a per-call set-up and a marginal step (from calls of T and T / 4 steps in the
  same rounds);
* *folded runner*: ``simulate(snn, x, T, fold=True)``, time per call;
* *bare loop*: ``reset(snn); for t: snn(train[t])`` (no counting), time per step;
* this checkout only, where its step loop's time goes: *program* (the step program, every
  module called as ``module(x)``, nothing counted), *counted* (the same with the counting), per
  step, and *check* (the per-call check that the kept fan-outs are still valid);
* *neuron step*: one ``WeightedLeaky`` step against one ``snntorch.Leaky`` step (both
  ``init_hidden=True``, inference) on Net4's first hidden layer at batch 1 ``[1, 32, 32, 32]``,
  and *neuron block*: a ``WeightedLeaky`` step inside ``forward_steps`` on 8 steps of that
  shape (the folded runner's neuron kernel), per step.

How: the baseline commit is exported with ``git archive`` into a temporary directory (nothing in
the repository changes). Both code bases are timed by this same script in worker subprocesses
(``--worker ROOT``: only ``ROOT`` on the import path), alternating baseline / this checkout
``--pairs`` times, so that load on the machine hits both alike. A worker builds the nets, warms
up, then runs rounds in which every path runs once (order rotated), and reports every round's
times. A path's figure is its best round over all workers of its side (on a shared machine the
best approaches the unloaded speed); *ratio* is this checkout's best / the baseline's best, and
*paired* the median over pairs of the ratio of the two workers' median times (load that changes
between pairs cancels).

Criteria (issue 19): folded runner within 10 % of the baseline, step loop within 15 % per step,
WeightedLeaky step at most 1.1x an snn.Leaky step.

Run::

    nice python benchmarks/speed.py --baseline f66c7c1 --threads 1 --output /tmp/speed.md
    nice python benchmarks/speed.py --baseline f66c7c1 --quick      # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MODELS = ("Net4", "ResNet-20")
CRITERIA = {"folded": 1.10, "loop": 1.15}
"""Largest allowed ratio (this checkout / baseline) per path."""
NEURON_LIMIT = 1.10
"""Largest allowed WeightedLeaky step / snn.Leaky step."""


# --------------------------------------------------------------------------- worker


def _rounds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Every function once per round (after one warm-up call each), order rotated; seconds."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _network_paths(name: str, steps: int) -> dict[str, Callable[[], object]]:
    """The simulate paths of one model (imports resolve to the worker's code base)."""
    import torch

    import snntorch_weighted as sw
    from snntorch_weighted import models

    torch.manual_seed(0)
    ann = {"Net4": models.net4, "ResNet-20": models.resnet20}[name]().eval()
    snn = sw.convert(ann, torch.rand(16, 3, 32, 32), coding="weighted", num_phases=8,
                     progress=False)
    x = torch.rand(1, 3, 32, 32)
    train = snn.encode(x, steps)
    short = max(1, steps // 4)

    @torch.no_grad()
    def bare() -> None:
        sw.reset(snn)
        for x_t in train:
            snn(x_t)

    paths = {
        f"{name}/loop": lambda: sw.simulate(snn, x, steps, fold=False),
        f"{name}/loop_short": lambda: sw.simulate(snn, x, short, fold=False),
        f"{name}/folded": lambda: sw.simulate(snn, x, steps, fold=True),
        f"{name}/bare": bare,
    }
    paths.update(_part_paths(name, snn, train))
    return paths


def _part_paths(name: str, snn, train) -> dict[str, Callable[[], object]]:
    """Where this checkout's step loop spends its time (absent on a baseline without these
    modules): the step program with every module called as ``module(x)`` and nothing counted
    (``program``), the same with the counting (``counted``), and the per-call check that the
    fan-outs are still valid (``check``, time per call)."""
    try:
        from snntorch_weighted.simulation.counting import (
            Counter,
            network_profile,
            watched_modules,
        )
        from snntorch_weighted.simulation.loop import StepProgram
        from snntorch_weighted.simulation.plain import emits_binary
    except ImportError:
        return {}
    import torch

    import snntorch_weighted as sw

    modules, spiking = watched_modules(snn)
    _, fans = network_profile(snn, train[0])

    class _Nothing:
        def add(self, *args, **kwargs) -> None:
            pass

    @torch.no_grad()
    def program(counted: bool) -> None:
        sw.reset(snn)
        step = StepProgram(snn.graph, set(modules))
        counter = Counter({n: f for n, f in fans.items() if n in modules}, spiking, False,
                          {n for n in spiking if emits_binary(modules[n])})
        for x_t in train:
            step.step(x_t, counter if counted else _Nothing())
        counter.results()

    return {f"{name}/program": lambda: program(False), f"{name}/counted": lambda: program(True),
            f"{name}/check": lambda: network_profile(snn, train[0])}


def _neuron_paths(repeats: int = 48) -> dict[str, Callable[[], object]]:
    """``repeats`` steps of a WeightedLeaky and of an snn.Leaky on the same input, and
    ``repeats`` steps of a WeightedLeaky in blocks of 8 through ``forward_steps`` (the folded
    runner's kernel)."""
    import snntorch
    import torch

    import snntorch_weighted as sw

    x = torch.rand(1, 32, 32, 32) * 0.5
    neurons = {"neuron/weighted": sw.WeightedLeaky(num_phases=8, init_hidden=True),
               "neuron/leaky": snntorch.Leaky(beta=1.0, init_hidden=True)}

    def steps(neuron) -> Callable[[], None]:
        @torch.no_grad()
        def run() -> None:
            neuron.reset_mem()
            for _ in range(repeats):
                neuron(x)
        return run

    def block(neuron) -> Callable[[], None]:
        train = torch.rand(8, *x.shape) * 0.5

        @torch.no_grad()
        def run() -> None:
            for _ in range(repeats // 8):
                neuron.reset_mem()
                neuron.forward_steps(train)
        return run

    paths = {key: steps(n) for key, n in neurons.items()}
    weighted = sw.WeightedLeaky(num_phases=8, init_hidden=True)
    if hasattr(weighted, "forward_steps"):
        paths["neuron/block"] = block(weighted)
    return paths


def worker(root: str, models: list[str], steps: int, rounds: int, threads: int) -> None:
    """Time every path with the code base at ``root``; prints ``{path: [seconds per round]}``."""
    sys.path.insert(0, root)
    import torch

    torch.set_num_threads(threads)
    fns: dict[str, Callable[[], object]] = {}
    for name in models:
        fns.update(_network_paths(name, steps))
    fns.update(_neuron_paths())
    print(json.dumps(_rounds(fns, rounds)))


# --------------------------------------------------------------------------- parent


def _export(commit: str, into: Path) -> Path:
    """The files of ``commit`` under ``into`` (``git archive``: the repository is untouched)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _run_worker(root: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(root), "--steps",
           str(args.steps), "--rounds", str(args.rounds), "--threads", str(args.threads),
           "--models", *args.models]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _per_step(times: list[float], key: str, steps: int) -> list[float]:
    """Seconds per step (network paths per call / T; neuron paths per 48 steps)."""
    if key.endswith(("/folded", "/check")):
        return times
    if key.startswith("neuron/"):
        return [t / 48 for t in times]
    return [t / steps for t in times]


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[list[float]]]]:
    """``{side: {path: [times of each worker]}}``, sides ``"baseline"`` and ``"new"``."""
    repo = Path(__file__).resolve().parents[1]
    results: dict[str, dict[str, list[list[float]]]] = {"baseline": {}, "new": {}}
    with tempfile.TemporaryDirectory(prefix="speed-baseline-") as tmp:
        roots = {"baseline": _export(args.baseline, Path(tmp)), "new": repo}
        for pair in range(args.pairs):
            order = ["baseline", "new"] if pair % 2 == 0 else ["new", "baseline"]
            for side in order:
                print(f"[speed] pair {pair + 1}/{args.pairs}: {side}", file=sys.stderr,
                      flush=True)
                for key, times in _run_worker(roots[side], args).items():
                    results[side].setdefault(key, []).append(times)
    return results


def _marginal(loop: list[float], short: list[float], steps: int) -> tuple[float, float]:
    """(marginal step, set-up) seconds from paired calls of ``steps`` and ``steps // 4`` steps
    (medians over rounds)."""
    few = max(1, steps // 4)
    marginal = [(a - b) / (steps - few) for a, b in zip(loop, short, strict=True)]
    setup = [b - few * m for b, m in zip(short, marginal, strict=True)]
    return statistics.median(marginal), statistics.median(setup)


def summarise(results: dict, steps: int) -> list[dict]:
    """One row per path: best per side, ratio of bests, paired median ratio."""
    rows = []
    for key in results["new"]:
        if key.endswith("/loop_short"):
            continue
        if key not in results["baseline"]:  # this checkout's parts
            best = min(min(_per_step(t, key, steps)) for t in results["new"][key])
            rows.append({"path": key, "baseline": None, "new": best, "ratio": None,
                         "paired": None})
            continue
        best = {side: min(min(_per_step(t, key, steps)) for t in results[side][key])
                for side in results}
        paired = statistics.median(
            statistics.median(n) / statistics.median(b)
            for n, b in zip(results["new"][key], results["baseline"][key], strict=True))
        row = {"path": key, "baseline": best["baseline"], "new": best["new"],
               "ratio": best["new"] / best["baseline"], "paired": paired}
        if key.endswith("/loop"):
            short = key + "_short"
            for side in results:
                splits = [_marginal(a, b, steps) for a, b in
                          zip(results[side][key], results[side][short], strict=True)]
                row[f"{side}_marginal"] = min(m for m, _ in splits)
                row[f"{side}_setup"] = statistics.median(s for _, s in splits)
        rows.append(row)
    return rows


def _verdict(row: dict) -> str:
    kind = row["path"].split("/")[1]
    limit = CRITERIA.get(kind)
    if limit is None or row["ratio"] is None:
        return "-"
    return f"{'met' if row['ratio'] <= limit else 'MISSED'} (<= {limit:.2f})"


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    import torch
    from _common import environment_line, markdown_table

    units = {"loop": "ms / step", "folded": "ms / call", "bare": "ms / step",
             "program": "ms / step", "counted": "ms / step", "check": "ms / call",
             "weighted": "us / step", "leaky": "us / step", "block": "us / step"}
    table = []
    for row in rows:
        kind = row["path"].split("/")[1]
        scale = 1e6 if row["path"].startswith("neuron/") else 1e3
        base = None if row["baseline"] is None else row["baseline"] * scale
        ratios = ["-" if row[k] is None else f"{row[k]:.3f}" for k in ("ratio", "paired")]
        table.append([row["path"], units[kind], base, row["new"] * scale, *ratios,
                      _verdict(row)])
    splits = [[r["path"], r["baseline_marginal"] * 1e3, r["new_marginal"] * 1e3,
               r["baseline_setup"] * 1e3, r["new_setup"] * 1e3] for r in rows if "new_setup" in r]
    neuron = {r["path"]: r for r in rows if r["path"].startswith("neuron/")}
    lines = []
    for side in ("baseline", "new"):
        ratio = neuron["neuron/weighted"][side] / neuron["neuron/leaky"][side]
        verdict = "met" if ratio <= NEURON_LIMIT or side == "baseline" else "MISSED"
        lines.append(f"WeightedLeaky step / snn.Leaky step ({side}): {ratio:.3f} ({verdict}, "
                     f"criterion <= {NEURON_LIMIT})")
    return "\n\n".join([
        "## Speed: this checkout vs the baseline",
        f"Command: `{command}`  \n{environment_line(torch.device('cpu'))}",
        f"Baseline `{args.baseline}`; batch 1, T = {args.steps}, {args.pairs} worker pairs x "
        f"{args.rounds} rounds (method: `benchmarks/speed.py` docstring).",
        markdown_table(["path", "unit", "baseline (best)", "this (best)", "ratio",
                        "paired ratio", "criterion"], table),
        "Step loop split (ms): marginal step (best) and per-call set-up (median)",
        markdown_table(["path", "baseline marginal", "this marginal", "baseline set-up",
                        "this set-up"], splits),
        "  \n".join(lines),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", default="f66c7c1", help="commit to compare with")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=8, help="T of the network rows")
    parser.add_argument("--pairs", type=int, default=4, help="baseline / new worker pairs")
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per worker")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one pair, 3 rounds, Net4")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file whose 'speed' section is rewritten (default: none)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.models, args.steps, args.rounds, args.threads)
        return
    if args.quick:
        args.pairs, args.rounds, args.models = 1, 3, ["Net4"]
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    rows = summarise(measure(args), args.steps)
    text = report(rows, args, command)
    print(text)
    if args.output is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import write_section

        write_section(args.output, "speed", text)


if __name__ == "__main__":
    main()

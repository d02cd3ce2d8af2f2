"""Speed of the simulation paths: step loop vs time-folded runner vs snntorch.Leaky, radix shortcut.

For the CIFAR-10 Net4 CNN and ResNet-20 (random weights: speed does not depend on training;
converted with random calibration data in [0, 1]) at batch 1 and 64 this measures, in one run on
one machine:

* (a) ``simulate(snn, x, T, fold=False)``: the converted weighted-spike net step by step;
* (b) ``simulate(snn, x, T, fold="auto")``: the automatic choice (time-folded runner);
* (c) the same architecture built from plain ``snntorch.Leaky`` IF neurons
  (``convert(coding="rate")``: same layers, ``SpikeMaxPool2d``, same batch), stepped by the same
  ``simulate(fold=False)``, so both carry the same counting hooks; and both nets' bare step loops
  (``reset(net); for t: net(train[t])``, input train encoded beforehand, no hooks);
* (d) one ANN forward pass at the same batch;
* the radix SNN (T = 4, 8) simulated (``simulate``, default path) vs ``simulate(shortcut=True)``
  (checked identical: membranes, per-layer spikes and SynOps per step);
* peak memory of each path;
* where a step's time goes (bare loops at T = 32 / the batch-64 cap): the converted net, copies
  of it with the hidden neurons replaced by ``nn.ReLU`` and / or the spike max-pools by
  ``nn.MaxPool2d`` (same weight layers, BatchNorm folded), and ``simulate(fold=False)``, each
  relative to the ANN forward.

Timing: one warm-up call, then rounds in which every path runs once (interleaved, so load
changes hit all paths alike): at least ``--repeats`` rounds (radix at batch > 1: one), and
more while the configuration has been timed for less than ``--budget``
seconds (at most 60 rounds); the order of the paths rotates from round to round. Each path's
best round gives its steps / second: on a shared virtual machine single rounds vary by +-30 %,
the best of many approaches the unloaded speed. Ratios between paths are the median over rounds
of the ratio within a round (paths timed seconds apart share the load of that moment). The ANN
is timed as a loop of as many forwards as the SNN call has steps.
Each timed call simulates ``min(T, cap)`` steps (``--max-steps``, default: all T at batch 1, 16
at batch 64) and the reported rate is steps / second of that call (fixed per-call costs such as
encoding included).

Memory: on CPU, the rise of the process's peak resident set (``VmHWM`` after resetting it
through ``/proc/self/clear_refs`` and trimming malloc's free lists) during one call, so memory
the allocator already held is not counted; on CUDA ``torch.cuda.max_memory_allocated`` above the
memory allocated before the call. Measured once per path after the timings (everything warm).

Run::

    python benchmarks/speed.py --threads 2            # full run (about 15 min on 2 cores)
    python benchmarks/speed.py --threads 2 --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Timer,
    environment_line,
    log,
    markdown_table,
    parse_args,
    write_section,
)

from snntorch_weighted import models  # noqa: E402
from snntorch_weighted.conversion.convert import convert  # noqa: E402
from snntorch_weighted.conversion.layers import SpikeMaxPool2d  # noqa: E402
from snntorch_weighted.neurons.reset import reset  # noqa: E402
from snntorch_weighted.simulation.metrics import is_neuron  # noqa: E402
from snntorch_weighted.simulation.runner import simulate  # noqa: E402

MODELS: dict[str, Callable[[], nn.Module]] = {"Net4": models.net4, "ResNet-20": models.resnet20}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=None,
                        help="least timed rounds per configuration (default 3, --quick 2)")
    parser.add_argument("--budget", type=float, default=None,
                        help="more rounds until a configuration was timed this long, seconds "
                             "(default 8, --quick 0)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap on the steps of one timed call (default: T at batch 1, 16 at "
                             "batch 64; --quick 8)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--steps", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--radix-bits", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--radix-batches", nargs="+", type=int, default=None,
                        help="batches of the radix comparison (default: --batches)")
    parser.add_argument("--num-phases", type=int, default=8, help="K of the weighted code")


# --------------------------------------------------------------------------- measuring


MAX_ROUNDS = 60
RATIOS = (("loop", "auto"), ("loop", "leaky"), ("bare_w", "bare_leaky"), ("loop", "ann"),
          ("bare_w", "ann"))
"""Time ratios reported per configuration (paired per round, :func:`paired_ratio`)."""


def time_rounds(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warm: bool = True, budget: float = 0.0) -> dict[str, list[float]]:
    """Wall time of each function in every round (after a warm-up): at least ``repeats``
    rounds, more until ``budget`` seconds were spent (at most ``MAX_ROUNDS``). Every round runs
    each function once, in an order rotated from round to round."""
    for fn in fns.values() if warm else ():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < budget and rounds < MAX_ROUNDS):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            with Timer(device) as t:
                fns[name]()
            times[name].append(t.seconds)
        rounds += 1
    return times


def best_time(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
              warm: bool = True, budget: float = 0.0) -> dict[str, float]:
    """Best wall time of each function over :func:`time_rounds`; ``"rounds"``: how many."""
    times = time_rounds(fns, repeats, device, warm, budget)
    return {**{name: min(ts) for name, ts in times.items()},
            "rounds": float(len(next(iter(times.values()))))}


def split_call(times: dict[str, list[float]], steps: int, short: int) -> dict[str, float]:
    """The step loop's time per call as ``setup + steps * marginal``, from calls of ``steps``
    and ``short`` steps in the same rounds (medians over rounds): ``marginal / ANN fwd`` (the
    cost of one more step) and the per-call set-up in seconds (encoding, counting tables,
    decoding: paid once per call)."""
    marginal = [(a - b) / (steps - short) for a, b in
                zip(times["loop"], times["loop_short"], strict=True)]
    ann = [a / steps for a in times["ann"]]
    return {
        "marginal/ann": statistics.median(m / a for m, a in zip(marginal, ann, strict=True)),
        "setup": statistics.median(b - short * m for b, m in
                                   zip(times["loop_short"], marginal, strict=True)),
    }


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``num``'s time / ``den``'s time in the same round: load that changes
    between rounds (this VM's neighbours) cancels out, unlike in a ratio of two best times."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Rise of peak memory during one call of ``fn`` (module docstring), MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS")
    except OSError:
        return float("nan")
    fn()
    return (_rss_kib("VmHWM") - base) / 1024


# --------------------------------------------------------------------------- networks


@dataclass
class Nets:
    ann: nn.Module
    weighted: nn.Module
    rate: nn.Module
    radix: dict[int, nn.Module]


def build(name: str, args: argparse.Namespace) -> Nets:
    torch.manual_seed(args.seed)
    ann = MODELS[name]().eval().to(args.device)
    calib = torch.rand(64, 3, 32, 32, device=args.device)
    weighted = convert(ann, calib, coding="weighted", num_phases=args.num_phases,
                       progress=False)
    rate = convert(ann, calib, coding="rate", progress=False)
    radix = {bits: convert(ann, calib, coding="radix", num_bits=bits).to(args.device)
             for bits in args.radix_bits}
    return Nets(ann, weighted, rate, radix)


def bare_loop(net: nn.Module, train: torch.Tensor) -> Callable[[], None]:
    """``reset(net); for t: net(train[t])`` with no hooks (input encoded beforehand)."""

    @torch.no_grad()
    def run() -> None:
        reset(net)
        for t in range(train.shape[0]):
            net(train[t])

    return run


def with_plain_layers(snn: nn.Module, neurons: bool, pools: bool) -> nn.Module:
    """A copy of a converted net with its hidden neurons replaced by ``nn.ReLU`` and / or its
    ``SpikeMaxPool2d`` by ``nn.MaxPool2d`` of the same geometry (the output integrator stays):
    the same step without the cost of those modules."""
    net = copy.deepcopy(snn)
    output = net.output_neuron
    for name, module in list(net.graph.named_modules()):
        if neurons and is_neuron(module) and module is not output:
            net.graph.set_submodule(name, nn.ReLU())
        elif pools and isinstance(module, SpikeMaxPool2d):
            net.graph.set_submodule(name, nn.MaxPool2d(
                module.kernel_size, module.stride, module.padding, module.dilation,
                ceil_mode=module.ceil_mode))
    return net


def ann_loop(ann: nn.Module, x: torch.Tensor, steps: int) -> Callable[[], None]:
    """``steps`` ANN forwards: a call as long as a step loop's of ``steps`` steps."""

    @torch.no_grad()
    def run() -> None:
        for _ in range(steps):
            ann(x)

    return run


# --------------------------------------------------------------------------- measurements


def time_steps(nets: Nets, batch: int, steps: int, timed: int, args: argparse.Namespace
               ) -> dict[str, float]:
    """Seconds per step of every path for one (batch, T); ``timed`` steps per call."""
    x = torch.rand(batch, 3, 32, 32, device=args.device)
    w_train = nets.weighted.encode(x, timed)
    r_train = nets.rate.encode(x, timed)
    fns = {
        "ann": ann_loop(nets.ann, x, timed),
        "loop": lambda: simulate(nets.weighted, x, timed, fold=False),
        "auto": lambda: simulate(nets.weighted, x, timed, fold="auto"),
        "leaky": lambda: simulate(nets.rate, x, timed, fold=False),
        "bare_w": bare_loop(nets.weighted, w_train),
        "bare_leaky": bare_loop(nets.rate, r_train),
    }
    short = max(1, timed // 4)
    if short < timed:  # a shorter call of the same loop: its cost per call vs per step
        fns["loop_short"] = lambda: simulate(nets.weighted, x, short, fold=False)
    times = time_rounds(fns, args.repeats, args.device, budget=args.budget)
    per_step = {k: min(v) / timed for k, v in times.items() if k != "loop_short"}
    for num, den in RATIOS:
        per_step[f"{num}/{den}"] = paired_ratio(times, num, den)
    if short < timed:
        per_step.update(split_call(times, timed, short))
    chosen = simulate(nets.weighted, x, timed, fold="auto")
    per_step["chunk"] = chosen.chunk_size if chosen.folded else 0
    per_step["rounds"] = float(len(times["ann"]))
    return per_step


PARTS = {"snn": "converted net", "relu": "neurons -> ReLU", "maxpool": "spike pools -> MaxPool2d",
         "plain": "both (weight layers only)", "loop": "simulate(fold=False)"}
"""The step-parts paths, in table order (bare loops, except ``loop``)."""


def time_parts(nets: Nets, batch: int, timed: int, args: argparse.Namespace) -> dict[str, float]:
    """Time per step relative to the ANN forward (paired ratios) of the converted weighted net,
    its copies with plain layers (:func:`with_plain_layers`; the pool variants only when it has
    spike max-pools) and the full ``simulate(fold=False)``."""
    x = torch.rand(batch, 3, 32, 32, device=args.device)
    train = nets.weighted.encode(x, timed)
    has_pools = any(isinstance(m, SpikeMaxPool2d) for m in nets.weighted.modules())
    variants = {"snn": (False, False), "relu": (True, False)}
    if has_pools:
        variants.update(maxpool=(False, True), plain=(True, True))
    fns = {"ann": ann_loop(nets.ann, x, timed),
           **{key: bare_loop(with_plain_layers(nets.weighted, *flags), train)
              for key, flags in variants.items()},
           "loop": lambda: simulate(nets.weighted, x, timed, fold=False)}
    times = time_rounds(fns, args.repeats, args.device, budget=args.budget / 2)
    return {**{key: paired_ratio(times, key, "ann") for key in fns if key != "ann"},
            "rounds": float(len(times["ann"]))}


def check_identical(a, b) -> bool:
    same = torch.equal(a.mem, b.mem) and torch.equal(a.input_spikes, b.input_spikes)
    same = same and a.spikes.keys() == b.spikes.keys() and a.synops.keys() == b.synops.keys()
    same = same and all(torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    return same and all(torch.equal(a.synops[k], b.synops[k]) for k in a.synops)


def time_radix(snn: nn.Module, batch: int, args: argparse.Namespace) -> dict[str, float]:
    x = torch.rand(batch, 3, 32, 32, device=args.device)
    full = simulate(snn, x)  # also the warm-up of both paths
    short = simulate(snn, x, shortcut=True)
    reps = args.repeats if batch == 1 else 1
    seconds = best_time({"sim": lambda: simulate(snn, x),
                         "short": lambda: simulate(snn, x, shortcut=True)}, reps, args.device,
                        warm=False, budget=args.budget if batch == 1 else 0.0)
    return {**seconds, "steps": float(snn.latency), "identical": check_identical(full, short),
            "folded": full.folded}


# --------------------------------------------------------------------------- report


def fmt_rate(seconds: float) -> float:
    return 1.0 / seconds


def speed_table(rows: list[dict]) -> str:
    headers = ["model", "batch", "T", "timed steps", "rounds", "(a) loop steps/s",
               "(b) auto steps/s", "auto chunk", "(c) snn.Leaky steps/s", "(d) ANN forwards/s",
               "auto / loop",
               "weighted / Leaky (simulate)", "weighted / Leaky (bare loop)",
               "loop step / ANN fwd", "loop: marginal step / ANN fwd", "loop: set-up ms",
               "bare step / ANN fwd"]
    body = []
    for r in rows:
        body.append([
            r["model"], r["batch"], r["T"], r["timed"], int(r["rounds"]), fmt_rate(r["loop"]),
            fmt_rate(r["auto"]),
            int(r["chunk"]) or "loop", fmt_rate(r["leaky"]), fmt_rate(r["ann"]),
            f"{r['loop/auto']:.2f}x faster", f"{r['loop/leaky']:.2f}",
            f"{r['bare_w/bare_leaky']:.2f}", f"{r['loop/ann']:.2f}",
            f"{r['marginal/ann']:.2f}" if "marginal/ann" in r else "-",
            f"{r['setup'] * 1e3:.1f}" if "setup" in r else "-", f"{r['bare_w/ann']:.2f}",
        ])
    return markdown_table(headers, body, "{:.1f}")


def radix_table(rows: list[dict]) -> str:
    headers = ["model", "T (bits)", "batch", "steps (latency)", "rounds", "simulate s",
               "shortcut s", "shortcut speed-up", "identical"]
    body = [[r["model"], r["bits"], r["batch"], int(r["steps"]), int(r["rounds"]),
             f"{r['sim']:.3f}",
             f"{r['short']:.4f}", f"{r['sim'] / r['short']:.0f}x",
             "yes" if r["identical"] else "NO"] for r in rows]
    return markdown_table(headers, body)


def parts_table(rows: list[dict]) -> str:
    headers = ["model", "batch", "timed steps", "rounds",
               *(f"{label} / ANN fwd" for label in PARTS.values())]
    body = [[r["model"], r["batch"], r["timed"], int(r["rounds"]),
             *(f"{r[key]:.2f}" if key in r else "-" for key in PARTS)] for r in rows]
    return markdown_table(headers, body)


def memory_table(rows: list[dict]) -> str:
    headers = ["model", "batch", "T", "path", "peak memory rise (MiB)"]
    body = [[r["model"], r["batch"], r["T"], r["path"], f"{r['mib']:.1f}"] for r in rows]
    return markdown_table(headers, body)


def section(args: argparse.Namespace, command: str, speed: list[dict], radix: list[dict],
            memory: list[dict], parts: list[dict]) -> str:
    mem_kind = ("torch.cuda.max_memory_allocated above the allocation before the call"
                if args.device.type == "cuda" else
                "rise of the process's peak RSS (VmHWM, reset via /proc/self/clear_refs after "
                "malloc_trim) during one call")
    return "\n\n".join([
        "## Speed",
        f"Command: `{command}`  \n{environment_line(args.device)}",
        "Random weights (speed does not depend on training), converted with random calibration "
        f"data in [0, 1]; weighted code K = {args.num_phases}. (a) `simulate(fold=False)`, "
        "(b) `simulate(fold=\"auto\")`, (c) the same architecture with `snntorch.Leaky` IF "
        "neurons (`convert(coding=\"rate\")`) through the same `simulate(fold=False)` (both "
        "encode, count spikes and SynOps per layer and step, decode); *bare loop*: "
        "`reset(net); for t: net(train[t])` for both nets, input encoded beforehand, nothing "
        "counted; (d) ANN forwards at the same batch, timed as a loop of as many forwards as "
        "timed steps. Each timed call runs *timed steps* = min(T, cap) steps. Steps/s: each "
        f"path's best of *rounds* interleaved rounds after a warm-up (at least {args.repeats}, "
        f"more until {args.budget:g} s were spent on the configuration, at most {MAX_ROUNDS}; "
        "the order of the paths rotates). Ratios: the median over rounds of the ratio of two "
        "paths' times in the same round (robust to load that changes between rounds). When "
        "auto picks the loop, (a) and (b) run the same code, so their ratio shows the timing "
        "noise. *auto / loop* = speed-up of the automatic choice; *weighted / Leaky* and "
        "*step / ANN fwd* = time per step relative to the other (lower is better). The step "
        "loop's time per call is split as *set-up* + steps x *marginal step* from calls of the "
        "timed steps and a quarter of them in the same rounds (set-up: encoding, counting "
        "tables, decoding, paid once per call; the marginal step includes the per-step "
        "counting; the set-up is a difference of two noisy times: a negative one is below the "
        "noise).",
        speed_table(speed),
        "### Radix shortcut (`simulate(shortcut=True)`) vs simulating `latency` steps "
        "(`simulate`, default path)",
        radix_table(radix),
        "### Where a step's time goes (time per step / ANN forward, paired medians)",
        "Bare step loops (`reset(net); for t: net(train[t])`) of the converted weighted net and "
        "of copies of it with the hidden neurons replaced by `nn.ReLU` and / or the spike "
        "max-pools by `nn.MaxPool2d` (same weight layers with BatchNorm folded, same output "
        "integrator; values differ, the kernels' cost does not), and the full "
        "`simulate(fold=False)` (encoding, counting, decoding), against ANN forwards at the "
        "same batch. `-`: the net has no spike max-pool. Each path relative to the ANN in the "
        f"same round; at least {args.repeats} rounds, more until {args.budget / 2:g} s.",
        parts_table(parts),
        f"### Peak memory ({mem_kind})",
        memory_table(memory),
    ])


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], configure)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.budget is None:
        args.budget = 0.0 if args.quick else 8.0
    if args.quick:
        args.models = args.models[:1] if args.models == list(MODELS) else args.models
        args.steps = [8, 32]
        args.radix_bits = args.radix_bits[:1]
    args.radix_batches = args.radix_batches or args.batches
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    speed, radix, memory, parts = [], [], [], []
    start = time.perf_counter()
    for name in args.models:
        log(f"[speed] building {name}")
        nets = build(name, args)
        for batch in args.batches:
            for steps in args.steps:
                cap = args.max_steps or (8 if args.quick else (steps if batch == 1 else 16))
                timed = min(steps, cap)
                log(f"[speed] {name} batch {batch} T {steps} ({timed} steps timed)")
                row = time_steps(nets, batch, steps, timed, args)
                speed.append({"model": name, "batch": batch, "T": steps, "timed": timed, **row})
            cap = args.max_steps or (8 if args.quick else (32 if batch == 1 else 16))
            log(f"[speed] {name} batch {batch}: step parts ({cap} steps)")
            parts.append({"model": name, "batch": batch, "timed": cap,
                          **time_parts(nets, batch, cap, args)})
            for bits, snn in nets.radix.items() if batch in args.radix_batches else ():
                log(f"[speed] {name} radix T={bits} batch {batch}")
                radix.append({"model": name, "bits": bits, "batch": batch,
                              **time_radix(snn, batch, args)})
            memory += measure_memory(name, nets, batch, timed, args,
                                     radix=batch in args.radix_batches)
    log(f"[speed] done in {time.perf_counter() - start:.0f} s")
    text = section(args, command, speed, radix, memory, parts)
    print(text)
    write_section(args.output, "speed", text)


def measure_memory(name: str, nets: Nets, batch: int, steps: int, args: argparse.Namespace,
                   radix: bool) -> list[dict]:
    x = torch.rand(batch, 3, 32, 32, device=args.device)
    bits = max(nets.radix) if nets.radix and radix else None
    paths: dict[str, Callable[[], object]] = {
        "(a) loop": lambda: simulate(nets.weighted, x, steps, fold=False),
        "(b) auto": lambda: simulate(nets.weighted, x, steps, fold="auto"),
        "(c) snn.Leaky": lambda: simulate(nets.rate, x, steps, fold=False),
        "(d) ANN forward": lambda: torch.no_grad()(nets.ann)(x),
    }
    if bits is not None:
        paths[f"radix T={bits} simulate"] = lambda: simulate(nets.radix[bits], x)
        paths[f"radix T={bits} shortcut"] = lambda: simulate(nets.radix[bits], x, shortcut=True)
    rows = []
    for path, fn in paths.items():  # all warmed by the timings before
        rows.append({"model": name, "batch": batch, "T": steps, "path": path,
                     "mib": peak_memory_mib(fn, args.device)})
    return rows


if __name__ == "__main__":
    main()

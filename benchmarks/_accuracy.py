"""Computations shared by the accuracy benchmarks (``fashion_mnist.py``, ``cifar10.py``).

Both scripts follow the same plan: load the committed reference ANN
(:func:`reference_ann`: ``snntorch_weighted.models.pretrained(name)``, or with ``--retrain`` the
script's own short training), simulate its weighted-spike and rate-coded SNNs over test images
with :func:`snntorch_weighted.simulation.evaluate.evaluate` (:func:`coding_runs`), measure when
they reach the ANN's accuracy on the same images (:func:`reach`, Kim Table 2) and Kim et al.'s
early decision, then quantise + fine-tune + convert to radix SNNs (:func:`radix_benchmark`).
Markdown pieces are in ``_report.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from _common import Timer, load_or_train, log
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from snntorch_weighted import models, quant, reference_radix
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.data import subset
from snntorch_weighted.simulation.evaluate import EvaluationResult, evaluate
from snntorch_weighted.simulation.metrics import ann_macs, steps_to_accuracy
from snntorch_weighted.train import evaluate as ann_accuracy
from snntorch_weighted.train import train_ann

__all__ = [
    "NetSetting",
    "Reach",
    "Run",
    "ann_on",
    "coding_runs",
    "images",
    "input_divisor",
    "radix_benchmark",
    "reach",
    "reference_ann",
    "rescaled",
    "run_recipe",
]

TOLERANCES = (0.01, 0.001, 0.0)  # Kim Table 2: < 1 %p, < 0.1 %p, 0 %p below the ANN
TRAIN_BUDGET = 512 * 2**20  # bytes of one batch's input spike train (float32)


@dataclass(frozen=True)
class NetSetting:
    """A paper network: builder, skipped output periods (Kim Fig. 11), the K Kim used, weighted
    steps, and Kim's Table 2 row (latency then spike reduction at < 1, < 0.1, 0 %p)."""

    factory: Callable[[], nn.Module]
    skip: int
    paper_k: int
    steps: int
    kim_table2: tuple[str, ...]
    kim_name: str


# --------------------------------------------------------------------------- ANN


def _pretrained(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """``models.pretrained(name)`` and its manifest, or a clear exit naming the fallback."""
    hint = ("run with --retrain to train the ANN with this script's short recipe instead "
            "(not the paper-scale reference)")
    loader = getattr(models, "pretrained", None)
    if loader is None:
        raise SystemExit("snntorch_weighted.models.pretrained is missing in this checkout (no "
                         f"committed reference weights for {name!r}): {hint}")
    try:
        model = loader(name)
        manifest = models.read_manifest(name) if hasattr(models, "read_manifest") else {}
    except (RuntimeError, ValueError, FileNotFoundError) as err:  # PretrainedWeightsError too
        raise SystemExit(f"cannot load the reference weights of {name!r}: {err}. "
                         f"Alternatively {hint}") from err
    return model.eval(), manifest


def input_divisor(names: Sequence[str], args: argparse.Namespace) -> float:
    """``uint8`` pixel divisor the ANNs expect: their manifests' (256 for the reference
    recipe, Kim's range ``[0, 1 - 2**-8]``), or 255 for the script's own training."""
    if args.retrain:
        return 255.0
    found = {float(_pretrained(n)[1].get("recipe", {}).get("pixel_divisor", 255.0))
             for n in names}
    if len(found) != 1:
        raise SystemExit(f"the reference nets {list(names)} expect different inputs: {found}")
    return found.pop()


def rescaled(data: Dataset, divisor: float) -> Dataset:
    """``data`` read as ``uint8 / divisor`` (unchanged for 255)."""
    if divisor == 255.0:
        return data
    if not hasattr(data, "rescaled"):
        raise SystemExit(f"the weights expect pixels / {divisor:g}, but this checkout's "
                         "data.ImageDataset cannot rescale (merge the reference-training code)")
    return data.rescaled(divisor)


def reference_ann(name: str, setting: NetSetting, key: str, config: dict[str, Any],
                  train_set: Any, args: argparse.Namespace, **train_kw: Any
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """The committed reference ANN, or with ``--retrain`` the script's own training (cached
    by ``config``; ``--fresh`` ignores the cache). ``info["source"]`` says which, and
    ``info["ann_key"]`` identifies the weights (the radix fine-tunings' cache key)."""
    if not args.retrain:
        model, manifest = _pretrained(name)
        keep = ("command", "epochs", "seed", "test_images", "test_accuracy_percent", "sha256",
                "date", "input")
        info = {k: manifest[k] for k in keep if k in manifest}
        info["source"] = f"committed `models.pretrained({name!r})`"
        info["ann_key"] = f"pretrained {name} sha256 {manifest.get('sha256')}"
        return model, info
    torch.manual_seed(args.seed)
    model = setting.factory()

    def train(m: nn.Module) -> dict[str, Any]:
        start = time.perf_counter()
        history = train_ann(m, train_set, epochs=args.epochs, lr=config["lr"],
                            batch_size=config["batch_size"], device=args.device, seed=args.seed,
                            progress=False, **train_kw)  # fmt: skip
        return {"history": history.as_dict(), "train_seconds": time.perf_counter() - start}

    model, info, cached = load_or_train(model, key, config, train, args.cache_dir, args.fresh)
    info["source"] = ("cached (--retrain, this script's recipe)" if cached
                      else "trained in this run (--retrain, this script's recipe)")
    info["ann_key"] = json.dumps(config, sort_keys=True)
    return model, info


# --------------------------------------------------------------------------- images


def images(data: Dataset, n: int, seed: int) -> Dataset:
    """All of ``data`` when ``n >= len(data)``, else a fixed random subset of ``n`` images."""
    return data if n >= len(data) else subset(data, n, seed)


def ann_on(model: nn.Module, data: Dataset) -> int:
    """Images of ``data`` the ANN classifies correctly."""
    return round(ann_accuracy(model, data) * len(data))


def batch_size(limit: int, steps: int, sample: Tensor) -> int:
    """At most ``limit`` images, and one batch's input train at most :data:`TRAIN_BUDGET`."""
    per_image = steps * sample.numel() * 4
    return max(1, min(limit, TRAIN_BUDGET // per_image))


# --------------------------------------------------------------------------- simulation


@dataclass
class Run:
    """One SNN configuration evaluated on ``result.num_samples`` test images."""

    label: str
    result: EvaluationResult
    ann_correct: int  # the ANN on the same images (the target)
    paper_k: bool = False  # the run with Kim's K (its early decisions are reported)

    @property
    def images(self) -> int:
        return self.result.num_samples

    @property
    def steps(self) -> int:
        return self.result.num_steps

    @property
    def accuracy(self) -> Tensor:
        return self.result.accuracy

    @property
    def ann_acc(self) -> float:
        return self.ann_correct / self.images

    @property
    def seconds(self) -> float:
        return self.result.seconds

    def cum_spikes(self) -> Tensor:
        """Mean hidden spikes per image up to each step, ``[T]``."""
        return self.result.cum_spikes


def run_snn(label: str, snn: nn.Module, data: Dataset, steps: int, model: nn.Module,
            args: argparse.Namespace, **kw: Any) -> Run:
    """``evaluate`` over ``data`` (DataLoader batches); the ANN's correct count on it."""
    batch = batch_size(args.batch, steps, data[0][0])
    result = evaluate(snn, DataLoader(data, batch_size=batch), steps, seed=args.seed,
                      progress=args.progress, **kw)
    log(f"  {label}: {steps} steps on {result.num_samples} images in {result.seconds:.1f} s "
        f"(batch {batch}), final acc {float(result.accuracy[-1]):.4f}")
    return Run(label, result, ann_on(model, data))


def coding_runs(name: str, setting: NetSetting, model: nn.Module, args: argparse.Namespace,
                calib: Tensor, test: Dataset) -> dict[str, Any]:
    """Weighted SNNs (each K of ``args.phases``, Kim's skipped periods) on
    ``args.weighted_images`` and the rate SNN on ``args.rate_images`` test images; Kim's early
    decision (every theta, T1 = skip * K + 1) on the run with Kim's K."""
    steps = args.weighted_steps or setting.steps
    skip = args.skip.get(name, setting.skip)
    weighted_set = images(test, args.weighted_images, args.seed)
    runs = []
    for k in args.phases:
        snn = convert(model, calib, coding="weighted", num_phases=k, skip_periods=skip,
                      progress=False)
        start = skip * k + 1
        settings = [(float(t), start) for t in args.thetas] if k == setting.paper_k else None
        if settings and start > steps:
            raise SystemExit(f"{name}: T1 = {start} is beyond the {steps} weighted steps")
        run = run_snn(f"weighted K={k}, skip {skip}", snn, weighted_set, steps, model, args,
                      early_decision=settings)
        run.paper_k = bool(settings)
        runs.append(run)
    rate = convert(model, calib, coding="rate", progress=False)
    runs.append(run_snn("rate", rate, images(test, args.rate_images, args.seed),
                        args.rate_steps, model, args))
    return {"runs": runs, "skip": skip, "steps": steps,
            "found": {(r.label, tol): reach(r, tol) for r in runs for tol in TOLERANCES}}


# --------------------------------------------------------------------------- reaching the ANN


@dataclass
class Reach:
    """When a run reaches ``ANN - tolerance`` on its images (``step`` None: not in its window)."""

    step: int | None
    spikes: float | None  # hidden spikes per image up to ``step``
    window: int  # the run's simulated steps
    window_spikes: float  # hidden spikes per image over the whole window


def reach(run: Run, tolerance: float) -> Reach:
    """First step from which the correct count stays >= the ANN's minus ``tolerance`` of the
    images (counted in images, so 0 %p means at least as many correct as the ANN)."""
    target = run.ann_correct - tolerance * run.images - 1e-9
    step = steps_to_accuracy(run.result.correct.double(), target)
    cum = run.cum_spikes()
    return Reach(step, None if step is None else float(cum[step - 1]), run.steps,
                 float(cum[-1]))


def ratio(rate: Reach, weighted: Reach, kind: str) -> str:
    """rate / weighted steps or spikes (``kind``); ``> r`` when rate never got there."""
    if weighted.step is None:
        return "-"
    if kind == "steps":
        num, den, bound = rate.step, weighted.step, rate.window
    else:
        num, den, bound = rate.spikes, weighted.spikes, rate.window_spikes
    if not den:
        return "-"
    return f"> {bound / den:.1f}x" if num is None else f"{num / den:.1f}x"


def decisions(run: Run) -> list[dict[str, Any]]:
    """Kim Algorithm 1 over all of the run's images, one row per theta (Kim Fig. 12-13)."""
    res = run.result
    full = float(res.cum_spikes[-1])
    rows = []
    for (theta, start), dec in res.decisions.items():
        correct = int((dec.decision == res.labels).sum())
        spikes = float(res.decision_spikes[(theta, start)].double().mean())
        rows.append({"theta": theta, "start": start, "accuracy": correct / res.num_samples,
                     "delta": (correct - run.ann_correct) / res.num_samples,
                     "mean_step": float(dec.mean_time()), "last_step": int(dec.time.max()),
                     "decided": float(dec.decided.double().mean()), "spikes": spikes,
                     "saving": 1 - spikes / full if full else 0.0})
    return rows


# --------------------------------------------------------------------------- radix


def twin_integers(twin: nn.Module, data: Dataset, batch: int) -> Tensor:
    """The quantised twin's output integers ``[N, C]`` (float64, batch by batch)."""
    exact = copy.deepcopy(twin).double().eval()
    parts = [quant.integer_activations(exact, x.double())["output_quant"].long()
             for x, _ in DataLoader(data, batch_size=batch)]
    return torch.cat(parts)


def radix_exactness(prepared: nn.Module, test: Dataset, args: argparse.Namespace,
                    macs: int) -> dict[str, Any]:
    """The radix SNN step by step on ``args.radix_step_images`` images and through the exact
    shortcut on all of ``test``: accuracy, fraction of images whose output integers equal the
    twin's, and operation counts per image of the last (pipelined) period."""
    twin = quant.twin(prepared)
    bits = twin.get_submodule("input_quant").num_bits
    snn = convert(prepared, None, coding="radix", num_bits=bits)
    step_set = images(test, args.radix_step_images, args.seed)
    out: dict[str, Any] = {"latency": int(snn.latency), "eq24_ops": macs * bits,
                           "ann_macs": macs}
    for key, data, kw in (("step", step_set, {}), ("shortcut", test, {"shortcut": True})):
        res = evaluate(snn, DataLoader(data, batch_size=args.batch), progress=args.progress, **kw)
        agree = res.final_readout.round().long() == twin_integers(twin, data, args.batch)
        out[key] = {"images": res.num_samples, "accuracy": float(res.accuracy[-1]),
                    "agreement": float(agree.all(1).double().mean()), "seconds": res.seconds}
        if key == "step":
            last = slice(res.num_steps - bits, res.num_steps)
            out["spikes_per_period"] = float(res.spikes_per_image[last].sum())
            out["synops_per_period"] = float(res.synops_per_image[last].sum())
    return out


def radix_benchmark(name: str, model: nn.Module, args: argparse.Namespace,
                    data: dict[str, Any], ann_key: str, prefix: str) -> list[dict[str, Any]]:
    """Prepare + fine-tune (cached) + convert for each T in ``args.bits``.

    The fine-tuned model is the committed one (``models.pretrained(name, radix_bits=T)``,
    :func:`committed_radix`) when it was made from this ANN by this recipe, unless ``--fresh``;
    the row's ``source`` says where it came from.

    ``data``: ``calib`` (calibration images), ``calib_seed`` (the seed they were drawn with),
    ``ft_set`` (fine-tuning set, :func:`finetune_split`), ``val`` (held-out training images,
    evaluated before and after), ``test`` (a Dataset; the accuracies are measured on
    ``args.radix_images`` of it, all by default). The fine-tuning distils the float ANN
    (``quant.finetune(teacher=...)``).
    """
    test = images(data["test"], args.radix_images, args.seed)
    float_acc = ann_accuracy(model, test)
    macs = ann_macs(model, test[0][0].unsqueeze(0))
    rows = []
    for bits in args.bits:
        recipe = run_recipe(name, bits, args, data["calib_seed"])
        prepared = quant.prepare(
            copy.deepcopy(model), num_bits=bits, weight_bits=recipe.weight_bits,
            calibration_data=data["calib"], learn_clip=recipe.learn_clip,
            percentile=recipe.percentile)  # fmt: skip
        ptq_acc = ann_accuracy(prepared, test)
        config = {"ann": ann_key, "bits": bits, "samples": args.finetune_size,
                  "epochs": args.finetune_epochs, "lr": args.finetune_lr, "seed": args.seed,
                  "teacher": "float ANN"}  # fmt: skip

        def finetune(m: nn.Module, r: reference_radix.RadixRecipe = recipe) -> dict[str, Any]:
            start = time.perf_counter()
            hist = quant.finetune(
                m, data["ft_set"], epochs=r.epochs, lr=r.lr, val_data=data["val"],
                device=args.device, progress=False, optimizer=r.optimizer,
                batch_size=r.batch_size, seed=r.seed, teacher=copy.deepcopy(model),
                temperature=r.temperature)  # fmt: skip
            return {"history": hist, "seconds": time.perf_counter() - start}

        info = committed_radix(recipe, args, ann_key)
        cached = False
        if info is not None:
            prepared = info.pop("model")
        else:
            prepared, info, cached = load_or_train(prepared, f"{prefix}-{name}-radix{bits}",
                                                   config, finetune, args.cache_dir, args.fresh)
            info["source"] = "cached" if cached else "fine-tuned in this run"
        with Timer() as timer:
            qat_acc = ann_accuracy(prepared, test)
        row = {"net": name, "bits": bits, "images": len(test), "ptq_accuracy": ptq_acc,
               "accuracy": qat_acc, "finetune_seconds": info.get("seconds"), "cached": cached,
               "source": info["source"], "committed": info["source"].startswith("committed"),
               "float_accuracy": float_acc, "quant_eval_seconds": timer.seconds,
               "val_history": [h["val_acc"] for h in info["history"]]}  # fmt: skip
        row.update(radix_exactness(prepared, test, args, macs))
        log(f"[{name}] radix T={bits}: PTQ {ptq_acc:.4f}, fine-tuned {qat_acc:.4f} on "
            f"{len(test)} images; SNN step by step {row['step']['accuracy']:.4f} on "
            f"{row['step']['images']} (bit-exact {row['step']['agreement']:.4f}), shortcut "
            f"{row['shortcut']['accuracy']:.4f} on {row['shortcut']['images']} (bit-exact "
            f"{row['shortcut']['agreement']:.4f})")
        rows.append(row)
    return rows


def run_recipe(name: str, bits: int, args: argparse.Namespace, calib_seed: int
               ) -> reference_radix.RadixRecipe:
    """The radix recipe of this run (``reference_radix.RadixRecipe``): its sizes, seeds and
    the seed ``calib_seed`` its calibration images were drawn with; the fine-tuning draw is
    :func:`finetune_split`'s, the other fields (bits of the weights, clip percentile,
    optimizer, batch, temperature) the recipe's defaults, which :func:`radix_benchmark` uses."""
    return reference_radix.RadixRecipe(
        name, bits, calib_size=args.calib_size, finetune_size=args.finetune_size,
        finetune_val=args.finetune_val, epochs=args.finetune_epochs, lr=args.finetune_lr,
        seed=args.seed, calib_seed_offset=calib_seed - args.seed)  # fmt: skip


def committed_radix(recipe: reference_radix.RadixRecipe, args: argparse.Namespace,
                    ann_key: str) -> dict[str, Any] | None:
    """``info`` (``model``, ``history``, ``seconds``, ``source``) of the committed radix model
    made from this ANN by ``recipe`` (every field equal, :func:`run_recipe`); None with
    ``--retrain`` / ``--fresh`` or if there is none."""
    name, bits = recipe.net, recipe.num_bits
    if args.retrain or args.fresh or not ann_key.startswith(f"pretrained {name} sha256 "):
        return None
    found = reference_radix.load_committed(recipe, ann_key.rpartition(" ")[2])
    return found and {"model": found[0], "history": found[1]["history"],
                      "seconds": found[1].get("finetune_seconds"),
                      "source": f"committed `models.pretrained({name!r}, radix_bits={bits})`, "
                                f"sha256 {found[1]['sha256']}"}  # fmt: skip


def finetune_split(train: Dataset, args: argparse.Namespace) -> tuple[tuple, tuple]:
    """Fine-tuning images and the held-out ones, a fixed random draw of the training set (the
    radix recipe's, ``reference_radix.finetune_draw``)."""
    return reference_radix.finetune_draw(train, args.finetune_size, args.finetune_val, args.seed)


def parse_skips(values: Sequence[str]) -> dict[str, int]:
    """``["net4=2", ...]`` -> ``{"net4": 2}`` (skipped output periods per net)."""
    out = {}
    for value in values:
        name, _, periods = value.partition("=")
        if not periods.isdigit():
            raise SystemExit(f"--skip takes NET=PERIODS, got {value!r}")
        out[name] = int(periods)
    return out


def check_sizes(args: argparse.Namespace) -> None:
    """Every image / step count >= 1."""
    for key in ("weighted_images", "rate_images", "radix_images", "radix_step_images",
                "rate_steps", "batch"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be >= 1")
    if args.weighted_steps is not None and args.weighted_steps < 1:
        raise SystemExit("--weighted-steps must be >= 1")
    if not math.isfinite(min(args.thetas)) or min(args.thetas) < 0:
        raise SystemExit("--thetas must be >= 0")


# --------------------------------------------------------------------------- options


def add_options(parser: argparse.ArgumentParser, nets: Sequence[str], full: dict[str, Any],
                quick: dict[str, Any]) -> None:
    """The options both scripts share; sizes default to ``full`` (``quick`` with --quick)."""

    def size(flag: str, what: str, kind: type = int) -> None:
        key = flag.lstrip("-").replace("-", "_")
        parser.add_argument(flag, type=kind, default=None,
                            help=f"{what} (default {full[key]}, quick {quick[key]})")

    parser.add_argument("--nets", nargs="+", choices=sorted(nets), default=list(nets))
    parser.add_argument("--phases", type=int, nargs="+", default=[4, 8],
                        help="K of the weighted SNNs (default 4 8)")
    parser.add_argument("--weighted-steps", type=int, default=None,
                        help="weighted SNN steps (default: per net, see the script)")
    size("--weighted-images", "test images the weighted SNNs are evaluated on")
    size("--rate-images", "test images the rate SNN is evaluated on")
    size("--rate-steps", "rate SNN steps")
    size("--radix-images", "test images of the radix accuracies (quantised twin, and the SNN "
         "through the exact shortcut)")
    size("--radix-step-images", "test images the radix SNN is simulated on step by step")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NET=PERIODS",
                        help="skipped output periods (default: Kim et al. Fig. 11's per net)")
    parser.add_argument("--batch", type=int, default=100,
                        help="images per simulated batch (fewer when the input train of a "
                             "batch would exceed 512 MiB)")
    parser.add_argument("--thetas", type=float, nargs="+",
                        default=[0.5, 0.9, 2, 4, 8, 16, 32, 64],
                        help="early-decision thresholds (Kim Algorithm 1; Kim used 0.9)")
    parser.add_argument("--bits", type=int, nargs="+", default=None,
                        help=f"radix T values (default {full['bits']}, quick {quick['bits']})")
    size("--epochs", "ANN epochs of the script's own training (--retrain only)")
    size("--finetune-size", "training images of the radix STE fine-tuning")
    size("--finetune-epochs", "epochs of the radix STE fine-tuning")
    size("--finetune-val", "other training images, evaluated before / after the fine-tuning")
    parser.add_argument("--finetune-lr", type=float, default=full["finetune_lr"],
                        help=f"learning rate of the radix STE fine-tuning (default "
                             f"{full['finetune_lr']:g})")
    size("--calib-size", "training images for normalisation / clip calibration")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="progress bars (default: on a terminal only)")


def apply_defaults(args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]
                   ) -> argparse.Namespace:
    """Fill the sizes that depend on --quick (``skip``: per-net defaults); parse --skip; check."""
    sizes = quick if args.quick else full
    for key, value in sizes.items():
        if key != "skip" and getattr(args, key) is None:
            setattr(args, key, value)
    args.skip = {**sizes.get("skip", {}), **parse_skips(args.skip)}
    check_sizes(args)
    return args

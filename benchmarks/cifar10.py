"""CIFAR-10 benchmark: Kim et al. Net4 and ResNet-20 as weighted-spike, rate-coded and radix SNNs.

For each network (``--nets``, default ``net4 resnet20``):

1. **ANN**: the committed reference weights, ``snntorch_weighted.models.pretrained(name)``
   (``--retrain``: this script's own short training on ``--train-size`` images instead, with
   random-crop / flip augmentation, cached); accuracy on the whole test set (10000 images).
2. **Weighted vs rate** (Kim et al. 2018), evaluated with
   :func:`snntorch_weighted.simulation.evaluate.evaluate`: the weighted-spike SNNs (K = 4 and 8,
   Kim's output skipping: Net4 2 periods, ResNet-20 = Kim's Net5 20 periods; 256 steps,
   ResNet-20 512) on ``--weighted-images`` test images (all 10000) and the rate-coded SNN for
   ``--rate-steps`` (2048) on ``--rate-images`` (2000, a fixed random subset); steps until the
   accuracy stays within 1, 0.1 and 0 %p of the ANN's on the same images, spikes per image up
   to then, rate / weighted ratios next to Kim Table 2, and Kim's early decision (Algorithm 1,
   every ``--thetas``, among them Kim's 0.9) over all images of the K = 8 run.
3. **Radix** (Wang et al.): for each T in ``--bits``: ``quant.prepare`` + ``quant.finetune``
   (distilling the float ANN, cached), accuracy of the quantised twin on all test images,
   ``convert(coding="radix")``, the SNN step by step on ``--radix-step-images`` images and
   through the exact shortcut on all of them, with the fraction of images whose output integers
   equal the twin's, and operation counts.

Results go to the ``cifar10`` section of ``BENCHMARKS.md``, PNG plots to ``benchmarks/results/``,
raw numbers to ``benchmarks/results/cifar10.json``.

Run (from the repository root)::

    python benchmarks/cifar10.py --threads 1            # full run (many hours on a CPU)
    python benchmarks/cifar10.py --quick --threads 1    # smoke run, small subsets
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _accuracy import (  # noqa: E402
    NetSetting,
    add_options,
    apply_defaults,
    coding_runs,
    finetune_split,
    input_divisor,
    radix_benchmark,
    reference_ann,
    rescaled,
)
from _common import environment_line, log, parse_args, write_section  # noqa: E402
from _report import (  # noqa: E402
    ann_table,
    command_line,
    net_section,
    radix_section,
    save_json,
)
from plots import RESULTS_DIR  # noqa: E402

from snntorch_weighted import models, reference_radix  # noqa: E402
from snntorch_weighted.data import as_tensors, load_cifar10, subset  # noqa: E402
from snntorch_weighted.simulation.metrics import ann_macs  # noqa: E402
from snntorch_weighted.train import evaluate as ann_accuracy  # noqa: E402

SECTION = "cifar10"
SCRIPT = "benchmarks/cifar10.py"  # for the command line in the report
NAMES = ("CIFAR-10", "cifar10")
NETS = {  # Kim et al. Fig. 11 (skipped periods, K) and Table 2 (latency, spikes reductions)
    "net4": NetSetting(models.net4, skip=2, paper_k=8, steps=256, kim_name="Net4",
                       kim_table2=("91.1x", "-", "-", "25.1x", "-", "-")),
    "resnet20": NetSetting(models.resnet20, skip=20, paper_k=8, steps=512,
                           kim_name="Net5 = ResNet-20",
                           kim_table2=("17.2x", "-", "-", "4.4x", "-", "-")),
}
TRAIN_LR = 0.1
FULL = {"weighted_steps": None, "weighted_images": 10000, "rate_images": 2000,
        "rate_steps": 2048, "radix_images": 10000, "radix_step_images": 1000,
        "bits": [2, 4, 6, 8], "epochs": 4, "train_size": 12000,
        **reference_radix.benchmark_full("cifar10")}  # fmt: skip
QUICK = {"weighted_steps": 64, "weighted_images": 100, "rate_images": 50, "rate_steps": 96,
         "radix_images": 200, "radix_step_images": 10, "bits": [4], "epochs": 1,
         "train_size": 2000, "finetune_size": 256, "finetune_epochs": 1, "finetune_val": 200,
         "calib_size": 200, "skip": {"resnet20": 4}}  # fmt: skip
CHECKPOINTS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def configure(parser) -> None:
    """Options of this benchmark (the shared ones come from ``_common`` and ``_accuracy``)."""
    add_options(parser, NETS, FULL, QUICK)
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images of the script's own training (--retrain only; "
                             f"default {FULL['train_size']}, quick {QUICK['train_size']})")


def train_config(name: str, args) -> dict[str, Any]:
    """Everything that determines the weights of the script's own training (--retrain)."""
    return {"dataset": "cifar10", "net": name, "train_size": args.train_size,
            "epochs": args.epochs, "lr": TRAIN_LR, "batch_size": 128, "optimizer": "sgd",
            "augment": "cifar", "weight_decay": 5e-4, "seed": args.seed}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and rewrite the ``cifar10`` section of BENCHMARKS.md."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = apply_defaults(parse_args(__doc__.splitlines()[0], configure, argv), FULL, QUICK)
    tag = "_quick" if args.quick else ""
    started = time.perf_counter()
    divisor = input_divisor(args.nets, args)
    train_full = rescaled(load_cifar10(args.data_root, "train"), divisor)
    test_set = rescaled(load_cifar10(args.data_root, "test"), divisor)
    ft_set, val_set = finetune_split(train_full, args)
    calib_seed = args.seed + reference_radix.calib_seed_offset("cifar10")
    calib, _ = as_tensors(train_full, args.calib_size, seed=calib_seed)
    anns: dict[str, dict[str, Any]] = {}
    nets: dict[str, dict[str, Any]] = {}
    radix: list[dict[str, Any]] = []
    for name in args.nets:
        train_set = subset(train_full, args.train_size, seed=args.seed) if args.retrain else None
        model, info = reference_ann(name, NETS[name], f"cifar10-{name}",
                                    train_config(name, args), train_set, args, augment="cifar")
        anns[name] = {"info": info, "images": len(test_set),
                      "test_acc": ann_accuracy(model, test_set),
                      "macs": ann_macs(model, calib[:1])}  # fmt: skip
        log(f"[{name}] ANN ({info['source']}): {anns[name]['test_acc']:.4f} on "
            f"{len(test_set)} test images")
        nets[name] = coding_runs(name, NETS[name], model, args, calib, test_set)
        data = {"calib": calib, "calib_seed": calib_seed, "ft_set": ft_set, "val": val_set,
                "test": test_set}
        radix += radix_benchmark(name, model, args, data, info["ann_key"], "cifar10")
    minutes = (time.perf_counter() - started) / 60
    recipe = (f"For each T: `quant.prepare` (8-bit weights, clips at the 99.99th percentile of "
              f"{args.calib_size} training images), `quant.finetune` for "
              f"{args.finetune_epochs} epoch(s) on {args.finetune_size} training images "
              f"(AdamW, lr {args.finetune_lr:g}, no augmentation, distilling the float ANN; "
              f"*held-out* = accuracy on {args.finetune_val} other training images before / "
              "after), then `convert(coding=\"radix\")`. Where the fine-tuned model of this "
              "recipe is committed (`models.pretrained(NET, radix_bits=T)`, written by `python "
              "-m snntorch_weighted.reference NET --radix T`, same draws of the training set), "
              "it is loaded instead of fine-tuned (*fine-tune* column: committed; `--fresh` "
              "fine-tunes again).")
    trained = (f" ANNs of `--retrain`: SGD (Nesterov, lr {TRAIN_LR}, cosine, batch 128, weight "
               f"decay 5e-4) with random crop + flip on {args.train_size} training images for "
               f"{args.epochs} epoch(s)." if args.retrain else "")
    body = [
        "## CIFAR-10: Net4 and ResNet-20 (weighted vs rate) and radix T = "
        + ", ".join(map(str, args.bits)),
        f"Command: `{command_line(SCRIPT, argv)}` — total run time {minutes:.1f} min"
        + (" (**--quick smoke run: small subsets, few steps**)" if args.quick else "") + ".",
        environment_line(args.device),
        "Net4 = CNN 32c3-32c3-2s-64c3-64c3-2s-512-10 with BatchNorm (folded at conversion) and "
        "max pooling (Kim et al. Table 1, after Rueckauer et al.); ResNet-20 = He et al.'s "
        "CIFAR ResNet-20 (Kim's Net5; widths 16/32/64, 1x1-conv shortcuts where the shape "
        f"changes). Inputs: uint8 pixel / {divisor:g} (JPEG copy of CIFAR-10).{trained} "
        f"Conversion: data-based normalisation on {args.calib_size} training images (99.9th "
        f"percentile). Rate coding: Bernoulli inputs, one draw per image (seed {args.seed}). "
        "*Spikes* = spikes of the hidden neurons per image (input spikes excluded). Every "
        f"accuracy names its number of test images; subsets are fixed random draws (seed "
        f"{args.seed}).",
        "### ANNs",
        ann_table(anns),
    ]
    for name in nets:
        body.append(net_section(name, NAMES, NETS[name], nets[name], args.output, tag,
                                CHECKPOINTS))
    body.append(radix_section(radix, NAMES, args.output, tag, recipe))
    write_section(args.output, SECTION, "\n\n".join(body))
    save_json(anns, nets, radix, RESULTS_DIR / f"cifar10{tag}.json")
    log(f"done in {minutes:.1f} min")


if __name__ == "__main__":
    main()

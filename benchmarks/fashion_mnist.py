"""Fashion-MNIST benchmark: Kim et al. Net1 / Net2 as weighted-spike, rate-coded and radix SNNs.

For each network (``--nets``, default ``net1 net2``):

1. **ANN**: the committed reference weights, ``snntorch_weighted.models.pretrained(name)``
   (``--retrain``: this script's own short training instead, cached); accuracy on the whole test
   set (10000 images).
2. **Weighted vs rate** (Kim et al. 2018), evaluated with
   :func:`snntorch_weighted.simulation.evaluate.evaluate`: the weighted-spike SNNs (K = 4 and 8,
   Kim's output skipping: Net1 4 periods, Net2 1) on ``--weighted-images`` test images (all
   10000) and the rate-coded SNN on ``--rate-images`` (all 10000); steps until the accuracy
   stays within 1, 0.1 and 0 %p of the ANN's on the same images, spikes per image up to then,
   rate / weighted ratios next to Kim Table 2, and Kim's early decision (Algorithm 1, every
   ``--thetas``, among them Kim's 0.9) over all images of the K = 4 run.
3. **Radix** (Wang et al.): for each T in ``--bits``: ``quant.prepare`` + ``quant.finetune``
   (distilling the float ANN, cached), accuracy of the quantised twin on all test images,
   ``convert(coding="radix")``, the SNN step by step on ``--radix-step-images`` images and
   through the exact shortcut on all of them, with the fraction of images whose output integers
   equal the twin's, and operation counts.

Results go to the ``fashion_mnist`` section of ``BENCHMARKS.md``, PNG plots to
``benchmarks/results/``, raw numbers to ``benchmarks/results/fashion_mnist.json``.

Run (from the repository root)::

    python benchmarks/fashion_mnist.py --threads 1            # full run (hours on a CPU)
    python benchmarks/fashion_mnist.py --quick --threads 1    # smoke run, small subsets
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
from snntorch_weighted.data import as_tensors, load_fashion_mnist  # noqa: E402
from snntorch_weighted.simulation.metrics import ann_macs  # noqa: E402
from snntorch_weighted.train import evaluate as ann_accuracy  # noqa: E402

SECTION = "fashion_mnist"
SCRIPT = "benchmarks/fashion_mnist.py"  # for the command line in the report
NAMES = ("Fashion-MNIST", "fashion_mnist")
NETS = {  # Kim et al. Fig. 11 (skipped periods, K) and Table 2 (MNIST; latency, spikes)
    "net1": NetSetting(models.net1, skip=4, paper_k=4, steps=256, kim_name="Net1 (MNIST)",
                       kim_table2=("1.2x", "3.0x", "3.2x", "0.7x", "2.0x", "2.0x")),
    "net2": NetSetting(models.net2, skip=1, paper_k=4, steps=256, kim_name="Net2 (MNIST)",
                       kim_table2=("1.5x", "21.3x", "-", "0.5x", "15.0x", "-")),
}
FULL = {"weighted_steps": None, "weighted_images": 10000, "rate_images": 10000,
        "rate_steps": 2048, "radix_images": 10000, "radix_step_images": 1000,
        "bits": [2, 4, 6, 8], "epochs": 2,
        **reference_radix.benchmark_full("fashion_mnist")}  # fmt: skip
QUICK = {"weighted_steps": 48, "weighted_images": 200, "rate_images": 100, "rate_steps": 128,
         "radix_images": 1000, "radix_step_images": 20, "bits": [4], "epochs": 1,
         "finetune_size": 500, "finetune_epochs": 1, "finetune_val": 200,
         "calib_size": 200}  # fmt: skip
CHECKPOINTS = (4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048)


def train_config(name: str, args) -> dict[str, Any]:
    """Everything that determines the weights of the script's own training (--retrain)."""
    return {"dataset": "fashion_mnist", "net": name, "epochs": args.epochs, "lr": 0.05,
            "batch_size": 128, "optimizer": "sgd", "seed": args.seed}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and rewrite the ``fashion_mnist`` section of BENCHMARKS.md."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(__doc__.splitlines()[0], lambda p: add_options(p, NETS, FULL, QUICK), argv)
    args = apply_defaults(args, FULL, QUICK)
    tag = "_quick" if args.quick else ""
    started = time.perf_counter()
    divisor = input_divisor(args.nets, args)
    train_set = rescaled(load_fashion_mnist(args.data_root, "train"), divisor)
    test_set = rescaled(load_fashion_mnist(args.data_root, "test"), divisor)
    calib_seed = args.seed + reference_radix.calib_seed_offset("fashion_mnist")
    calib, _ = as_tensors(train_set, args.calib_size, seed=calib_seed)
    ft_set, val_set = finetune_split(train_set, args)
    anns: dict[str, dict[str, Any]] = {}
    nets: dict[str, dict[str, Any]] = {}
    radix: list[dict[str, Any]] = []
    for name in args.nets:
        model, info = reference_ann(name, NETS[name], f"fmnist-{name}", train_config(name, args),
                                    train_set, args)
        anns[name] = {"info": info, "images": len(test_set),
                      "test_acc": ann_accuracy(model, test_set),
                      "macs": ann_macs(model, calib[:1])}  # fmt: skip
        log(f"[{name}] ANN ({info['source']}): {anns[name]['test_acc']:.4f} on "
            f"{len(test_set)} test images")
        nets[name] = coding_runs(name, NETS[name], model, args, calib, test_set)
        data = {"calib": calib, "calib_seed": calib_seed, "ft_set": ft_set, "val": val_set,
                "test": test_set}
        radix += radix_benchmark(name, model, args, data, info["ann_key"], "fmnist")
    minutes = (time.perf_counter() - started) / 60
    recipe = (f"For each T: `quant.prepare` (8-bit weights, clips at the 99.99th percentile of "
              f"{args.calib_size} training images), `quant.finetune` for "
              f"{args.finetune_epochs} epoch(s) on {args.finetune_size} training images "
              f"(AdamW, lr {args.finetune_lr:g}, distilling the float ANN; *held-out* = "
              f"accuracy on {args.finetune_val} other training images before / after), then "
              "`convert(coding=\"radix\")`. Where the fine-tuned model of this recipe is "
              "committed (`models.pretrained(NET, radix_bits=T)`, written by `python -m "
              "snntorch_weighted.reference NET --radix T`, same draws of the training set), it "
              "is loaded instead of fine-tuned (*fine-tune* column: committed; `--fresh` "
              "fine-tunes again).")
    body = [
        "## Fashion-MNIST: Kim et al. Net1 / Net2 (weighted vs rate) and radix T = "
        + ", ".join(map(str, args.bits)),
        f"Command: `{command_line(SCRIPT, argv)}` — total run time {minutes:.1f} min"
        + (" (**--quick smoke run: small subsets, few steps**)" if args.quick else "") + ".",
        environment_line(args.device),
        "Net1 = MLP 784-1200-1200-10, Net2 = CNN 12c5-2s-64c5-2s-10 with max pooling (Kim et "
        f"al. Table 1). Inputs: uint8 pixel / {divisor:g}. Conversion: data-based "
        f"normalisation on {args.calib_size} training images (99.9th percentile). Rate coding: "
        f"Bernoulli inputs, one draw per image (seed {args.seed}). *Spikes* = spikes of the "
        "hidden neurons per image (input spikes excluded). Every accuracy names its number of "
        "test images; subsets are fixed random draws (seed "
        f"{args.seed}). Kim's figures are for MNIST, where pixels are nearly binary.",
        "### ANNs",
        ann_table(anns),
    ]
    for name in nets:
        body.append(net_section(name, NAMES, NETS[name], nets[name], args.output, tag,
                                CHECKPOINTS))
    body.append(radix_section(radix, NAMES, args.output, tag, recipe))
    write_section(args.output, SECTION, "\n\n".join(body))
    save_json(anns, nets, radix, RESULTS_DIR / f"fashion_mnist{tag}.json")
    log(f"done in {minutes:.1f} min")


if __name__ == "__main__":
    main()

"""Workers for the 2-process gloo tests (CPU), started with torchrun's environment variables
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE=2, RANK):

* ``python ddp_worker.py RANK OUT_DIR``: test_quant's DDP fine-tuning test;
* ``python ddp_worker.py evaluate RANK OUT_DIR``: test_evaluate's test, ``evaluate`` of the nets
  of :func:`evaluation_nets` on :func:`evaluation_data`, sharded both ways (a DataLoader with a
  DistributedSampler, and batches sharded by index), saved as ``eval_rank{RANK}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from snntorch_weighted import quant
from snntorch_weighted.conversion.convert import convert
from snntorch_weighted.simulation.evaluate import EvaluationResult, evaluate

NUM_SAMPLES = 13  # odd: the DistributedSampler pads rank 1's shard with a repeated sample
STEPS = {"weighted": 14, "rate": 20}
DECISIONS = [(0.5, 3), (2.0, 5)]


def dyadic(module: nn.Module) -> nn.Module:
    """Weights and biases rounded to multiples of 2**-6: every sum is exact in float32, so
    the results cannot depend on how many rows a kernel was called with."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                for p in m.parameters():
                    p.copy_(torch.round(p * 2**6) / 2**6)
    return module


def evaluation_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(NUM_SAMPLES, 12, generator=g), torch.randint(0, 3, (NUM_SAMPLES,),
                                                                   generator=g)


def evaluation_nets() -> dict[str, nn.Module]:
    """A weighted (K = 4) and a rate SNN of a tiny random MLP (dyadic weights)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    x, _ = evaluation_data()
    return {coding: dyadic(convert(model, x, coding=coding, num_phases=4, progress=False))
            for coding in STEPS}


def run_evaluations(loaders: dict[str, object]) -> dict[str, EvaluationResult]:
    """``evaluate`` of every net on every loader (key ``"<coding>/<loader>"``)."""
    out = {}
    for coding, snn in evaluation_nets().items():
        for name, loader in loaders.items():
            out[f"{coding}/{name}"] = evaluate(snn, loader, STEPS[coding], seed=5,
                                               early_decision=DECISIONS, progress=False)
    return out


def _evaluate_main(rank: int, out: Path) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=2)
    data = TensorDataset(*evaluation_data())
    loaders = {
        "sampler": DataLoader(data, batch_size=2,
                              sampler=DistributedSampler(data, shuffle=False)),
        "index": DataLoader(data, batch_size=3),  # 5 batches: rank 0 gets 3, rank 1 gets 2
    }
    torch.save(run_evaluations(loaders), out / f"eval_rank{rank}.pt")
    dist.destroy_process_group()


def _quant_main(rank: int, out: Path) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    twin = quant.prepare(model, num_bits=4, calibration_data=x[:32], learn_clip=True)
    if rank == 0:
        torch.save({k: v.clone() for k, v in twin.state_dict().items()}, out / "start0.pt")
    quant.finetune(twin, torch.utils.data.TensorDataset(x, y), epochs=2, lr=1e-2,
                   batch_size=8, progress=False)
    torch.save(twin.state_dict(), out / f"rank{rank}.pt")
    dist.destroy_process_group()


def main() -> None:
    if sys.argv[1] == "evaluate":
        _evaluate_main(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        _quant_main(int(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()

"""Worker for test_quant's DDP test: ``python ddp_worker.py RANK OUT_DIR`` (gloo, CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from snntorch_weighted import quant


def main() -> None:
    rank, out = int(sys.argv[1]), Path(sys.argv[2])
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


if __name__ == "__main__":
    main()

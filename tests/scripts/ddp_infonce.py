"""Two-process (gloo, CPU) check of the InfoNCE alignment loss under DDP.

Each rank holds half of a batch of ECG/text projections. With embeddings gathered across
ranks (negatives span the global batch), a DDP-wrapped projector must get exactly the
gradient of the single-process loss on the whole batch, and each rank's loss must equal
the single-process loss of its rows. Run by ``tests/test_alignment.py`` as a subprocess.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

WORLD, N, D = 2, 12, 8


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return (torch.randn(N, D, generator=g, dtype=torch.float64),
            torch.randn(N, D, generator=g, dtype=torch.float64))


def _full_batch_grad(temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    from ecg_dan.losses.alignment import infonce_loss

    torch.manual_seed(0)
    proj = torch.nn.Linear(D, D).double()
    e, t = _data()
    loss = infonce_loss(proj(e), t, temperature, gather=False)
    loss.backward()
    return loss.detach(), proj.weight.grad.clone()


def _checks(rank: int) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ecg_dan.losses.alignment import infonce_loss

    full_loss, full_grad = _full_batch_grad(0.1)
    torch.manual_seed(0)
    proj = DDP(torch.nn.Linear(D, D).double())
    e, t = _data()
    rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
    loss = infonce_loss(proj(e[rows]), t[rows], 0.1)
    loss.backward()
    losses = [torch.zeros((), dtype=torch.float64) for _ in range(WORLD)]
    dist.all_gather(losses, loss.detach())
    mean_loss = torch.stack(losses).mean()
    if not torch.allclose(mean_loss, full_loss, rtol=1e-10):
        raise AssertionError(f"rank {rank}: mean loss {mean_loss} != full {full_loss}")
    if not torch.allclose(proj.module.weight.grad, full_grad, rtol=1e-8, atol=1e-12):
        diff = (proj.module.weight.grad - full_grad).abs().max()
        raise AssertionError(f"rank {rank}: DDP gradient differs from full batch by {diff}")
    local = infonce_loss(proj.module(e[rows]), t[rows], 0.1, gather=False)
    if torch.allclose(local, loss):
        raise AssertionError("gathering made no difference: negatives are not global")


def main() -> int:
    from _spawn import run_world

    return run_world(_checks, "ddp_infonce", WORLD)


if __name__ == "__main__":
    sys.exit(main())

"""Two-process (gloo, CPU) check that the gathered Cox loss equals the single-process loss.

Run directly (``python tests/scripts/ddp_cox.py``); ``tests/test_cox_loss.py`` runs it in a
subprocess, because spawning DDP workers from inside pytest would re-import pytest's state.
Each rank holds an unequal shard of one batch (37 / 27 samples, tied times, censoring) and
checks against the loss/gradients computed on the full batch without torch.distributed:

1. loss value (Breslow and Efron) equals the full-batch loss;
2. the gradient w.r.t. the rank's own log-risk is ``world_size x`` the full-batch gradient slice
   (``all_gather_with_grad`` sums gradients over ranks; DDP then averages);
3. a DDP-wrapped linear model gets exactly the full-batch parameter gradient;
4. a shard without events still gives the global loss; a global batch without events gives 0
   with a working backward on every rank (no hang);
5. ``all_gather_with_grad`` handles 2-D tensors and an empty shard;
6. ``HarrellCIndex`` synchronises its cat states across ranks;
7. ``gather=False`` gives the local (shard-only) loss.
Exits non-zero on any failure.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

WORLD = 2
SIZES = (37, 27)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    n = sum(SIZES)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    time = torch.randint(1, 12, (n,), generator=g).to(torch.float64)  # many ties
    event = torch.rand(n, generator=g) < 0.4
    event[SIZES[0] :] = event[SIZES[0] :] & (torch.arange(SIZES[1]) % 2 == 0)
    return x, time, event


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if not torch.allclose(a, b, rtol=1e-10, atol=1e-12):
        raise AssertionError(f"{what}: {a} != {b} (max diff {(a - b).abs().max().item()})")


def _checks(rank: int) -> None:
    # Imported in the workers only: the parent never needs torchmetrics (a slow import).
    from ecg_dan.distributed import all_gather_with_grad
    from ecg_dan.losses.cox import cox_ph_loss
    from ecg_dan.metrics.cindex import HarrellCIndex, harrell_cindex

    x, time, event = _batch()
    lo = sum(SIZES[:rank])
    hi = lo + SIZES[rank]
    w = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)

    # 1 + 2 + 7: loss value and raw gradient w.r.t. the shard's log-risk.
    for ties in ("breslow", "efron"):
        full = (x @ w).detach().requires_grad_()
        ref = cox_ph_loss(full, time, event, ties=ties, gather=False)
        ref.backward()
        local = (x[lo:hi] @ w).detach().requires_grad_()
        loss = cox_ph_loss(local, time[lo:hi], event[lo:hi], ties=ties)
        loss.backward()
        _close(loss.detach(), ref.detach(), f"rank {rank} {ties} loss")
        _close(local.grad, WORLD * full.grad[lo:hi], f"rank {rank} {ties} grad")
        shard_only = cox_ph_loss(local.detach(), time[lo:hi], event[lo:hi], ties, gather=False)
        if torch.allclose(shard_only, ref.detach()):
            raise AssertionError("gather=False unexpectedly equals the global loss")

    # 3: DDP-wrapped model, parameter gradients == single-process full-batch gradients.
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1).to(torch.float64)
    ref_model = copy.deepcopy(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    loss = cox_ph_loss(ddp(x[lo:hi]), time[lo:hi], event[lo:hi])
    loss.backward()
    ref_loss = cox_ph_loss(ref_model(x), time, event, gather=False)
    ref_loss.backward()
    _close(loss.detach(), ref_loss.detach(), f"rank {rank} DDP loss")
    for p, q in zip(model.parameters(), ref_model.parameters()):
        _close(p.grad, q.grad, f"rank {rank} DDP param grad")

    # 4a: rank 1's shard has no events; the global loss is still the full-batch loss.
    ev = event.clone()
    ev[SIZES[0] :] = False
    full = (x @ w).detach().requires_grad_()
    ref = cox_ph_loss(full, time, ev, gather=False)
    ref.backward()
    local = (x[lo:hi] @ w).detach().requires_grad_()
    loss = cox_ph_loss(local, time[lo:hi], ev[lo:hi])
    loss.backward()
    _close(loss.detach(), ref.detach(), f"rank {rank} loss with an event-free shard")
    _close(local.grad, WORLD * full.grad[lo:hi], f"rank {rank} grad with an event-free shard")

    # 4b: no events anywhere -> 0, attached to the graph, backward runs the same collectives.
    local = (x[lo:hi] @ w).detach().requires_grad_()
    loss = cox_ph_loss(local, time[lo:hi], torch.zeros(hi - lo, dtype=torch.bool))
    if loss.item() != 0.0 or loss.grad_fn is None:
        raise AssertionError(f"no-event loss should be an attached 0, got {loss}")
    loss.backward()
    _close(local.grad, torch.zeros_like(local), "no-event grad")

    # 5: 2-D embeddings (CLIP-style), rank 1 contributes an empty shard.
    emb_full = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    mine = (emb_full if rank == 0 else emb_full[:0]).clone().requires_grad_()
    gathered = all_gather_with_grad(mine)
    _close(gathered.detach(), emb_full, "2-D gather with an empty shard")
    (gathered**2).sum().backward()
    expected = WORLD * 2 * emb_full if rank == 0 else emb_full[:0]
    _close(mine.grad, expected, "2-D gather grad")

    # 6: HarrellCIndex syncs cat states across ranks (uneven shard sizes).
    metric = HarrellCIndex()
    risk = x @ w
    metric.update(risk[lo:hi], time[lo:hi], event[lo:hi])
    got = metric.compute().item()
    want = harrell_cindex(time.numpy(), risk.numpy(), event.numpy())
    if abs(got - want) > 1e-12:
        raise AssertionError(f"rank {rank} HarrellCIndex {got} != full-batch {want}")


def main() -> int:
    from _spawn import run_world

    return run_world(_checks, "ddp_cox", WORLD)


if __name__ == "__main__":
    sys.exit(main())

"""Run EventStratifiedBatchSampler under a real 2-process gloo group (CPU).

Invoked as a subprocess by tests/test_splits_samplers.py (running DDP inside pytest would
re-run pytest in the children). Each rank reads its rank/world size from
torch.distributed, iterates two epochs doing one all_reduce per batch (a rank with fewer
batches would hang, caught by the group timeout), and rank 0 checks that every rank got
the same number of batches, that ranks are disjoint within each batch, and that the union
over ranks of batch i is the single-process global batch i. Exit status 0 = pass.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_modules.loading.samplers import EventStratifiedBatchSampler  # noqa: E402

WORLD = 2
N, N_EVENTS, BATCH, SEED, EPOCHS = 203, 11, 40, 7, 2


def make_events() -> np.ndarray:
    event = np.zeros(N, dtype=np.int64)
    event[np.random.default_rng(0).choice(N, N_EVENTS, replace=False)] = 1
    return event


def worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        checks(rank)
    finally:
        dist.destroy_process_group()


def checks(rank: int) -> None:
    """The checks on one rank of an initialised process group (also run by ddp_all.py)."""
    event = make_events()
    sampler = EventStratifiedBatchSampler(event, BATCH, seed=SEED)  # world from dist
    assert (sampler.num_replicas, sampler.rank) == (WORLD, rank), (sampler.num_replicas,
                                                                   sampler.rank)
    per_epoch: list[list[list[int]]] = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        batches = []
        for batch in sampler:
            t = torch.tensor([float(len(batch))])
            dist.all_reduce(t)  # a collective per step, as DDP training does
            batches.append(batch)
        per_epoch.append(batches)
    gathered: list[list[list[list[int]]] | None] = [None] * WORLD
    dist.all_gather_object(gathered, per_epoch)
    if rank == 0:
        reference = EventStratifiedBatchSampler(event, BATCH, seed=SEED, num_replicas=1,
                                                rank=0)
        for epoch in range(EPOCHS):
            counts = [len(g[epoch]) for g in gathered]  # type: ignore[index]
            assert len(set(counts)) == 1, f"epoch {epoch}: batch counts differ {counts}"
            ref = reference.global_batches(epoch)
            assert counts[0] == len(ref), (counts, len(ref))
            seen: list[int] = []
            for i, ref_batch in enumerate(ref):
                parts = [set(g[epoch][i]) for g in gathered]  # type: ignore[index]
                assert not parts[0] & parts[1], f"epoch {epoch} batch {i}: ranks overlap"
                assert parts[0] | parts[1] == set(ref_batch.tolist()), (
                    f"epoch {epoch} batch {i}: union differs from the global batch")
                seen.extend(parts[0] | parts[1])
            assert sorted(seen) == list(range(N)), f"epoch {epoch}: not every index once"
        print(f"OK: {WORLD} ranks, {counts[0]} batches per epoch, disjoint, union = global")


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(str(Path(tmp) / "pg_init"),), nprocs=WORLD, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The in-memory data path under a real 2-process gloo group (CPU).

Invoked by tests/test_data_path.py. Each rank builds the PTB-XL and UKB DataModules, loads
the beats once, and iterates its shard for two epochs: PTB-XL through a DistributedSampler
(what Lightning injects under DDP), UKB through the event-stratified batch sampler (world
from torch.distributed). Checks: no file read after the one-time load, shards disjoint with
union = all training rows (PTB-XL) / the global batches (UKB), both ranks mask global batch
i with the same subset (UKB), and every finished sample equals the single-process sample of
its row. Exit status 0 = pass.
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _spawn import run_world  # noqa: E402

from data_modules.loading.datasets import raw_loader  # noqa: E402
from data_modules.loading.ptbxl_datamodule import PTBXLDataModule  # noqa: E402
from data_modules.loading.transforms import finish_batch  # noqa: E402
from data_modules.loading.ukb_datamodule import UKBDataModule, make_ukb_splits  # noqa: E402
from tests.test_datamodules import write_ptbxl_cache, write_ukb_cache  # noqa: E402


def gather(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_ptbxl(ptb: Path, rank: int) -> None:
    dm = PTBXLDataModule(ptb, batch_size=8, seed=3, mask_prob=0.0)
    dm.store.load()
    reads = dm.store.file_reads
    ds = dm.dataset("train")
    sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
    loader = raw_loader(ds, batch_size=8, sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        rows, xs = [], []
        for b in loader:
            b = finish_batch(b)
            rows += b["index"].tolist()
            xs.append(b["x"])
        assert dm.store.file_reads == reads, "a rank re-read the file"
        shards = gather(rows)
        if rank == 0:
            assert not set(shards[0]) & set(shards[1]), "ranks overlap"
            assert sorted(shards[0] + shards[1]) == sorted(dm.train_indices.tolist())
        ref = PTBXLDataModule(ptb, max_bytes=0, mask_prob=0.0).dataset("train")  # streamed
        pos = {int(r): i for i, r in enumerate(ref.indices)}
        x = torch.cat(xs)
        for i in (0, len(rows) // 2, len(rows) - 1):
            torch.testing.assert_close(x[i], ref[pos[rows[i]]]["x"], rtol=0, atol=0)


def check_ukb(ukb: Path, rank: int) -> None:
    split = make_ukb_splits(ukb, "hyp", seeds=(42,))[0]
    torch.manual_seed(7)  # seed_everything: the same global seed on every rank
    dm = UKBDataModule(ukb, "hyp", split, batch_size=32, seed=42)
    dm.store.load()
    reads = dm.store.file_reads
    loader = dm.train_dataloader()
    assert (loader.batch_sampler.num_replicas, loader.batch_sampler.rank) == (2, rank)
    got = [(b["index"].tolist(), b["lead_mask"][0].tolist()) for b in loader]
    assert dm.store.file_reads == reads, "a rank re-read the file"
    both = gather(got)
    if rank == 0:
        glob = loader.batch_sampler.global_batches()
        assert len(both[0]) == len(both[1]) == len(glob)
        for (r0, m0), (r1, m1), g in zip(both[0], both[1], glob):
            assert m0 == m1, "ranks masked a global batch differently"
            rows = set(dm.train_indices[g].tolist())  # sampler positions -> cache rows
            assert not set(r0) & set(r1) and set(r0) | set(r1) == rows


def main_rank(tmp: Path, rank: int) -> None:
    check_ptbxl(tmp / "ptbxl.h5", rank)
    check_ukb(tmp / "ukb.h5", rank)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="ddp_data_") as d:
        write_ptbxl_cache(Path(d) / "ptbxl.h5", n=120)
        write_ukb_cache(Path(d) / "ukb.h5")
        sys.exit(run_world(partial(main_rank, Path(d)), "ddp_data"))

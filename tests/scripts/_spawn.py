"""Run a function in a 2-process gloo group on CPU (the harness of the DDP check scripts)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, fn: Callable[[int], None], world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        fn(rank)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_world(fn: Callable[[int], None], name: str, world: int = 2) -> int:
    """``fn(rank)`` on every rank; prints "<name>: all checks passed" when all return."""
    tmp = tempfile.mkdtemp(prefix=f"{name}_")
    try:
        mp.spawn(_entry, args=(fn, world, os.path.join(tmp, "init")), nprocs=world, join=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{name}: all checks passed")
    return 0

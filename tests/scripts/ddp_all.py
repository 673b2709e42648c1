"""Every 2-process (gloo, CPU) DDP check of tests/scripts in one world.

Each check script alone pays an interpreter, torch and the project's imports three times (the
launcher and two spawned ranks); run together they pay them once. The checks run in order
on both ranks; rank 0 prints ``== <name>``, the check's own lines, then ``<name>: all checks
passed``; a failing check prints ``<name>: FAILED`` with its traceback and ends the world
(``mp.spawn`` stops the other rank), so the later checks are not run. Run once per test
session (``ddp_checks`` in tests/conftest.py); each test reads its own check's part. Each
script still runs alone too (``python tests/scripts/ddp_cox.py``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CHECKS = ("ddp_infonce", "ddp_cox", "ddp_network", "ddp_sampler", "ddp_data")


def _check(name: str, data_dir: Path) -> Callable[[int], None]:
    import importlib

    mod = importlib.import_module(name)
    if name == "ddp_data":
        return lambda rank: mod.main_rank(data_dir, rank)
    return mod.checks if name == "ddp_sampler" else mod._checks


def _all(data_dir: str, rank: int) -> None:
    import torch.distributed as dist

    for name in CHECKS:
        if rank == 0:
            print(f"== {name}", flush=True)
        try:
            _check(name, Path(data_dir))(rank)
            dist.barrier()
        except BaseException:
            print(f"{name}: FAILED on rank {rank}\n{traceback.format_exc()}", flush=True)
            raise
        if rank == 0:
            print(f"{name}: all checks passed", flush=True)


def main() -> int:
    from functools import partial

    from _spawn import run_world

    from tests.test_datamodules import write_ptbxl_cache, write_ukb_cache

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="ddp_all_") as d:
        write_ptbxl_cache(Path(d) / "ptbxl.h5", n=120)  # ddp_data's caches, as it writes them
        write_ukb_cache(Path(d) / "ukb.h5")
        return run_world(partial(_all, d), "ddp_all")


if __name__ == "__main__":
    sys.exit(main())

"""A full disk (or a quota, or the file-size limit) in every writer: one error naming the
output, nothing left behind, and no crash. Before, an HDF5 write failing inside the library
made the next call on the file segfault (exit 139, issue 21); writes now go through
data_modules/guarded.py, which keeps the error from HDF5 and torch."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import data_modules.guarded as guarded
from data_modules.atomic import atomic_write_text
from data_modules.cache.write import Appender, atomic_h5
from ecg_dan.checkpoints import SafeCheckpointIO, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _fail_after(monkeypatch, n_bytes: int, err: int = errno.ENOSPC) -> None:
    """Every write through a guarded file fails once ``n_bytes`` were written."""
    real, done = os.pwrite, [0]

    def pwrite(fd, data, offset):
        if done[0] + len(data) > n_bytes:
            raise OSError(err, os.strerror(err))
        done[0] += len(data)
        return real(fd, data, offset)

    monkeypatch.setattr(guarded.os, "pwrite", pwrite)


def test_a_write_failing_inside_hdf5_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "c" / "x.h5"
    _fail_after(monkeypatch, 200_000)
    rows = np.ones((12, 600), np.float32)
    with pytest.raises(OSError, match=r"x.h5: writing the cache failed: No space left on "
                                      r"device \(disk full\?\); no cache was written") as e:
        with atomic_h5(out, "ptbxl", {"source": "test"}) as f:
            app = Appender(f, {"median": ((12, 600), 64)}, block=64)
            for _ in range(10_000):  # 288 MB if written: the build stops at the first block
                app.add(median=rows)
    assert e.value.errno == errno.ENOSPC and "\n" not in str(e.value)
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    with atomic_h5(out, "ptbxl", {"source": "test"}) as f:  # HDF5 is still sound
        f.attrs["n_records"] = 0
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["complete"])


def test_checkpoints_and_tables_name_the_output_and_keep_the_old_file(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, ckpt)
    _fail_after(monkeypatch, 1000, errno.EFBIG)  # torch raised a RuntimeError without errno
    with pytest.raises(OSError, match=r"last.ckpt: writing failed: File too large; it was "
                                      r"left as it was") as e:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(10_000)}, "epoch": 2}, ckpt)
    assert e.value.errno == errno.EFBIG
    monkeypatch.undo()
    assert read_checkpoint(ckpt)["epoch"] == 1
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]

    table = tmp_path / "out" / "p.csv"
    atomic_write_text(table, "old\n")

    def full(self, text, *a, **k):
        with open(self, "w") as fh:
            fh.write(text[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match=r"p.csv: writing failed: No space left on device "
                                      r"\(disk full\?\)"):
        atomic_write_text(table, "new contents\n")
    monkeypatch.undo()
    assert table.read_text() == "old\n" and [p.name for p in table.parent.iterdir()] == ["p.csv"]


def test_cache_build_past_the_file_size_limit_is_one_line_exit_2(ptbxl_dir, tmp_path):
    """Through the CLI, the real failure: a PTB-XL cache with strips under RLIMIT_FSIZE
    (writes beyond it fail with EFBIG, as a full disk fails with ENOSPC)."""
    root = tmp_path / "ptbxl"
    root.mkdir()
    lines = (ptbxl_dir / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    (root / "ptbxl_database.csv").write_text("".join(lines[:13]))  # 12 records
    for name in ("scp_statements.csv", "records500", "records100"):
        (root / name).symlink_to(ptbxl_dir / name)
    out = tmp_path / "out" / "c.h5"
    out.parent.mkdir()
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))\n"
              "from ecg_dan.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-c", script, "cache", "ptbxl", "--root", str(root),
                           "--out", str(out), "--strips", "500", "--workers", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("ecg-dan:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and f"{out}: writing the cache failed: File too large" in err[0], err
    assert list(out.parent.iterdir()) == []

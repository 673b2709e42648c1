"""One build per output file: an exclusive lock on ``<out>.lock`` serialises concurrent
builds, so the second finds the first's cache instead of racing it."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

def lock_path(out: str | os.PathLike) -> Path:
    return Path(out).with_name(Path(out).name + ".lock")


@contextlib.contextmanager
def build_lock(out: str | os.PathLike, wait_message: bool = True) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<out>.lock`` for one build of ``out``.

    A second build of the same output waits (saying so on stderr, with the holder's pid)
    until the first has renamed its file and reported; the lock file is removed on release
    (a waiter that then holds a removed file retries on the new one). Temporary files of
    ``out`` left by a killed build are deleted once the lock is held.
    """
    import fcntl

    lp = lock_path(out)
    lp.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait_message:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    log.warning(f"{out}: another build (pid {holder}) is writing this cache; "
                                "waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(lp).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file we were waiting on
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        # Only a lock holder writes temporary files of ``out``: any left now belong to a
        # killed build (kill -9, power loss) and would otherwise stay forever.
        out_p = Path(out)
        for stale in out_p.parent.glob(f".{glob.escape(out_p.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lp)
        os.close(fd)  # releases the lock

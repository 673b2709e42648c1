"""The builders' process pool: ordered, chunked, with a bounded window of work in flight,
workers that die with their parent, and a progress bar."""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: die when the parent does (``kill -9`` of a build).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; everywhere: a daemon thread polling
    ``os.getppid()`` once a second (also covers a parent that died before the prctl)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork: workers inherit the imported modules (scipy, wfdb, h5py: no re-import per worker)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(t) for t in chunk]


def parallel_map(fn: Callable[[T], R], tasks: Sequence[T], workers: int, progress: bool,
                 desc: str) -> Iterator[R]:
    """``fn`` over ``tasks``, results in task order, in ``workers`` processes (chunked), with
    a progress bar. At most ``4 * workers`` chunks are in flight, so memory does not grow
    with the number of tasks when the consumer is slower than the workers. Workers exit
    when the calling process dies. Wrap in ``contextlib.closing`` so an error downstream
    stops the pool immediately instead of when the generator is garbage-collected."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit="rec", disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(tasks) < 2:
            for t in tasks:
                yield fn(t)
                bar.update()
        else:
            chunk = max(1, min(32, len(tasks) // (4 * workers)))
            chunks = (tasks[i:i + chunk] for i in range(0, len(tasks), chunk))
            ex = _pool(workers)
            try:
                pending: collections.deque = collections.deque()
                for c in chunks:
                    pending.append(ex.submit(_run_chunk, fn, c))
                    if len(pending) < 4 * workers:
                        continue
                    for r in pending.popleft().result():
                        yield r
                        bar.update()
                while pending:
                    for r in pending.popleft().result():
                        yield r
                        bar.update()
            finally:  # on an error downstream, drop the queued work instead of finishing it
                ex.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()

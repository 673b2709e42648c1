"""The builders' process pool: ordered, chunked, with a bounded window of work in flight,
workers that die with their parent, a time budget per task, recovery from a dead worker,
and a progress bar."""

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
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from data_modules.cache.isolate import GRACE_S, Lost, kill_pool, run_isolated, under_budget
from data_modules.errors import DataError
from data_modules.limits import limit

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


def _init() -> None:
    """An isolated run's process dies with the batch too (the parent is the batch)."""
    _exit_with_parent(os.getppid())


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork: workers inherit the imported modules (scipy, wfdb, h5py: no re-import per worker)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T], budget: float | None) -> list:
    return [under_budget(fn, t, budget) for t in chunk]


class WorkerDied(DataError):
    """A worker process died on an input, in a batch that cannot record it as a skip."""


def _resolved(task: T, res: Any, lost: Callable[[T, str], R] | None, desc: str) -> R:
    if isinstance(res, Lost):
        if lost is None:
            raise WorkerDied(f"{desc}: {res.reason.replace('this file', repr(task))}")
        return lost(task, res.reason)
    return res


def parallel_map(fn: Callable[[T], R], tasks: Sequence[T], workers: int, progress: bool,
                 desc: str, lost: Callable[[T, str], R] | None = None) -> Iterator[R]:
    """``fn`` over ``tasks``, results in task order, in ``workers`` processes (chunked), with
    a progress bar. At most ``4 * workers`` chunks are in flight, so memory does not grow
    with the number of tasks when the consumer is slower than the workers. Workers exit
    when the calling process dies. Wrap in ``contextlib.closing`` so an error downstream
    stops the pool immediately instead of when the generator is garbage-collected.

    One input never sinks the batch (:mod:`data_modules.cache.isolate`): with ``lost`` (the
    result that records a task as lost, given the reason), each task has a time budget
    (``ECG_DAN_MAX_FILE_SECONDS``), and when a worker dies (``kill -9``, the out-of-memory
    killer) or hangs in C code, the tasks it may have held are re-run one by one in
    processes of their own: the one that dies or hangs again becomes ``lost(task, reason)``
    and the pool is restarted for the rest. Without ``lost``, such a task raises
    :class:`WorkerDied` naming it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit="rec", disable=not progress, file=sys.stderr)
    budget = limit("FILE_SECONDS") if lost is not None else None
    try:
        if workers <= 1 or len(tasks) < 2:
            for t in tasks:
                yield _resolved(t, under_budget(fn, t, budget), lost, desc)
                bar.update()
        else:
            chunk = max(1, min(32, len(tasks) // (4 * workers)))
            starts = iter(range(0, len(tasks), chunk))
            # a chunk whose result is this late was held by a process stuck in C code
            patience = (budget or limit("FILE_SECONDS")) * chunk + GRACE_S
            ex = _pool(workers)
            try:
                pending: collections.deque = collections.deque()
                while True:
                    while len(pending) < 4 * workers:
                        i = next(starts, None)
                        if i is None:
                            break
                        c = tasks[i:i + chunk]
                        pending.append((ex.submit(_run_chunk, fn, c, budget), c))
                    if not pending:
                        break
                    fut, c = pending.popleft()
                    try:
                        results = fut.result(timeout=patience)
                    except (BrokenProcessPool, FuturesTimeout) as e:
                        if isinstance(e, FuturesTimeout):
                            kill_pool(ex)
                        # the pool is gone: every chunk it held that has no result is re-run
                        # task by task, each in a process of its own; then a new pool
                        redo = [(fut, c), *pending]
                        pending.clear()
                        ex.shutdown(wait=True, cancel_futures=True)
                        for f, cc in redo:
                            done = f.done() and not f.cancelled() and f.exception() is None
                            for t, r in zip(cc, f.result() if done else
                                            (run_isolated(fn, t, budget, _init) for t in cc)):
                                yield _resolved(t, r, lost, desc)
                                bar.update()
                        ex = _pool(workers)
                        continue
                    for t, r in zip(c, results):
                        yield _resolved(t, r, lost, desc)
                        bar.update()
            finally:  # on an error downstream, drop the queued work instead of finishing it
                ex.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()

"""One input at a time, with bounds: a time budget per input in a worker, and a run in a
process of its own that may die or hang without taking anything else with it.

:func:`data_modules.cache.parallel.parallel_map` uses both: every task of a batch that can
record lost inputs (``ecg-dan predict``, the cache builders) runs under
:func:`under_budget`; when a worker dies (``kill -9``, the out-of-memory killer) or hangs in C
code, the tasks it may have held are re-run one by one through :func:`run_isolated`, which
names the one that kills or outlasts its process.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Lost", "death_reason", "run_isolated", "time_reason", "under_budget"]

#: Seconds past the budget before a process stuck in C code (no Python signal handler can
#: run) is killed by its parent.
GRACE_S = 30.0


@dataclass(frozen=True)
class Lost:
    """A task that gave no result, and why (made into the caller's skip by ``lost``)."""

    reason: str


class _OverBudget(BaseException):
    """Raised in the worker by the budget's alarm (a BaseException: the task's own
    ``except Exception`` does not swallow it)."""


def time_reason(budget: float) -> str:
    return (f"time limit: reading it took over {budget:g} s (ECG_DAN_MAX_FILE_SECONDS "
            "raises it)")


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        why = ", e.g. the out-of-memory killer" if sig == signal.SIGKILL else ""
        return f"worker died: killed by signal {sig} ({name}{why}) while reading this file"
    return f"worker died: its process exited with status {exitcode} while reading this file"


def _alarm(signum: int, frame: Any) -> None:
    raise _OverBudget


def under_budget(fn: Callable[[Any], Any], task: Any, budget: float | None) -> Any:
    """``fn(task)``, or :class:`Lost` when it runs past ``budget`` seconds (an interval timer
    in this process; only in the main thread, where signals are delivered, else no budget)."""
    if budget is None or threading.current_thread() is not threading.main_thread():
        return fn(task)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            return fn(task)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _OverBudget:  # also when the alarm fires between fn's return and the reset
        return Lost(time_reason(budget))
    finally:
        signal.signal(signal.SIGALRM, old)


def _child(fn: Callable[[Any], Any], task: Any, budget: float | None, conn: Any,
           init: Callable[[], None] | None) -> None:
    if init is not None:
        init()
    try:
        out = ("ok", under_budget(fn, task, budget))
    except Exception as e:  # noqa: BLE001 - re-raised in the parent, as a pool would
        out = ("err", e)
    try:
        conn.send(out)
    except Exception as e:  # noqa: BLE001 - an unpicklable exception: its text
        conn.send(("err", RuntimeError(f"{type(e).__name__}: {e}")))
    conn.close()


def run_isolated(fn: Callable[[Any], Any], task: Any, budget: float | None,
                 init: Callable[[], None] | None = None) -> Any:
    """``fn(task)`` in a forked process of its own: its result, the exception it raised, or
    :class:`Lost` when the process died (signal or exit status) or ran past ``budget`` plus
    :data:`GRACE_S` (then it is killed)."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(fn, task, budget, send, init), daemon=True)
    p.start()
    send.close()
    wait = None if budget is None else budget + GRACE_S
    try:
        t0 = time.monotonic()
        if recv.poll(wait):
            with contextlib.suppress(EOFError):
                kind, value = recv.recv()
                if kind == "err":
                    raise value
                return value
        if wait is not None and time.monotonic() - t0 >= wait:
            p.kill()
            p.join()
            return Lost(time_reason(budget))
        p.join()
        return Lost(death_reason(p.exitcode))
    finally:
        recv.close()
        if p.is_alive():
            p.kill()
        p.join()
        with contextlib.suppress(ValueError):
            p.close()


def kill_pool(ex: Any) -> None:
    """Kill every process of a ``ProcessPoolExecutor`` (one is stuck in C code past its
    budget: nothing else stops it); its futures then fail with ``BrokenProcessPool``."""
    for p in list(getattr(ex, "_processes", {}).values()):  # no public handle on them
        with contextlib.suppress(Exception):
            os.kill(p.pid, signal.SIGKILL)

"""One bad input never sinks a batch (data_modules/cache/parallel.py, isolate.py): a worker
killed by signal 9 on one input (what the out-of-memory killer does), an input past its time
budget, a worker stuck where no signal handler runs: the others' results come back in
order, the lost one is recorded with its reason."""

from __future__ import annotations

import os
import signal
import time

import pytest

import data_modules.cache.isolate as isolate
import data_modules.cache.parallel as parallel
from data_modules.cache.parallel import WorkerDied, parallel_map

VICTIM = 7


def _square(t: int) -> int:
    return t * t


def _kills_itself(t: int) -> int:
    if t == VICTIM:
        os.kill(os.getpid(), signal.SIGKILL)
    return t * t


def _sleeps(t: int) -> int:
    if t == VICTIM:
        time.sleep(60)  # interrupted by the budget's alarm
    return t * t


def _stuck(t: int) -> int:
    if t == VICTIM:  # no Python signal handler can run: only the parent can stop it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return t * t


def _lost(t: int, why: str) -> tuple[int, str]:
    return t, why


def _run(fn, workers: int, n: int = 24) -> list:
    return list(parallel_map(fn, list(range(n)), workers, False, "test", lost=_lost))


def _check(out: list, reason: str, n: int = 24) -> None:
    assert len(out) == n
    assert [r for i, r in enumerate(out) if i != VICTIM] == [i * i for i in range(n)
                                                             if i != VICTIM]
    assert out[VICTIM][0] == VICTIM and reason in out[VICTIM][1], out[VICTIM]


def test_a_worker_killed_on_one_input_loses_that_input_only():
    t0 = time.perf_counter()
    _check(_run(_kills_itself, 2), "worker died: killed by signal 9 (SIGKILL, e.g. the "
                                   "out-of-memory killer) while reading this file")
    assert time.perf_counter() - t0 < 20
    assert _run(_square, 2) == [i * i for i in range(24)]  # and a normal batch is unchanged


def test_an_input_past_its_time_budget_is_lost_with_the_reason(monkeypatch):
    monkeypatch.setenv("ECG_DAN_MAX_FILE_SECONDS", "0.3")
    for workers in (1, 2):
        t0 = time.perf_counter()
        _check(_run(_sleeps, workers), "time limit: reading it took over 0.3 s")
        assert time.perf_counter() - t0 < 15


def test_a_worker_stuck_past_its_budget_is_killed_by_the_parent(monkeypatch):
    monkeypatch.setenv("ECG_DAN_MAX_FILE_SECONDS", "0.3")
    monkeypatch.setattr(parallel, "GRACE_S", 1.0)
    monkeypatch.setattr(isolate, "GRACE_S", 1.0)
    t0 = time.perf_counter()
    _check(_run(_stuck, 2, n=8), "time limit: reading it took over 0.3 s", n=8)
    assert time.perf_counter() - t0 < 20


def test_without_a_lost_result_a_dead_worker_is_one_error_naming_the_input():
    with pytest.raises(WorkerDied, match=r"test: worker died: killed by signal 9 .* while "
                                         r"reading 7"):
        list(parallel_map(_kills_itself, list(range(24)), 2, False, "test"))

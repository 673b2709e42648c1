"""HDF5 cache plumbing shared by the PTB-XL and UK Biobank builders (docs/data_formats.md).

Why: a cache is only trustworthy when it is complete and was built with the options the run
expects. Builders therefore write a per-process temporary file beside ``<out>``
(:func:`data_modules.atomic.atomic_path`) and rename it to ``<out>`` only on success (an
interrupted build leaves nothing that looks like a cache), stamp the root attributes
(``schema_version``, ``kind``, ``build_config``, ``n_records``) and set ``complete = True``
last. Two builds to one output are serialised by an exclusive lock on ``<out>.lock``
(:func:`build_lock`): the second waits, then finds the first's cache (a no-op when the
config is the same) or rebuilds it. Readers go through :func:`open_cache`, which refuses
anything else (including non-finite beats) with a message naming the file and the
problem. :func:`is_complete_cache` implements "re-running a build with the same config is
a no-op". Also shared by the builders: :class:`BuildSummary` (the printed summary with
skip reasons counted per reason), :class:`Appender` (rows streamed into resizable
datasets) and :func:`parallel_map` (ordered, chunked process pool with a bounded window of
work in flight, whose workers die with their parent, and a progress bar).
"""

from __future__ import annotations

import collections
import contextlib
import errno as errno_
import glob
import hashlib
import importlib
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from data_modules.atomic import atomic_path
from data_modules.errors import DataError
from data_modules.leads import BEAT_LEN, N_LEADS

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
SCHEMA_VERSION = 1
KINDS = ("ptbxl", "ukb")
STR_DTYPE = h5py.string_dtype()


KIND_NAMES = {"ptbxl": "PTB-XL", "ukb": "UK Biobank"}
# The id column that names a row in messages, per kind.
ID_DATASET = {"ptbxl": "ecg_id", "ukb": "eid"}
# Datasets that must hold only finite values (checked when a cache is opened).
FINITE_DATASETS: dict[str, tuple[str, ...]] = {
    "ptbxl": ("median", "median_clean"),
    "ukb": ("median", "time"),
}


class CacheError(DataError):
    """A cache file that cannot be used (missing, incomplete, wrong kind, schema, layout or
    non-finite values). A :class:`DataError` (hence a ``ValueError``)."""


# Datasets every reader relies on (docs/data_formats.md), checked when a cache is opened.
REQUIRED_DATASETS: dict[str, tuple[str, ...]] = {
    "ptbxl": ("median", "median_clean", "strat_fold", "superclass", "ecg_id"),
    "ukb": ("median", "eid", "time", "event", "cohort_hyp", "cohort_mi"),
}


def sha1_file(path: str | os.PathLike) -> str:
    """Content hash of a source table, stored in build configs so an edited input is rebuilt."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_json(build_config: Mapping[str, Any]) -> str:
    """Canonical JSON of a build config (sorted keys) so equal configs compare equal."""
    return json.dumps(dict(build_config), sort_keys=True, default=str)


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


# errno of OSErrors that mean "the cache could not be written" (None: an HDF5 error)
_WRITE_ERRNOS = (None, errno_.ENOSPC, errno_.EDQUOT, errno_.EIO, errno_.EFBIG, errno_.EROFS)


def _write_error(out: Path, e: OSError) -> OSError:
    why = e.strerror or str(e)
    hint = " (disk full?)" if e.errno in (errno_.ENOSPC, errno_.EDQUOT) else ""
    return OSError(e.errno, f"{out}: writing the cache failed: {why}{hint}; no cache was "
                   "written (the temporary file was removed)")


@contextlib.contextmanager
def atomic_h5(out_path: str | os.PathLike, kind: str,
              build_config: Mapping[str, Any]) -> Iterator[h5py.File]:
    """Open a per-process temporary file beside ``<out>`` for writing; on success stamp the
    root attributes, set ``complete = True`` last and rename to ``<out>``; on any exception
    close and delete the temporary file. An ``OSError`` while writing (full disk) comes out
    as one ``OSError`` naming ``<out>``.

    The caller sets ``f.attrs["n_records"]`` (defaults to 0 when not set). Hold
    :func:`build_lock` around the build so concurrent builds of ``<out>`` do not interfere.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; expected one of {KINDS}")
    out = Path(out_path)
    try:
        with atomic_path(out, suffix=".h5.tmp") as tmp:
            f = h5py.File(tmp, "w")
            try:
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["kind"] = kind
                f.attrs["build_config"] = config_json(build_config)
                f.attrs["complete"] = False
                yield f
                if "n_records" not in f.attrs:
                    f.attrs["n_records"] = 0
                f.attrs["complete"] = True
            except BaseException:
                with contextlib.suppress(Exception):
                    f.close()
                raise
            f.close()
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS or str(out) in str(e):
            raise  # e.g. a source file not found: not about writing the cache
        raise _write_error(out, e) from None


def write_skipped(f: h5py.File, skipped: Sequence[tuple[str, str]]) -> None:
    """Write the ``skipped/`` group: datasets ``id`` and ``reason`` (UTF-8 strings)."""
    g = f.create_group("skipped")
    ids = [str(i) for i, _ in skipped]
    reasons = [str(r) for _, r in skipped]
    g.create_dataset("id", data=np.array(ids, dtype=object), dtype=STR_DTYPE)
    g.create_dataset("reason", data=np.array(reasons, dtype=object), dtype=STR_DTYPE)


def write_warnings(f: h5py.File, warned: Sequence[tuple[str, str]]) -> None:
    """Write the ``warnings/`` group (``id``, ``message``): kept records with a doubtful
    value (e.g. a follow-up time outside the plausible span)."""
    g = f.create_group("warnings")
    g.create_dataset("id", data=np.array([str(i) for i, _ in warned], dtype=object),
                     dtype=STR_DTYPE)
    g.create_dataset("message", data=np.array([str(m) for _, m in warned], dtype=object),
                     dtype=STR_DTYPE)


def read_warnings(f: h5py.File) -> list[tuple[str, str]]:
    """The ``(id, message)`` pairs of a cache's ``warnings/`` group (empty when absent)."""
    if "warnings" not in f:
        return []
    return list(zip(f["warnings/id"].asstr()[...].tolist(),
                    f["warnings/message"].asstr()[...].tolist()))


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    """The ``(id, reason)`` pairs of a cache's ``skipped/`` group."""
    if "skipped" not in f:
        return []
    ids = f["skipped/id"].asstr()[...]
    reasons = f["skipped/reason"].asstr()[...]
    return list(zip(ids.tolist(), reasons.tolist()))


def write_strings(f: h5py.File | h5py.Group, name: str, values: Sequence[str]) -> h5py.Dataset:
    """A variable-length UTF-8 string dataset."""
    return f.create_dataset(name, data=np.array([str(v) for v in values], dtype=object),
                            dtype=STR_DTYPE)


def validate_cache(f: h5py.File, path: str | os.PathLike, kind: str | None = None) -> str:
    """Check an open cache's root attributes and layout; return its kind.

    Raises :class:`CacheError` naming the file and what is wrong. ``kind=None`` accepts
    any known kind.
    """
    path = Path(path)
    complete = np.asarray(f.attrs.get("complete", False))
    if complete.shape != () or not (complete.dtype == np.bool_ or
                                    np.issubdtype(complete.dtype, np.integer)) or not complete:
        raise CacheError(f"{path}: incomplete cache (root attribute 'complete' is not True); "
                         "the build was interrupted or is still running - rebuild it")
    version = f.attrs.get("schema_version")
    if version is None:
        raise CacheError(f"{path}: no root attribute 'schema_version'; rebuild the cache")
    try:
        version = int(np.asarray(version).item())
    except (TypeError, ValueError):
        raise CacheError(f"{path}: schema_version {version!r} is not an integer") from None
    if version != SCHEMA_VERSION:
        raise CacheError(f"{path}: schema_version {version}, this code reads "
                         f"{SCHEMA_VERSION}; rebuild the cache")
    got = f.attrs.get("kind")
    got = got.decode() if isinstance(got, bytes) else got
    if got not in KINDS:
        raise CacheError(f"{path}: unknown cache kind {got!r}; expected one of {KINDS}")
    if kind is not None and got != kind:
        raise CacheError(f"{path} is a {KIND_NAMES[got]} cache (kind {got!r}); expected a "
                         f"{KIND_NAMES.get(kind, kind)} cache (kind {kind!r})")
    missing = [name for name in REQUIRED_DATASETS[got] if name not in f]
    if missing:
        raise CacheError(f"{path}: {got} cache lacks required datasets {missing}")
    n = f["median"].shape[0]
    if f["median"].shape[1:] != (N_LEADS, BEAT_LEN):
        raise CacheError(f"{path}: 'median' has shape {f['median'].shape}, expected "
                         f"(N, {N_LEADS}, {BEAT_LEN})")
    for name in REQUIRED_DATASETS[got]:
        if f[name].shape[0] != n:
            raise CacheError(f"{path}: dataset {name!r} has {f[name].shape[0]} rows, "
                             f"'median' has {n}")
    if "n_records" in f.attrs and int(np.asarray(f.attrs["n_records"]).item()) != n:
        raise CacheError(f"{path}: root attribute n_records={int(f.attrs['n_records'])} but "
                         f"'median' has {n} rows")
    _check_finite(f, path, got)
    return got


_FINITE_OK: dict[tuple, bool] = {}  # files already scanned in this process (path, stat)
_SCAN_ROWS = 256


def _check_finite(f: h5py.File, path: Path, kind: str) -> None:
    """Refuse NaN/inf in the datasets a run trains and scores on, naming the rows' ids.

    The scan (blocks of rows) is done once per process and file version (keyed by the
    file's inode, size and mtime)."""
    try:
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and _FINITE_OK.get(key):
        return
    id_name = ID_DATASET[kind]
    for name in FINITE_DATASETS[kind]:
        if name not in f:
            continue
        ds = f[name]
        bad_rows: list[np.ndarray] = []
        for a in range(0, ds.shape[0], _SCAN_ROWS):
            block = ds[a:a + _SCAN_ROWS]
            ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
            if not ok.all():
                bad_rows.append(a + np.flatnonzero(~ok))
        if bad_rows:
            rows = np.concatenate(bad_rows)
            ids = f[id_name][...][rows[:10]].tolist() if id_name in f else []
            raise CacheError(f"{path}: dataset {name!r} has non-finite values (NaN/inf) in "
                             f"{rows.size} row(s): {id_name} {ids}"
                             f"{' ...' if rows.size > 10 else ''} (rows {rows[:10].tolist()});"
                             " rebuild the cache")
    if key is not None:
        _FINITE_OK[key] = True


def open_cache(path: str | os.PathLike, kind: str | None = None) -> h5py.File:
    """Open a finished cache read-only (usable as a context manager), refusing missing,
    incomplete, wrong-kind, old or malformed files with the file named."""
    p = Path(path)
    if not p.is_file():
        busy = list(p.parent.glob(f".{glob.escape(p.name)}.*.tmp")) if p.parent.is_dir() else []
        hint = " (a build is running or was killed: temporary file present)" if busy else ""
        raise CacheError(f"{p}: cache file not found{hint}; build it with `ecg-dan cache ...`")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise CacheError(f"{p}: not a readable HDF5 file ({e})") from e
    try:
        validate_cache(f, p, kind)
    except BaseException:
        f.close()
        raise
    return f


def is_complete_cache(path: str | os.PathLike, kind: str,
                      build_config: Mapping[str, Any]) -> bool:
    """True when ``path`` is a complete cache of ``kind`` built with exactly ``build_config``
    (then re-running the build is a no-op)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with h5py.File(p, "r") as f:
            validate_cache(f, p, kind)
            stored = f.attrs.get("build_config")
    except (CacheError, OSError):
        return False
    stored = stored.decode() if isinstance(stored, bytes) else stored
    try:
        return json.loads(stored) == json.loads(config_json(build_config))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- builders
def reason_key(reason: str) -> str:
    """The category of a skip reason (its text before the first ':'), used to count."""
    return reason.split(":")[0].strip()


@dataclass
class BuildSummary:
    """Outcome of a cache build (or of a no-op re-run), as read back from the written file."""

    out: Path
    n_records: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    noop: bool = False
    source: str = ""
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_cache(cls, out: str | os.PathLike, kind: str, seconds: float = 0.0,
                   noop: bool = False) -> BuildSummary:
        """The summary of the file as it is on disk (record count, skips, source)."""
        with open_cache(out, kind) as f:
            cfg = f.attrs.get("build_config", "{}")
            cfg = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
            source = str(cfg.get("source") or cfg.get("xml_dir") or "")
            return cls(Path(out), int(f.attrs["n_records"]), read_skipped(f), seconds=seconds,
                       noop=noop, source=source, warnings=read_warnings(f))

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def records_per_s(self) -> float:
        n = self.n_records + self.n_skipped
        return n / self.seconds if self.seconds > 0 else float("nan")

    def reason_counts(self) -> dict[str, int]:
        """Number of skipped records per reason category, most frequent first."""
        counts = collections.Counter(reason_key(r) for _, r in self.skipped)
        return dict(sorted(counts.items(), key=lambda t: (-t[1], t[0])))

    def report(self) -> str:
        """Human-readable summary, counting skip reasons per reason."""
        src = f" from {self.source}" if self.source else ""
        if self.noop:
            return (f"{self.out}: complete cache{src} with the same build config exists "
                    f"({self.n_records} records, {self.n_skipped} skipped) - nothing to do")
        lines = [f"{self.out}: {self.n_records} records written{src}, {self.n_skipped} "
                 f"skipped in {self.seconds:.1f} s ({self.records_per_s:.1f} records/s)"]
        lines += [f"  skipped {n:5d} x {k}" for k, n in self.reason_counts().items()]
        if self.warnings:
            lines.append(f"  {len(self.warnings)} warning(s), stored in warnings/ of the "
                         f"cache; first: {self.warnings[0][0]}: {self.warnings[0][1]}")
        return "\n".join(lines)


class Appender:
    """Grows resizable float32 datasets block by block (the rows need not fit in memory)."""

    def __init__(self, f: h5py.File | h5py.Group,
                 specs: dict[str, tuple[tuple[int, ...], int]], block: int = 256) -> None:
        self.ds = {name: f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape),
                                          dtype=np.float32, chunks=(chunk, *shape))
                   for name, (shape, chunk) in specs.items()}
        self.buf: dict[str, list[np.ndarray]] = {k: [] for k in self.ds}
        self.block = block
        self.n = 0

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.buf[k].append(v)
        if len(next(iter(self.buf.values()))) >= self.block:
            self.flush()

    def flush(self) -> None:
        m = len(next(iter(self.buf.values())))
        if not m:
            return
        for k, ds in self.ds.items():
            ds.resize(self.n + m, axis=0)
            ds[self.n:self.n + m] = np.stack(self.buf[k])
            self.buf[k] = []
        self.n += m


# --------------------------------------------------------------------------- worker pool
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
    # fork: workers inherit the imported modules (neurokit2 takes seconds to import)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(t) for t in chunk]


def parallel_map(fn: Callable[[T], R], tasks: Sequence[T], workers: int, progress: bool,
                 desc: str, preload: Sequence[str] = ()) -> Iterator[R]:
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
            for name in preload:  # import once before forking, not once per worker
                importlib.import_module(name)
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

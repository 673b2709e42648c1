"""HDF5 cache plumbing shared by the PTB-XL and UK Biobank builders (docs/data_formats.md).

Why: a cache is only trustworthy when it is complete and was built with the options the run
expects. Builders therefore write ``<out>.tmp`` and rename it to ``<out>`` only on success
(an interrupted build leaves nothing that looks like a cache), stamp the root attributes
(``schema_version``, ``kind``, ``build_config``, ``n_records``) and set ``complete = True``
last. Readers go through :func:`open_cache`, which refuses anything else with a message
naming the file and the problem. :func:`is_complete_cache` implements "re-running a build
with the same config is a no-op". Also shared by the builders: :class:`BuildSummary` (the
printed summary with skip reasons) and :func:`parallel_map` (ordered, chunked process pool
with a progress bar).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from data_modules.leads import BEAT_LEN, N_LEADS

T = TypeVar("T")
R = TypeVar("R")
SCHEMA_VERSION = 1
KINDS = ("ptbxl", "ukb")
STR_DTYPE = h5py.string_dtype()


class CacheError(ValueError):
    """A cache file that cannot be used (missing, incomplete, wrong kind, schema or layout)."""


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


@contextlib.contextmanager
def atomic_h5(out_path: str | os.PathLike, kind: str,
              build_config: Mapping[str, Any]) -> Iterator[h5py.File]:
    """Open ``<out>.tmp`` for writing; on success stamp the root attributes, set
    ``complete = True`` last and rename to ``<out>``; on any exception delete the tmp file.

    The caller sets ``f.attrs["n_records"]`` (defaults to 0 when not set).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; expected one of {KINDS}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        tmp.unlink()  # left over by a killed build: never resume from a partial file
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["kind"] = kind
            f.attrs["build_config"] = config_json(build_config)
            f.attrs["complete"] = False
            yield f
            if "n_records" not in f.attrs:
                f.attrs["n_records"] = 0
            f.attrs["complete"] = True
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_skipped(f: h5py.File, skipped: Sequence[tuple[str, str]]) -> None:
    """Write the ``skipped/`` group: datasets ``id`` and ``reason`` (UTF-8 strings)."""
    g = f.create_group("skipped")
    ids = [str(i) for i, _ in skipped]
    reasons = [str(r) for _, r in skipped]
    g.create_dataset("id", data=np.array(ids, dtype=object), dtype=STR_DTYPE)
    g.create_dataset("reason", data=np.array(reasons, dtype=object), dtype=STR_DTYPE)


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
        raise CacheError(f"{path}: cache kind is {got!r}, expected {kind!r}")
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
    return got


def open_cache(path: str | os.PathLike, kind: str | None = None) -> h5py.File:
    """Open a finished cache read-only (usable as a context manager), refusing missing,
    incomplete, wrong-kind, old or malformed files with the file named."""
    p = Path(path)
    if not p.is_file():
        hint = " (an unfinished build left '.tmp')" if p.with_name(p.name + ".tmp").exists() else ""
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
@dataclass
class BuildSummary:
    """Outcome of a cache build (or of a no-op re-run)."""

    out: Path
    n_records: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    noop: bool = False

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def records_per_s(self) -> float:
        n = self.n_records + self.n_skipped
        return n / self.seconds if self.seconds > 0 else float("nan")

    def report(self) -> str:
        """Human-readable summary, grouping skip reasons."""
        if self.noop:
            return (f"{self.out}: complete cache with the same build config exists "
                    f"({self.n_records} records, {self.n_skipped} skipped) - nothing to do")
        lines = [f"{self.out}: {self.n_records} records written, {self.n_skipped} skipped "
                 f"in {self.seconds:.1f} s ({self.records_per_s:.1f} records/s)"]
        counts: dict[str, int] = {}
        for _, reason in self.skipped:
            key = reason.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        lines += [f"  skipped {n:5d} x {k}" for k, n in sorted(counts.items(), key=lambda t: -t[1])]
        return "\n".join(lines)


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork: workers inherit the imported modules (neurokit2 takes seconds to import)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def parallel_map(fn: Callable[[T], R], tasks: Sequence[T], workers: int, progress: bool,
                 desc: str, preload: Sequence[str] = ()) -> Iterator[R]:
    """``fn`` over ``tasks``, results in task order, in ``workers`` processes (chunked), with
    a progress bar. Wrap in ``contextlib.closing`` so an error downstream stops the pool
    immediately instead of when the generator is garbage-collected."""
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
            ex = _pool(workers)
            try:
                for r in ex.map(fn, tasks, chunksize=chunk):
                    yield r
                    bar.update()
            finally:  # on an error downstream, drop the queued work instead of finishing it
                ex.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()

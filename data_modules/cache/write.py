"""Writing a cache: a temporary file renamed only when complete (an interrupted build leaves
nothing that looks like a cache), rows streamed in blocks, skips and warnings recorded in the
file, and the build's printed summary."""

from __future__ import annotations

import collections
import contextlib
import errno as errno_
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data_modules.atomic import atomic_path, tmp_name
from data_modules.cache.format import (
    KINDS,
    SCHEMA_VERSION,
    STR_DTYPE,
    config_json,
)
from data_modules.cache.read import open_cache, read_skipped, read_warnings
from data_modules.guarded import check_writes, guarded_h5, release
from data_modules.signal.leads import R_INDEX

# errno of OSErrors that mean "the cache could not be written" (None: an HDF5 error)
_WRITE_ERRNOS = (None, errno_.ENOSPC, errno_.EDQUOT, errno_.EIO, errno_.EFBIG, errno_.EROFS)


def _write_error(out: Path, e: OSError) -> OSError:
    why = " ".join((e.strerror or str(e)).split())  # one line (HDF5 messages hold newlines)
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

    The caller sets ``f.attrs["n_records"]`` (defaults to 0 when not set). A build config
    with a ``shard`` entry (:meth:`Shard.config`) marks the file as a part of a sharded build
    (root attribute ``shard``, read by ``ecg-dan cache merge``). Hold
    :func:`build_lock` around the build so concurrent builds of ``<out>`` do not interfere.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; expected one of {KINDS}")
    out = Path(out_path)
    with atomic_path(out, suffix=".h5.tmp") as tmp:
        try:
            f, raw = guarded_h5(tmp)  # a failed write never reaches HDF5 (guarded.py)
            try:
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["kind"] = kind
                f.attrs["build_config"] = config_json(build_config)
                if "shard" in build_config:  # Shard.config(): a part of a sharded build
                    f.attrs["shard"] = str(build_config["shard"])
                f.attrs["complete"] = False
                yield f
                if "n_records" not in f.attrs:
                    f.attrs["n_records"] = 0
                f.attrs["complete"] = True
            except BaseException as e:
                release(f)
                with contextlib.suppress(Exception):
                    f.close()
                raw.close()
                if isinstance(e, Exception):
                    raw.raise_error()  # a failed write is the cause of what followed
                raise
            release(f)
            f.close()
            raw.close()
            raw.raise_error()
        except OSError as e:
            if e.errno not in _WRITE_ERRNOS or str(out) in str(e):
                raise  # e.g. a source file not found: not about writing the cache
            raise _write_error(out, e) from None



@contextlib.contextmanager
def staging_h5(out: str | os.PathLike) -> Iterator[h5py.File]:
    """A scratch HDF5 file beside ``out`` for rows streamed in arrival order before they are
    written to ``out`` in their final order (so a build's memory does not grow with its
    size); deleted on exit, whatever happens."""
    path = tmp_name(out, ".stage.tmp")
    try:
        f, raw = guarded_h5(path)
        try:
            yield f
        finally:
            release(f)
            with contextlib.suppress(Exception):
                f.close()
            raw.close()
        raw.raise_error()
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def sort_skips(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The canonical order of ``skipped/`` and ``warnings/`` entries ``(id, text)``: ids that
    are integers first, in numeric order, then the others as strings; a stable sort, so the
    entries of one id keep their order. Every builder and ``ecg-dan cache merge`` use it, so
    a merge of the parts of a sharded build lists them as the whole build does."""
    def key(t: tuple[str, str]) -> tuple[int, int, str]:
        i = str(t[0]).strip()
        digits = i[1:] if i[:1] in "+-" else i
        return (0, int(i), "") if digits.isascii() and digits.isdigit() else (1, 0, str(t[0]))

    return sorted(pairs, key=key)


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


def write_strings(f: h5py.File | h5py.Group, name: str, values: Sequence[str]) -> h5py.Dataset:
    """A variable-length UTF-8 string dataset."""
    return f.create_dataset(name, data=np.array([str(v) for v in values], dtype=object),
                            dtype=STR_DTYPE)


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
    median_r_mv: float | None = None  # survival cohort caches: a unit error shows here

    @classmethod
    def from_cache(cls, out: str | os.PathLike, kind: str, seconds: float = 0.0,
                   noop: bool = False) -> BuildSummary:
        """The summary of the file as it is on disk (record count, skips, source)."""
        with open_cache(out, kind) as f:
            cfg = f.attrs.get("build_config", "{}")
            cfg = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
            source = str(cfg.get("source") or cfg.get("xml_dir") or "")
            r_mv = median_r_amplitude(f) if f.attrs["kind"] == "cohort" else None
            return cls(Path(out), int(f.attrs["n_records"]), read_skipped(f), seconds=seconds,
                       noop=noop, source=source, warnings=read_warnings(f), median_r_mv=r_mv)

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
        if self.median_r_mv is not None:
            lines.append(f"  median R amplitude {self.median_r_mv:.2f} mV (adult ECGs: about "
                         "0.5-2 mV; 10x or 1000x off means a wrong amplitude unit)")
        if self.warnings:
            lines.append(f"  {len(self.warnings)} warning(s), stored in warnings/ of the "
                         f"cache; first: {self.warnings[0][0]}: {self.warnings[0][1]}")
        return "\n".join(lines)


def median_r_amplitude(f: h5py.File, max_rows: int = 1000) -> float | None:
    """Median over (at most ``max_rows`` evenly spaced) beats of the R amplitude in mV: the
    largest of the 12 leads' values at ``R_INDEX``. None for an empty cache."""
    n = int(f["median"].shape[0])
    if n == 0:
        return None
    rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(np.int64))
    r = f["median"][rows, :, R_INDEX]
    return float(np.median(np.abs(r).max(axis=1)))


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
            check_writes(ds)  # a full disk stops the build here, not at the end
        self.n += m

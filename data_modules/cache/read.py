"""Reading a cache: :func:`open_cache` is the one way a cache is opened; it refuses a missing,
incomplete, wrong-kind, old or malformed file (or non-finite beats) naming the file and the
problem. :func:`is_complete_cache` makes re-running a build with the same config a no-op."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data_modules.cache.format import (
    FINITE_DATASETS,
    ID_DATASET,
    KIND_NAMES,
    KINDS,
    REQUIRED_DATASETS,
    SCHEMA_VERSION,
    CacheError,
    config_json,
)
from data_modules.signal.leads import BEAT_LEN, N_LEADS


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


def validate_cache(f: h5py.File, path: str | os.PathLike,
                   kind: str | tuple[str, ...] | None = None) -> str:
    """Check an open cache's root attributes and layout; return its kind.

    Raises :class:`CacheError` naming the file and what is wrong. ``kind=None`` accepts
    any known kind, a tuple any of those (e.g. ``SURVIVAL_KINDS``).
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
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and got not in wanted:
        names = " or ".join(f"{KIND_NAMES.get(k, k)} cache (kind {k!r})" for k in wanted)
        raise CacheError(f"{path} is a {KIND_NAMES[got]} cache (kind {got!r}); expected a "
                         f"{names}")
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


def open_cache(path: str | os.PathLike,
               kind: str | tuple[str, ...] | None = None) -> h5py.File:
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



def open_rows(path: str | os.PathLike, rdcc_nbytes: int | None = None) -> h5py.File:
    """A read-only handle for row reads on a cache that :func:`open_cache` has accepted in
    this run (a DataLoader worker's own handle, ``predict``'s per-record reads): the checks
    are not repeated per handle. ``rdcc_nbytes``: HDF5 chunk-cache size for streaming."""
    kw = {} if rdcc_nbytes is None else {"rdcc_nbytes": rdcc_nbytes}
    return h5py.File(path, "r", **kw)


_HANDLES: dict[str, h5py.File] = {}  # files this process keeps open (workers open their own)
_HANDLES_PID = os.getpid()


def worker_handle(path: str | os.PathLike) -> h5py.File:
    """A read-only handle of ``path`` kept open for the life of this process, for many
    per-record reads without reopening (a cache that :func:`open_cache` accepted, or a
    source's HDF5 file); a forked worker does not reuse its parent's handles."""
    global _HANDLES_PID
    if _HANDLES_PID != os.getpid():
        _HANDLES.clear()
        _HANDLES_PID = os.getpid()
    key = str(path)
    f = _HANDLES.get(key)
    if f is None:
        f = _HANDLES[key] = open_rows(key)
    return f


def close_handles() -> None:
    """Close the handles :func:`worker_handle` kept open in this process."""
    while _HANDLES:
        _HANDLES.popitem()[1].close()


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

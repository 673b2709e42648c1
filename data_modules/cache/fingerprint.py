"""A cache's content fingerprint: what a run records of the data it was trained and scored on,
so that a cache rebuilt from edited sources (an outcomes table changed in place) is noticed
when the run is resumed, instead of its old results being kept (docs/usage.md).

Every top-level dataset is hashed (SHA-256 of its dtype, shape and values) and so is every
root attribute except the bookkeeping (the build config, which names source paths, is kept
beside the hashes to say which source changed, not compared). A dataset over
:data:`FULL_BYTES` (the signals of a large cohort) is hashed on :data:`SAMPLE_ROWS` evenly
spaced rows plus its shape, so a fingerprint costs seconds, not a read of gigabytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data_modules.cache.read import open_cache

__all__ = ["FULL_BYTES", "SAMPLE_ROWS", "cache_fingerprint", "fingerprint_changes"]

FULL_BYTES = 64 * 2**20
SAMPLE_ROWS = 256
_BOOKKEEPING = ("build_config", "complete", "shard")


def _values_digest(values: Any) -> str:
    a = np.asarray(values)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    if a.dtype == object:  # variable-length strings
        h.update(b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in a.ravel()))
    else:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _dataset_digest(ds: h5py.Dataset) -> tuple[str, bool]:
    """(digest, sampled) of one dataset."""
    n = ds.shape[0] if ds.shape else 0
    if ds.size * ds.dtype.itemsize <= FULL_BYTES or n <= SAMPLE_ROWS:
        return _values_digest(ds[()]), False
    rows = np.unique(np.linspace(0, n - 1, SAMPLE_ROWS).astype(np.int64))
    return _values_digest(ds[rows]) + f"@{ds.shape}", True


def cache_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """The fingerprint of a finished cache: ``path``, ``kind``, ``rows``, ``datasets`` and
    ``attrs`` (name -> SHA-256), ``sampled`` (datasets hashed on a sample of rows) and
    ``build_config`` (for messages)."""
    with open_cache(path) as f:
        kind = f.attrs["kind"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        datasets, sampled = {}, []
        for name, obj in f.items():
            if isinstance(obj, h5py.Dataset):
                datasets[name], part = _dataset_digest(obj)
                if part:
                    sampled.append(name)
        attrs = {k: _values_digest(v) for k, v in f.attrs.items() if k not in _BOOKKEEPING}
        build = f.attrs.get("build_config", "{}")
        try:
            build = json.loads(build.decode() if isinstance(build, bytes) else build)
        except (TypeError, ValueError):
            build = {}
        rows = int(f["median"].shape[0])
    return {"path": str(Path(path)), "kind": kind, "rows": rows, "datasets": datasets,
            "attrs": attrs, "sampled": sorted(sampled), "build_config": build}


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints of one cache, in words (empty: the same data):
    the datasets and attributes whose content changed, and the build config's changed
    source files (``*_sha1`` keys, named by the path beside them when there is one)."""
    out = []
    for part in ("datasets", "attrs"):
        a, b = old.get(part, {}), new.get(part, {})
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if changed:
            out.append(f"{part} {', '.join(changed)}")
    if not out:
        return []
    a, b = old.get("build_config", {}), new.get("build_config", {})
    edited = []
    for k in sorted(set(a) | set(b)):
        if k.endswith("_sha1") and a.get(k) != b.get(k):
            src = b.get(k[:-len("_sha1")])
            edited.append(str(src) if isinstance(src, str) else k)
    if edited:
        out.append(f"edited source(s): {', '.join(edited)}")
    return out

"""Joining the parts of a sharded build (``ecg-dan cache merge PARTS... --out x.h5``) into the
cache the whole build writes, equal bit for bit in content, for every cache kind.

The merge knows no dataset by name; it follows these rules (docs/scaling.md):

* Parts: complete caches (:func:`open_cache`) whose build config's ``shard`` entry (and
  root attribute, both written by :func:`atomic_h5` from :meth:`Shard.config`) marks them
  as parts, exactly ``0/N .. N-1/N`` of one ``N``, of one kind, with build
  configs equal apart from the ``shard`` entry (the merged cache's config drops it, so it
  equals the whole build's and a re-run of either is a no-op).
* Row datasets: every dataset at the root of the file holds one row per record (first
  dimension = ``n_records``, checked). Rows are concatenated and ordered by the kind's id
  dataset (:data:`ID_DATASET`); each dataset keeps its dtype, trailing shape, attributes
  (equal in all parts) and part 0's storage options. An id in two parts (as a row or a
  skip) is refused: the source's unit was split between shards. (Rows of one id in one
  part, several ECGs of a unit, keep their order.)
* ``skipped/`` and ``warnings/`` are concatenated and put in the builders' canonical order
  (:func:`sort_skips`); any other group holds data about the whole cache: it must be
  identical in all parts and is copied.
* Root attributes: those of :data:`COUNT_ATTRS` are summed; ``shard`` is dropped; the
  bookkeeping ones (schema, kind, build config, complete) are written by :func:`atomic_h5`;
  every other one must be equal in all parts and is copied.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data_modules.cache.format import COUNT_ATTRS, ID_DATASET, config_json
from data_modules.cache.lock import build_lock
from data_modules.cache.read import is_complete_cache, open_cache, read_skipped, read_warnings
from data_modules.cache.shard import Shard
from data_modules.cache.write import (
    BuildSummary,
    atomic_h5,
    sort_skips,
    write_skipped,
    write_warnings,
)
from data_modules.errors import DataError

log = logging.getLogger(__name__)

SHARD_ATTR = "shard"  # root attribute (and build-config entry) of a part: "K/N"
_BOOKKEEPING = ("schema_version", "kind", "build_config", "complete", SHARD_ATTR)
_LISTS = {"skipped": (read_skipped, write_skipped), "warnings": (read_warnings, write_warnings)}
# rows copied per read/write (at most this many bytes, or rows for variable-length strings)
BLOCK_BYTES, BLOCK_ROWS = 16 << 20, 16384


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    try:
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    except TypeError:
        return bool(np.array_equal(a, b))


def _same_attrs(a: h5py.AttributeManager, b: h5py.AttributeManager,
                skip: Sequence[str] = ()) -> list[str]:
    """Names of the attributes that differ between ``a`` and ``b``."""
    names = (set(a) | set(b)) - set(skip)
    return sorted(k for k in names if k not in a or k not in b or not _same(a[k], b[k]))


def _copy_attrs(src: h5py.AttributeManager, dst: h5py.AttributeManager,
                skip: Sequence[str] = ()) -> None:
    for k in src:
        if k not in skip:
            dst.create(k, src[k], dtype=src.get_id(k).dtype)


def _odd(values: dict[Path, str]) -> tuple[Path, str] | None:
    """The first part whose value is not the most common one (None when all agree)."""
    common = collections.Counter(values.values()).most_common(1)[0][0]
    return next(((p, v) for p, v in values.items() if v != common), None)


def _read_parts(paths: Sequence[str | os.PathLike], out: Path
                ) -> tuple[str, dict[str, Any], list[Path]]:
    """Check the parts (see the module docstring); return the kind, the merged build config
    and the parts' paths in shard order. :class:`DataError` naming the odd part otherwise."""
    if not paths:
        raise DataError("cache merge: no parts given")
    info: dict[Path, tuple[str, Shard, dict[str, Any]]] = {}
    for p in map(Path, paths):
        if p.resolve() == out.resolve():
            raise DataError(f"{p}: is also the output of the merge; write it elsewhere")
        if p in info or any(p.resolve() == q.resolve() for q in info):
            raise DataError(f"{p}: given twice")
        with open_cache(p) as f:
            kind = _text(f.attrs["kind"])
            config = json.loads(_text(f.attrs["build_config"]))
            mark = _text(f.attrs.get(SHARD_ATTR, ""))
        entry = config.pop(SHARD_ATTR, None)
        if entry is None:
            raise DataError(f"{p}: not a part of a sharded build (no '{SHARD_ATTR}' in its "
                            "build config); merge takes the parts written by `ecg-dan cache "
                            "... --shard K/N`")
        try:
            shard = Shard.parse(str(entry))
        except ValueError as e:
            raise DataError(f"{p}: build config entry '{SHARD_ATTR}': {e}") from None
        if mark != str(shard):
            raise DataError(f"{p}: root attribute '{SHARD_ATTR}' {mark!r} disagrees with its "
                            f"build config's {shard}")
        info[p] = (kind, shard, config)
    checks = (("kind", lambda t: t[0]), ("number of parts N", lambda t: str(t[1].count)),
              ("build config", lambda t: config_json(t[2])))
    for what, value in checks:
        odd = _odd({p: value(t) for p, t in info.items()})
        if odd is not None:
            other = next(q for q, t in info.items() if value(t) != odd[1])
            detail = ""
            if what == "build config":
                a, b = info[odd[0]][2], info[other][2]
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                detail = f" (differs in {', '.join(keys)})"
            raise DataError(f"{odd[0]}: its {what} differs from {other}'s{detail}: the parts "
                            "of one merge must come from one sharded build")
    by_index: dict[int, Path] = {}
    for p, (_, shard, _) in info.items():
        if shard.index in by_index:
            raise DataError(f"{p}: part {shard} given twice (also {by_index[shard.index]})")
        by_index[shard.index] = p
    kind, shard, config = next(iter(info.values()))
    missing = [f"{k}/{shard.count}" for k in range(shard.count) if k not in by_index]
    if missing:
        raise DataError(f"cache merge: part(s) {', '.join(missing)} missing (given "
                        f"{len(info)} of {shard.count}: {', '.join(map(str, info))})")
    return kind, config, [by_index[k] for k in range(shard.count)]


def merge_caches(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> BuildSummary:
    """Merge the parts of a sharded build into ``out`` (atomic, under ``<out>.lock``; a
    no-op when ``out`` is already a complete cache with the merged build config). Returns
    the :class:`BuildSummary` of ``out`` as written."""
    t0 = time.perf_counter()
    out = Path(out)
    kind, config, paths = _read_parts(parts, out)
    with build_lock(out):
        if is_complete_cache(out, kind, config):
            s = BuildSummary.from_cache(out, kind, noop=True)
        else:
            with contextlib.ExitStack() as stack:
                files = [stack.enter_context(open_cache(p, kind)) for p in paths]
                with atomic_h5(out, kind, config) as g:
                    _merge_into(files, paths, g, kind)
            s = BuildSummary.from_cache(out, kind, seconds=time.perf_counter() - t0)
    log.info(s.report())
    return s


def _merge_into(files: list[h5py.File], paths: list[Path], g: h5py.File, kind: str) -> None:
    f0 = files[0]
    counts = [int(f.attrs["n_records"]) for f in files]
    if sum(counts) == 0:
        skipped = sum(len(read_skipped(f)) for f in files)
        raise DataError(f"cache merge: no usable record in any of the {len(files)} parts "
                        f"({skipped} skipped) - refusing to write an empty cache")
    rows = sorted(k for k, v in f0.items() if isinstance(v, h5py.Dataset))
    groups = sorted(k for k, v in f0.items() if isinstance(v, h5py.Group))
    for f, p, n in zip(files, paths, counts):
        got = sorted(k for k, v in f.items() if isinstance(v, h5py.Dataset))
        got_groups = sorted(k for k, v in f.items() if isinstance(v, h5py.Group))
        if got != rows or got_groups != groups:
            diff = sorted(set(got) ^ set(rows) | set(got_groups) ^ set(groups))
            raise DataError(f"{p}: holds other datasets/groups than {paths[0]}: {diff}")
        for name in rows:
            ds, ref = f[name], f0[name]
            if ds.shape[:1] != (n,) or ds.shape[1:] != ref.shape[1:] or ds.dtype != ref.dtype:
                raise DataError(f"{p}: dataset {name!r} has shape {ds.shape} and dtype "
                                f"{ds.dtype}; expected ({n}, *{ref.shape[1:]}) rows of "
                                f"{ref.dtype} as in {paths[0]}")
            bad = _same_attrs(ds.attrs, ref.attrs)
            if bad:
                raise DataError(f"{p}: dataset {name!r}: attribute(s) {bad} differ from "
                                f"{paths[0]}'s")
        bad = _same_attrs(f.attrs, f0.attrs, skip=(*_BOOKKEEPING, *COUNT_ATTRS))
        if bad:
            raise DataError(f"{p}: root attribute(s) {bad} differ from {paths[0]}'s")
    order, part_of, row_of = _row_order(files, paths, kind, counts)
    for name in rows:
        _copy_rows([f[name] for f in files], g, name, order, part_of, row_of)
    for name in groups:
        if name in _LISTS:
            read, write = _LISTS[name]
            write(g, sort_skips([t for f in files for t in read(f)]))
            continue
        for f, p in zip(files[1:], paths[1:]):
            if not _same_group(f[name], f0[name]):
                raise DataError(f"{p}: group {name!r} differs from {paths[0]}'s (a group other "
                                "than skipped/ and warnings/ must be the same in every part)")
        f0.copy(f0[name], g, name=name)
    _copy_attrs(f0.attrs, g.attrs, skip=(*_BOOKKEEPING, *COUNT_ATTRS))
    for k in COUNT_ATTRS:
        if k in f0.attrs:
            g.attrs.create(k, sum(int(f.attrs[k]) for f in files),
                           dtype=f0.attrs.get_id(k).dtype)


def _row_order(files: list[h5py.File], paths: list[Path], kind: str, counts: list[int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merged rows in id order (as part and row numbers); refuses an id found in two
    parts, as rows, as skips, or as a row in one and a skip in another."""
    id_name = ID_DATASET[kind]
    ids = np.concatenate([f[id_name][...] for f in files])
    if ids.dtype.kind in "OSU":
        ids = np.array([_text(v) for v in ids], dtype=str)
    part_of = np.repeat(np.arange(len(files)), counts)
    row_of = np.concatenate([np.arange(n) for n in counts])
    order = np.argsort(ids, kind="stable")  # equal ids (one unit's rows) keep their order
    s = ids[order]
    dup = np.flatnonzero((s[1:] == s[:-1]) & (part_of[order][1:] != part_of[order][:-1]))
    if dup.size:
        i = order[dup[0]], order[dup[0] + 1]
        raise DataError(f"{id_name} {s[dup[0]]} is a row of {paths[part_of[i[0]]]} and of "
                        f"{paths[part_of[i[1]]]}: the source's unit was split between shards "
                        "(see docs/scaling.md); build it whole")
    owner: dict[str, int] = {}
    for k, f in enumerate(files):
        for sid, _ in read_skipped(f):
            if owner.setdefault(sid, k) != k:
                raise DataError(f"{id_name} {sid} is skipped in {paths[owner[sid]]} and in "
                                f"{paths[k]}: the source's unit was split between shards "
                                "(see docs/scaling.md); build it whole")
    # skip ids as the id dataset holds them (an integer id dataset: the integer skip ids)
    keyed = {v: sid for sid in owner if (v := _as_id(sid, ids.dtype)) is not None}
    if keyed:
        for j in np.flatnonzero(np.isin(s, np.array(list(keyed)))):
            k = part_of[order[j]]
            sid = keyed[s[j].item()]
            if owner[sid] != k:
                raise DataError(f"{id_name} {sid} is a row of {paths[k]} and skipped in "
                                f"{paths[owner[sid]]}: the source's unit was split between "
                                "shards (see docs/scaling.md); build it whole")
    return order, part_of[order], row_of[order]


def _as_id(text: str, dtype: np.dtype) -> int | str | None:
    if dtype.kind not in "iu":
        return text
    try:
        v = int(text)
    except ValueError:
        return None
    info = np.iinfo(dtype)
    return v if info.min <= v <= info.max else None


def _copy_rows(src: list[h5py.Dataset], g: h5py.File, name: str, order: np.ndarray,
               part_of: np.ndarray, row_of: np.ndarray) -> None:
    """Write dataset ``name`` in merged order, a block of rows at a time, with part 0's
    dtype, attributes and storage options."""
    ref = src[0]
    n, tail = len(order), ref.shape[1:]
    chunks, maxshape = ref.chunks, None
    if chunks is not None:
        if ref.maxshape[0] is None:
            maxshape = (None, *ref.maxshape[1:])
        else:
            chunks = (min(chunks[0], max(n, 1)), *chunks[1:])
    ds = g.create_dataset(name, shape=(n, *tail), dtype=ref.dtype, chunks=chunks,
                          maxshape=maxshape, compression=ref.compression,
                          compression_opts=ref.compression_opts, shuffle=ref.shuffle,
                          fletcher32=ref.fletcher32, scaleoffset=ref.scaleoffset)
    _copy_attrs(ref.attrs, ds.attrs)
    row_bytes = max(1, ref.dtype.itemsize * int(np.prod(tail, dtype=np.int64)))
    block = max(1, min(BLOCK_ROWS, BLOCK_BYTES // row_bytes))
    for a in range(0, n, block):
        parts, rows = part_of[a:a + block], row_of[a:a + block]
        buf = np.empty((len(rows), *tail), dtype=ref.dtype)
        for k in np.unique(parts):
            m = parts == k
            r = rows[m]
            lo, hi = int(r.min()), int(r.max()) + 1
            if hi - lo == r.size and np.all(np.diff(r) == 1):  # parts are sorted by id
                buf[m] = src[k][lo:hi]
            else:
                srt = np.sort(r)
                buf[m] = src[k][srt][np.searchsorted(srt, r)]
        ds[a:a + len(rows)] = buf


def _same_group(a: h5py.Group, b: h5py.Group) -> bool:
    if set(a) != set(b) or _same_attrs(a.attrs, b.attrs):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, h5py.Group) != isinstance(y, h5py.Group):
            return False
        if isinstance(x, h5py.Group):
            if not _same_group(x, y):
                return False
        elif x.dtype != y.dtype or not _same(x[()], y[()]) or _same_attrs(x.attrs, y.attrs):
            return False
    return True


__all__ = ["BLOCK_BYTES", "SHARD_ATTR", "merge_caches"]

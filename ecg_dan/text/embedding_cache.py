"""Record text embeddings with an on-disk cache, computed once per distinct text.

PTB-XL has 21,799 records but only 71 distinct SCP statements, so the structured recipe
needs ~71 encoder calls, not ~50,000. Embeddings are cached per encoder (name + revision)
in one ``.npz`` file keyed by ``(recipe, text)``; repeated runs and ablations reuse it.
Files are written to a temporary name and renamed, so a crash never leaves a half file,
and a writer merges what is on disk first, so concurrent runs only lose duplicate work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from data_modules.atomic import atomic_path
from ecg_dan.text.encoders import TextEncoder
from ecg_dan.text.recipes import RecipeError, Record, get_recipe, parse_scp_codes

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1


def cache_path(cache_dir: str | Path, encoder: TextEncoder) -> Path:
    """The cache file of one encoder: readable slug plus a hash of the exact identity."""
    ident = f"{encoder.name}\0{encoder.revision}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{encoder.name}__{encoder.revision}").strip("_")
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{slug[-80:]}__{digest}.npz"


def _to_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def _from_bytes(arr: np.ndarray) -> Any:
    return json.loads(arr.tobytes().decode("utf-8"))


class EmbeddingCache:
    """In-memory view of one encoder's cache file: ``(recipe, text) -> float32 vector``."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | Path | None) -> None:
        self.encoder = encoder
        self.path = cache_path(cache_dir, encoder) if cache_dir is not None else None
        self._index: dict[tuple[str, str], int] = {}
        self._rows: list[np.ndarray] = []
        if self.path is not None and self.path.is_file():
            self._merge(*self._read(self.path))

    def _read(self, path: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = _from_bytes(z["meta"])
                keys = [tuple(k) for k in _from_bytes(z["keys"])]
                emb = np.asarray(z["emb"], dtype=np.float32)
        except Exception as err:  # noqa: BLE001 - unreadable cache: recompute, never crash
            log.warning("ignoring unreadable text-embedding cache %s: %s", path, err)
            return [], np.zeros((0, self.encoder.dim), np.float32)
        expected = {
            "schema": CACHE_SCHEMA,
            "name": self.encoder.name,
            "revision": self.encoder.revision,
            "dim": int(self.encoder.dim),
        }
        if meta != expected or len(keys) != len(emb):
            log.warning("ignoring text-embedding cache %s: made for %s", path, meta)
            return [], np.zeros((0, self.encoder.dim), np.float32)
        return keys, emb

    def _merge(self, keys: Sequence[tuple[str, str]], emb: np.ndarray) -> None:
        for key, row in zip(keys, emb):
            if key not in self._index:
                self._index[key] = len(self._rows)
                self._rows.append(row)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, keys: Sequence[tuple[str, str]]) -> np.ndarray:
        """Stack the vectors of ``keys`` (all must be present)."""
        if not keys:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.stack([self._rows[self._index[k]] for k in keys]).astype(np.float32)

    def add(self, keys: Sequence[tuple[str, str]], emb: np.ndarray) -> None:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape != (len(keys), self.encoder.dim):
            raise ValueError(
                f"encoder {self.encoder.name!r} returned shape {emb.shape}, "
                f"expected {(len(keys), self.encoder.dim)}"
            )
        self._merge(keys, emb)

    def save(self) -> None:
        """Atomically write the cache, first merging entries another process may have added."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            self._merge(*self._read(self.path))
        keys = list(self._index)
        emb = self.get(keys)
        meta = {
            "schema": CACHE_SCHEMA,
            "name": self.encoder.name,
            "revision": self.encoder.revision,
            "dim": int(self.encoder.dim),
        }
        with atomic_path(self.path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=_to_bytes(meta), keys=_to_bytes([list(k) for k in keys]), emb=emb)


def embed_texts(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | Path | None = None,
    namespace: str = "text",
    progress: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed ``texts`` (n, dim), each distinct text once, through the on-disk cache.

    ``namespace`` is the recipe part of the cache key (e.g. class prompts use their own).
    """
    cache = EmbeddingCache(encoder, cache_dir)
    keys = [(namespace, str(t)) for t in texts]
    _fill(cache, list(dict.fromkeys(keys)), encoder, progress, batch_size)
    return cache.get(keys)


def _fill(
    cache: EmbeddingCache,
    distinct: list[tuple[str, str]],
    encoder: TextEncoder,
    progress: bool,
    batch_size: int,
) -> None:
    """Encode the keys not yet cached, longest texts together so batches pad little."""
    missing = sorted((k for k in distinct if k not in cache), key=lambda k: len(k[1]))
    log.info(
        "text embeddings (%s@%s): %d distinct texts, %d cached, %d to encode",
        encoder.name,
        encoder.revision,
        len(distinct),
        len(distinct) - len(missing),
        len(missing),
    )
    if not missing:
        return
    from tqdm.auto import tqdm

    chunk = max(batch_size * 4, 1)
    with tqdm(
        total=len(missing),
        desc=f"embedding texts ({encoder.name})",
        unit="text",
        disable=not progress,
    ) as bar:
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            emb = encoder.encode([t for _, t in part], batch_size=batch_size)
            cache.add(part, emb)
            bar.update(len(part))
    cache.save()


def record_texts(
    scp_codes: Sequence[Mapping[str, float] | str],
    reports: Sequence[str] | None,
    recipe: str,
    statements: pd.DataFrame,
    record_ids: Sequence[Any] | None = None,
) -> list[list[tuple[str, float]]]:
    """Apply a recipe to every record: the ``(text, weight)`` pairs it will be embedded as."""
    fn = get_recipe(recipe)
    # Plain lists: a pandas Series would be indexed by label, not position.
    scp_codes = list(scp_codes)
    reports = None if reports is None else list(reports)
    record_ids = None if record_ids is None else list(record_ids)
    n = len(scp_codes)
    if reports is not None and len(reports) != n:
        raise ValueError(f"{len(reports)} reports for {n} scp_codes entries")
    if record_ids is not None and len(record_ids) != n:
        raise ValueError(f"{len(record_ids)} record ids for {n} scp_codes entries")
    out = []
    for i in range(n):
        rid = record_ids[i] if record_ids is not None else f"#{i}"
        rec = Record(
            record_id=rid,
            scp_codes=parse_scp_codes(scp_codes[i], rid),
            report="" if reports is None else reports[i],
        )
        pairs = fn(rec, statements)
        if not pairs or sum(w for _, w in pairs) <= 0:
            raise RecipeError(f"record {rid}: recipe {recipe!r} gave no positively weighted text")
        out.append(pairs)
    return out


def embed_records(
    scp_codes: Sequence[Mapping[str, float] | str],
    reports: Sequence[str] | None,
    recipe: str,
    encoder: TextEncoder,
    statements: pd.DataFrame,
    cache_dir: str | Path | None,
    progress: bool = True,
    record_ids: Sequence[Any] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Text embedding per record (n, dim) float32: weighted mean over the recipe's texts.

    Weights are normalised per record (p_k / sum_j p_j). ``record_ids`` (e.g. ecg_id) only
    make error messages point at the right record; by default records are named ``#i``.
    ``cache_dir=None`` keeps embeddings in memory only.
    """
    per_record = record_texts(scp_codes, reports, recipe, statements, record_ids)
    vocab: dict[tuple[str, str], int] = {}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, pairs in enumerate(per_record):
        total = float(sum(w for _, w in pairs))
        for text, w in pairs:
            rows.append(i)
            cols.append(vocab.setdefault((recipe, text), len(vocab)))
            vals.append(w / total)
    distinct = list(vocab)
    cache = EmbeddingCache(encoder, cache_dir)
    _fill(cache, distinct, encoder, progress, batch_size)
    emb = cache.get(distinct).astype(np.float64)
    weights = sparse.csr_matrix((vals, (rows, cols)), shape=(len(per_record), len(distinct)))
    return np.asarray(weights @ emb, dtype=np.float32).reshape(len(per_record), encoder.dim)

"""Map-style datasets over one HDF5 cache (docs/data_formats.md), read by batch.

The beat arrays live in a :class:`BeatStore`: loaded once into memory when they fit
``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`; ``data.in_memory_max_mb``), else read per
record from the file (the streaming fallback). A DataLoader batch is gathered by index in
one ``__getitems__`` call and is RAW: ``median`` (B, 12, 600) as stored, the kept-lead
masks drawn for it, labels; :func:`data_modules.loading.transforms.finish_batch` turns it into the
model's input on the device the model runs on. ``ds[i]`` returns one finished sample (for
inspection). Small per-record arrays (labels, times, ids) are read at construction.

h5py handles are opened lazily in the process that reads (never in ``__init__``) and
re-opened after a fork: they can be neither pickled to DataLoader workers nor shared
across processes. Per-row reads are used in streaming mode because h5py reads with a list
of indices were 4-10x slower here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_modules.cache import SURVIVAL_KINDS, open_cache, open_rows
from data_modules.choices import IN_MEMORY_MAX_MB
from data_modules.loading.transforms import BatchLeadMask, LeadMasker, ProcessLocalRNG, finish_batch
from data_modules.signal.leads import N_LEADS

# 16 MiB raw-chunk cache per dataset: enough for chunked/compressed caches, small per worker.
_RDCC_NBYTES = 16 * 1024 * 1024
# Beat arrays up to this size are held in memory (full PTB-XL, median + median_clean in
# float32: 1.26 GB; a 50,000-ECG UK Biobank cohort: 1.44 GB).
DEFAULT_MAX_BYTES = IN_MEMORY_MAX_MB * 2**20


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value.item())
    return str(value)


def collate_raw(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` of the batch-gathering datasets: ``__getitems__`` already collated."""
    return batch


def raw_loader(dataset: H5ECGDataset, **kwargs: Any) -> DataLoader:
    """A DataLoader over ``dataset`` yielding raw batches (one ``__getitems__`` per batch)."""
    return DataLoader(dataset, collate_fn=collate_raw, **kwargs)


class BeatStore:
    """The (n, 12, 600) beat arrays ``names`` of one cache: in memory or streamed.

    ``in_memory`` is decided at construction from the arrays' size and ``max_bytes``
    (``None``: no limit, 0: always stream). The arrays are loaded on first use in the
    process that uses them (a forked DataLoader worker shares the parent's copy; a pickled
    copy reloads), so each process reads the file once per store. ``file_reads`` counts
    h5py reads made by this process (tests check that an in-memory epoch makes none).
    """

    def __init__(self, path: str | Path, names: Sequence[str], max_bytes: int | None
                 = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.names = tuple(names)
        with open_rows(self.path) as f:
            self.nbytes = sum(int(f[n].size) * f[n].dtype.itemsize for n in self.names)
        self.max_bytes = max_bytes
        self.in_memory = max_bytes is None or self.nbytes <= max_bytes
        self.file_reads = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._file: h5py.File | None = None
        self._owner_pid: int | None = None
        self._dsets: dict[str, h5py.Dataset] = {}

    @property
    def mode(self) -> str:
        return "memory" if self.in_memory else "stream"

    # -- lazy file handle (streaming, and the one-time load)
    def _dset(self, name: str) -> h5py.Dataset:
        pid = os.getpid()
        if self._file is None or self._owner_pid != pid:
            # A handle inherited through fork belongs to the parent: drop it, open our own.
            self._dsets = {}
            self._file = open_rows(self.path, rdcc_nbytes=_RDCC_NBYTES)
            self._owner_pid = pid
        d = self._dsets.get(name)
        if d is None:
            d = self._dsets[name] = self._file[name]
        return d

    def close(self) -> None:
        """Close this process's handle (it is re-opened on the next access)."""
        if self._file is not None and self._owner_pid == os.getpid():
            self._file.close()
        self._file = None
        self._owner_pid = None
        self._dsets = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_file=None, _owner_pid=None, _dsets={}, _arrays={})
        return state

    def load(self) -> None:
        """Read the arrays into memory now (in-memory mode; no-op when already loaded)."""
        if not self.in_memory or len(self._arrays) == len(self.names):
            return
        for name in self.names:
            if name not in self._arrays:
                d = self._dset(name)
                a = np.empty(d.shape, dtype=d.dtype)
                d.read_direct(a)
                self.file_reads += 1
                self._arrays[name] = a
        self.close()

    def rows(self, name: str, rows: np.ndarray) -> torch.Tensor:
        """Beats of cache ``rows`` (1-d int64), as stored (float32), stacked in that order."""
        if self.in_memory:
            self.load()
            # numpy's gather: single-threaded memcpy of whole records (torch's index_select
            # was slower here with 2 threads on a shared machine)
            return torch.from_numpy(self._arrays[name][rows])
        d = self._dset(name)
        self.file_reads += len(rows)
        return torch.from_numpy(np.stack([d[int(r)] for r in rows]))


class H5ECGDataset(Dataset):
    """One HDF5 cache, a subset of its rows; batches carry the raw median beat.

    Base class of :class:`PTBXLDataset` and :class:`UKBDataset`; usable on its own for
    any cache kind. ``indices`` selects cache rows (default: all); item ``i`` is cache row
    ``indices[i]`` and carries it as ``index``. ``store`` shares one :class:`BeatStore`
    between the datasets of a DataModule (default: a new one with ``max_bytes``).
    """

    kind: str | tuple[str, ...] | None = None
    beat_names: tuple[str, ...] = ("median",)

    def __init__(self, path: str | Path, indices: Sequence[int] | np.ndarray | None = None,
                 store: BeatStore | None = None, max_bytes: int | None = DEFAULT_MAX_BYTES
                 ) -> None:
        self.path = Path(path)
        with open_cache(self.path, self.kind) as f:
            self.n_records = int(f["median"].shape[0])
            self.indices = self._check_indices(indices)
            self._load_metadata(f)
        if store is not None and (store.path != self.path
                                  or not set(self.beat_names) <= set(store.names)):
            raise ValueError(f"beat store {store.path} {store.names} cannot serve "
                             f"{self.beat_names} of {self.path}")
        self.store = store if store is not None else BeatStore(self.path, self.beat_names,
                                                               max_bytes)

    # -- construction helpers
    def _check_indices(self, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
        if indices is None:
            return np.arange(self.n_records, dtype=np.int64)
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-d integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_records):
            raise IndexError(
                f"row indices out of range [0, {self.n_records}) for cache {self.path}: "
                f"min {idx.min()}, max {idx.max()}"
            )
        return idx

    def _load_metadata(self, f: h5py.File) -> None:
        """Read small per-row arrays once (subclasses); the beats go to the store."""

    # -- Dataset API
    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def _rows(self, positions: Sequence[int]) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64)
        n = len(self)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"items {pos.min()}..{pos.max()} out of range for a dataset of "
                             f"{n} rows")
        return self.indices[pos]

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """The raw batch of items ``positions`` (the DataLoader's batched fetch)."""
        rows = self._rows(positions)
        return self.raw_batch(rows)

    def raw_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Raw batch of cache ``rows``: ``median`` and ``index`` (subclasses add more)."""
        return {"median": self.store.rows("median", rows), "index": torch.from_numpy(rows)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One finished sample (what the model sees for item ``i``)."""
        return {k: v[0] for k, v in finish_batch(self.__getitems__([i])).items()}

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, n={len(self)} of {self.n_records}, "
                f"{self.store.mode})")


class PTBXLDataset(H5ECGDataset):
    """PTB-XL pretraining samples.

    Raw batch keys: ``median`` and ``median_clean`` (B, 12, 600); ``lead_mask`` (B, 12)
    bool, drawn per sample with p=``masker.p_apply`` when ``masker`` is given (train),
    else all True; ``superclass`` (B, 5) float32; ``index`` (B,) int64 (cache rows);
    ``text`` (B, d) float32 only when ``text`` (an (n_records, d) array aligned with cache
    rows) is given. Finished (``finish_batch``): ``x`` (12, 608) z-scored, masked, padded;
    ``target`` (12, 600) z-scored ``median_clean``, unmasked, unpadded.
    """

    kind = "ptbxl"
    beat_names = ("median", "median_clean")

    def __init__(
        self,
        path: str | Path,
        indices: Sequence[int] | np.ndarray | None = None,
        masker: LeadMasker | None = None,
        text: np.ndarray | None = None,
        seed: int = 0,
        store: BeatStore | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__(path, indices, store, max_bytes)
        self.masker = masker
        self._rng = ProcessLocalRNG(seed)
        self.text: np.ndarray | None = None
        if text is not None:
            t = np.asarray(text, dtype=np.float32)
            if t.ndim != 2 or t.shape[0] != self.n_records:
                raise ValueError(
                    f"text embeddings must have shape (n_records={self.n_records}, d) aligned "
                    f"with the rows of {self.path}, got {t.shape}"
                )
            self.text = t

    def _load_metadata(self, f: h5py.File) -> None:
        self.superclass = np.asarray(f["superclass"][...], dtype=np.float32)

    def raw_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        if self.masker is not None:
            # one draw per sample, in batch order: the stream of the per-record path
            rng = self._rng.get()
            mask = np.stack([self.masker.sample_mask_per_sample(rng) for _ in rows])
        else:
            mask = np.ones((len(rows), N_LEADS), dtype=bool)
        batch = {
            "median": self.store.rows("median", rows),
            "median_clean": self.store.rows("median_clean", rows),
            "lead_mask": torch.from_numpy(mask),
            "superclass": torch.from_numpy(self.superclass[rows]),
            "index": torch.from_numpy(rows),
        }
        if self.text is not None:
            batch["text"] = torch.from_numpy(self.text[rows])
        return batch


class UKBDataset(H5ECGDataset):
    """UK Biobank survival samples.

    Raw batch keys: ``median`` (B, 12, 600); ``lead_mask`` (B, 12) bool, one subset per
    batch drawn by ``batch_mask`` (train), else all True; ``time`` float32 (in the
    cache's ``time_unit``); ``event`` float32 (0/1); ``eid`` int64; ``index`` int64
    (cache rows). Finished: ``x`` (12, 608), ``target`` = ``x`` unpadded (masked).
    """

    kind = SURVIVAL_KINDS

    def __init__(self, path: str | Path, indices: Sequence[int] | np.ndarray | None = None,
                 batch_mask: BatchLeadMask | None = None, store: BeatStore | None = None,
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        super().__init__(path, indices, store, max_bytes)
        self.batch_mask = batch_mask

    def _load_metadata(self, f: h5py.File) -> None:
        self.time = np.asarray(f["time"][...], dtype=np.float32)
        self.event = np.asarray(f["event"][...], dtype=np.float32)
        self.eid = np.asarray(f["eid"][...], dtype=np.int64)
        self.time_unit = _attr_str(f["time"].attrs.get("time_unit", f.attrs.get("time_unit", "")))

    def raw_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        n = len(rows)
        mask = (self.batch_mask.draw(n) if self.batch_mask is not None
                else torch.ones(n, N_LEADS, dtype=torch.bool))
        return {
            "median": self.store.rows("median", rows),
            "lead_mask": mask,
            "time": torch.from_numpy(self.time[rows]),
            "event": torch.from_numpy(self.event[rows]),
            "eid": torch.from_numpy(self.eid[rows]),
            "index": torch.from_numpy(rows),
        }

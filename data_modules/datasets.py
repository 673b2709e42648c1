"""Map-style datasets over one HDF5 cache (docs/data_formats.md).

The HDF5 file is opened lazily in the process that reads it (never in ``__init__``) and
re-opened after a fork, because h5py handles can be neither pickled to DataLoader workers
nor shared safely across processes. Each ``__getitem__`` reads ONE record: h5py reads with
a list of indices were 4-10x slower here than per-row reads. Small per-record arrays
(labels, times, ids) are read once at construction and kept in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from data_modules.h5cache import open_cache
from data_modules.leads import N_LEADS, PAD
from data_modules.transforms import LeadMasker, ProcessLocalRNG, pad_beat, zscore_leads

# 16 MiB raw-chunk cache per dataset: enough for chunked/compressed caches, small per worker.
_RDCC_NBYTES = 16 * 1024 * 1024


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value.item())
    return str(value)


class H5ECGDataset(Dataset):
    """One HDF5 cache, a subset of its rows; yields the z-scored, padded median beat.

    Base class of :class:`PTBXLDataset` and :class:`UKBDataset`; usable on its own for
    any cache kind. ``indices`` selects cache rows (default: all); item ``i`` is cache row
    ``indices[i]`` and carries it as ``index``.
    """

    kind: str | None = None

    def __init__(self, path: str | Path, indices: Sequence[int] | np.ndarray | None = None) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._owner_pid: int | None = None
        self._dsets: dict[str, h5py.Dataset] = {}
        with open_cache(self.path, self.kind) as f:
            self.n_records = int(f["median"].shape[0])
            self.indices = self._check_indices(indices)
            self._load_metadata(f)

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
        """Read small per-row arrays once (subclasses); the big arrays stay on disk."""

    # -- lazy file handle
    def _h5(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._owner_pid != pid:
            # A handle inherited through fork belongs to the parent: drop it, open our own.
            self._dsets = {}
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_RDCC_NBYTES)
            self._owner_pid = pid
        return self._file

    def _dset(self, name: str) -> h5py.Dataset:
        f = self._h5()
        d = self._dsets.get(name)
        if d is None:
            d = self._dsets[name] = f[name]
        return d

    def _read_row(self, name: str, row: int) -> np.ndarray:
        return self._dset(name)[row]

    def close(self) -> None:
        """Close this process's handle (it is re-opened on the next access)."""
        if self._file is not None and self._owner_pid == os.getpid():
            self._file.close()
        self._file = None
        self._owner_pid = None
        self._dsets = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_owner_pid"] = None
        state["_dsets"] = {}
        return state

    # -- Dataset API
    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)} rows")
        return self.get_row(int(self.indices[i]))

    def get_row(self, row: int) -> dict[str, torch.Tensor]:
        """The sample of cache row ``row``."""
        x = pad_beat(zscore_leads(self._read_row("median", row)), PAD)
        return {"x": torch.from_numpy(x), "index": torch.tensor(row, dtype=torch.int64)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, n={len(self)} of {self.n_records})"


class PTBXLDataset(H5ECGDataset):
    """PTB-XL pretraining samples.

    Keys: ``x`` float32 (12, 608) z-scored median beat, lead-masked when ``masker`` is
    given (train: per sample with p=``masker.p_apply``), padded; ``target`` float32
    (12, 600) z-scored ``median_clean``, unmasked, unpadded; ``lead_mask`` bool (12,);
    ``superclass`` float32 (5,); ``index`` int64 (cache row); ``text`` float32 (d,) only
    when ``text`` (an (n_records, d) array aligned with cache rows) is given.
    """

    kind = "ptbxl"

    def __init__(
        self,
        path: str | Path,
        indices: Sequence[int] | np.ndarray | None = None,
        masker: LeadMasker | None = None,
        text: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(path, indices)
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

    def get_row(self, row: int) -> dict[str, torch.Tensor]:
        x = zscore_leads(self._read_row("median", row))
        if self.masker is not None:
            x, mask = self.masker.apply_sample(x, self._rng.get())
        else:
            mask = np.ones(N_LEADS, dtype=bool)
        target = zscore_leads(self._read_row("median_clean", row))
        sample = {
            "x": torch.from_numpy(pad_beat(x, PAD)),
            "target": torch.from_numpy(target),
            "lead_mask": torch.from_numpy(mask),
            "superclass": torch.from_numpy(self.superclass[row].copy()),
            "index": torch.tensor(row, dtype=torch.int64),
        }
        if self.text is not None:
            sample["text"] = torch.from_numpy(self.text[row].copy())
        return sample


class UKBDataset(H5ECGDataset):
    """UK Biobank survival samples (lead masking is per batch, see ``BatchLeadMask``).

    Keys: ``x`` float32 (12, 608) z-scored padded median; ``time`` float32 (in the cache's
    ``time_unit``); ``event`` float32 (0/1); ``eid`` int64; ``index`` int64 (cache row).
    """

    kind = "ukb"

    def _load_metadata(self, f: h5py.File) -> None:
        self.time = np.asarray(f["time"][...], dtype=np.float32)
        self.event = np.asarray(f["event"][...], dtype=np.float32)
        self.eid = np.asarray(f["eid"][...], dtype=np.int64)
        self.time_unit = _attr_str(f["time"].attrs.get("time_unit", f.attrs.get("time_unit", "")))

    def get_row(self, row: int) -> dict[str, torch.Tensor]:
        x = pad_beat(zscore_leads(self._read_row("median", row)), PAD)
        return {
            "x": torch.from_numpy(x),
            "time": torch.tensor(self.time[row], dtype=torch.float32),
            "event": torch.tensor(self.event[row], dtype=torch.float32),
            "eid": torch.tensor(self.eid[row], dtype=torch.int64),
            "index": torch.tensor(row, dtype=torch.int64),
        }

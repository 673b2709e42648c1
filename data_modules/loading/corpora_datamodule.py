"""Pretraining on several corpora at once (PTB-XL + MIMIC-IV-ECG; docs/method.md section 5).

Each corpus is one cache (kind ``ptbxl`` or ``corpus``) with its own text embeddings and its
own patient-level split: PTB-XL's ``strat_fold`` (1-8 / 9 / 10), a corpus cache's ``fold``
(a hash of the patient, same rule). A split of the module is the concatenation of the
corpora's splits, so a patient is never in two splits. Batches mix the corpora (the
training loader shuffles over all rows) and carry ``corpus`` (the corpus's position in
``corpora``) and ``labelled``: True for rows with SCP superclass labels (PTB-XL), False
for the others, whose ``superclass`` is a zero placeholder that the classification loss
and the linear probe leave out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_modules.cache import PRETRAIN_KINDS, open_cache
from data_modules.loading.datamodule import CacheDataModule
from data_modules.loading.datasets import DEFAULT_MAX_BYTES, BeatStore, PTBXLDataset, raw_loader
from data_modules.loading.transforms import LeadMasker, finish_batch
from data_modules.protocol.splits import ptbxl_split
from data_modules.signal.leads import SUPERCLASSES


@dataclass(frozen=True)
class CorpusSource:
    """One pretraining corpus: its name (``pretrain.corpora``), cache and text embeddings
    ((n_records, d), aligned with the cache rows; None without text alignment)."""

    name: str
    cache_path: Path
    text: np.ndarray | None = None


class CorpusDataset(PTBXLDataset):
    """:class:`PTBXLDataset` over a PTB-XL or a corpus cache; adds ``labelled`` (B,) bool."""

    kind = PRETRAIN_KINDS

    def _load_metadata(self, f: h5py.File) -> None:
        self.labelled = "superclass" in f
        self.superclass = (np.asarray(f["superclass"][...], dtype=np.float32) if self.labelled
                           else np.zeros((self.n_records, len(SUPERCLASSES)), np.float32))

    def raw_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        batch = super().raw_batch(rows)
        batch["labelled"] = torch.full((len(rows),), self.labelled, dtype=torch.bool)
        return batch


class ConcatCorpora(Dataset):
    """Datasets one after the other; a batch is gathered from each by its own
    ``__getitems__`` and put back in the requested order, with ``corpus`` added."""

    def __init__(self, parts: Sequence[CorpusDataset]) -> None:
        self.parts = list(parts)
        self.bounds = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
            raise IndexError(f"items {pos.min()}..{pos.max()} out of range for {len(self)} rows")
        which = np.searchsorted(self.bounds, pos, side="right") - 1
        parts, order = [], []
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            b = self.parts[k].__getitems__(pos[sel] - self.bounds[k])
            b["corpus"] = torch.full((sel.size,), int(k), dtype=torch.int64)
            parts.append(b)
            order.append(sel)
        inv = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))
        return {key: torch.cat([p[key] for p in parts])[inv] for key in parts[0]}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in finish_batch(self.__getitems__([i])).items()}


class CorporaDataModule(CacheDataModule):
    """Train/val/test loaders over several pretraining corpora (see the module docstring).

    ``indices(stage)`` are positions in the concatenation of all corpora's rows (corpus
    ``k``'s row ``r`` is ``offsets[k] + r``); :meth:`corpus_rows` gives each corpus's own
    rows. ``validated_only`` applies to PTB-XL only (a corpus has no validation flag).
    """

    def __init__(self, corpora: Sequence[CorpusSource], batch_size: int = 128,
                 num_workers: int = 0, validated_only: bool = False, seed: int = 72,
                 drop_last: bool = True, pin_memory: bool | None = None,
                 mask_prob: float = 0.5, eval_batch_size: int | None = None,
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        if not corpora:
            raise ValueError("no pretraining corpus given")
        super().__init__(corpora[0].cache_path, batch_size, num_workers, seed, drop_last,
                         pin_memory, eval_batch_size)
        self.corpora = list(corpora)
        self.mask_prob = float(mask_prob)
        with_text = {c.text is not None for c in self.corpora}
        if len(with_text) != 1:
            raise ValueError("text embeddings must be given for every corpus or for none")
        dims = {int(c.text.shape[1]) for c in self.corpora if c.text is not None}
        if len(dims) > 1:
            raise ValueError(f"text embeddings of different widths {sorted(dims)}")
        self.splits: list[dict[str, np.ndarray]] = []
        self.stores: list[BeatStore] = []
        self.n_rows: list[int] = []
        for c in self.corpora:
            with open_cache(c.cache_path, PRETRAIN_KINDS) as f:
                ptbxl = "strat_fold" in f
                folds = f["strat_fold" if ptbxl else "fold"][...]
                validated = f["validated_by_human"][...] if "validated_by_human" in f else None
                n = int(f["median"].shape[0])
            if c.text is not None and c.text.shape[0] != n:
                raise ValueError(f"text embeddings of {c.name} have {c.text.shape[0]} rows, "
                                 f"its cache {c.cache_path} {n}")
            only = bool(validated_only) and ptbxl
            if only and validated is None:
                raise ValueError(f"validated_only=True but {c.cache_path} has no "
                                 "validated_by_human")
            self.splits.append(ptbxl_split(folds, validated, only))
            self.stores.append(BeatStore(c.cache_path, CorpusDataset.beat_names, max_bytes))
            self.n_rows.append(n)
        self.offsets = np.cumsum([0, *self.n_rows])[:-1]

    @property
    def text_dim(self) -> int | None:
        t = self.corpora[0].text
        return None if t is None else int(t.shape[1])

    def corpus_rows(self, stage: str) -> list[np.ndarray]:
        """Each corpus's cache rows of ``stage``, in ``corpora`` order."""
        self._check_stage(stage)
        return [s[stage] for s in self.splits]

    def indices(self, stage: str) -> np.ndarray:
        return np.concatenate([off + rows for off, rows in
                               zip(self.offsets, self.corpus_rows(stage))]).astype(np.int64)

    def corpus_dataset(self, k: int, stage: str, masked: bool = False) -> CorpusDataset:
        """Corpus ``k``'s rows of ``stage`` (lead-masked when ``masked``)."""
        c = self.corpora[k]
        masker = LeadMasker(p_apply=self.mask_prob) if masked else None
        return CorpusDataset(c.cache_path, self.splits[k][stage], masker=masker, text=c.text,
                             seed=self.seed + k, store=self.stores[k])

    def make_dataset(self, stage: str) -> ConcatCorpora:
        self._check_stage(stage)
        return ConcatCorpora([self.corpus_dataset(k, stage, masked=stage == "train")
                              for k in range(len(self.corpora))])

    def train_dataloader(self) -> DataLoader:
        if self.drop_last and self.n_train < self.batch_size:
            raise ValueError(f"{self.n_train} training records < batch_size={self.batch_size} "
                             "with drop_last=True: no training batches")
        return raw_loader(self.dataset("train"), batch_size=self.batch_size, shuffle=True,
                          drop_last=self.drop_last,
                          generator=torch.Generator().manual_seed(self.seed),
                          **self._loader_kwargs())

"""UK Biobank survival-finetuning DataModule (docs/method.md section 6).

Train batches come from :class:`EventStratifiedBatchSampler` (every batch holds the
cohort's event ratio; ``batch_size`` is the global batch under DDP) and get one lead
subset per batch (:class:`BatchLeadMask`, drawn where the batch is gathered);
val/test/predict batches are unmasked. Loaders yield raw batches gathered by index from
the beats held in memory (streamed per record above ``max_bytes``);
``on_after_batch_transfer`` finishes them on the device, so every batch the model sees
carries ``x``, ``target`` (= ``x`` unpadded, masked on train batches) and ``lead_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_modules.cache import SURVIVAL_KINDS, open_cache
from data_modules.errors import DataError
from data_modules.loading.datamodule import STAGES, CacheDataModule
from data_modules.loading.datasets import DEFAULT_MAX_BYTES, BeatStore, UKBDataset, raw_loader
from data_modules.loading.samplers import EventStratifiedBatchSampler
from data_modules.loading.transforms import BatchLeadMask, LeadMasker
from data_modules.protocol.splits import (
    PAPER_SEEDS,
    Split,
    nested_fraction,
    survival_cv_splits,
)
from data_modules.protocol.survival_arrays import MAX_FOLLOW_UP_YEARS, beyond_follow_up
from data_modules.sources.ukb import COHORTS, select_cohort


def make_ukb_splits(
    cache_path: str | Path,
    cohort: str,
    n_folds: int = 2,
    seeds: Sequence[int] = PAPER_SEEDS,
    val_fraction: float = 0.2,
    train_fraction: float = 1.0,
) -> list[Split]:
    """The paper's repeated stratified CV over one cohort of a cache (rows and eids);
    ``train_fraction`` < 1 keeps a nested share of each training fold
    (:func:`~data_modules.protocol.splits.nested_fraction`)."""
    rows = select_cohort(cache_path, cohort)
    with open_cache(cache_path, SURVIVAL_KINDS) as f:
        event = f["event"][...][rows]
        eid = f["eid"][...][rows]
    if rows.size == 0:
        raise ValueError(f"cohort {cohort!r} of {cache_path} is empty")
    splits = survival_cv_splits(event, n_folds, seeds, val_fraction, rows=rows, eids=eid)
    if train_fraction == 1.0:
        return splits
    event_of_row = dict(zip(rows.tolist(), np.asarray(event).astype(int).tolist()))
    return [nested_fraction(s, event_of_row, train_fraction) for s in splits]


class UKBDataModule(CacheDataModule):
    """Loaders for one (seed, fold) :class:`Split` of one cohort of a UKB cache.

    Batch dict: ``x`` (B, 12, 608) float32 (leads outside the batch's subset zeroed on
    train batches), ``target`` (B, 12, 600) float32 (= ``x`` unpadded), ``lead_mask``
    (B, 12) bool (identical rows within a batch), ``time`` (B,) float32, ``event`` (B,)
    float32, ``eid`` (B,) int64, ``index`` (B,) int64 (cache row).

    ``batch_size`` is the global train batch (per-rank batches are about
    batch_size / world_size); eval loaders use ``eval_batch_size`` per device.
    The split's rows must belong to the cohort, and its eids (when saved) must match the
    cache, so a split file cannot silently be applied to a rebuilt, reordered cache.
    ``max_bytes``: largest beat array held in memory (None: any; 0: always stream);
    ``pin_memory`` None: pinned when CUDA is available.
    """

    def __init__(
        self,
        cache_path: str | Path,
        cohort: str,
        split: Split,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 42,
        mask_leads: bool = True,
        pin_memory: bool | None = None,
        eval_batch_size: int | None = None,
        drop_last: bool = False,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if cohort not in COHORTS:
            raise ValueError(f"unknown cohort {cohort!r}; expected one of {COHORTS}")
        super().__init__(cache_path, batch_size, num_workers, seed, drop_last, pin_memory,
                         eval_batch_size)
        self.cohort = cohort
        self.split = split
        self.mask_leads = bool(mask_leads)
        with open_cache(self.cache_path, SURVIVAL_KINDS) as f:
            self.n_records = int(f["median"].shape[0])
            self._eid = f["eid"][...].astype(np.int64)
            self._event = f["event"][...].astype(np.int64)
            self._time = f["time"][...].astype(np.float32)
            unit = f["time"].attrs.get("time_unit", f.attrs.get("time_unit", ""))
            self.time_unit = unit.decode() if isinstance(unit, bytes) else str(unit)
        bad = ~np.isfinite(self._time)
        if self.time_unit in ("days", "months"):
            bad |= beyond_follow_up(self._time, self.time_unit)
        if bad.any():  # a cache written before such times were refused
            raise DataError(f"{self.cache_path}: time must be finite and within "
                            f"{MAX_FOLLOW_UP_YEARS} years; eids {self._eid[bad][:10].tolist()} "
                            f"have {self._time[bad][:10].tolist()} {self.time_unit}: rebuild "
                            "the cache from the corrected outcomes")
        self.cohort_rows = select_cohort(self.cache_path, cohort)
        self._check_split()
        self.store = BeatStore(self.cache_path, UKBDataset.beat_names, max_bytes)

    def _check_split(self) -> None:
        in_cohort = np.zeros(self.n_records, dtype=bool)
        in_cohort[self.cohort_rows] = True
        seen: dict[str, np.ndarray] = {}
        for part in STAGES:
            idx = np.asarray(getattr(self.split, f"{part}_idx"), dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.n_records):
                raise ValueError(f"split {self.split.name}: {part} rows out of range for "
                                 f"{self.cache_path} ({self.n_records} rows)")
            outside = idx[~in_cohort[idx]]
            if outside.size:
                raise ValueError(f"split {self.split.name}: {outside.size} {part} rows are not in "
                                 f"cohort {self.cohort!r} (e.g. row {int(outside[0])})")
            eid = getattr(self.split, f"{part}_eid")
            if eid is not None and not np.array_equal(np.asarray(eid), self._eid[idx]):
                raise ValueError(
                    f"split {self.split.name}: saved {part} eids do not match the eids of "
                    f"those rows in {self.cache_path}; was the cache rebuilt?"
                )
            seen[part] = idx
        overlap = (np.intersect1d(seen["train"], seen["val"]).size
                   + np.intersect1d(seen["train"], seen["test"]).size
                   + np.intersect1d(seen["val"], seen["test"]).size)
        if overlap:
            raise ValueError(f"split {self.split.name}: train/val/test overlap in {overlap} rows")
        if seen["train"].size == 0:
            raise ValueError(f"split {self.split.name}: no training rows")

    # -- information for training / evaluation code
    def indices(self, stage: str) -> np.ndarray:
        self._check_stage(stage)
        return np.asarray(getattr(self.split, f"{stage}_idx"), dtype=np.int64)

    def labels(self, stage: str) -> dict[str, np.ndarray]:
        """``time``, ``event``, ``eid``, ``index`` of a split's rows (for C-index, KM plots)."""
        idx = self.indices(stage)
        return {"time": self._time[idx], "event": self._event[idx], "eid": self._eid[idx],
                "index": idx}

    @property
    def event_rate(self) -> float:
        return float(self._event[self.train_indices].mean())

    # -- LightningDataModule
    def make_dataset(self, stage: str) -> UKBDataset:
        """Dataset of one split; only ``train`` is lead-masked (one subset per batch)."""
        mask = (BatchLeadMask(LeadMasker(), seed=self.seed)
                if stage == "train" and self.mask_leads else None)
        return UKBDataset(self.cache_path, self.indices(stage), mask, store=self.store)

    def world(self) -> tuple[int, int]:
        """(world_size, global_rank): from the Trainer when attached, else torch.distributed."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def make_batch_sampler(self) -> EventStratifiedBatchSampler:
        world_size, rank = self.world()
        event = self._event[self.train_indices]  # positions == dataset item indices
        return EventStratifiedBatchSampler(
            event, self.batch_size, seed=self.seed, drop_last=self.drop_last,
            num_replicas=world_size, rank=rank,
        )

    def train_dataloader(self) -> DataLoader:
        return raw_loader(
            self.dataset("train"),
            batch_sampler=self.make_batch_sampler(),
            # Same worker seeds on every rank -> the same lead subset for the same global batch.
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_indices.size == 0:
            return []  # type: ignore[return-value]  # Lightning skips an empty list
        return super().val_dataloader()

    @property
    def fit_indices(self) -> np.ndarray:
        """The whole training fold (train + val rows), sorted."""
        return np.sort(np.concatenate([self.train_indices, self.val_indices]))

    def fit_rows_dataloader(self) -> DataLoader:
        """Training-fold rows (train + val), unmasked, in ``fit_indices`` order: risks for
        the Breslow baseline of survival curves / the integrated Brier score."""
        return self.eval_loader(UKBDataset(self.cache_path, self.fit_indices, store=self.store))

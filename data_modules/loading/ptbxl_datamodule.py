"""PTB-XL pretraining DataModule (docs/method.md section 5).

Train: shuffled, per-sample lead masking (p=0.5), batch 128 with drop_last as in the
paper; val/test: unmasked, nothing dropped. The shuffle order and the worker seeds come
from a generator seeded with ``seed``, so the data stream is reproducible on its own.
Loaders yield raw batches gathered by index from the beats held in memory (streamed per
record above ``max_bytes``); ``on_after_batch_transfer`` finishes them on the device
(:func:`data_modules.loading.transforms.finish_batch`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_modules.cache import open_cache
from data_modules.loading.datamodule import CacheDataModule
from data_modules.loading.datasets import DEFAULT_MAX_BYTES, BeatStore, PTBXLDataset, raw_loader
from data_modules.loading.transforms import LeadMasker
from data_modules.protocol.splits import ptbxl_split


class PTBXLDataModule(CacheDataModule):
    """Train/val/test loaders over a PTB-XL cache, split by ``strat_fold`` (1-8 / 9 / 10).

    Finished batches (after ``on_after_batch_transfer``) are dicts: ``x`` (B, 12, 608)
    float32, ``target`` (B, 12, 600) float32, ``lead_mask`` (B, 12) bool, ``superclass``
    (B, 5) float32, ``index`` (B,) int64 (cache row), and ``text`` (B, d) float32 when
    ``text_embeddings`` ((n_records, d), aligned with cache rows) is given.
    ``predict_dataloader`` covers the test rows, unmasked.
    ``max_bytes``: largest beat arrays held in memory (None: any; 0: always stream);
    ``pin_memory`` None: pinned when CUDA is available.
    """

    def __init__(
        self,
        cache_path: str | Path,
        batch_size: int = 128,
        num_workers: int = 0,
        validated_only: bool = False,
        text_embeddings: np.ndarray | None = None,
        seed: int = 72,
        drop_last: bool = True,
        pin_memory: bool | None = None,
        mask_prob: float = 0.5,
        eval_batch_size: int | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__(cache_path, batch_size, num_workers, seed, drop_last, pin_memory,
                         eval_batch_size)
        self.validated_only = bool(validated_only)
        self.mask_prob = float(mask_prob)
        self.text_embeddings = (
            None if text_embeddings is None else np.asarray(text_embeddings, dtype=np.float32)
        )
        with open_cache(self.cache_path, "ptbxl") as f:
            self.n_records = int(f["median"].shape[0])
            strat_fold = f["strat_fold"][...]
            validated = f["validated_by_human"][...] if "validated_by_human" in f else None
        if self.validated_only and validated is None:
            raise ValueError(f"validated_only=True but {self.cache_path} has no validated_by_human")
        if self.text_embeddings is not None and (
            self.text_embeddings.ndim != 2 or self.text_embeddings.shape[0] != self.n_records
        ):
            raise ValueError(
                f"text_embeddings must have shape (n_records={self.n_records}, d) aligned with "
                f"the rows of {self.cache_path}, got {self.text_embeddings.shape}"
            )
        self.split = ptbxl_split(strat_fold, validated, self.validated_only)
        self.store = BeatStore(self.cache_path, PTBXLDataset.beat_names, max_bytes)

    def indices(self, stage: str) -> np.ndarray:
        self._check_stage(stage)
        return self.split[stage]

    @property
    def text_dim(self) -> int | None:
        """Text embedding width, None without text embeddings."""
        return None if self.text_embeddings is None else int(self.text_embeddings.shape[1])

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch on one device (for LR schedules)."""
        if self.drop_last:
            return self.n_train // self.batch_size
        return -(-self.n_train // self.batch_size)

    # -- LightningDataModule
    def make_dataset(self, stage: str) -> PTBXLDataset:
        """Dataset of one split; only ``train`` is lead-masked."""
        self._check_stage(stage)
        masker = LeadMasker(p_apply=self.mask_prob) if stage == "train" else None
        return PTBXLDataset(
            self.cache_path, self.split[stage], masker=masker, text=self.text_embeddings,
            seed=self.seed, store=self.store,
        )

    def train_dataloader(self) -> DataLoader:
        if self.drop_last and self.n_train < self.batch_size:
            raise ValueError(
                f"{self.n_train} training records < batch_size={self.batch_size} with "
                "drop_last=True: no training batches"
            )
        return raw_loader(
            self.dataset("train"),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=self.drop_last,
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_kwargs(),
        )

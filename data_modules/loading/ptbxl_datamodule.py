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
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from data_modules.cache import open_cache
from data_modules.loading.datasets import DEFAULT_MAX_BYTES, BeatStore, PTBXLDataset, raw_loader
from data_modules.loading.transforms import LeadMasker, finish_batch, seed_worker
from data_modules.protocol.splits import ptbxl_split

STAGES: tuple[str, ...] = ("train", "val", "test")


class PTBXLDataModule(L.LightningDataModule):
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
        super().__init__()
        self.cache_path = Path(cache_path)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.validated_only = bool(validated_only)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
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
        self._datasets: dict[str, PTBXLDataset] = {}

    # -- sizes and indices for training / evaluation code
    @property
    def n_train(self) -> int:
        return int(self.split["train"].shape[0])

    @property
    def n_val(self) -> int:
        return int(self.split["val"].shape[0])

    @property
    def n_test(self) -> int:
        return int(self.split["test"].shape[0])

    @property
    def train_indices(self) -> np.ndarray:
        return self.split["train"]

    @property
    def val_indices(self) -> np.ndarray:
        return self.split["val"]

    @property
    def test_indices(self) -> np.ndarray:
        return self.split["test"]

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
    def setup(self, stage: str | None = None) -> None:
        for name in STAGES:
            if name not in self._datasets:
                self._datasets[name] = self.make_dataset(name)

    def make_dataset(self, stage: str) -> PTBXLDataset:
        """Dataset of one split; only ``train`` is lead-masked."""
        if stage not in STAGES:
            raise ValueError(f"unknown split {stage!r}; expected one of {STAGES}")
        masker = LeadMasker(p_apply=self.mask_prob) if stage == "train" else None
        return PTBXLDataset(
            self.cache_path, self.split[stage], masker=masker, text=self.text_embeddings,
            seed=self.seed, store=self.store,
        )

    def dataset(self, stage: str) -> PTBXLDataset:
        if stage not in self._datasets:
            self._datasets[stage] = self.make_dataset(stage)
        return self._datasets[stage]

    def _loader_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "worker_init_fn": seed_worker if self.num_workers > 0 else None,
            "persistent_workers": self.num_workers > 0,
        }
        return kw

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

    def _eval_loader(self, stage: str) -> DataLoader:
        return raw_loader(
            self.dataset(stage), batch_size=self.eval_batch_size, shuffle=False,
            drop_last=False, **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Finish raw batches on the device they were moved to (z-score, mask, pad)."""
        return finish_batch(batch)

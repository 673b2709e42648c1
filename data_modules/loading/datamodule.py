"""What the PTB-XL and UK Biobank DataModules share: the loader options, the unmasked
evaluation loaders, dataset caching per split and finishing batches on the device.

Why a base: the two modules differ only in how they split a cache and draw training
batches; the evaluation side must be identical (unmasked, in index order, nothing dropped)
so that scores from pretraining and finetuning are computed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_modules.loading.datasets import raw_loader
from data_modules.loading.transforms import finish_batch, seed_worker

STAGES: tuple[str, ...] = ("train", "val", "test")


class CacheDataModule(L.LightningDataModule):
    """Base of the cache-backed DataModules. Subclasses give :meth:`indices` (cache rows of
    a split), :meth:`make_dataset` and :meth:`train_dataloader`."""

    def __init__(self, cache_path: str | Path, batch_size: int, num_workers: int, seed: int,
                 drop_last: bool, pin_memory: bool | None, eval_batch_size: int | None) -> None:
        super().__init__()
        self.cache_path = Path(cache_path)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._datasets: dict[str, Dataset] = {}

    # -- splits
    def indices(self, stage: str) -> np.ndarray:
        """Cache rows of ``stage`` (train/val/test), in loader order for val/test."""
        raise NotImplementedError

    def _check_stage(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown split {stage!r}; expected one of {STAGES}")

    @property
    def train_indices(self) -> np.ndarray:
        return self.indices("train")

    @property
    def val_indices(self) -> np.ndarray:
        return self.indices("val")

    @property
    def test_indices(self) -> np.ndarray:
        return self.indices("test")

    @property
    def n_train(self) -> int:
        return int(self.train_indices.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.val_indices.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_indices.shape[0])

    # -- datasets and loaders
    def make_dataset(self, stage: str) -> Dataset:
        raise NotImplementedError

    def dataset(self, stage: str) -> Dataset:
        """The split's dataset, built once."""
        if stage not in self._datasets:
            self._datasets[stage] = self.make_dataset(stage)
        return self._datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        for name in STAGES:
            self.dataset(name)

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "worker_init_fn": seed_worker if self.num_workers > 0 else None,
            "persistent_workers": self.num_workers > 0,
        }

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        """Unmasked batches of ``eval_batch_size`` in the dataset's order, nothing dropped."""
        return raw_loader(dataset, batch_size=self.eval_batch_size, shuffle=False,
                          drop_last=False, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        """Held-out (test) rows, unmasked, in ``test_indices`` order."""
        return self.eval_loader(self.dataset("test"))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Finish raw batches on the device they were moved to (z-score, mask, pad)."""
        return finish_batch(batch)

"""The paper's cross-validation protocol (docs/method.md section 6), whatever model is fitted.

Stratified K-fold x seeds over the cohort; inside each training fold a stratified inner
validation split (drawn with the splits, ``finetune.val_fraction``) is the model's own to
use (checkpoint or penalty selection); the held-out fold is scored exactly once. The
protocol owns the splits (made once and saved with the run, or read back on a re-run),
resuming (a fold whose predictions this config already wrote is skipped; another config's
are an error) and the fold write; a :class:`FoldFitter` fits one fold and returns its
held-out and training-fold predictions. The ECG-DAN network (:mod:`ecg_dan.jobs.finetune`)
and the Cox baselines (:mod:`ecg_dan.jobs.cox_baseline`) are two fitters; a new baseline is
one more fitter and one YAML.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from data_modules.loading.ukb_datamodule import make_ukb_splits
from data_modules.protocol.splits import Split
from ecg_dan.config import config_hash
from ecg_dan.jobs.common import check_data, prepare_run_dir
from ecg_dan.jobs.data import ukb_cache
from ecg_dan.jobs.evaluate import evaluate_finetune
from ecg_dan.log import get_logger, is_rank_zero
from ecg_dan.run_dir import FoldFiles, RunDir

log = get_logger(__name__)


@dataclass
class FoldResult:
    """One fitted fold: the held-out rows (``eid, seed, fold, risk, time, event,
    checkpoint``; a discrete-time model adds ``surv_0..surv_{K-1}`` and its ``cuts``), the
    training-fold rows (train + inner validation, for the Breslow baseline), what scored the
    fold and extra sidecar entries. ``write`` is False on the ranks that do not write."""

    test: pd.DataFrame
    train: pd.DataFrame
    checkpoint: str
    meta: dict[str, Any] = field(default_factory=dict)
    cuts: Sequence[float] | None = None
    label: str = ""  # what was fitted, for the log line
    write: bool = True


class FoldFitter(ABC):
    """Fits one model per split of the protocol."""

    def splits(self, cfg: DictConfig, run: RunDir, cache: Path) -> list[Split]:
        """The run's splits: read back when saved, else drawn from the cohort and saved."""
        if run.has_splits():
            return run.load_splits()
        f = cfg.finetune
        splits = make_ukb_splits(cache, f.cohort, f.n_folds, list(f.seeds), f.val_fraction,
                                 float(f.train_fraction))
        run.save_splits(splits, meta={"cache": str(cache), "cohort": f.cohort,
                                      "train_fraction": float(f.train_fraction)})
        return splits

    def prepare(self, run: RunDir, cache: Path, splits: list[Split]) -> None:
        """Once before the first fold (e.g. read the cohort's covariates)."""
        return None

    @abstractmethod
    def fit_fold(self, split: Split, fold: FoldFiles) -> FoldResult:
        """Fit on ``split``'s training rows (selecting on its inner validation rows) and
        predict its held-out and training-fold rows."""

    def end_fold(self) -> None:
        """After each fitted fold (e.g. close its W&B run)."""
        return None


def run_cross_validation(cfg: DictConfig, fitter: FoldFitter) -> Path:
    """Run (or resume) the protocol with ``fitter``; writes each fold's predictions through
    :class:`ecg_dan.run_dir.RunDir`, then the results. Returns the run directory."""
    run = RunDir(prepare_run_dir(cfg))
    want = config_hash(cfg)
    cache = ukb_cache(cfg)
    check_data(run.path, {"cohort": cache})
    splits = fitter.splits(cfg, run, cache)
    fitter.prepare(run, cache, splits)
    for split in splits:
        fold = run.fold(split.seed, split.fold)
        if fold.is_done(want):
            log.info(f"[{fold.name}] predictions of this config exist, skipping")
            continue
        result = fitter.fit_fold(split, fold)
        if result.write:
            test = result.test
            fold.write(test, result.train,
                       {"config_hash": want, "checkpoint": result.checkpoint, "n": len(test),
                        "events": int(test.event.sum()), **result.meta}, cuts=result.cuts)
            log.info(f"[{fold.name}] {result.label}held-out fold scored once: {len(test)} "
                     f"participants, {int(test.event.sum())} events -> {fold.csv}")
        fitter.end_fold()
    if is_rank_zero():
        evaluate_finetune(run.path, cfg=cfg)
    return run.path

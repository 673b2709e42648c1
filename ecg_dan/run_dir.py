"""A run directory's layout: the one module that names its files and reads and writes them.

Every job, the reporting, the model file and ``explain`` go through :class:`RunDir`, so a
format change touches this file only::

    <run>/run.json             config hash + result config: a re-run resumes only under it;
                               written first, it marks the folder as an ecg-dan run
    <run>/config.yaml          the resolved config (also in each fold's training folder)
    <run>/data.json            fingerprints of the caches the run was trained and scored on
    <run>/splits.json          cross-validation splits (finetuning and the Cox baselines)
    <run>/checkpoints/         the Trainer's best-*.ckpt and last.ckpt (pretraining)
    <run>/seed<s>_fold<f>/     one fold's training: config.yaml, checkpoints/, lr_find.json
    <run>/predictions/seed<s>_fold<f>.csv        the held-out fold, scored once (written
                                                 last: its presence marks the fold done)
    <run>/predictions/seed<s>_fold<f>_train.csv  the fold model's training-fold risks
    <run>/predictions/seed<s>_fold<f>_surv.npz   a discrete-time model's held-out curves
    <run>/predictions/seed<s>_fold<f>.json       config hash, the checkpoint that scored the
                                                 fold (path relative to the run, SHA-256),
                                                 counts (+ a baseline's fit)
    <run>/oof_predictions.csv, results.{md,csv,json}, kaplan_meier.png, calibration.{csv,png}
    <run>/decision_curve.{csv,png}, pretrain_eval.{json,md}, biomarkers.csv, explain/
    <run>/report.html          ``ecg-dan report`` (ecg_dan/reporting/html_report.py)

A run is self-contained: every file it refers to is inside it, recorded by a path relative
to the run directory (never absolute, never ``..``) and, for a checkpoint, with the SHA-256
it had when written; a copied run (``cp -a``) therefore reads its own files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from omegaconf import DictConfig

from data_modules.atomic import atomic_path, atomic_write_text
from data_modules.cache.format import file_digest
from data_modules.errors import DataError
from data_modules.protocol.splits import (
    Split,
    fold_name,
    load_splits,
    load_splits_meta,
    save_splits,
)
from ecg_dan.config import ConfigError, config_hash, load_saved_config, result_config, save_config
from ecg_dan.reporting.json_io import write_json

__all__ = ["FINISHED_RUN_FILES", "TRAIN_SUFFIX", "FoldFiles", "RunDir", "RunDirError",
           "fold_name", "sha256_file"]

CONFIG = "config.yaml"
RECORD = "run.json"
DATA = "data.json"
SPLITS = "splits.json"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
TRAIN_SUFFIX = "_train.csv"
SURV_SUFFIX = "_surv.npz"
#: What a finished finetuning run holds for a run built on it (the ECG-DAN + clinical Cox).
FINISHED_RUN_FILES = f"{SPLITS} and {PREDICTIONS}/seed*_fold*{TRAIN_SUFFIX}"


class RunDirError(DataError):
    """A run directory without a file a job needs (the message names it), or whose files
    disagree with each other."""


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _checked_predictions(path: Path) -> pd.DataFrame:
    """A fold's predictions CSV with the values every reader relies on: one row per eid,
    finite risks and times, events 0/1; :class:`RunDirError` naming the file and the eids
    otherwise (an edited or corrupt file, not a bug)."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise RunDirError(f"{path}: unreadable predictions ({str(e).splitlines()[0]})") from None
    missing = [c for c in ("eid", "risk", "time", "event") if c not in df.columns]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {missing}")
    dup = df.loc[df["eid"].duplicated(), "eid"].unique().tolist()
    if dup:
        raise RunDirError(f"{path}: duplicate eid(s) {dup[:10]}")
    for col in ("risk", "time", "event"):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | ((v < 0) if col == "time" else False)
        if col == "event":
            bad |= ~np.isin(v, (0.0, 1.0))
        if bad.any():
            raise RunDirError(f"{path}: column {col!r}: "
                              f"{'not 0/1' if col == 'event' else 'NaN, infinite or invalid'} "
                              f"for eid(s) {df.loc[bad, 'eid'].tolist()[:10]} (values "
                              f"{df.loc[bad, col].tolist()[:5]})")
    return df


@dataclass(frozen=True)
class FoldFiles:
    """The files of one (seed, fold) of a cross-validated run."""

    root: Path
    seed: int
    fold: int

    @property
    def name(self) -> str:
        return fold_name(self.seed, self.fold)

    @property
    def dir(self) -> Path:
        """The fold's training folder (the Trainer's run directory)."""
        return self.root / self.name

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / CHECKPOINTS

    @property
    def lr_find(self) -> Path:
        return self.dir / "lr_find.json"

    @property
    def csv(self) -> Path:
        """The held-out fold's predictions (``eid, seed, fold, risk, time, event, ...``)."""
        return self.root / PREDICTIONS / f"{self.name}.csv"

    @property
    def train_csv(self) -> Path:
        return self.csv.with_name(self.name + TRAIN_SUFFIX)

    @property
    def surv(self) -> Path:
        return self.csv.with_name(self.name + SURV_SUFFIX)

    @property
    def meta(self) -> Path:
        return self.csv.with_suffix(".json")

    # ------------------------------------------------------------------------- reading
    def is_done(self, want_hash: str) -> bool:
        """Predictions exist and were made by this config (their sidecar records its hash);
        :class:`ConfigError` when another config made them."""
        if not self.csv.is_file():
            return False
        have = self.read_meta().get("config_hash") if self.meta.is_file() else None
        if have not in (None, want_hash):
            raise ConfigError(f"{self.csv} was made by another configuration (hash {have}, now "
                              f"{want_hash}); use a new run name or resume=restart")
        return True

    def read_test(self) -> pd.DataFrame:
        return _checked_predictions(self.csv)

    def read_train(self) -> pd.DataFrame | None:
        """The training-fold risks (None for a run written before they were saved)."""
        return _checked_predictions(self.train_csv) if self.train_csv.is_file() else None

    def read_meta(self) -> dict[str, Any]:
        if not self.meta.is_file():
            raise RunDirError(f"{self.meta}: missing; it names the checkpoint that scored "
                              f"{self.csv.name}")
        return json.loads(self.meta.read_text())

    def read_curves(self, eid: ArrayLike) -> tuple[NDArray, NDArray] | None:
        """A discrete-time model's curves of the held-out rows: ``(surv (n, K) in the order
        of ``eid``, cuts (K,))``; None without the sidecar (a Cox model)."""
        if not self.surv.is_file():
            return None
        with np.load(self.surv) as z:
            have, surv, cuts = z["eid"], z["surv"], z["cuts"]
        pos = pd.Index(have).get_indexer(np.asarray(eid))
        if (pos < 0).any():
            raise ValueError(f"{self.surv}: no survival curve for {int((pos < 0).sum())} "
                             "participant(s) of the predictions (stale sidecar?)")
        return surv[pos], cuts

    def checkpoint(self, want_hash: str | None = None) -> Path:
        """The checkpoint that scored this fold, as its sidecar records it: a path inside the
        run (relative to it; a path that escapes it is refused), checked against the SHA-256
        recorded when the fold was written; with ``want_hash``, the sidecar must come from
        that config. A run written before paths were relative recorded an absolute path: it
        is followed only into this run (its ``seed*_fold*/checkpoints/`` copy)."""
        meta = self.read_meta()
        have = meta.get("config_hash")
        if want_hash is not None and have not in (None, want_hash):
            raise RunDirError(f"{self.csv} was made by another configuration (hash {have}, "
                              f"the run's {CONFIG} gives {want_hash}); re-run or re-evaluate "
                              "the run first")
        recorded = meta.get("checkpoint")
        if not recorded or not isinstance(recorded, str):
            raise RunDirError(f"{self.meta}: records no checkpoint")
        path = self._own_file(recorded)
        if not path.is_file():
            raise RunDirError(f"{self.root}: checkpoint {recorded} of {self.csv.name} not found "
                              f"({path})")
        want_sha = meta.get("checkpoint_sha256")
        if want_sha is not None and sha256_file(path) != want_sha:
            raise RunDirError(f"{path}: its SHA-256 differs from the one {self.meta.name} "
                              "recorded when the fold was scored: the checkpoint was replaced "
                              "or is corrupt")
        return path

    def _own_file(self, recorded: str) -> Path:
        """Where a path recorded in the sidecar lies inside this run."""
        rel = Path(recorded)
        if rel.is_absolute():  # a run written before paths were relative
            if _inside(rel, self.root):
                return rel
            own = self.checkpoints_dir / rel.name
            if rel.parent.name == CHECKPOINTS and rel.parent.parent.name == self.name:
                return own
            raise RunDirError(f"{self.meta}: field 'checkpoint' = {recorded} lies outside the "
                              f"run directory {self.root}; a run reads only its own files "
                              f"(copy the checkpoint to {own} and edit the field)")
        if ".." in rel.parts or not _inside(self.root / rel, self.root):
            raise RunDirError(f"{self.meta}: field 'checkpoint' = {recorded} escapes the run "
                              f"directory {self.root}; a run reads only its own files")
        return self.root / rel

    def _relative(self, checkpoint: str | os.PathLike) -> str:
        """A checkpoint path (absolute, or relative to the working directory as the Trainer
        gives it) as the sidecar records it: relative to the run directory."""
        path = Path(os.path.abspath(checkpoint))
        root = Path(os.path.abspath(self.root))
        if not path.is_relative_to(root):  # the same folder spelt through a symlink?
            path, root = path.resolve(), root.resolve()
        if not path.is_relative_to(root):
            raise RunDirError(f"{self.meta}: checkpoint {checkpoint} lies outside the run "
                              f"directory {self.root}; a run holds its own checkpoints")
        return path.relative_to(root).as_posix()

    # ------------------------------------------------------------------------- writing
    def write(self, test: pd.DataFrame, train: pd.DataFrame, meta: dict[str, Any],
              cuts: Sequence[float] | None = None) -> None:
        """Write the fold: with ``cuts`` the ``surv_*`` columns of ``test`` go to the curve
        sidecar (the CSV keeps the scalar risk), then the training-fold risks, the sidecar
        and last the held-out CSV, whose presence marks the fold done. The checkpoint (in
        ``meta`` and the frames' ``checkpoint`` column) is recorded relative to the run, with
        its SHA-256 (a Cox baseline's, the sidecar itself, without)."""
        if meta.get("checkpoint"):
            meta = dict(meta, checkpoint=self._relative(meta["checkpoint"]))
            own = self.root / meta["checkpoint"]
            if own != self.meta and own.is_file():
                meta["checkpoint_sha256"] = sha256_file(own)
            test, train = (df.assign(checkpoint=meta["checkpoint"])
                           if "checkpoint" in df.columns else df for df in (test, train))
        if cuts is not None:
            cols = [f"surv_{k}" for k in range(len(cuts))]
            with atomic_path(self.surv) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, eid=test.eid.to_numpy(), surv=test[cols].to_numpy(np.float64),
                         cuts=np.asarray(cuts, dtype=np.float64))
            test = test.drop(columns=cols)
        self.csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.train_csv, train.to_csv(index=False))
        write_json(self.meta, meta)
        atomic_write_text(self.csv, test.to_csv(index=False))


@dataclass(frozen=True)
class RunDir:
    """A run directory (see the module docstring for its layout)."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def of_checkpoint(cls, ckpt: str | os.PathLike) -> RunDir:
        """The run a Trainer checkpoint (``<run>/checkpoints/x.ckpt``) belongs to."""
        return cls(Path(ckpt).parent.parent)

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------- config
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def load_config(self, overrides: list[str] | None = None) -> DictConfig:
        """The run's saved config; :class:`RunDirError` naming the file when it has none."""
        if not self.has_config():
            raise RunDirError(f"{self.path}: no {CONFIG} (not a run directory)")
        return load_saved_config(self.config_path, overrides)

    def save_config(self, cfg: DictConfig) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return save_config(cfg, self.config_path)

    @property
    def record_path(self) -> Path:
        return self.path / RECORD

    def read_record(self) -> dict[str, Any] | None:
        """``run.json``'s result config (None for a new run or one made before it existed)."""
        record = self.record_path
        return json.loads(record.read_text())["result_config"] if record.is_file() else None

    def write_record(self, cfg: DictConfig) -> None:
        atomic_write_text(self.path / RECORD, json.dumps(
            {"config_hash": config_hash(cfg), "result_config": result_config(cfg)}, indent=2,
            default=str))

    @property
    def data_path(self) -> Path:
        return self.path / DATA

    def read_data(self) -> dict[str, Any] | None:
        """``data.json``: the fingerprint of each cache the run used, by name (None for a new
        run or one made before fingerprints were recorded)."""
        return json.loads(self.data_path.read_text()) if self.data_path.is_file() else None

    def write_data(self, fingerprints: dict[str, Any]) -> None:
        write_json(self.data_path, fingerprints)

    def has_outputs(self) -> bool:
        """Checkpoints or predictions exist (a run that has started)."""
        return self.path.is_dir() and any((self.path / d).exists()
                                          for d in (CHECKPOINTS, PREDICTIONS))

    def is_run(self) -> bool:
        """The folder is an ecg-dan run: it holds ``run.json`` (written before anything else)
        with a config hash and result config, or, for a run made before ``run.json``
        existed, ``config.yaml`` beside checkpoints or predictions."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and {"config_hash", "result_config"} <= record.keys():
            return True
        return self.has_config() and self.has_outputs()

    def check_owned(self) -> None:
        """Refuse to write a run into ``path`` unless it is absent, empty (hidden entries such
        as temporary files aside) or already an ecg-dan run (:meth:`is_run`): a user's folder
        is never overwritten nor moved aside."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunDirError(f"run_dir={p} is a file, not a folder; choose another run_dir")
        if p.is_dir() and not self.is_run() and any(not e.name.startswith(".")
                                                    for e in p.iterdir()):
            raise RunDirError(f"run_dir={p} is a folder that is neither empty nor an ecg-dan "
                              f"run (no {RECORD}); refusing to write into it: choose another "
                              "run_dir or name")

    # ------------------------------------------------------------------------- checkpoints
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / LAST_CHECKPOINT

    # ------------------------------------------------------------------------- splits
    @property
    def splits_path(self) -> Path:
        return self.path / SPLITS

    def has_splits(self) -> bool:
        return self.splits_path.is_file()

    def load_splits(self) -> list[Split]:
        if not self.has_splits():
            raise RunDirError(f"{self.splits_path}: the run has no splits file")
        return load_splits(self.splits_path)

    def save_splits(self, splits: Sequence[Split], meta: dict[str, Any]) -> Path:
        return save_splits(splits, self.splits_path, meta=meta)

    def splits_cache(self) -> Path | None:
        """The cache the splits were drawn from, as recorded with them."""
        cache = load_splits_meta(self.splits_path).get("cache") if self.has_splits() else None
        return Path(cache) if cache else None

    def adopt_splits(self, source: RunDir) -> list[Split]:
        """Use another run's splits (copied once; a different copy already here is an
        error), so both runs hold out the same participants."""
        src, mine = source.splits_path, self.splits_path
        if mine.is_file() and mine.read_bytes() != src.read_bytes():
            raise ConfigError(f"{mine} differs from {src}: the baseline must use the "
                              "ECG-DAN run's splits; use a new run directory")
        if not mine.is_file():
            self.path.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, mine)
        return load_splits(mine)

    # ------------------------------------------------------------------------- folds
    @property
    def predictions_dir(self) -> Path:
        return self.path / PREDICTIONS

    def has_predictions(self) -> bool:
        return self.predictions_dir.is_dir()

    def fold(self, seed: int, fold: int) -> FoldFiles:
        return FoldFiles(self.path, int(seed), int(fold))

    def scored_folds(self) -> list[FoldFiles]:
        """The held-out folds with predictions, in file-name order; :class:`RunDirError`
        when there are none."""
        files = sorted(p for p in self.predictions_dir.glob("seed*_fold*.csv")
                       if not p.name.endswith(TRAIN_SUFFIX))
        if not files:
            raise RunDirError(f"{self.predictions_dir} has no seed*_fold*.csv: run finetuning "
                              "first")
        out = []
        for p in files:
            try:
                seed, fold = (int(x) for x in p.stem[len("seed"):].split("_fold"))
            except ValueError:
                raise RunDirError(f"{p}: not a fold's predictions (seed<s>_fold<f>.csv)") \
                    from None
            out.append(self.fold(seed, fold))
        return out

    # ------------------------------------------------------------------------- results
    @property
    def oof_csv(self) -> Path:
        return self.path / "oof_predictions.csv"

    @property
    def results_md(self) -> Path:
        return self.path / "results.md"

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    @property
    def results_json(self) -> Path:
        return self.path / "results.json"

    @property
    def kaplan_meier_png(self) -> Path:
        return self.path / "kaplan_meier.png"

    @property
    def calibration_csv(self) -> Path:
        return self.path / "calibration.csv"

    @property
    def calibration_png(self) -> Path:
        return self.path / "calibration.png"

    @property
    def decision_curve_csv(self) -> Path:
        return self.path / "decision_curve.csv"

    @property
    def decision_curve_png(self) -> Path:
        return self.path / "decision_curve.png"

    @property
    def pretrain_eval_json(self) -> Path:
        return self.path / "pretrain_eval.json"

    @property
    def pretrain_eval_md(self) -> Path:
        return self.path / "pretrain_eval.md"

    @property
    def biomarkers_csv(self) -> Path:
        return self.path / "biomarkers.csv"

    @property
    def explain_dir(self) -> Path:
        return self.path / "explain"

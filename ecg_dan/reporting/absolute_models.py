"""What gives each fold model of a run its absolute risk, from the run's saved predictions.

- Every fold model whose training-fold risks were saved (the network with either objective,
  the Cox baselines): its scalar risk (a Cox log-risk, a logistic-hazard head's minus
  restricted mean survival time) and
  an out-of-fold recalibration (:mod:`ecg_dan.metrics.recalibration`): the slope is fitted
  on rows it did not train on, the baseline on its training-fold rows. The slope's rows for
  fold model m: every fold model's inner-validation rows (scored by that model, centred on
  its own offset), except rows of m's held-out fold, so no held-out outcome ever calibrates
  the model that scores it. With one seed they are m's own validation rows; with five seeds
  about five times as many events, which a slope needs (a 20% validation split of a small
  cohort has a handful). The baseline of ``slope * (eta - offset)`` comes from m's whole
  training fold (train + validation), five times the events of its validation rows: measured
  on the demo (benchmarks/bench_calibration.py, docs/benchmarks.md), the slope is what fixes
  the calibration and a validation-only baseline only adds noise. A logistic-hazard head's
  own curves were off (O/E 2.01 at 12 months in the demo) and are recalibrated likewise.
- Runs written before the training-fold risks were saved: a discrete-time head's own curves
  (the ``*_surv.npz`` sidecar of its held-out rows); a Cox model has no absolute risk.

The same objects give the evaluation's calibration (:mod:`ecg_dan.reporting.fold_metrics`),
the comparison's integrated Brier score, the model file's baselines and ``predict``'s
absolute risks, so all of them describe one model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from data_modules.errors import DataError
from ecg_dan.log import get_logger
from ecg_dan.metrics.recalibration import CoxRecalibration, fit_cox_recalibration
from ecg_dan.reporting.oof import REQUIRED_COLUMNS
from ecg_dan.run_dir import RunDir, RunDirError

log = get_logger(__name__)

__all__ = ["DiscreteCurves", "FoldModelRows", "fold_models", "risk_on_shared_scale"]


@dataclass(frozen=True)
class DiscreteCurves:
    """A discrete-time model's survival at its cuts for its held-out rows (step function)."""

    surv: NDArray  # (n, K), rows in the order of the held-out frame
    cuts: NDArray  # (K,)

    def survival(self, times: ArrayLike) -> NDArray:
        t = np.atleast_1d(np.asarray(times, dtype=float))
        idx = np.clip(np.searchsorted(self.cuts, t, side="right") - 1, 0, len(self.cuts) - 1)
        return np.asarray(self.surv, dtype=float)[:, idx]

    @property
    def max_time(self) -> float:
        return float(self.cuts[-1])


AbsoluteModel = CoxRecalibration | DiscreteCurves


@dataclass
class FoldModelRows:
    """One scored fold: its key (seed, fold), held-out rows, training-fold rows (None in runs
    written before they were saved) and what gives it absolute risk (None: nothing can)."""

    key: tuple[int, int]
    test: pd.DataFrame
    train: pd.DataFrame | None
    model: AbsoluteModel | None
    val_eid: NDArray | None = None  # its inner-validation rows (scored in ``train``)

    def survival(self, times: ArrayLike) -> NDArray:
        """Survival of the held-out rows at ``times``, (n, n_times)."""
        if isinstance(self.model, CoxRecalibration):
            return self.model.survival(self.test.risk.to_numpy(), times)
        if isinstance(self.model, DiscreteCurves):
            return self.model.survival(times)
        raise RunDirError(f"fold seed {self.key[0]} fold {self.key[1]}: no absolute risk "
                          "(a Cox model without its training-fold risks)")


def risk_on_shared_scale(rows: FoldModelRows, frame: pd.DataFrame | None = None) -> NDArray:
    """The risks of ``frame`` (default: the held-out rows) by this fold model on a scale
    shared by every fold model: a Cox model's calibrated log hazard ratio against the
    typical training person (``slope * (eta - offset)``); a fold model that could not be
    recalibrated (a run without its validation rows): its risk as it is."""
    risk = (rows.test if frame is None else frame).risk.to_numpy(np.float64)
    if isinstance(rows.model, CoxRecalibration):
        return rows.model.linear_predictor(risk)
    return risk


def _val_eids(rd: RunDir) -> dict[tuple[int, int], tuple[NDArray, NDArray]]:
    out = {}
    for s in rd.load_splits():
        if s.val_eid is None or s.test_eid is None:
            raise RunDirError(f"{rd.splits_path}: splits without participant ids (written by "
                              "an older version); re-run the finetuning to recalibrate")
        out[(int(s.seed), int(s.fold))] = (np.asarray(s.val_eid), np.asarray(s.test_eid))
    return out


def fold_models(rd: RunDir) -> list[FoldModelRows]:
    """Every scored fold of a run with what gives it absolute risk (module docstring)."""
    folds = []
    for ff in rd.scored_folds():
        test = ff.read_test()
        missing = [c for c in REQUIRED_COLUMNS if c not in test.columns]
        if missing or test.empty:
            raise DataError(f"{ff.csv}: {'no rows' if test.empty else f'lacks columns {missing}'}"
                            f"; needs {list(REQUIRED_COLUMNS)}")
        key = (int(test.seed.iloc[0]), int(test.fold.iloc[0]))
        train = ff.read_train()
        # a discrete-time head's own curves only where it cannot be recalibrated (they were
        # off by O/E 2.0 at 12 months in the demo: benchmarks.md)
        curves = ff.read_curves(test.eid) if train is None else None
        folds.append(FoldModelRows(key, test, train,
                                   None if curves is None else DiscreteCurves(*curves)))
    calibrated = [f for f in folds if f.train is not None]
    if not rd.has_splits():
        if calibrated:
            log.warning(f"{rd.splits_path}: missing, so the validation rows that recalibrate "
                        "the fold models are unknown: no absolute risk, calibration or IBS")
        return folds
    parts = _val_eids(rd)
    for f in folds:
        if f.key in parts:
            f.val_eid = parts[f.key][0]
    if not calibrated:
        return folds
    pool = []
    offsets = {}
    for f in calibrated:
        if f.key not in parts:
            raise RunDirError(f"{rd.splits_path}: no split for fold seed {f.key[0]} fold "
                              f"{f.key[1]} of the predictions")
        offsets[f.key] = float(f.train.risk.mean())
        val = f.train[f.train.eid.isin(parts[f.key][0])]
        pool.append(pd.DataFrame({"eid": val.eid.to_numpy(), "time": val.time.to_numpy(),
                                  "event": val.event.to_numpy(),
                                  "centred": val.risk.to_numpy() - offsets[f.key]}))
    pool_df = pd.concat(pool, ignore_index=True)
    for f in calibrated:
        rows = pool_df[~pool_df.eid.isin(parts[f.key][1])]
        own = f.train
        try:
            f.model = fit_cox_recalibration(
                rows.centred.to_numpy(), rows.time.to_numpy(), rows.event.to_numpy(),
                offset=offsets[f.key],
                baseline_rows=(own.risk.to_numpy() - offsets[f.key], own.time.to_numpy(),
                               own.event.to_numpy()))
        except ValueError as e:
            raise DataError(f"{rd.predictions_dir}: fold seed {f.key[0]} fold {f.key[1]}: "
                            f"{e}") from None
    return folds

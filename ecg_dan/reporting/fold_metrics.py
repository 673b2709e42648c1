"""Per held-out fold: predicted survival curves (a Cox-type model's out-of-fold
recalibration, or a discrete-time model's own curves; :mod:`ecg_dan.reporting.absolute_models`),
the integrated Brier score, Antolini's C, absolute risk and the calibration built from it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ecg_dan.metrics.calibration import (
    CalibrationNotEstimated,
    calibration_in_the_large,
    calibration_slope,
    calibration_table,
    smoothed_calibration,
)
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.survival import antolini_cindex, integrated_brier_score
from ecg_dan.reporting.absolute_models import FoldModelRows, fold_models
from ecg_dan.reporting.tables import add_fold_column
from ecg_dan.run_dir import RunDir


def fold_ibs(rows: FoldModelRows, n_times: int = 20) -> float:
    """Integrated Brier score of one fold over the held-out fold's 10th-90th percentile of
    event times (censoring weights from the training fold); NaN without two event times."""
    test, train = rows.test, rows.train
    ev_times = test.time[test.event == 1].to_numpy()
    if ev_times.size < 2 or train is None:
        return float("nan")
    lo, hi = np.quantile(ev_times, [0.1, 0.9])
    hi = min(hi, train.time.max(), test.time.max())
    times = np.unique(np.linspace(lo, hi, n_times, endpoint=False))
    if times.size < 2:
        return float("nan")
    return float(integrated_brier_score(train.time.to_numpy(), train.event.to_numpy(),
                                        test.time.to_numpy(), test.event.to_numpy(),
                                        rows.survival(times), times))


def fold_antolini(rows: FoldModelRows) -> float:
    """Antolini's time-dependent C of one held-out fold (pycox), the curves evaluated at its
    distinct event times (all the metric reads); NaN without events."""
    test = rows.test
    times = np.unique(test.time[test.event == 1].to_numpy(dtype=float))
    if times.size == 0:
        return float("nan")
    return antolini_cindex(rows.survival(times).T, times, test.time.to_numpy(),
                           test.event.to_numpy())


def oof_absolute_risk(rows: FoldModelRows, times: ArrayLike) -> pd.DataFrame:
    """Held-out rows of one fold with their predicted risk of the event by each time
    (``risk@<t>`` = 1 - S(t)): the input of calibration."""
    t = np.atleast_1d(np.asarray(times, dtype=float))
    risk = 1.0 - rows.survival(t)
    out = rows.test[["eid", "seed", "fold", "time", "event"]].reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(risk, columns=[f"risk@{h:g}" for h in t])], axis=1)


def participant_risks(pred: pd.DataFrame, horizons: Sequence[float]) -> pd.DataFrame:
    """Per participant (index ``eid``, sorted): ``time``, ``event`` and ``risk@<h>``, the
    mean over seeds of :func:`oof_absolute_risk` rows (each from the fold model that did not
    train on them)."""
    cols = [f"risk@{h:g}" for h in horizons]
    return pred.groupby("eid").agg({"time": "first", "event": "first",
                                    **{c: "mean" for c in cols}})


def absolute_risks(folds: Iterable[FoldModelRows], horizons: Sequence[float]) -> pd.DataFrame:
    """Out-of-fold absolute risks by each horizon per participant (:func:`participant_risks`)
    of folds that all have a model of absolute risk."""
    return participant_risks(pd.concat([oof_absolute_risk(f, horizons) for f in folds],
                                       ignore_index=True), horizons)


def run_absolute_risk(rd: RunDir, horizons: Sequence[float]) -> pd.DataFrame:
    """A finetuning or Cox-baseline run's out-of-fold absolute risks by each horizon (in the
    run's time unit), per participant; read from its saved predictions only."""
    return absolute_risks(fold_models(rd), horizons)


def calibration_results(per: pd.DataFrame, horizons: Sequence[float], n_groups: int = 10,
                        alpha: float = 0.05
                        ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]],
                                   dict[float, pd.DataFrame]]:
    """Calibration at each horizon from :func:`absolute_risks` (one row per participant):
    the decile table (:func:`ecg_dan.metrics.calibration.calibration_table`, with a
    ``horizon`` column); per horizon (keyed ``f"{h:g}"``) calibration-in-the-large (O/E with
    the KM CI), the calibration slope and the smoothed-curve measures ICI / E50 / E90 / Emax
    (or ``note`` saying why they were not estimated); and the smoothed curves by horizon."""
    tables, large, curves = [], {}, {}
    for h in horizons:
        c = f"risk@{h:g}"
        tab = calibration_table(per[c], per.time, per.event, h, min(n_groups, len(per)), alpha)
        tables.append(tab.assign(horizon=float(h)))
        row: dict[str, Any] = calibration_in_the_large(per[c], per.time, per.event, h, alpha)
        try:
            row |= calibration_slope(per[c], per.time, per.event, h, alpha)
            smooth = smoothed_calibration(per[c], per.time, per.event, h, alpha=alpha)
            row |= {k: v for k, v in smooth.summary().items() if k not in ("n", "events")}
            curves[float(h)] = smooth.curve
        except CalibrationNotEstimated as e:
            row["note"] = str(e)
        large[f"{h:g}"] = row
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table[["horizon", *[x for x in table.columns if x != "horizon"]]], large, curves


def add_ibs_antolini(table: pd.DataFrame, folds: Iterable[FoldModelRows]) -> pd.DataFrame:
    """The integrated Brier score and Antolini's C of each held-out fold added to a results
    table, where the fold has a model of absolute risk (NaN where a metric is undefined)."""
    ibs, anto = {}, {}
    for rows in folds:
        if rows.model is None:
            continue
        ibs[rows.key] = fold_ibs(rows)
        try:
            anto[rows.key] = fold_antolini(rows)
        except UndefinedMetricError:
            anto[rows.key] = math.nan
    if ibs:
        table = add_fold_column(table, "ibs", ibs)
        table = add_fold_column(table, "antolini_c", anto)
    return table

"""Per held-out fold: predicted survival curves (Breslow from the training-fold risks, or a
discrete-time model's own), the integrated Brier score, Antolini's C, absolute risk and the
calibration built from it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ecg_dan.metrics.calibration import calibration_in_the_large, calibration_table
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.survival import (
    antolini_cindex,
    breslow_baseline,
    integrated_brier_score,
    survival_curves,
)
from ecg_dan.reporting.tables import add_fold_column
from ecg_dan.run_dir import RunDir, RunDirError


def fold_survival(test: pd.DataFrame, train: pd.DataFrame | None, times: ArrayLike,
                  curves: tuple[NDArray, NDArray] | None = None) -> NDArray:
    """Predicted survival of the held-out rows at ``times``, shape (n, n_times).

    ``curves`` = (surv (n, K), cuts) of a discrete-time model: read as a step function (the
    last cut at or before t, pycox's ``steps="post"``). Without them (Cox) the curves are
    ``exp(-H0(t) exp(risk))`` with the Breslow baseline H0 of the training-fold risks."""

    t = np.atleast_1d(np.asarray(times, dtype=float))
    if curves is not None:
        surv, cuts = curves
        idx = np.clip(np.searchsorted(cuts, t, side="right") - 1, 0, len(cuts) - 1)
        return np.asarray(surv, dtype=float)[:, idx]
    if train is None:
        raise ValueError("Cox survival curves need the training-fold predictions")
    base = breslow_baseline(train.risk.to_numpy(), train.time.to_numpy(),
                            train.event.to_numpy())
    return survival_curves(base, test.risk.to_numpy(), t)


def fold_ibs(test: pd.DataFrame, train: pd.DataFrame, n_times: int = 20,
             curves: tuple[NDArray, NDArray] | None = None) -> float:
    """Integrated Brier score of one fold over the held-out fold's 10th-90th percentile of
    event times: Breslow curves from the training-fold risks, or a discrete-time model's own
    ``curves`` (see :func:`fold_survival`)."""

    ev_times = test.time[test.event == 1].to_numpy()
    if ev_times.size < 2:
        return float("nan")
    lo, hi = np.quantile(ev_times, [0.1, 0.9])
    hi = min(hi, train.time.max(), test.time.max())
    times = np.unique(np.linspace(lo, hi, n_times, endpoint=False))
    if times.size < 2:
        return float("nan")
    surv = fold_survival(test, train, times, curves)
    return float(integrated_brier_score(train.time.to_numpy(), train.event.to_numpy(),
                                        test.time.to_numpy(), test.event.to_numpy(), surv,
                                        times))


def fold_antolini(test: pd.DataFrame, train: pd.DataFrame | None,
                  curves: tuple[NDArray, NDArray] | None = None) -> float:
    """Antolini's time-dependent C of one held-out fold (pycox), the curves evaluated at its
    distinct event times (all the metric reads); NaN without events."""

    times = np.unique(test.time[test.event == 1].to_numpy(dtype=float))
    if times.size == 0:
        return float("nan")
    surv = fold_survival(test, train, times, curves)
    return antolini_cindex(surv.T, times, test.time.to_numpy(), test.event.to_numpy())


def oof_absolute_risk(test: pd.DataFrame, train: pd.DataFrame | None, times: ArrayLike,
                      curves: tuple[NDArray, NDArray] | None = None) -> pd.DataFrame:
    """Held-out rows of one fold with their predicted risk of the event by each time
    (``risk@<t>`` = 1 - S(t), :func:`fold_survival`): the input of calibration."""
    t = np.atleast_1d(np.asarray(times, dtype=float))
    risk = 1.0 - fold_survival(test, train, t, curves)
    out = test[["eid", "seed", "fold", "time", "event"]].reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(risk, columns=[f"risk@{h:g}" for h in t])], axis=1)


def participant_risks(pred: pd.DataFrame, horizons: Sequence[float]) -> pd.DataFrame:
    """Per participant (index ``eid``, sorted): ``time``, ``event`` and ``risk@<h>``, the
    mean over seeds of :func:`oof_absolute_risk` rows (each from the fold model that did not
    train on them)."""
    cols = [f"risk@{h:g}" for h in horizons]
    return pred.groupby("eid").agg({"time": "first", "event": "first",
                                    **{c: "mean" for c in cols}})


def run_absolute_risk(rd: RunDir, horizons: Sequence[float]) -> pd.DataFrame:
    """A finetuning or Cox-baseline run's out-of-fold absolute risks by each horizon (in the
    run's time unit), per participant (:func:`participant_risks`); read from its saved
    predictions only."""
    rows = []
    for ff in rd.scored_folds():
        test = ff.read_test()
        train, curves = ff.read_train(), ff.read_curves(test.eid)
        if train is None and curves is None:
            raise RunDirError(f"{ff.train_csv}: missing; absolute risks of a Cox model need "
                              "its training-fold risks")
        rows.append(oof_absolute_risk(test, train, horizons, curves))
    return participant_risks(pd.concat(rows, ignore_index=True), horizons)


def calibration_results(pred: pd.DataFrame, horizons: Sequence[float], n_groups: int = 10,
                        alpha: float = 0.05) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Calibration at each horizon from :func:`oof_absolute_risk` rows of every fold: each
    participant's predicted risk is the mean over seeds (:func:`participant_risks`, as the
    Kaplan-Meier figure groups them); then the decile table
    (:func:`ecg_dan.metrics.calibration.calibration_table`, with a ``horizon`` column) and
    calibration-in-the-large per horizon (keyed ``f"{h:g}"``)."""

    cols = [f"risk@{h:g}" for h in horizons]
    per = participant_risks(pred, horizons)
    tables, large = [], {}
    for h, c in zip(horizons, cols):
        tab = calibration_table(per[c], per.time, per.event, h, min(n_groups, len(per)), alpha)
        tables.append(tab.assign(horizon=float(h)))
        large[f"{h:g}"] = calibration_in_the_large(per[c], per.time, per.event, h, alpha)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table[["horizon", *[x for x in table.columns if x != "horizon"]]], large


FoldKey = tuple[int, int]


def add_ibs_antolini(table: pd.DataFrame,
                     folds: Iterable[tuple[FoldKey, pd.DataFrame, pd.DataFrame | None,
                                           tuple[NDArray, NDArray] | None]]) -> pd.DataFrame:
    """The integrated Brier score and Antolini's C of each held-out fold (``(key, held-out
    rows, training-fold rows or None, curves or None)``) added to a results table: the IBS
    where the training-fold risks exist, Antolini's C where curves can be built (NaN where it
    is undefined)."""
    ibs, anto = {}, {}
    for key, test, train, curves in folds:
        if train is not None:
            ibs[key] = fold_ibs(test, train, curves=curves)
        if train is not None or curves is not None:
            try:
                anto[key] = fold_antolini(test, train, curves)
            except UndefinedMetricError:
                anto[key] = math.nan
    if ibs:
        table = add_fold_column(table, "ibs", ibs)
    if anto:
        table = add_fold_column(table, "antolini_c", anto)
    return table

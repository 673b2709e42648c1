"""The survival results table of one run from its out-of-fold predictions, as the paper
reports it.

The paper reports, for 5 seeds x 2 folds, ``mean`` = mean over seeds of the mean over folds
and "std" = mean over seeds of the across-fold standard deviation computed with ``np.std``
(ddof=0; the authors' ``run_nested_cv`` uses ``np.std``). UKB-MI: the ten per-fold C-indices
of docs/method.md section 6 give mean 0.5805 and std_paper 0.0580 (ddof=1 would give 0.0821).
``std_all`` is the plain ``np.std`` (ddof=0) over all seed x fold values. Because the C-index
of a 400-sample fold with ~16 events is noisy, the table also reports a bootstrap CI of the
*pooled* C-index (all OOF predictions of a seed scored together), resampling participants
jointly across seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ecg_dan.metrics.bootstrap import bootstrap_ci
from ecg_dan.metrics.cindex import UndefinedMetricError, harrell_cindex
from ecg_dan.metrics.survival import time_dependent_auc, uno_cindex
from ecg_dan.reporting.oof import check_oof, wide

TrainLookup = (
    Callable[[Any, Any], tuple[ArrayLike, ArrayLike]]
    | Mapping[tuple[Any, Any], pd.DataFrame]
    | Literal["oof"]
)


#: Fewest events before a horizon in a held-out fold for its time-dependent AUC: below it
#: the AUC rests on a handful of cases (one event gave 0.036 in a demo fold) and is left
#: empty, and so is its summary over folds.
MIN_TD_AUC_EVENTS = 10


def oof_train_lookup(df: pd.DataFrame) -> Callable[[Any, Any], tuple[NDArray, NDArray]]:
    """Training-fold survival data taken from the OOF frame itself.

    In k-fold CV the training fold of (seed, fold) is everyone of that seed held out in another
    fold, whose time/event the OOF frame already holds (the inner validation split is part of it).
    """
    check_oof(df)

    def lookup(seed: Any, fold: Any) -> tuple[NDArray, NDArray]:
        tr = df[(df["seed"] == seed) & (df["fold"] != fold)]
        return tr["time"].to_numpy(float), tr["event"].to_numpy(float)

    return lookup


def _resolve_lookup(
    train_lookup: TrainLookup | None, df: pd.DataFrame
) -> Callable[[Any, Any], tuple[NDArray, NDArray]] | None:
    if train_lookup is None:
        return None
    if isinstance(train_lookup, str):
        if train_lookup != "oof":
            raise ValueError(f"train_lookup string must be 'oof', got {train_lookup!r}")
        return oof_train_lookup(df)
    if isinstance(train_lookup, Mapping):
        m = train_lookup

        def from_mapping(seed: Any, fold: Any) -> tuple[NDArray, NDArray]:
            tr = m[(seed, fold)]
            return tr["time"].to_numpy(float), tr["event"].to_numpy(float)

        return from_mapping
    return train_lookup


def summarize_folds(values: pd.DataFrame, column: str) -> dict[str, float]:
    """``mean`` (mean over seeds of fold means), ``std_paper`` (mean over seeds of the
    across-fold np.std, ddof=0) and ``std_all`` (np.std over all folds, ddof=0) of ``column``
    in a frame with ``seed`` and ``fold`` columns. NaN folds are ignored."""
    v = values[["seed", column]].dropna()
    if v.empty:
        return {"mean": math.nan, "std_paper": math.nan, "std_all": math.nan}
    per_seed = v.groupby("seed")[column]
    return {
        "mean": float(per_seed.mean().mean()),
        "std_paper": float(per_seed.agg(lambda x: np.std(x.to_numpy(), ddof=0)).mean()),
        "std_all": float(np.std(v[column].to_numpy(), ddof=0)),
    }


def mean_fold_cindex(risk: NDArray, fold: NDArray, time: NDArray, event: NDArray) -> float:
    """Mean over seeds (columns) of the mean over folds of the held-out fold's C-index: the
    paper's summary, which (unlike a C of the pooled OOF risks) does not mix the risk scales
    of different fold models (a Cox log-risk is defined up to a constant per fold model)."""
    per_seed = []
    for k in range(risk.shape[1]):
        per_seed.append(np.mean([harrell_cindex(time[m], risk[m, k], event[m])
                                 for f in np.unique(fold[:, k]) for m in [fold[:, k] == f]]))
    return float(np.mean(per_seed))


def _mean_pooled_cindex(risk: NDArray, time: NDArray, event: NDArray) -> float:
    """Mean over seeds (columns) of the C-index of each seed's pooled OOF predictions."""
    return float(np.mean([harrell_cindex(time, risk[:, k], event) for k in range(risk.shape[1])]))


def _default_horizons(df: pd.DataFrame) -> NDArray:
    ev_t = df.loc[df["event"] == 1, "time"].to_numpy(float)
    if ev_t.size == 0:
        return np.array([])
    return np.unique(np.percentile(ev_t, [25, 50, 75]))


def results_table(
    df: pd.DataFrame,
    train_lookup: TrainLookup | None = None,
    horizons: Sequence[float] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    boot_seed: int = 0,
) -> pd.DataFrame:
    """Per-fold and summary metrics, as the paper reports them.

    Args:
        df: OOF predictions (``eid, seed, fold, risk, time, event``).
        train_lookup: enables Uno's C and the cumulative/dynamic AUC, which need the training
            fold's censoring distribution: ``"oof"`` (training fold = the other folds of the same
            seed, see :func:`oof_train_lookup`), a mapping ``(seed, fold) -> DataFrame`` with
            ``time``/``event``, or a callable ``(seed, fold) -> (time, event)``. Uno's C is
            truncated at the largest training time (beyond it G is not estimable).
        horizons: td-AUC horizons (default: quartiles of the event times); a horizon outside
            a fold's follow-up, or with fewer than :data:`MIN_TD_AUC_EVENTS` events before it
            in the fold, gives NaN for that fold, and then NaN in the summary rows.
        n_boot, alpha, boot_seed: bootstrap of the pooled C-index (0 disables it).

    Returns:
        One DataFrame. Column ``row`` says what a row is:
        ``fold`` (one per seed x fold: n, events, harrell_c[, uno_c, td_auc_mean, td_auc@h]),
        ``pooled_seed`` (a seed's OOF predictions scored together), then the summary rows
        ``mean``, ``std_paper``, ``std_all`` (over the fold rows, see module doc) and ``pooled``
        (mean over seeds of the pooled C with a percentile bootstrap CI in ``ci_low``/``ci_high``;
        participants are resampled jointly across seeds, stratified by event).
    """
    df = check_oof(df.copy())
    df["event"] = df["event"].astype(float)
    lookup = _resolve_lookup(train_lookup, df)
    hz = np.asarray(horizons, dtype=float) if horizons is not None else _default_horizons(df)
    auc_cols = [f"td_auc@{h:g}" for h in hz] if lookup is not None else []

    rows: list[dict[str, Any]] = []
    for (seed, fold), g in df.groupby(["seed", "fold"], sort=True):
        t, r, e = g["time"].to_numpy(float), g["risk"].to_numpy(float), g["event"].to_numpy(float)
        row: dict[str, Any] = {
            "row": "fold",
            "seed": seed,
            "fold": fold,
            "n": len(g),
            "events": int(e.sum()),
        }
        try:
            row["harrell_c"] = harrell_cindex(t, r, e)
        except UndefinedMetricError:
            row["harrell_c"] = math.nan
        if lookup is not None:
            tr_t, tr_e = (np.asarray(a, dtype=float) for a in lookup(seed, fold))
            try:
                row["uno_c"] = uno_cindex(tr_t, tr_e, t, e, r, tau=float(tr_t.max()))
            except ValueError as err:  # includes UndefinedMetricError
                warnings.warn(f"Uno C undefined for seed={seed} fold={fold}: {err}", stacklevel=2)
                row["uno_c"] = math.nan
            # a horizon inside the fold's follow-up with enough cases (events by it)
            cases = np.array([int(((t <= h) & (e == 1)).sum()) for h in hz], dtype=int)
            ok = (hz >= t.min()) & (hz < t.max()) & (cases >= MIN_TD_AUC_EVENTS)
            aucs = np.full(hz.shape[0], math.nan)
            row["td_auc_mean"] = math.nan
            if ok.any():
                try:
                    aucs[ok], row["td_auc_mean"] = time_dependent_auc(tr_t, tr_e, t, e, r, hz[ok])
                except ValueError as err:
                    warnings.warn(
                        f"td-AUC undefined for seed={seed} fold={fold}: {err}", stacklevel=2
                    )
            row.update(dict(zip(auc_cols, aucs)))
        rows.append(row)
    folds = pd.DataFrame(rows)
    metric_cols = ["harrell_c"]
    if lookup is not None:
        metric_cols += ["uno_c", "td_auc_mean", *auc_cols]

    for seed, g in df.groupby("seed", sort=True):
        t, r, e = g["time"].to_numpy(float), g["risk"].to_numpy(float), g["event"].to_numpy(float)
        try:
            c = harrell_cindex(t, r, e)
        except UndefinedMetricError:
            c = math.nan
        rows.append(
            {
                "row": "pooled_seed",
                "seed": seed,
                "n": len(g),
                "events": int(e.sum()),
                "harrell_c": c,
            }
        )

    summaries = {col: summarize_folds(folds, col) for col in metric_cols}
    for col in auc_cols:  # a summary of some folds only would pass for all of them
        if folds[col].isna().any():
            summaries[col] = dict.fromkeys(summaries[col], math.nan)
    for name in ("mean", "std_paper", "std_all"):
        rows.append({"row": name, **{col: summaries[col][name] for col in metric_cols}})

    risk_w, time_w, event_w = wide(df)
    pooled: dict[str, Any] = {
        "row": "pooled",
        "n": risk_w.shape[0],
        "events": int(event_w.sum()),
        "ci_low": math.nan,
        "ci_high": math.nan,
    }
    try:
        pooled["harrell_c"] = _mean_pooled_cindex(risk_w, time_w, event_w)
        if n_boot > 0:
            ci = bootstrap_ci(
                _mean_pooled_cindex,
                risk_w,
                time_w,
                event_w,
                n_boot=n_boot,
                alpha=alpha,
                seed=boot_seed,
                stratify=event_w,
            )
            pooled.update(ci_low=ci.low, ci_high=ci.high, boot_skipped=ci.n_skipped)
    except UndefinedMetricError:
        pooled["harrell_c"] = math.nan
    rows.append(pooled)

    cols = ["row", "seed", "fold", "n", "events", *metric_cols, "ci_low", "ci_high"]
    table = pd.DataFrame(rows)
    for c in cols:
        if c not in table.columns:
            table[c] = math.nan
    table = table[cols + [c for c in table.columns if c not in cols]]
    for c in ("n", "events", "seed", "fold", "boot_skipped"):
        if c not in table.columns:
            continue
        col = table[c]
        if pd.api.types.is_numeric_dtype(col) and (col.dropna() % 1 == 0).all():
            table[c] = col.astype("Int64")
    return table


def add_fold_column(table: pd.DataFrame, column: str,
                    values: Mapping[tuple[int, int], float]) -> pd.DataFrame:
    """Put per-(seed, fold) ``values`` into the fold rows of a :func:`results_table` and
    their :func:`summarize_folds` statistics into its ``mean``/``std_*`` rows."""
    fold_rows = table.row == "fold"
    table.loc[fold_rows, column] = [values.get((int(s), int(f)), np.nan) for s, f in
                                    zip(table.seed[fold_rows], table.fold[fold_rows])]
    stats = summarize_folds(table[fold_rows][["seed", column]], column)
    for name, value in stats.items():
        table.loc[table.row == name, column] = value
    return table


def summary_row(table: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers: C-index mean, both stds, pooled C with its bootstrap CI."""
    out: dict[str, Any] = {}
    for row in ("mean", "std_paper", "std_all"):
        r = table[table.row == row]
        for col in ("harrell_c", "uno_c", "td_auc_mean", "ibs", "antolini_c"):
            if col in r and len(r) and pd.notna(r[col].iloc[0]):
                out[f"{col}_{row}"] = float(r[col].iloc[0])
    pooled = table[table.row == "pooled"]
    if len(pooled):
        out["harrell_c_pooled"] = float(pooled.harrell_c.iloc[0])
        out["harrell_c_ci_low"] = float(pooled.ci_low.iloc[0])
        out["harrell_c_ci_high"] = float(pooled.ci_high.iloc[0])
    return out

"""Results: every table, summary and text this project writes about a run's outcome.

One home for (a) the survival results table from saved out-of-fold (OOF) predictions, its
summary statistics, the fold integrated Brier score and calibration (predicted vs Kaplan-Meier
risk per risk decile, calibration-in-the-large), (b) the Kaplan-Meier and calibration figures, (c)
the pretrained-encoder result tables, (d) the one Markdown formatter and the one
flattener of nested results (for tables and W&B summaries), and (e) the comparison of
several runs on the same participants (paired bootstrap of the pooled C, forest plot).

OOF input: a DataFrame with columns ``eid, seed, fold, risk, time, event``: one row per
participant per seed, each participant held out exactly once per seed (repeated k-fold CV),
``risk`` = the model's log-risk (higher = earlier event).

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

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from omegaconf import OmegaConf

from data_modules.atomic import atomic_path, atomic_write_text
from data_modules.errors import DataError
from data_modules.protocol.survival_arrays import check_survival
from ecg_dan.metrics.bootstrap import BootstrapCI, bootstrap_ci
from ecg_dan.metrics.cindex import UndefinedMetricError, harrell_cindex
from ecg_dan.metrics.survival import time_dependent_auc, uno_cindex

__all__ = [
    "PAPER_CINDEX",
    "REQUIRED_COLUMNS",
    "calibration_markdown",
    "calibration_plot",
    "calibration_results",
    "comparison_markdown",
    "comparison_table",
    "forest_plot",
    "flat_numbers",
    "flatten_results",
    "fold_ibs",
    "json_default",
    "kaplan_meier_plot",
    "model_kind",
    "oof_absolute_risk",
    "oof_train_lookup",
    "paired_bootstrap_diff",
    "paper_value",
    "parameter_count",
    "results_markdown",
    "results_table",
    "summary_row",
    "summarize_folds",
    "to_markdown",
    "write_json",
]

REQUIRED_COLUMNS = ("eid", "seed", "fold", "risk", "time", "event")

TrainLookup = (
    Callable[[Any, Any], tuple[ArrayLike, ArrayLike]]
    | Mapping[tuple[Any, Any], pd.DataFrame]
    | Literal["oof"]
)


def _check_oof(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"OOF frame lacks columns {missing}; needs {list(REQUIRED_COLUMNS)}")
    check_survival(df["time"], df["event"], df["risk"], where="OOF predictions")
    if df.duplicated(["seed", "eid"]).any():
        raise ValueError("a participant appears more than once within a seed (held out twice?)")
    return df


def oof_train_lookup(df: pd.DataFrame) -> Callable[[Any, Any], tuple[NDArray, NDArray]]:
    """Training-fold survival data taken from the OOF frame itself.

    In k-fold CV the training fold of (seed, fold) is everyone of that seed held out in another
    fold, whose time/event the OOF frame already holds (the inner validation split is part of it).
    """
    _check_oof(df)

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


def _wide(df: pd.DataFrame) -> tuple[NDArray, NDArray, NDArray]:
    """(risk[n_eid, n_seed], time[n_eid], event[n_eid]) for resampling participants jointly."""
    risk = df.pivot(index="eid", columns="seed", values="risk")
    if risk.isna().any().any():
        raise ValueError("every participant must have a prediction for every seed")
    per_eid = df.groupby("eid")[["time", "event"]].agg(["min", "max"])
    for c in ("time", "event"):
        if not np.array_equal(per_eid[(c, "min")].to_numpy(), per_eid[(c, "max")].to_numpy()):
            raise ValueError(f"{c} of a participant differs between seeds")
    per_eid = per_eid.loc[risk.index]
    return (
        risk.to_numpy(float),
        per_eid[("time", "min")].to_numpy(float),
        per_eid[("event", "min")].to_numpy(float),
    )


def _mean_fold_cindex(risk: NDArray, fold: NDArray, time: NDArray, event: NDArray) -> float:
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
        horizons: td-AUC horizons (default: quartiles of the event times); horizons outside a
            fold's follow-up give NaN for that fold.
        n_boot, alpha, boot_seed: bootstrap of the pooled C-index (0 disables it).

    Returns:
        One DataFrame. Column ``row`` says what a row is:
        ``fold`` (one per seed x fold: n, events, harrell_c[, uno_c, td_auc_mean, td_auc@h]),
        ``pooled_seed`` (a seed's OOF predictions scored together), then the summary rows
        ``mean``, ``std_paper``, ``std_all`` (over the fold rows, see module doc) and ``pooled``
        (mean over seeds of the pooled C with a percentile bootstrap CI in ``ci_low``/``ci_high``;
        participants are resampled jointly across seeds, stratified by event).
    """
    df = _check_oof(df.copy())
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
            ok = (hz >= t.min()) & (hz < t.max())
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
    for name in ("mean", "std_paper", "std_all"):
        rows.append({"row": name, **{col: summaries[col][name] for col in metric_cols}})

    risk_w, time_w, event_w = _wide(df)
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


def save_png(fig: Any, out_png: str | os.PathLike) -> Path:
    """A matplotlib figure written atomically as a PNG (every figure of the project)."""
    out = Path(out_png)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out


def _fmt(v: Any, digits: int) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """GitHub-flavoured Markdown table (no ``tabulate`` dependency); NaN cells are left empty."""
    return _table([str(c) for c in table.columns],
                  [[_fmt(v, digits) for v in rec] for rec in table.itertuples(index=False)])


def mean_risk_groups(df: pd.DataFrame, top_fraction: float) -> tuple[pd.DataFrame, float]:
    """The paper's risk groups: per participant (index ``eid``, sorted) the OOF log-risk
    averaged over seeds, ``time``, ``event`` and ``high`` (risk >= the (1 - top_fraction)
    quantile of those means); and that threshold."""
    g = df.groupby("eid").agg(
        risk=("risk", "mean"), time=("time", "first"), event=("event", "first")
    )
    thr = float(np.percentile(g["risk"].to_numpy(), 100.0 * (1.0 - top_fraction)))
    g["high"] = g["risk"].to_numpy() >= thr
    return g, thr


def _high_risk_groups(
    df: pd.DataFrame, top_fraction: float, grouping: str
) -> tuple[NDArray, NDArray, NDArray]:
    """(time, event, is_high) per analysed unit; high = risk >= the (1 - top_fraction) quantile."""
    q = 100.0 * (1.0 - top_fraction)
    if grouping == "mean_risk":
        g, _ = mean_risk_groups(df, top_fraction)
        return g["time"].to_numpy(float), g["event"].to_numpy(float), g["high"].to_numpy()
    if grouping == "per_seed":
        thr = df.groupby("seed")["risk"].transform(lambda x: np.percentile(x.to_numpy(), q))
        high = (df["risk"] >= thr).to_numpy()
        return df["time"].to_numpy(float), df["event"].to_numpy(float), high
    raise ValueError(f"grouping must be 'mean_risk' or 'per_seed', got {grouping!r}")


def kaplan_meier_plot(
    df: pd.DataFrame,
    top_fraction: float = 0.04,
    out_png: str | os.PathLike[str] = "km_high_risk.png",
    grouping: Literal["mean_risk", "per_seed"] = "mean_risk",
    time_label: str = "Time since ECG (months)",
    title: str | None = None,
) -> dict[str, Any]:
    """Kaplan-Meier curves of the high-risk group (top ``top_fraction`` of risk) vs the rest,
    with a log-rank p-value in the legend; written atomically as a PNG (Agg, no pyplot state).

    ``grouping="mean_risk"`` (default, what the authors did: top 4% for UKB-MI, 2% for UKB-HYP)
    averages each participant's OOF log-risk over seeds, so every participant appears once and
    the log-rank test is valid. ``"per_seed"`` thresholds within each seed and pools the rows;
    participants then appear once per seed, which makes the log-rank p-value anti-conservative.

    Returns ``{"path", "p_value", "n_high", "n_low", "events_high", "events_low",
    "high_label"}``; the label states the real group size when tied risks at the threshold
    make the high-risk group larger than ``top_fraction``.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0 < top_fraction < 1:
        raise ValueError(f"top_fraction must be in (0, 1), got {top_fraction}")
    df = _check_oof(df)
    time, event, high = _high_risk_groups(df, top_fraction, grouping)
    if high.all() or not high.any():
        raise ValueError("risk grouping produced an empty group")
    p_value = float(logrank_test(time[high], time[~high], event[high], event[~high]).p_value)

    fig = Figure(figsize=(6, 4), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    share = float(high.mean())
    high_label = f"Top {100 * top_fraction:g}% risk (n={int(high.sum())})"
    if share > top_fraction * 1.05 + 1.0 / len(high):
        # tied risks at the threshold all join the high group: say how large it really is
        high_label = (f"Top {100 * top_fraction:g}% risk + ties at the threshold "
                      f"(n={int(high.sum())}, {100 * share:.1f}%)")
    groups = (
        (~high, f"Rest (n={int((~high).sum())})", "tab:blue"),
        (high, high_label, "tab:red"),
    )
    for mask, label, color in groups:
        kmf = KaplanMeierFitter().fit(time[mask], event[mask])
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_survival_function_
        ax.step(sf.index, sf.to_numpy(), where="post", color=color, label=label)
        ax.fill_between(
            ci.index, ci.iloc[:, 0], ci.iloc[:, 1], step="post", color=color, alpha=0.2, linewidth=0
        )
    ax.plot([], [], " ", label=f"log-rank p = {p_value:.3g}")
    ax.set_xlabel(time_label)
    ax.set_ylabel("Event-free probability")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower left", frameon=False)
    fig.tight_layout()

    out = save_png(fig, out_png)
    return {
        "path": out,
        "p_value": p_value,
        "n_high": int(high.sum()),
        "n_low": int((~high).sum()),
        "events_high": int(event[high].sum()),
        "events_low": int(event[~high].sum()),
        "high_label": high_label,
    }

# ----------------------------------------------------------------------------- summaries


def load_survival_sidecar(path: str | os.PathLike, eid: ArrayLike) -> tuple[NDArray, NDArray]:
    """Logistic-hazard curves of one fold (``predictions/seed*_fold*_surv.npz``): ``(surv
    (n, K) in the order of ``eid``, cuts (K,))``."""
    with np.load(path) as z:
        have, surv, cuts = z["eid"], z["surv"], z["cuts"]
    pos = pd.Index(have).get_indexer(np.asarray(eid))
    if (pos < 0).any():
        raise ValueError(f"{path}: no survival curve for {int((pos < 0).sum())} participant(s) "
                         "of the predictions (stale sidecar?)")
    return surv[pos], cuts


def fold_survival(test: pd.DataFrame, train: pd.DataFrame | None, times: ArrayLike,
                  curves: tuple[NDArray, NDArray] | None = None) -> NDArray:
    """Predicted survival of the held-out rows at ``times``, shape (n, n_times).

    ``curves`` = (surv (n, K), cuts) of a discrete-time model: read as a step function (the
    last cut at or before t, pycox's ``steps="post"``). Without them (Cox) the curves are
    ``exp(-H0(t) exp(risk))`` with the Breslow baseline H0 of the training-fold risks."""
    from ecg_dan.metrics.survival import breslow_baseline, survival_curves

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
    from ecg_dan.metrics.survival import integrated_brier_score

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
    from ecg_dan.metrics.survival import antolini_cindex

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


def calibration_results(pred: pd.DataFrame, horizons: Sequence[float], n_groups: int = 10,
                        alpha: float = 0.05) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Calibration at each horizon from :func:`oof_absolute_risk` rows of every fold: each
    participant's predicted risk is the mean over seeds (each from the fold model that did
    not train on them, as the Kaplan-Meier figure groups them); then the decile table
    (:func:`ecg_dan.metrics.calibration.calibration_table`, with a ``horizon`` column) and
    calibration-in-the-large per horizon (keyed ``f"{h:g}"``)."""
    from ecg_dan.metrics.calibration import calibration_in_the_large, calibration_table

    cols = [f"risk@{h:g}" for h in horizons]
    per = pred.groupby("eid").agg({"time": "first", "event": "first",
                                   **{c: "mean" for c in cols}})
    tables, large = [], {}
    for h, c in zip(horizons, cols):
        tab = calibration_table(per[c], per.time, per.event, h, min(n_groups, len(per)), alpha)
        tables.append(tab.assign(horizon=float(h)))
        large[f"{h:g}"] = calibration_in_the_large(per[c], per.time, per.event, h, alpha)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table[["horizon", *[x for x in table.columns if x != "horizon"]]], large


def calibration_markdown(large: Mapping[str, Mapping[str, float]], time_unit: str,
                         alpha: float = 0.05) -> str:
    """Calibration-in-the-large as a Markdown table (one row per horizon)."""
    level = f"{100 * (1 - alpha):g}%"
    rows = [[f"{h} {time_unit}", _fmt(v["predicted"], 4), _fmt(v["observed"], 4),
             f"[{_fmt(v['observed_low'], 4)}, {_fmt(v['observed_high'], 4)}]",
             _fmt(v["difference"], 4), _fmt(v["ratio"], 3)] for h, v in large.items()]
    return _table(["horizon", "mean predicted risk", "observed risk (KM)", f"{level} CI",
                   "observed - predicted", "O/E"], rows)


def calibration_plot(table: pd.DataFrame, out_png: str | os.PathLike[str],
                     time_unit: str = "months", title: str | None = None) -> Path:
    """One panel per horizon: mean predicted risk (x) vs Kaplan-Meier observed risk (y) of
    each risk decile, with the KM CI as error bars and the diagonal of perfect calibration;
    written atomically as a PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    horizons = sorted(table.horizon.unique())
    fig = Figure(figsize=(3.2 * len(horizons) + 0.6, 3.6), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(horizons), squeeze=False)[0]
    for ax, h in zip(axes, horizons):
        g = table[table.horizon == h]
        top = float(np.nanmax([g.predicted.max(), g.observed_high.max(), 1e-3])) * 1.05
        ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
        err = np.vstack([g.observed - g.observed_low, g.observed_high - g.observed])
        ax.errorbar(g.predicted, g.observed, yerr=np.nan_to_num(err), fmt="o", color="tab:blue",
                    capsize=2, markersize=4)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(f"{h:g} {time_unit}")
        ax.set_xlabel("mean predicted risk")
    axes[0].set_ylabel("observed risk (Kaplan-Meier)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)


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


def flat_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    """Nested results -> ``{"a/b/c": number}`` (non-numbers and non-finite numbers dropped)."""
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(flat_numbers(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(d, (bool, np.bool_)):
        out[prefix] = float(d)
    elif isinstance(d, (int, float, np.integer, np.floating)) and np.isfinite(d):
        out[prefix] = float(d)
    return out


def json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default))


# ----------------------------------------------------------------------------- encoder results


def flatten_results(result: Mapping[str, Any]) -> dict[str, float]:
    """Result dict of this module -> ``{row label: number}`` for a table."""
    kind = result.get("kind")
    if kind == "linear_probe":
        rows = {"linear probe macro-AUROC": result["macro_auroc"]}
        rows.update({f"linear probe AUROC {c}": v["auroc"] for c, v in result["per_class"].items()})
        return rows
    if kind == "retrieval":
        rows = {f"ECG→text recall@{k}": v for k, v in result["recall"].items()}
        rows["ECG→text median rank"] = result["median_rank"]
        rows["distinct texts"] = result["n_distinct_texts"]
        return rows
    if kind == "zero_shot":
        rows = {"zero-shot macro-AUROC": result["macro_auroc"]}
        rows.update({f"zero-shot AUROC {c}": v["auroc"] for c, v in result["per_class"].items()})
        rows["zero-shot top-1 hit"] = result["top1_hit"]
        return rows
    if kind is None and all(isinstance(v, (int, float, np.number)) for v in result.values()):
        return {str(k): v for k, v in result.items()}
    raise ValueError(f"cannot tabulate result of kind {kind!r}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _flatten_run(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping) and "kind" in value:
        return flatten_results(value)
    if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values()):
        merged: dict[str, float] = {}
        for v in value.values():
            merged.update(_flatten_run(v))
        return merged
    if isinstance(value, Mapping):
        return flatten_results(value)
    if isinstance(value, (list, tuple)):
        merged = {}
        for v in value:
            merged.update(_flatten_run(v))
        return merged
    raise ValueError(f"cannot tabulate {type(value).__name__}")


def results_markdown(results: Mapping[str, Any], digits: int = 3) -> str:
    """A markdown table of evaluation results.

    Accepts a :func:`compare_probes` result (class | A | B | Δ), a single result of this
    module (metric | value), or ``{run name: results}`` where each run's value is a result,
    a list/mapping of results, or a flat ``{metric: number}`` dict (metric | run1 | run2 …),
    e.g. ``{"pretrained": [probe, retrieval], "random init": [probe_rand, retrieval_rand]}``.
    """
    if results.get("kind") == "probe_comparison":
        a, b = results["columns"]
        rows = [["**macro**"] + [_fmt(results["macro"][k], digits) for k in (a, b, "delta")]]
        rows += [
            [c] + [_fmt(v[k], digits) for k in (a, b, "delta")]
            for c, v in results["per_class"].items()
        ]
        return _table(["class", f"{a} AUROC", f"{b} AUROC", "Δ"], rows)
    if "kind" in results:
        flat = flatten_results(results)
        return _table(["metric", "value"], [[k, _fmt(v, digits)] for k, v in flat.items()])
    runs = {str(name): _flatten_run(v) for name, v in results.items()}
    metrics: list[str] = []
    for flat in runs.values():
        metrics += [m for m in flat if m not in metrics]
    rows = [[m] + [_fmt(flat.get(m), digits) for flat in runs.values()] for m in metrics]
    return _table(["metric", *runs], rows)


# ----------------------------------------------------------------------------- model comparison

#: The paper's Harrell C-index by (model kind, cohort) (docs/method.md section 6): a value, or
#: a (low, high) range where the paper reports one. Shown only next to runs on real data.
PAPER_CINDEX: dict[tuple[str, str], float | tuple[float, float]] = {
    ("ecg_dan", "hyp"): 0.6349,
    ("ecg_dan", "mi"): 0.5805,
    ("biomarker_cox", "mi"): (0.519, 0.540),
}

#: The proposed model's kind: the default reference of a comparison.
PROPOSED_KIND = "ecg_dan"

_KIND_ALIASES = {"ecg-dan": "ecg_dan", "ecgdan": "ecg_dan", "proposed": "ecg_dan",
                 "biomarkers": "biomarker_cox", "cox_biomarkers": "biomarker_cox",
                 "biomarker-cox": "biomarker_cox"}


def model_kind(cfg: Any, run_name: str | None = None) -> str:
    """The kind of model a finetuning run is, for the paper's values and the default reference.

    In order: ``logging.compare_label`` when set; ``ecg_dan`` (the proposed model) for a run
    named like the paper's experiments (``finetune_<cohort>[_...]``, e.g.
    ``finetune_hyp_synthetic``) that is not trained from scratch; the backbone's
    ``model.name`` when it is not ``ecg_dan`` (another registered network); else the run's
    name (ablations, e.g. ``ablation_scratch_hyp``, have no paper value here).
    """
    import re

    label = cfg.logging.get("compare_label") if "logging" in cfg else None
    if label:
        label = str(label).strip().lower()
        return _KIND_ALIASES.get(label, label)
    names = [str(n) for n in (cfg.get("name"), run_name) if n]
    if any(re.match(r"^finetune_(hyp|mi|all)(_|$)", n) for n in names):
        return "ecg_dan_scratch" if cfg.finetune.scratch else PROPOSED_KIND
    model_name = str(cfg.model.name)
    if model_name != "ecg_dan":
        return _KIND_ALIASES.get(model_name, model_name)
    return names[0] if names else model_name


def paper_value(cfg: Any, run_name: str | None = None) -> str:
    """The paper's C-index for this run's (model kind, cohort) as text (``""`` when the paper
    has none, and always for synthetic data, whose numbers are not comparable)."""
    if str(cfg.data.source) != "real":
        return ""
    v = PAPER_CINDEX.get((model_kind(cfg, run_name), str(cfg.finetune.cohort)))
    if v is None:
        return ""
    if isinstance(v, tuple):
        return f"{v[0]:.3f}–{v[1]:.3f}"
    return f"{v:.4f}"


def parameter_count(cfg: Any) -> float:
    """Parameters of the finetuned network (encoder + decoder + survival head) built from
    the run's ``model`` config; NaN for a run without a network (the Cox baselines)."""
    from ecg_dan.config import model_config
    from ecg_dan.models import DiscreteTimeHead, RiskHead, count_parameters
    from ecg_dan.models.registry import build_model

    if OmegaConf.select(cfg, "task", default="finetune") != "finetune":
        return math.nan
    try:
        mc = model_config(cfg)
        net = build_model(mc)
    except (ValueError, TypeError, KeyError):
        return math.nan
    if OmegaConf.select(cfg, "finetune.objective", default="cox") == "logistic_hazard":
        head = DiscreteTimeHead(mc.latent_dim, int(cfg.finetune.n_time_bins))
    else:
        head = RiskHead(mc.latent_dim)
    return float(count_parameters(net.encoder) + count_parameters(net.decoder)
                 + count_parameters(head))


def _mismatch(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> str | None:
    ka = set(zip(a["seed"].tolist(), a["eid"].tolist()))
    kb = set(zip(b["seed"].tolist(), b["eid"].tolist()))
    if ka == kb:
        return None
    return (f"runs '{name_a}' and '{name_b}' were scored on different participants "
            f"({len(ka - kb)} (seed, eid) only in '{name_a}', {len(kb - ka)} only in "
            f"'{name_b}'); a paired comparison needs the same eids per seed")


def _paired_wide(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]
                 ) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray, NDArray]:
    """(risk_a, risk_b, fold_a, fold_b) as (n_eid, n_seed) and (time, event) (n_eid,), rows
    in the same eid order for both runs."""
    a, b = _check_oof(a.copy()), _check_oof(b.copy())
    msg = _mismatch(a, b, *names)
    if msg:
        raise DataError(msg)
    for df in (a, b):
        df["event"] = df["event"].astype(float)
    ra, ta, ea = _wide(a)  # rows sorted by eid, columns by seed: the same order for both
    rb, tb, eb = _wide(b)
    if not (np.array_equal(ta, tb) and np.array_equal(ea, eb)):
        raise DataError(f"runs '{names[0]}' and '{names[1]}' give the same participants "
                        "different follow-up times or events")
    fa, fb = (df.pivot(index="eid", columns="seed", values="fold").to_numpy(np.int64)
              for df in (a, b))
    return ra, rb, fa, fb, ta, ea


def paired_bootstrap_diff(
    a: pd.DataFrame,
    b: pd.DataFrame,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    names: tuple[str, str] = ("a", "b"),
) -> BootstrapCI:
    """Paired difference ``C(a) - C(b)`` of two models scored on the same participants, with
    a percentile bootstrap CI.

    C of a model = the paper's summary: mean over seeds of the mean over folds of each
    held-out fold's Harrell C (``c_mean`` of :func:`comparison_table`), not the C of the
    pooled OOF risks, which mixes fold models whose Cox log-risks differ by a constant.
    Each resample draws participants with replacement, stratified by event, and scores
    *both* models on that same resample, each participant staying in its held-out fold (all
    seeds of a participant stay together); the paired CI is therefore narrower than two
    independent CIs whenever the models' errors are correlated. Resamples on which C is
    undefined are skipped and counted (``n_skipped``). Raises :class:`DataError` naming
    ``names`` when the two frames do not hold the same (seed, eid) pairs or disagree on a
    participant's time/event.
    """
    ra, rb, fa, fb, t, e = _paired_wide(a, b, names)

    def diff(ra_: NDArray, rb_: NDArray, fa_: NDArray, fb_: NDArray, t_: NDArray,
             e_: NDArray) -> float:
        return _mean_fold_cindex(ra_, fa_, t_, e_) - _mean_fold_cindex(rb_, fb_, t_, e_)

    return bootstrap_ci(diff, ra, rb, fa, fb, t, e, n_boot=n_boot, alpha=alpha, seed=seed,
                        stratify=e)


COMPARISON_COLUMNS = (
    "model", "reference", "n", "events", "c_mean", "c_std_paper", "c_pooled", "c_pooled_low",
    "c_pooled_high", "diff_vs_ref", "diff_low", "diff_high", "diff_excludes_0", "uno_c_mean",
    "ibs_mean", "antolini_c_mean", "n_params", "paper",
)


def comparison_table(
    runs: Mapping[str, pd.DataFrame],
    reference: str,
    train: Mapping[str, Mapping[tuple[int, int], pd.DataFrame]] | None = None,
    configs: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    curves: Mapping[str, Mapping[tuple[int, int], tuple[NDArray, NDArray]]] | None = None,
) -> pd.DataFrame:
    """One row per run (in the given order): the models, ablations and baselines side by side.

    Args:
        runs: ``{name: OOF predictions}`` (``eid, seed, fold, risk, time, event``); every run
            must hold the reference's participants (same eids per seed).
        reference: the run the paired differences are taken against (the proposed model).
        train: optional ``{name: {(seed, fold): training-fold frame with risk/time/event}}``
            (the ``*_train.csv`` files) for the integrated Brier score (:func:`fold_ibs`).
        configs: optional ``{name: run config}`` for the parameter count and the paper value.
        n_boot, alpha, seed: bootstraps of the pooled C (per run) and of the paired difference.
        curves: optional ``{name: {(seed, fold): (surv, cuts)}}`` of discrete-time runs (their
            ``*_surv.npz`` sidecars); other runs' curves come from the Breslow baseline of
            ``train``. Either gives Antolini's C (``antolini_c_mean``, :func:`fold_antolini`).

    Columns: ``model``, ``reference`` (bool), ``n``, ``events``, ``c_mean`` / ``c_std_paper``
    (Harrell C of the folds, summarised as the paper does, :func:`summarize_folds`),
    ``c_pooled`` with ``c_pooled_low``/``c_pooled_high`` (:func:`results_table`'s pooled row),
    ``diff_vs_ref`` = C-index mean (``c_mean``) minus the reference's with its paired CI
    ``diff_low``/``diff_high`` (:func:`paired_bootstrap_diff`) and ``diff_excludes_0`` (empty
    for the reference), ``uno_c_mean``, ``ibs_mean``, ``n_params`` (:func:`parameter_count`) and
    ``paper`` (:func:`paper_value`).
    """
    if reference not in runs:
        raise ValueError(f"reference {reference!r} is none of the runs: {', '.join(runs)}")
    ref_df = runs[reference]
    bad = [m for name, df in runs.items() if name != reference
           and (m := _mismatch(df, ref_df, name, reference))]
    if bad:
        raise DataError("; ".join(bad))
    rows: list[dict[str, Any]] = []
    for name, df in runs.items():
        table = results_table(df, train_lookup="oof", n_boot=n_boot, alpha=alpha,
                              boot_seed=seed)
        folds_train = (train or {}).get(name) or {}
        folds_curves = (curves or {}).get(name) or {}
        ibs, anto = {}, {}
        for (s, f), g in df.groupby(["seed", "fold"], sort=True):
            key = (int(s), int(f))
            tr, cv = folds_train.get(key), folds_curves.get(key)
            if tr is not None:
                ibs[key] = fold_ibs(g, tr, curves=cv)
            if tr is not None or cv is not None:
                try:
                    anto[key] = fold_antolini(g, tr, cv)
                except UndefinedMetricError:
                    anto[key] = math.nan
        if ibs:
            table = add_fold_column(table, "ibs", ibs)
        if anto:
            table = add_fold_column(table, "antolini_c", anto)
        summ = summary_row(table)
        pooled = table[table.row == "pooled"].iloc[0]
        row: dict[str, Any] = {
            "model": name, "reference": name == reference, "n": int(pooled["n"]),
            "events": int(pooled["events"]),
            "c_mean": summ.get("harrell_c_mean", math.nan),
            "c_std_paper": summ.get("harrell_c_std_paper", math.nan),
            "c_pooled": summ.get("harrell_c_pooled", math.nan),
            "c_pooled_low": summ.get("harrell_c_ci_low", math.nan),
            "c_pooled_high": summ.get("harrell_c_ci_high", math.nan),
            "diff_vs_ref": math.nan, "diff_low": math.nan, "diff_high": math.nan,
            "diff_excludes_0": None,
            "uno_c_mean": summ.get("uno_c_mean", math.nan),
            "ibs_mean": summ.get("ibs_mean", math.nan),
            "antolini_c_mean": summ.get("antolini_c_mean", math.nan),
            "n_params": math.nan, "paper": "",
        }
        if name == reference:
            row["diff_vs_ref"] = 0.0
        else:
            try:
                if n_boot > 0:
                    d = paired_bootstrap_diff(df, ref_df, n_boot=n_boot, alpha=alpha,
                                              seed=seed, names=(name, reference))
                    row.update(diff_vs_ref=d.estimate, diff_low=d.low, diff_high=d.high,
                               diff_excludes_0=bool(d.low > 0 or d.high < 0))
                else:
                    ra, rb, fa, fb, t, e = _paired_wide(df, ref_df, (name, reference))
                    row["diff_vs_ref"] = (_mean_fold_cindex(ra, fa, t, e)
                                          - _mean_fold_cindex(rb, fb, t, e))
            except UndefinedMetricError:
                pass
        cfg = (configs or {}).get(name)
        if cfg is not None:
            row["n_params"] = parameter_count(cfg)
            row["paper"] = paper_value(cfg, name)
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    out["diff_excludes_0"] = out["diff_excludes_0"].astype("boolean")
    out["n"] = out["n"].astype("Int64")
    out["events"] = out["events"].astype("Int64")
    return out


def comparison_markdown(table: pd.DataFrame, digits: int = 4, alpha: float = 0.05,
                        n_boot: int | None = None, notes: Sequence[str] = ()) -> str:
    """The comparison table as Markdown, with its footnotes."""
    def f(v: Any) -> str:
        return _fmt(v, digits)

    def ci(est: Any, lo: Any, hi: Any) -> str:
        if f(est) == "":
            return ""
        return f(est) + (f" [{f(lo)}, {f(hi)}]" if f(lo) != "" else "")

    level = f"{100 * (1 - alpha):g}%"
    header = ["model", "n", "events", "C-index mean ± std (paper's)", f"pooled C [{level} CI]",
              f"ΔC vs reference [{level} CI]", "CI excludes 0", "Uno's C", "Antolini's C",
              "IBS", "parameters", "paper"]
    rows = []
    for r in table.itertuples(index=False):
        name = f"**{r.model}** (reference)" if r.reference else str(r.model)
        mean_std = f"{f(r.c_mean)} ± {f(r.c_std_paper)}" if f(r.c_mean) else ""
        diff = "—" if r.reference else ci(r.diff_vs_ref, r.diff_low, r.diff_high)
        excl = "" if r.reference or pd.isna(r.diff_excludes_0) else (
            "yes" if r.diff_excludes_0 else "no")
        params = "" if pd.isna(r.n_params) else f"{int(r.n_params):,}"
        rows.append([name, f(r.n), f(r.events), mean_std,
                     ci(r.c_pooled, r.c_pooled_low, r.c_pooled_high), diff, excl,
                     f(r.uno_c_mean), f(r.antolini_c_mean), f(r.ibs_mean), params,
                     r.paper or ""])
    boot = f"{n_boot} " if n_boot else ""
    foot = [
        "C-index: Harrell's, higher risk = earlier event. mean ± std: mean over seeds of the "
        "fold means ± mean over seeds of the across-fold np.std (ddof 0), as the paper reports.",
        f"pooled C: mean over seeds of each seed's pooled out-of-fold C, percentile bootstrap "
        f"({boot}resamples of participants, stratified by event).",
        "ΔC: C-index mean minus the reference's (the paper's fold-mean C, which does not "
        "mix the risk scales of different fold models as the pooled C does), paired "
        "bootstrap (both models scored on the same resampled participants, each in its "
        "held-out fold).",
        "Uno's C: truncated at the training fold's largest time; Antolini's C (pycox) and IBS "
        "(integrated Brier score): from Breslow curves of the *_train.csv risks, or a "
        "discrete-time model's own curves (empty without them); parameters: encoder + decoder + "
        "risk head.",
        "paper: the paper's reported C-index (docs/method.md section 6), shown only for runs "
        "on real data (data.source=real); numbers on synthetic data are not comparable with "
        "the paper's.",
        *notes,
    ]
    return _table(header, rows) + "\n" + "\n".join(f"- {x}" for x in foot) + "\n"


COHORT_FIELDS = ("n", "events", "c_mean", "c_std_paper", "c_pooled", "c_pooled_low",
                 "c_pooled_high", "diff_vs_ref", "diff_low", "diff_high", "paper")


def cohort_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's table shape from one :func:`comparison_table` per cohort: one row per
    model (matched by name across cohorts, in first-seen order), and for each cohort
    ``<cohort>_<field>`` of :data:`COHORT_FIELDS` (empty where a cohort lacks the model),
    plus the reference of each cohort (``<cohort>_reference``) and ``n_params``."""
    models: list[str] = []
    for t in tables.values():
        models += [m for m in t.model if m not in models]
    out = pd.DataFrame({"model": models})
    params = pd.Series(math.nan, index=models)
    for cohort, t in tables.items():
        by = t.set_index("model")
        for field in COHORT_FIELDS:
            out[f"{cohort}_{field}"] = [by[field].get(m, math.nan if field != "paper" else "")
                                        for m in models]
        out[f"{cohort}_reference"] = [bool(by["reference"].get(m, False)) for m in models]
        params = params.fillna(by["n_params"].reindex(models))
    out["n_params"] = params.to_numpy()
    return out


def cohort_markdown(table: pd.DataFrame, cohorts: Sequence[str], digits: int = 4,
                    alpha: float = 0.05, notes: Sequence[str] = ()) -> str:
    """A :func:`cohort_table` as Markdown: C-index mean ± std (as the paper reports) and the
    paired difference to each cohort's reference, per cohort."""
    def f(v: Any) -> str:
        return _fmt(v, digits)

    level = f"{100 * (1 - alpha):g}%"
    header = ["model"]
    for c in cohorts:
        header += [f"{c}: C mean ± std", f"{c}: pooled C [{level} CI]",
                   f"{c}: ΔC vs reference [{level} CI]", f"{c}: paper"]
    header.append("parameters")
    rows = []
    for r in table.to_dict(orient="records"):
        row = [str(r["model"])]
        for c in cohorts:
            g = {k: r[f"{c}_{k}"] for k in (*COHORT_FIELDS, "reference")}
            mean = f"{f(g['c_mean'])} ± {f(g['c_std_paper'])}" if f(g["c_mean"]) else ""
            pooled = (f"{f(g['c_pooled'])} [{f(g['c_pooled_low'])}, {f(g['c_pooled_high'])}]"
                      if f(g["c_pooled"]) and f(g["c_pooled_low"]) else f(g["c_pooled"]))
            diff = "— (reference)" if g["reference"] else (
                f"{f(g['diff_vs_ref'])} [{f(g['diff_low'])}, {f(g['diff_high'])}]"
                if f(g["diff_low"]) else f(g["diff_vs_ref"]))
            row += [mean, pooled, diff, g["paper"] or ""]
        row.append("" if pd.isna(r["n_params"]) else f"{int(r['n_params']):,}")
        rows.append(row)
    foot = ["Each cohort's columns come from its own comparison (comparison_<cohort>/): "
            "Harrell's C, mean ± std as the paper reports, pooled C with a percentile "
            "bootstrap CI, ΔC paired against that cohort's reference.", *notes]
    return _table(header, rows) + "\n" + "\n".join(f"- {x}" for x in foot) + "\n"


def forest_plot(table: pd.DataFrame, out_png: str | os.PathLike[str] = "forest_plot.png",
                alpha: float = 0.05, title: str | None = None) -> Path:
    """Forest plot of a :func:`comparison_table`: the pooled C with its CI per model (left) and
    the paired difference to the reference with its CI and a line at 0 (right); written
    atomically as a PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(table)
    fig = Figure(figsize=(9, 1.2 + 0.45 * n), dpi=150)
    FigureCanvasAgg(fig)
    ax_c, ax_d = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)[::-1]
    level = f"{100 * (1 - alpha):g}% CI"
    for yi, r in zip(y, table.itertuples(index=False)):
        color = "tab:red" if r.reference else "tab:blue"
        if pd.notna(r.c_pooled):
            lo = r.c_pooled - r.c_pooled_low if pd.notna(r.c_pooled_low) else 0.0
            hi = r.c_pooled_high - r.c_pooled if pd.notna(r.c_pooled_high) else 0.0
            ax_c.errorbar(r.c_pooled, yi, xerr=[[lo], [hi]], fmt="s", color=color, capsize=3)
        if r.reference:
            ax_d.plot(0.0, yi, "D", color=color)
        elif pd.notna(r.diff_vs_ref):
            lo = r.diff_vs_ref - r.diff_low if pd.notna(r.diff_low) else 0.0
            hi = r.diff_high - r.diff_vs_ref if pd.notna(r.diff_high) else 0.0
            ax_d.errorbar(r.diff_vs_ref, yi, xerr=[[lo], [hi]], fmt="o", color=color,
                          capsize=3)
    ax_c.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_d.axvline(0.0, color="black", linewidth=1)
    labels = [f"{m} (ref)" if ref else str(m) for m, ref in zip(table.model, table.reference)]
    ax_c.set_yticks(y, labels)
    ax_c.set_ylim(-0.7, n - 0.3)
    ax_c.set_xlabel(f"pooled C-index ({level})")
    ax_d.set_xlabel(f"ΔC vs reference (paired {level})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)

"""Several runs on the same participants side by side: the bootstrap of the fold-mean C-index
(one model's, and the paired difference of two), the comparison table with the power line of
each difference, the paper-shaped table across cohorts and the reclassification of one
model's absolute risks against another's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from data_modules.errors import DataError
from ecg_dan.log import get_logger
from ecg_dan.metrics.bootstrap import BootstrapCI, bootstrap_ci
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.power import power_columns, power_line
from ecg_dan.metrics.reclassification import (
    RECLASSIFICATION_KEYS,
    reclassification,
    reclassification_ci,
)
from ecg_dan.models.counts import parameter_count
from ecg_dan.reporting.absolute_models import FoldModelRows
from ecg_dan.reporting.fold_metrics import add_ibs_antolini
from ecg_dan.reporting.oof import check_oof, wide
from ecg_dan.reporting.paper import paper_value
from ecg_dan.reporting.tables import mean_fold_cindex, results_table, summary_row

log = get_logger(__name__)


def _mismatch(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> str | None:
    ka = set(zip(a["seed"].tolist(), a["eid"].tolist()))
    kb = set(zip(b["seed"].tolist(), b["eid"].tolist()))
    if ka == kb:
        return None
    return (f"runs '{name_a}' and '{name_b}' were scored on different participants "
            f"({len(ka - kb)} (seed, eid) only in '{name_a}', {len(kb - ka)} only in "
            f"'{name_b}'); a paired comparison needs the same eids per seed")


def _wide_folds(df: pd.DataFrame) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """(risk, fold) as (n_eid, n_seed) and (time, event) (n_eid,), rows sorted by eid and
    columns by seed."""
    df = check_oof(df.copy())
    df["event"] = df["event"].astype(float)
    r, t, e = wide(df)
    f = df.pivot(index="eid", columns="seed", values="fold").to_numpy(np.int64)
    return r, f, t, e


def _paired_wide(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]
                 ) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray, NDArray]:
    """(risk_a, risk_b, fold_a, fold_b) as (n_eid, n_seed) and (time, event) (n_eid,), rows
    in the same eid order for both runs."""
    msg = _mismatch(check_oof(a), check_oof(b), *names)
    if msg:
        raise DataError(msg)
    ra, fa, ta, ea = _wide_folds(a)  # the same eid and seed order for both
    rb, fb, tb, eb = _wide_folds(b)
    if not (np.array_equal(ta, tb) and np.array_equal(ea, eb)):
        raise DataError(f"runs '{names[0]}' and '{names[1]}' give the same participants "
                        "different follow-up times or events")
    return ra, rb, fa, fb, ta, ea


def fold_mean_bootstrap(df: pd.DataFrame, n_boot: int = 1000, alpha: float = 0.05,
                        seed: int = 0) -> BootstrapCI:
    """One model's fold-mean C (mean over seeds of the mean over folds of each held-out
    fold's Harrell C) with a percentile bootstrap CI, resampled as
    :func:`paired_bootstrap_diff` resamples (participants with replacement, stratified by
    event, each in its held-out fold, all seeds together): with the same ``seed`` both draw
    the same resamples, so a difference's replicates are the two models' replicates'
    difference."""
    r, f, t, e = _wide_folds(df)
    return bootstrap_ci(mean_fold_cindex, r, f, t, e, n_boot=n_boot, alpha=alpha, seed=seed,
                        stratify=e)


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
        return mean_fold_cindex(ra_, fa_, t_, e_) - mean_fold_cindex(rb_, fb_, t_, e_)

    return bootstrap_ci(diff, ra, rb, fa, fb, t, e, n_boot=n_boot, alpha=alpha, seed=seed,
                        stratify=e)


COMPARISON_COLUMNS = (
    "model", "reference", "n", "events", "c_mean", "c_std_paper", "c_pooled", "c_pooled_low",
    "c_pooled_high", "diff_vs_ref", "diff_low", "diff_high", "diff_excludes_0", "uno_c_mean",
    "ibs_mean", "antolini_c_mean", "n_params", "paper", *power_columns(),
)


def comparison_table(
    runs: Mapping[str, pd.DataFrame],
    reference: str,
    folds: Mapping[str, Sequence[FoldModelRows]] | None = None,
    configs: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per run (in the given order): the models, ablations and baselines side by side.

    Args:
        runs: ``{name: OOF predictions}`` (``eid, seed, fold, risk, time, event``); every run
            must hold the reference's participants (same eids per seed).
        reference: the run the paired differences are taken against (the proposed model).
        folds: optional ``{name: its folds with their models of absolute risk}``
            (:func:`ecg_dan.reporting.absolute_models.fold_models`) for the integrated Brier
            score and Antolini's C (``ibs_mean``, ``antolini_c_mean``).
        configs: optional ``{name: run config}`` for the parameter count and the paper value.
        n_boot, alpha, seed: bootstraps of the pooled C (per run) and of the paired difference.

    Columns: ``model``, ``reference`` (bool), ``n``, ``events``, ``c_mean`` / ``c_std_paper``
    (Harrell C of the folds, summarised as the paper does, :func:`summarize_folds`),
    ``c_pooled`` with ``c_pooled_low``/``c_pooled_high`` (:func:`results_table`'s pooled row),
    ``diff_vs_ref`` = C-index mean (``c_mean``) minus the reference's with its paired CI
    ``diff_low``/``diff_high`` (:func:`paired_bootstrap_diff`) and ``diff_excludes_0`` (empty
    for the reference), ``uno_c_mean``, ``ibs_mean``, ``n_params`` (:func:`parameter_count`),
    ``paper`` (:func:`paper_value`), and the power line of the difference
    (:func:`ecg_dan.metrics.power.power_line` of its bootstrap replicates at the ``events``
    the held-out folds hold: ``diff_se``, ``events_for_<delta>`` needed for 80% power and
    ``power_<delta>`` at the observed events, delta 0.01 / 0.02 / 0.05; empty for the
    reference and without a bootstrap).
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
        table = add_ibs_antolini(table, (folds or {}).get(name) or [])
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
                    try:
                        row.update(power_line(d.replicates, row["events"],
                                              alpha=alpha).columns())
                    except ValueError as err:  # fewer than 2 valid resamples, or no spread
                        log.warning(f"{name}: no power line ({err})")
                else:
                    ra, rb, fa, fb, t, e = _paired_wide(df, ref_df, (name, reference))
                    row["diff_vs_ref"] = (mean_fold_cindex(ra, fa, t, e)
                                          - mean_fold_cindex(rb, fb, t, e))
            except UndefinedMetricError:
                pass
        cfg = (configs or {}).get(name)
        if cfg is not None:
            row["n_params"] = parameter_count(cfg)
            row["paper"] = paper_value(cfg)
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    out["diff_excludes_0"] = out["diff_excludes_0"].astype("boolean")
    out["n"] = out["n"].astype("Int64")
    out["events"] = out["events"].astype("Int64")
    return out


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


RECLASSIFICATION_COLUMNS = ("horizon", "n", "events", *[f"{k}{s}" for k in RECLASSIFICATION_KEYS
                                                        for s in ("", "_low", "_high")])


def reclassification_table(new: pd.DataFrame, old: pd.DataFrame, horizons: Sequence[float],
                           names: tuple[str, str] = ("new", "old"), n_boot: int = 1000,
                           alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Continuous NRI and IDI of ``new`` against ``old`` at each horizon, with percentile
    bootstrap CIs (:func:`ecg_dan.metrics.reclassification.reclassification_ci`; none when
    ``n_boot`` is 0).

    ``new`` / ``old``: per participant (index ``eid``) ``time``, ``event`` and ``risk@<h>``
    (:func:`ecg_dan.reporting.fold_metrics.run_absolute_risk`); they must hold the same
    participants with the same follow-up (:class:`DataError` naming ``names`` otherwise).
    Columns :data:`RECLASSIFICATION_COLUMNS`: ``events`` counts events observed by the
    horizon; a horizon at which the measures are undefined gives NaN.
    """
    if set(new.index) != set(old.index):
        raise DataError(f"runs '{names[0]}' and '{names[1]}' hold different participants "
                        f"({len(set(new.index) ^ set(old.index))} eids in one only)")
    old = old.loc[new.index]
    if not (np.array_equal(new.time.to_numpy(), old.time.to_numpy())
            and np.array_equal(new.event.to_numpy(), old.event.to_numpy())):
        raise DataError(f"runs '{names[0]}' and '{names[1]}' give the same participants "
                        "different follow-up times or events")
    time, event = new.time.to_numpy(float), new.event.to_numpy(float)
    rows = []
    for h in horizons:
        col = f"risk@{h:g}"
        row: dict[str, Any] = {"horizon": float(h), "n": len(new),
                               "events": int(((event == 1) & (time <= h)).sum())}
        args = (new[col].to_numpy(float), old[col].to_numpy(float), time, event, float(h))
        try:
            if n_boot > 0:
                for k, ci in reclassification_ci(*args, n_boot=n_boot, alpha=alpha,
                                                 seed=seed).items():
                    row.update({k: ci.estimate, f"{k}_low": ci.low, f"{k}_high": ci.high})
            else:
                row.update(reclassification(*args))
        except UndefinedMetricError:
            pass
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RECLASSIFICATION_COLUMNS))

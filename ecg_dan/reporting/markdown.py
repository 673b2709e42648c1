"""Markdown: the one table formatter and every report text (results.md, the encoder
evaluation, calibration, comparisons)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecg_dan.metrics.power import POWER_DELTAS
from ecg_dan.reporting.comparison import COHORT_FIELDS
from ecg_dan.reporting.flatten import flatten_results, flatten_run
from ecg_dan.reporting.tables import MIN_TD_AUC_EVENTS
from ecg_dan.run_dir import TRAIN_SUFFIX


def fmt(v: Any, digits: int) -> str:
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
    return md_table([str(c) for c in table.columns],
                  [[fmt(v, digits) for v in rec] for rec in table.itertuples(index=False)])


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Any], digits: int = 3) -> str:
    """A markdown table of evaluation results.

    Accepts a :func:`compare_probes` result (class | A | B | Δ), a single result of this
    module (metric | value), or ``{run name: results}`` where each run's value is a result,
    a list/mapping of results, or a flat ``{metric: number}`` dict (metric | run1 | run2 …),
    e.g. ``{"pretrained": [probe, retrieval], "random init": [probe_rand, retrieval_rand]}``.
    """
    if results.get("kind") == "probe_comparison":
        a, b = results["columns"]
        rows = [["**macro**"] + [fmt(results["macro"][k], digits) for k in (a, b, "delta")]]
        rows += [
            [c] + [fmt(v[k], digits) for k in (a, b, "delta")]
            for c, v in results["per_class"].items()
        ]
        return md_table(["class", f"{a} AUROC", f"{b} AUROC", "Δ"], rows)
    if "kind" in results:
        flat = flatten_results(results)
        return md_table(["metric", "value"], [[k, fmt(v, digits)] for k, v in flat.items()])
    runs = {str(name): flatten_run(v) for name, v in results.items()}
    metrics: list[str] = []
    for flat in runs.values():
        metrics += [m for m in flat if m not in metrics]
    rows = [[m] + [fmt(flat.get(m), digits) for flat in runs.values()] for m in metrics]
    return md_table(["metric", *runs], rows)


def calibration_markdown(large: Mapping[str, Mapping[str, Any]], time_unit: str,
                         alpha: float = 0.05) -> str:
    """Calibration at the horizons as a Markdown table (one row per horizon): O/E with the
    KM CI, the calibration slope with its CI, ICI / E50 / E90 of the smoothed curve."""
    level = f"{100 * (1 - alpha):g}%"
    rows = []
    for h, v in large.items():
        slope = (f"{fmt(v['slope'], 2)} [{fmt(v['slope_low'], 2)}, {fmt(v['slope_high'], 2)}]"
                 if "slope" in v else v.get("note", ""))
        rows.append([f"{h} {time_unit}", fmt(v["predicted"], 4), fmt(v["observed"], 4),
                     f"[{fmt(v['observed_low'], 4)}, {fmt(v['observed_high'], 4)}]",
                     fmt(v["ratio"], 3), slope, fmt(v.get("ici"), 4), fmt(v.get("e50"), 4),
                     fmt(v.get("e90"), 4)])
    return md_table(["horizon", "mean predicted risk", "observed risk (KM)", f"{level} CI",
                     "O/E", f"slope [{level} CI]", "ICI", "E50", "E90"], rows)


def comparison_markdown(table: pd.DataFrame, digits: int = 4, alpha: float = 0.05,
                        n_boot: int | None = None, notes: Sequence[str] = ()) -> str:
    """The comparison table as Markdown, with its footnotes."""
    def f(v: Any) -> str:
        return fmt(v, digits)

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
        f"pooled C: mean over seeds of each seed's pooled out-of-fold C (risks ranked within "
        f"the fold model that scored them where the run has its validation rows), percentile "
        f"bootstrap ({boot}resamples of participants, stratified by event).",
        "ΔC: C-index mean minus the reference's (the paper's fold-mean C, which does not "
        "mix the risk scales of different fold models as the pooled C does), paired "
        "bootstrap (both models scored on the same resampled participants, each in its "
        "held-out fold).",
        "Uno's C: truncated at the training fold's largest time; Antolini's C (pycox) and IBS "
        "(integrated Brier score): from each fold model's recalibrated curves (its "
        f"*{TRAIN_SUFFIX} risks and validation rows; empty without them); parameters: encoder "
        "+ decoder + risk head.",
        "paper: the paper's reported C-index on UK Biobank (docs/method.md section 6), shown "
        "only for runs on UK Biobank data; numbers on synthetic data or another cohort are not "
        "comparable with it.",
        *notes,
    ]
    md = md_table(header, rows) + "\n" + "\n".join(f"- {x}" for x in foot) + "\n"
    power = power_markdown(table, alpha=alpha)
    return md + ("\n## Power of the differences\n\n" + power if power else "")


def _events(v: Any) -> str:
    return f"{v:,.0f}" if isinstance(v, (int, float, np.number)) and np.isfinite(v) else ""


def power_verdict(row: Mapping[str, Any], deltas: Sequence[float] = POWER_DELTAS,
                  power: float = 0.8) -> str:
    """In words, what a paired difference (a row of a comparison or label-efficiency table)
    shows: "shown" when its CI excludes 0; otherwise, from its power line, whether "not
    shown" means that a difference of the smallest ``delta`` with ``power`` at the observed
    events is unlikely, or that there were too few events to detect 0.02 (or even 0.05)."""
    excl = row.get("diff_excludes_0")
    if excl is None or excl is pd.NA or (isinstance(excl, float) and math.isnan(excl)):
        return ""
    if bool(excl):
        side = "above" if row["diff_vs_ref"] > 0 else "below"
        return f"shown: {side} the reference (CI excludes 0)"
    pw = {d: row.get(f"power_{d:g}") for d in deltas}
    if any(v is None or not np.isfinite(v) for v in pw.values()):
        return "not shown (CI includes 0)"
    powered = [d for d in deltas if pw[d] >= power]
    pct = f"{100 * power:g}%"
    if powered and powered[0] <= 0.02:
        return (f"not shown, with {pct} power for a difference of {powered[0]:g}: a true "
                f"difference of {powered[0]:g} or more is unlikely")
    small = 0.02 if 0.02 in deltas else deltas[0]
    need = _events(row.get(f"events_for_{small:g}"))
    if powered:
        return (f"not shown: too few events to detect {small:g} (power {pw[small]:.2f}; "
                f"{pct} needs {need} events); powered only for {powered[0]:g}")
    big = deltas[-1]
    return (f"not shown: too few events to detect even {big:g} (power {pw[big]:.2f}; {pct} "
            f"needs {_events(row.get(f'events_for_{big:g}'))} events; {small:g} needs "
            f"{need})")


def power_markdown(table: pd.DataFrame, alpha: float = 0.05,
                   deltas: Sequence[float] = POWER_DELTAS, label: str = "model") -> str:
    """The power line of each non-reference row of a table with the columns of
    :meth:`ecg_dan.metrics.power.PowerLine.columns`: events needed for each delta at 80%
    power, the power at the observed events and :func:`power_verdict`; "" when no row has
    one."""
    if "diff_se" not in table.columns:
        return ""
    rows = []
    for r in table.to_dict(orient="records"):
        if r.get("reference") or not np.isfinite(r.get("diff_se", math.nan)):
            continue
        rows.append([str(r[label]), _events(r["events"]), fmt(r["diff_se"], 4),
                     *[_events(r[f"events_for_{d:g}"]) for d in deltas],
                     *[fmt(r[f"power_{d:g}"], 2) for d in deltas], power_verdict(r, deltas)])
    if not rows:
        return ""
    level = f"{100 * alpha:g}%"
    header = [label, "events (held out)", "SE of ΔC",
              *[f"events for ΔC {d:g} (80% power)" for d in deltas],
              *[f"power for {d:g} now" for d in deltas], "reading"]
    foot = [f"Events at which a true ΔC of each size would be detected with 80% power at the "
            f"two-sided {level} level, and the power at the events the held-out folds hold: "
            "normal approximation, the SE of ΔC from its paired bootstrap, its variance "
            "proportional to 1/events at the same event rate and case mix, the true difference "
            "taken as fixed (ecg_dan/metrics/power.py). \"not shown\" with too little power "
            "means too few events, not no effect."]
    return md_table(header, rows) + "\n" + "\n".join(f"- {x}" for x in foot) + "\n"


def reclassification_markdown(table: pd.DataFrame, new: str, old: str, time_unit: str,
                              alpha: float = 0.05, n_boot: int | None = None) -> str:
    """The comparison's reclassification section: NRI and IDI of ``new`` against ``old``
    per horizon (a :func:`reclassification_table`), with its footnotes."""
    def ci(r: Mapping[str, Any], k: str) -> str:
        est = fmt(r[k], 3)
        lo, hi = fmt(r[f"{k}_low"], 3), fmt(r[f"{k}_high"], 3)
        return f"{est} [{lo}, {hi}]" if est and lo else est

    level = f"{100 * (1 - alpha):g}%"
    rows = [[f"{r['horizon']:g} {time_unit}", fmt(r["n"], 0), fmt(r["events"], 0),
             *[ci(r, k) for k in ("nri_events", "nri_nonevents", "nri", "idi")]]
            for r in table.to_dict(orient="records")]
    boot = f"{n_boot} resamples of participants, stratified by event" if n_boot else "none"
    foot = [
        "NRI: continuous (category-free) net reclassification improvement of the absolute "
        "risk by the horizon: events = P(risk up | event) - P(risk down | event), non-events "
        "= P(down | no event) - P(up | no event), NRI their sum (range -2 to 2); censoring "
        "by Kaplan-Meier (Pencina, D'Agostino & Steyerberg, Stat Med 2011).",
        "IDI: integrated discrimination improvement, the gain in the mean risk of those with "
        "the event by the horizon minus that of those without; the means weighted by inverse "
        "probability of censoring (Uno et al., Stat Med 2013).",
        f"events: observed by the horizon; {level} CI: percentile bootstrap ({boot}); "
        "empty: undefined (no event by the horizon, or nobody followed up to it).",
    ]
    header = ["horizon", "n", "events", f"NRI events [{level} CI]",
              f"NRI non-events [{level} CI]", f"NRI [{level} CI]", f"IDI [{level} CI]"]
    return (f"## Reclassification: {new} against {old}\n\n" + md_table(header, rows) + "\n"
            + "\n".join(f"- {x}" for x in foot) + "\n")


def cohort_markdown(table: pd.DataFrame, cohorts: Sequence[str], digits: int = 4,
                    alpha: float = 0.05, notes: Sequence[str] = ()) -> str:
    """A :func:`cohort_table` as Markdown: C-index mean ± std (as the paper reports) and the
    paired difference to each cohort's reference, per cohort."""
    def f(v: Any) -> str:
        return fmt(v, digits)

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
    return md_table(header, rows) + "\n" + "\n".join(f"- {x}" for x in foot) + "\n"


def finetune_markdown(table: pd.DataFrame, time_unit: str, oracle_cindex: float | None = None,
                      calibration: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A finetuning run's ``results.md``: the results table with what its columns are, the
    simulated cohort's oracle C-index when its cache records the true log-hazard, and
    calibration at the horizons when computed."""
    md = to_markdown(table)
    notes = ["harrell_c / uno_c / td_auc@h / antolini_c: per held-out fold, then mean and std "
             "over folds; pooled: the C-index of each seed's pooled out-of-fold risks, each "
             "ranked within the fold model that scored it (risk_rank), with a bootstrap CI "
             "(ci_low, ci_high)."]
    empty = [c for c in table.columns if c.startswith("td_auc@")
             and table.loc[table.row == "mean", c].isna().all()]
    if empty:
        notes.append(f"{', '.join(empty)}: not reported: a held-out fold has fewer than "
                     f"{MIN_TD_AUC_EVENTS} events before the horizon (or it lies past the "
                     "fold's follow-up), too few cases for an AUC.")
    if oracle_cindex is not None:
        notes.append(f"Oracle C-index {oracle_cindex:.4f}: Harrell's C of the true log-hazard "
                     "that simulated this cohort (its cache's true_log_hazard; synthetic "
                     "twins only) on the same participants, the ceiling a model can reach.")
    md += "\n" + "\n".join(f"- {x}" for x in notes) + "\n"
    if calibration is not None:
        md += ("\n## Calibration at the horizons (out-of-fold absolute risk vs Kaplan-Meier)"
               f"\n\n{calibration_markdown(calibration, time_unit)}\n"
               "- Absolute risk: each fold model's risk recalibrated out of fold (slope from "
               "inner-validation rows it did not train on, baseline from its training fold; "
               "docs/usage.md, calibration).\n"
               "- O/E: Kaplan-Meier observed over mean predicted risk (ideal 1). Slope: Cox "
               "regression of the outcome on cloglog(predicted risk), follow-up censored at "
               "the horizon (ideal 1; below 1: risks too extreme). ICI / E50 / E90: mean, "
               "median and 90th percentile of |smoothed observed - predicted| (Austin, "
               "Harrell & van Klaveren 2020).\n"
               "- Per risk decile: calibration.csv; figure: calibration.png (deciles with KM "
               "CIs, smoothed curve with its CI).\n")
    return md


def label_efficiency_markdown(table: pd.DataFrame, digits: int = 4, alpha: float = 0.05,
                              n_boot: int | None = None, notes: Sequence[str] = ()) -> str:
    """A label-efficiency table (:func:`ecg_dan.reporting.label_efficiency.
    label_efficiency_table`) as Markdown: per fraction and cell the training events, the
    fold-mean C with its CI, the IBS, the paired difference to the fraction's reference and
    in words whether it is shown; then the power line of each difference."""
    def f(v: Any) -> str:
        return fmt(v, digits)

    level = f"{100 * (1 - alpha):g}%"
    rows = []
    for r in table.to_dict(orient="records"):
        c = f(r["c_mean"]) + (f" [{f(r['c_low'])}, {f(r['c_high'])}]" if f(r["c_low"]) else "")
        if r["reference"]:
            diff, reading = "— (reference)", ""
        else:
            diff = f(r["diff_vs_ref"]) + (f" [{f(r['diff_low'])}, {f(r['diff_high'])}]"
                                         if f(r["diff_low"]) else "")
            reading = power_verdict(r)
        rows.append([f"{r['fraction']:g}", str(r["cell"]), _events(r["train_participants"]),
                     _events(r["train_events"]), c, f(r["ibs_mean"]), diff, reading])
    header = ["fraction", "cell", "training participants", "training events",
              f"C-index mean [{level} CI]", "IBS", f"ΔC vs reference [{level} CI]", "reading"]
    refs = sorted({str(x) for x in table.reference_cell})
    boot = f"{n_boot} " if n_boot else ""
    foot = [
        "fraction: finetune.train_fraction, the share of each training fold drawn (nested, "
        "stratified by event); the held-out folds, and so the participants every C is "
        "measured on, are the same at every fraction.",
        "training participants / events: mean over the fold models of their training rows "
        f"(training and inner validation, *{TRAIN_SUFFIX}).",
        f"C-index mean: the paper's fold-mean Harrell C (mean over seeds of the mean over "
        f"held-out folds), percentile bootstrap ({boot}resamples of participants within their "
        "held-out folds, stratified by event); IBS: integrated Brier score of the "
        "recalibrated curves (empty without training-fold risks).",
        f"ΔC: C-index mean minus that of the reference at the same fraction ({', '.join(refs)}"
        "), paired bootstrap on the same resamples; reading: \"shown\" when its CI excludes 0, "
        "otherwise whether the events sufficed to detect a difference (power below).",
        *notes,
    ]
    md = md_table(header, rows) + "\n" + "\n".join(f"- {x}" for x in foot) + "\n"
    power = power_markdown(table.assign(model=[f"{c} @ {fr:g}" for c, fr in
                                               zip(table.cell, table.fraction)]),
                           alpha=alpha)
    return md + ("\n## Power of the differences\n\n" + power if power else "")

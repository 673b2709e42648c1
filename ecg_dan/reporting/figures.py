"""The result figures: Kaplan-Meier of the risk groups, calibration, decision curves, the
comparison's forest plot (Agg canvases, no pyplot state; written by :func:`save_png`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ecg_dan.reporting.oof import check_oof, high_risk_groups
from ecg_dan.reporting.png import save_png


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
    df = check_oof(df)
    time, event, high = high_risk_groups(df, top_fraction, grouping)
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


def calibration_plot(table: pd.DataFrame, out_png: str | os.PathLike[str],
                     time_unit: str = "months", title: str | None = None,
                     curves: Mapping[float, pd.DataFrame] | None = None) -> Path:
    """One panel per horizon: mean predicted risk (x) vs Kaplan-Meier observed risk (y) of
    each risk decile, with the KM CI as error bars and the diagonal of perfect calibration;
    written atomically as a PNG (Agg, no pyplot state).

    ``curves`` maps a horizon to its smoothed calibration curve (columns ``predicted,
    observed, observed_low, observed_high``, as
    :attr:`ecg_dan.metrics.calibration.SmoothedCalibration.curve`), drawn with its CI band
    under the decile points; NaN rows are left out, a horizon without a curve has none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = {float(h): c for h, c in (curves or {}).items()}
    horizons = sorted(table.horizon.unique())
    fig = Figure(figsize=(3.2 * len(horizons) + 0.6, 3.6), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(horizons), squeeze=False)[0]
    for ax, h in zip(axes, horizons):
        g = table[table.horizon == h]
        top = float(np.nanmax([g.predicted.max(), g.observed_high.max(), 1e-3]))
        curve = curves.get(float(h))
        if curve is not None:
            c = curve[np.isfinite(curve[["predicted", "observed"]]).all(axis=1)]
            c = c.sort_values("predicted")
            band = np.isfinite(c[["observed_low", "observed_high"]]).all(axis=1)
            ax.fill_between(c.predicted, c.observed_low, c.observed_high, where=band,
                            color="tab:orange", alpha=0.25, linewidth=0, zorder=1)
            ax.plot(c.predicted, c.observed, color="tab:orange", linewidth=1.5, zorder=2,
                    label="smoothed (CI)")
            top = float(np.nanmax([top, c.predicted.max(), c.observed.max()]))
        top = min(top * 1.05, 1.0)
        ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
        err = np.vstack([g.observed - g.observed_low, g.observed_high - g.observed])
        ax.errorbar(g.predicted, g.observed, yerr=np.nan_to_num(err), fmt="o", color="tab:blue",
                    capsize=2, markersize=4, zorder=3, label="deciles (KM, CI)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(f"{h:g} {time_unit}")
        ax.set_xlabel("mean predicted risk")
    axes[0].set_ylabel("observed risk" if curves else "observed risk (Kaplan-Meier)")
    if curves:
        axes[0].legend(loc="upper left", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)


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


def decision_curve_plot(table: pd.DataFrame, out_png: str | os.PathLike[str],
                        time_unit: str = "months", title: str | None = None) -> Path:
    """One panel per horizon of a decision-curve table (the rows of
    :func:`ecg_dan.metrics.decision.decision_curve` with a ``horizon`` column): net benefit
    of treating by the model's risk, treat-all and treat-none against the threshold
    probability; y from a little below 0 (treat-all falls steeply negative past the event
    rate, which would squash the curves) to a little above the largest net benefit; written
    atomically as a PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    horizons = sorted(table.horizon.unique())
    fig = Figure(figsize=(3.2 * len(horizons) + 0.6, 3.6), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(horizons), squeeze=False)[0]
    for ax, h in zip(axes, horizons):
        g = table[table.horizon == h].sort_values("threshold")
        ax.plot(g.threshold, g.net_benefit_model, color="tab:blue", label="model")
        ax.plot(g.threshold, g.net_benefit_all, color="grey", linestyle="--", label="treat all")
        ax.plot(g.threshold, g.net_benefit_none, color="black", linewidth=1, label="treat none")
        top = float(np.nanmax([g.net_benefit_model.max(), g.net_benefit_all.max(), 1e-3]))
        ax.set_ylim(-0.25 * top, 1.1 * top)
        ax.set_xlim(0, float(g.threshold.max()))
        ax.set_title(f"{h:g} {time_unit}")
        ax.set_xlabel("threshold probability")
    axes[0].set_ylabel("net benefit")
    axes[0].legend(loc="upper right", frameon=False, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)


def label_efficiency_plot(table: pd.DataFrame,
                          out_png: str | os.PathLike[str] = "label_efficiency.png",
                          alpha: float = 0.05, title: str | None = None) -> Path:
    """The label-efficiency curve of a :func:`ecg_dan.reporting.label_efficiency.
    label_efficiency_table`: fold-mean C against the training events (log x), one line per
    cell with its CI band (left); the paired ΔC to the reference with its CI per fraction
    and a line at 0 (middle); the IBS where any cell has one (right). Without training
    events for every row, x is the training fraction. Written atomically as a PNG (Agg, no
    pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    by_events = bool(np.isfinite(table.train_events.to_numpy(float)).all())
    xcol, xlabel = (("train_events", "training events, mean over folds (fraction)")
                    if by_events
                    else ("fraction", "training fraction"))
    has_ibs = bool(np.isfinite(table.ibs_mean.to_numpy(float)).any())
    fig = Figure(figsize=(4.2 * (3 if has_ibs else 2) + 0.6, 4.0), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3 if has_ibs else 2, sharex=True)
    ax_c, ax_d = axes[0], axes[1]
    level = f"{100 * (1 - alpha):g}% CI"
    cells = list(dict.fromkeys(table.cell))
    colors = {c: f"C{i % 10}" for i, c in enumerate(cells)}
    ref_cells = set(table.reference_cell)
    for i, cell in enumerate(cells):
        g = table[table.cell == cell].sort_values(xcol)
        x = g[xcol].to_numpy(float)
        color = colors[cell]
        ax_c.plot(x, g.c_mean, "o-", color=color, label=cell, markersize=4)
        band = np.isfinite(g[["c_low", "c_high"]].to_numpy(float)).all(axis=1)
        if band.any():
            ax_c.fill_between(x, g.c_low, g.c_high, where=band, color=color, alpha=0.15,
                              linewidth=0)
        d = g[~g.reference.astype(bool) & g.diff_vs_ref.notna()]
        if len(d):
            # cells side by side at each fraction (a small multiplicative offset, log x)
            xd = d[xcol].to_numpy(float) * 1.04 ** (i - (len(cells) - 1) / 2)
            lo = np.nan_to_num((d.diff_vs_ref - d.diff_low).to_numpy(float))
            hi = np.nan_to_num((d.diff_high - d.diff_vs_ref).to_numpy(float))
            ax_d.errorbar(xd, d.diff_vs_ref, yerr=[lo, hi], fmt="o-", color=color,
                          capsize=3, markersize=4, label=cell)
        if has_ibs:
            axes[2].plot(x, g.ibs_mean, "o-", color=color, markersize=4)
    ax_d.axhline(0.0, color="black", linewidth=1)
    ax_c.set_ylabel(f"fold-mean C-index ({level})")
    ax_d.set_ylabel(f"ΔC vs {', '.join(sorted(map(str, ref_cells)))} (paired {level})")
    # a tick at each fraction: its training events (mean over cells) and the fraction
    ticks = table.groupby("fraction")[xcol].mean()
    labels = [f"{x:,.0f}\n({100 * f:g}%)" if by_events else f"{f:g}"
              for f, x in ticks.items()]
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ticks.to_numpy(float), labels)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(xlabel)
    if has_ibs:
        axes[2].set_ylabel("integrated Brier score (lower is better)")
    ax_c.legend(loc="best", frameon=False, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)

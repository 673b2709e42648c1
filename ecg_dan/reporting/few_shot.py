"""The few-shot probe curve's table, markdown and figure
(:func:`ecg_dan.evaluation.few_shot.few_shot_curve` results)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ecg_dan.reporting.png import save_png

#: Below this many test records (or test positives in a class) the md says the CIs are wide.
SMALL_TEST = 500
SMALL_POSITIVES = 30


def few_shot_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per size and series (each encoder, then ``difference`` = first - second):
    mean macro AUROC over draws with its 95% CI."""
    rows = []
    for r in result["rows"]:
        for series in [*result["encoders"], "difference"]:
            rows.append({"labels_per_class": str(r["labels_per_class"]), "series": series,
                         "auroc": r["estimate"][series], "ci_low": r["ci_low"][series],
                         "ci_high": r["ci_high"][series], "n_draws": r["n_draws"],
                         "labelled_records": r["labelled_records"],
                         "classes": " ".join(r["classes"])})
    return pd.DataFrame(rows)


def _ci(r: dict[str, Any], key: str, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return (f"{f.format(r['estimate'][key])} [{f.format(r['ci_low'][key])}, "
            f"{f.format(r['ci_high'][key])}]")


def few_shot_markdown(result: dict[str, Any]) -> str:
    """The curve as a markdown table, with how labels were counted and a warning when the
    test fold is too small for the CIs to separate the encoders."""
    a, b = result["encoders"]
    lines = [f"| labels per class | labelled records (mean) | draws | {a} | {b} | {a} - {b} |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['labels_per_class']} | {r['labelled_records']:.0f} | "
                     f"{r['n_draws']} | {_ci(r, a)} | {_ci(r, b)} | "
                     f"{_ci(r, 'difference', signed=True)} |")
    pos = result["test_positives"]
    excluded = sorted({c for r in result["rows"] for c in r["excluded_classes"]})
    notes = [
        f"Macro test AUROC (fold 10, {result['n_test']} records) of a logistic-regression "
        f"probe (fixed C={result['C']:g}) on frozen features; mean over draws, 95% CI from "
        f"a paired bootstrap ({result['n_boot']} replicates) over draws and test records.",
        "k labels per class: k positives of each superclass drawn from the training folds "
        "(1-8), unioned (a record may count for several classes); nested (5 within 10 "
        "within 20), the same subsets for both encoders; 'all' = every training record.",
        "Test positives per class: " + ", ".join(f"{c} {v}" for c, v in pos.items()) + ".",
    ]
    if excluded:
        notes.append(f"Not in the macro (fewer than {result['min_test_positives']} test "
                     f"positives or negatives): {', '.join(excluded)}.")
    if result["n_test"] < SMALL_TEST or min(pos.values()) < SMALL_POSITIVES:
        notes.append(f"**Small sample:** {result['n_test']} test records; classes with "
                     f"fewer than {SMALL_POSITIVES} test positives give AUROCs that move by "
                     "several points with one record, so these CIs are wide and only a large "
                     "difference between the encoders could show. Treat the curve as a check "
                     "that the command runs, not as evidence either way.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def few_shot_plot(result: dict[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """Macro AUROC against labels per class (evenly spaced, 'all' last), one line per
    encoder with its 95% CI band; written atomically as a PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["rows"]
    labels = [str(r["labels_per_class"]) for r in rows]
    x = list(range(len(rows)))
    fig = Figure(figsize=(5.2, 3.8), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, color in zip(result["encoders"], ("tab:blue", "tab:grey")):
        est = [r["estimate"][name] for r in rows]
        ax.fill_between(x, [r["ci_low"][name] for r in rows],
                        [r["ci_high"][name] for r in rows], color=color, alpha=0.2, lw=0)
        ax.plot(x, est, marker="o", color=color, label=name)
    ax.set_xticks(x, labels)
    ax.set_xlabel("labelled records per superclass")
    ax.set_ylabel("macro test AUROC")
    ax.set_title(f"Few-shot linear probe (test n={result['n_test']}; 95% CI)", fontsize="medium")
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    return save_png(fig, out_png)

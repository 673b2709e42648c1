"""The label-efficiency curve: each model's fold-mean C against the number of training events,
and its paired difference to the reference (scratch) at each training fraction.

Runs finetuned on a nested fraction of each training fold (``finetune.train_fraction``) keep
the held-out folds of the full runs, so at every fraction the cells are scored on the same
participants and paired as :func:`ecg_dan.reporting.comparison.comparison_table` pairs them.
One row per (fraction, cell): the training participants and events (mean over the fold models
of their ``*_train.csv`` rows, which hold the drawn training-fold rows only), the fold-mean
C with its bootstrap CI (:func:`~ecg_dan.reporting.comparison.fold_mean_bootstrap`), the IBS,
the paired difference to the fraction's reference with its CI and its power line
(:mod:`ecg_dan.metrics.power`), which says whether "not shown" means "too few events".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from data_modules.atomic import atomic_write_text
from ecg_dan.log import get_logger
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.power import power_columns
from ecg_dan.reporting.absolute_models import FoldModelRows
from ecg_dan.reporting.comparison import fold_mean_bootstrap
from ecg_dan.reporting.figures import label_efficiency_plot
from ecg_dan.reporting.json_io import write_json
from ecg_dan.reporting.markdown import label_efficiency_markdown

log = get_logger(__name__)

__all__ = ["LABEL_EFFICIENCY_COLUMNS", "fraction_of", "label_efficiency_table",
           "train_counts", "write_label_efficiency"]

#: A run as :func:`ecg_dan.jobs.compare.load_run` returns it: (OOF, fold models, config).
LoadedRun = tuple[pd.DataFrame, Sequence[FoldModelRows], DictConfig]

LABEL_EFFICIENCY_COLUMNS = (
    "fraction", "cell", "reference", "reference_cell", "n", "events", "train_participants",
    "train_events", "c_mean", "c_low", "c_high", "ibs_mean", "diff_vs_ref", "diff_low",
    "diff_high", "diff_excludes_0", *power_columns(),
)


def fraction_of(cfg: DictConfig) -> float:
    """A run's ``finetune.train_fraction`` (1.0 for a run made before the key existed)."""
    return float(OmegaConf.select(cfg, "finetune.train_fraction", default=1.0))


def train_counts(folds: Sequence[FoldModelRows]) -> tuple[float, float]:
    """(participants, events) of the fold models' training rows (``*_train.csv``: training
    and inner-validation rows, the labelled outcomes the model saw), mean over the fold
    models; NaN for a run written without them."""
    rows = [(len(f.train), float(f.train["event"].sum())) for f in folds
            if f.train is not None and "event" in f.train.columns]
    if not rows:
        return math.nan, math.nan
    n, e = np.mean(rows, axis=0)
    return float(n), float(e)


def label_efficiency_table(runs: Mapping[float, Mapping[str, LoadedRun]],
                           tables: Mapping[float, pd.DataFrame], n_boot: int = 1000,
                           alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per (fraction, cell), fractions ascending, cells in first-seen order.

    Args:
        runs: ``{fraction: {cell name: load_run(run dir)}}``.
        tables: ``{fraction: comparison_table of that fraction's runs}`` (rows named as
            ``runs[fraction]``'s keys), whose reference the differences are taken against
            and whose paired differences, power lines and IBS the rows carry.
        n_boot, alpha, seed: the single-model bootstrap of the fold-mean C (``seed`` as the
            comparison's, so both draw the same resamples).

    Columns :data:`LABEL_EFFICIENCY_COLUMNS`: ``events`` / ``n`` are those of the held-out
    folds (the same at every fraction), ``train_*`` those of :func:`train_counts`;
    ``c_low`` / ``c_high`` empty without a bootstrap or where C is undefined.
    """
    cells: list[str] = []
    for f in sorted(runs):
        cells += [c for c in runs[f] if c not in cells]
    rows = []
    for f in sorted(runs):
        by = tables[f].set_index("model")
        ref = str(by.index[by["reference"].astype(bool)][0])
        for cell in cells:
            if cell not in runs[f]:
                continue
            oof, folds, _ = runs[f][cell]
            r = by.loc[cell]
            n_tr, e_tr = train_counts(folds)
            row: dict[str, Any] = {
                "fraction": f, "cell": cell, "reference": cell == ref, "reference_cell": ref,
                "n": r["n"], "events": r["events"], "train_participants": n_tr,
                "train_events": e_tr, "c_mean": r["c_mean"], "c_low": math.nan,
                "c_high": math.nan, "ibs_mean": r["ibs_mean"],
                **{k: r[k] for k in ("diff_vs_ref", "diff_low", "diff_high",
                                     "diff_excludes_0", *power_columns())}}
            if n_boot > 0:
                try:
                    ci = fold_mean_bootstrap(oof, n_boot=n_boot, alpha=alpha, seed=seed)
                    row.update(c_low=ci.low, c_high=ci.high)
                except UndefinedMetricError:
                    pass
            rows.append(row)
    out = pd.DataFrame(rows, columns=list(LABEL_EFFICIENCY_COLUMNS))
    out["diff_excludes_0"] = out["diff_excludes_0"].astype("boolean")
    return out


def write_label_efficiency(table: pd.DataFrame, out_dir: str | os.PathLike,
                           comparisons: Mapping[float, Path], n_boot: int, alpha: float,
                           seed: int, title: str = "") -> dict[str, Path]:
    """``label_efficiency.{csv,md,json,png}`` into ``out_dir`` (``comparisons``: each
    fraction's comparison.md, named in the Markdown and the JSON); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"label_efficiency.{k}" for k in ("csv", "md", "json", "png")}
    notes = [f"fraction {f:g}: `{p}`" for f, p in sorted(comparisons.items())]
    md = "# Label efficiency\n\n" + label_efficiency_markdown(table, alpha=alpha, n_boot=n_boot,
                                                              notes=notes)
    label_efficiency_plot(table, paths["png"], alpha=alpha, title=title)
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    atomic_write_text(paths["md"], md)
    records = [{k: (None if v is pd.NA or (isinstance(v, float) and not np.isfinite(v))
                    else v) for k, v in rec.items()} for rec in table.to_dict(orient="records")]
    write_json(paths["json"], {
        "n_boot": n_boot, "alpha": alpha, "seed": seed,
        "fractions": sorted(float(f) for f in table.fraction.unique()),
        "comparisons": {f"{f:g}": str(p) for f, p in sorted(comparisons.items())},
        "table": records})
    return paths

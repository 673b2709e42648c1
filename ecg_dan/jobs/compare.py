"""Job: one comparison table of several finetuning runs from their saved predictions.

Each run directory (read through :class:`ecg_dan.run_dir.RunDir`) holds the held-out folds'
predictions, optionally their training-fold risks and curves, and the run's config. Nothing
is retrained or re-predicted: the table, the paired bootstrap differences and the forest
plot come from the saved predictions only
(:func:`ecg_dan.reporting.comparison.comparison_table`).

When the runs include the two clinical Cox baselines (``baseline.features=ecgdan_clinical``,
ECG-DAN's risk + age + sex, and ``clinical``, age + sex;
:func:`ecg_dan.reporting.run_kind.clinical_pair`), the comparison adds their
reclassification: continuous NRI and IDI of the first against the second at each of the
config's ``finetune.horizons`` within follow-up, from their out-of-fold absolute risks
(:func:`ecg_dan.reporting.comparison.reclassification_table`).

Reference (the model the paired differences are taken against): ``reference`` when given
(a run name or a run directory); otherwise the one run whose model kind
(:func:`ecg_dan.reporting.run_kind.model_kind`) is the proposed model ``ecg_dan``; when no
run or more than one run is of that kind, the first run given.

Runs of several training fractions (``finetune.train_fraction``, the label-efficiency
matrix): each fraction is compared on its own (``comparison_frac<f>/``), against the run
named ``scratch`` at that fraction unless ``reference`` names another cell, and the
label-efficiency curve joins them (:mod:`ecg_dan.reporting.label_efficiency`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from data_modules.atomic import atomic_write_text
from ecg_dan.config import ConfigError
from ecg_dan.jobs.common import log_wandb_summary
from ecg_dan.log import get_logger
from ecg_dan.reporting.absolute_models import FoldModelRows, fold_models
from ecg_dan.reporting.comparison import (
    cohort_table,
    comparison_table,
    reclassification_table,
)
from ecg_dan.reporting.figures import forest_plot
from ecg_dan.reporting.fold_metrics import absolute_risks
from ecg_dan.reporting.json_io import write_json
from ecg_dan.reporting.label_efficiency import (
    fraction_of,
    label_efficiency_table,
    write_label_efficiency,
)
from ecg_dan.reporting.markdown import (
    cohort_markdown,
    comparison_markdown,
    reclassification_markdown,
)
from ecg_dan.reporting.risk_ranks import oof_ranked
from ecg_dan.reporting.run_kind import PROPOSED_KIND, clinical_pair, data_label, model_kind
from ecg_dan.run_dir import RunDir

log = get_logger(__name__)

__all__ = ["LABEL_EFFICIENCY_REFERENCE", "default_reference", "load_run", "run_compare",
           "run_names"]

#: The cell the label-efficiency differences are taken against at each fraction.
LABEL_EFFICIENCY_REFERENCE = "scratch"


def load_run(run_dir: str | os.PathLike
             ) -> tuple[pd.DataFrame, list[FoldModelRows], DictConfig]:
    """(OOF predictions, its folds with their models of absolute risk, config) of a
    finetuning run."""
    rd = RunDir(run_dir)
    if not rd.path.is_dir():
        raise FileNotFoundError(f"no run directory {rd}")
    cfg = rd.load_config()
    folds = fold_models(rd)
    # people ranked across fold models on the rank scale (the pooled C)
    oof = oof_ranked(folds)
    return oof.assign(risk=oof.risk_rank), folds, cfg


def run_names(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """A unique display name per run: its directory name, with parent folders added while two
    runs would share a name."""
    paths = [Path(os.path.abspath(d)) for d in run_dirs]
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in paths):
            return names
        depth += 1


def default_reference(names: Sequence[str], configs: Sequence[DictConfig]) -> str:
    """The one run of the proposed model's kind, else the first run (see the module doc)."""
    proposed = [n for n, c in zip(names, configs) if model_kind(c) == PROPOSED_KIND]
    return proposed[0] if len(proposed) == 1 else names[0]


def _resolve_reference(reference: str, names: Sequence[str],
                       run_dirs: Sequence[str | os.PathLike]) -> str:
    if reference in names:
        return reference
    target = os.path.abspath(reference)
    for name, d in zip(names, run_dirs):
        if os.path.abspath(d) == target or Path(d).name == reference:
            return name
    raise ConfigError(f"--reference {reference!r} is none of the runs: {', '.join(names)}")


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in table.to_dict(orient="records"):
        out.append({k: (None if v is pd.NA or (isinstance(v, float) and not np.isfinite(v))
                        else v) for k, v in rec.items()})
    return out


def run_compare(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                reference: str | None = None, n_boot: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> Path:
    """Write comparison.{md,csv,json} and forest_plot.png into ``out_dir`` (default: the
    runs' common parent / ``comparison``) and log the table and figure to W&B under the
    reference run's project and group (only when that run's config enables W&B).
    Runs of several cohorts are compared within each cohort (``out_dir/comparison_<cohort>``,
    each with its own reference) and joined into one table of the paper's shape, one row per
    model and columns per cohort (``out_dir/comparison.{md,csv}``).
    Runs of several training fractions (of one cohort, or within each cohort) are compared
    within each fraction (``comparison_frac<f>/``) and the label-efficiency curve is written
    beside (``label_efficiency.{md,csv,json,png}``, see the module doc); a cohort then
    enters the paper-shaped table with its largest fraction.
    Returns the Markdown file (``label_efficiency.md`` for one cohort of several fractions).
    """
    if not run_dirs:
        raise ConfigError("compare needs at least one run directory")
    if out_dir is None:
        parents = [os.path.dirname(os.path.abspath(d)) for d in run_dirs]
        out_dir = Path(os.path.commonpath(parents)) / "comparison"
    out_dir = Path(out_dir)
    loaded = {d: load_run(d) for d in run_dirs}  # each run read once
    by_cohort: dict[str, dict] = {}
    for d, run in loaded.items():
        by_cohort.setdefault(str(run[2].finetune.cohort), {})[d] = run
    if len(by_cohort) == 1:
        return _compare_fractions(loaded, out_dir, reference, n_boot, seed, alpha)[0]
    done = {c: _compare_fractions(runs, out_dir / f"comparison_{c}",
                                  reference and Path(reference).name, n_boot, seed, alpha)
            for c, runs in by_cohort.items()}
    tables = {c: t for c, (_, t) in done.items()}
    table = cohort_table(tables)
    notes = [f"{c}: `{md}`" for c, (md, _) in done.items()]
    md = "# Model comparison across cohorts\n\n" + cohort_markdown(table, list(tables),
                                                                     alpha=alpha, notes=notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "comparison.md", md)
    atomic_write_text(out_dir / "comparison.csv", table.to_csv(index=False))
    log.info(md)
    return out_dir / "comparison.md"


def clinical_reclassification(runs: dict, names: Sequence[str], n_boot: int, alpha: float,
                              seed: int) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """NRI / IDI of ECG-DAN + age + sex against age + sex (``{run_dir: load_run(run_dir)}``
    of one cohort, their display names) at the horizons of the first's config within
    follow-up: ``(reclassification_table, its JSON record)``; None without the pair."""
    by_name = dict(zip(names, runs.values()))
    pair = clinical_pair(names, [c for _, _, c in runs.values()])
    if pair is None:
        return None
    (oof, new_folds, cfg), (_, old_folds, _) = by_name[pair[0]], by_name[pair[1]]
    horizons = [float(h) for h in cfg.finetune.horizons if h < oof.time.max()]
    if not horizons:
        log.warning(f"reclassification: no horizon of {list(cfg.finetune.horizons)} within "
                    f"the follow-up (max {oof.time.max():g}); skipped")
        return None
    table = reclassification_table(absolute_risks(new_folds, horizons),
                                   absolute_risks(old_folds, horizons), horizons,
                                   names=pair, n_boot=n_boot, alpha=alpha, seed=seed)
    unit = str(cfg.data.time_unit)
    return table, {"new": pair[0], "old": pair[1], "time_unit": unit,
                   "table": _records(table)}


def _compare_fractions(runs: dict, out_dir: Path, reference: str | None, n_boot: int,
                       seed: int, alpha: float) -> tuple[Path, pd.DataFrame]:
    """The runs of one cohort (``{run_dir: load_run(run_dir)}``): one comparison when they
    share a training fraction; otherwise one per fraction and the label-efficiency curve
    (:func:`run_compare`). Returns (its Markdown, the table of the largest fraction)."""
    by_frac: dict[float, dict] = {}
    for d, run in runs.items():
        by_frac.setdefault(fraction_of(run[2]), {})[d] = run
    if len(by_frac) == 1:
        return _compare_cohort(runs, out_dir, reference, n_boot, seed, alpha)
    tables, comparisons, named = {}, {}, {}
    for f in sorted(by_frac):
        group = by_frac[f]
        cells = [Path(d).name for d in group]
        ref = (Path(reference).name if reference
               else LABEL_EFFICIENCY_REFERENCE if LABEL_EFFICIENCY_REFERENCE in cells else None)
        comparisons[f], tables[f] = _compare_cohort(group, out_dir / f"comparison_frac{f:g}",
                                                    ref, n_boot, seed, alpha)
        named[f] = dict(zip(run_names(list(group)), group.values()))
    table = label_efficiency_table(named, tables, n_boot=n_boot, alpha=alpha, seed=seed)
    configs = [c for _, _, c in runs.values()]
    cohorts = ", ".join(sorted({str(c.finetune.cohort) for c in configs}))
    sources = ", ".join(sorted({data_label(c) for c in configs}))
    paths = write_label_efficiency(table, out_dir, comparisons, n_boot, alpha, seed,
                                   title=f"label efficiency: cohort {cohorts} ({sources})")
    ref_cfg = named[max(named)][table.reference_cell.iloc[-1]][2].copy()
    OmegaConf.update(ref_cfg, "run_dir", str(out_dir))
    summary = {f"{r['cell']}@{r['fraction']:g}": {k: v for k, v in r.items()
                                                  if k not in ("cell", "fraction",
                                                               "reference_cell")}
               for r in _records(table)}
    log_wandb_summary(ref_cfg, "label_efficiency", summary, table=table, image=paths["png"])
    log.info(paths["md"].read_text())
    log.info(f"label efficiency: {paths['md']}; figure: {paths['png']}")
    return paths["md"], tables[max(tables)]


def _compare_cohort(runs: dict, out_dir: Path, reference: str | None, n_boot: int, seed: int,
                    alpha: float) -> tuple[Path, pd.DataFrame]:
    """The comparison of runs of one cohort (``{run_dir: load_run(run_dir)}``; see
    :func:`run_compare`)."""
    run_dirs = list(runs)
    names = run_names(run_dirs)
    loaded = list(runs.values())
    configs = [c for _, _, c in loaded]
    ref = (_resolve_reference(reference, names, run_dirs) if reference
           else default_reference(names, configs))
    table = comparison_table({n: oof for n, (oof, _, _) in zip(names, loaded)}, ref,
                             folds={n: fm for n, (_, fm, _) in zip(names, loaded)},
                             configs=dict(zip(names, configs)), n_boot=n_boot, alpha=alpha,
                             seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {data_label(c) for c in configs}
    cohorts = {str(c.finetune.cohort) for c in configs}
    notes = [f"reference: {ref}; runs: "
             + ", ".join(f"{n} = `{d}`" for n, d in zip(names, run_dirs)),
             f"data: {', '.join(sorted(sources))}; cohort: {', '.join(sorted(cohorts))}; "
             f"bootstrap seed {seed}."]
    md = "# Model comparison\n\n" + comparison_markdown(table, alpha=alpha, n_boot=n_boot,
                                                         notes=notes)
    recl = clinical_reclassification(runs, names, n_boot, alpha, seed)
    if recl is not None:
        recl_table, recl_json = recl
        atomic_write_text(out_dir / "reclassification.csv", recl_table.to_csv(index=False))
        md += "\n" + reclassification_markdown(
            recl_table, f"{recl_json['new']} (ECG-DAN + age + sex)",
            f"{recl_json['old']} (age + sex)", recl_json["time_unit"], alpha=alpha,
            n_boot=n_boot)
    else:
        (out_dir / "reclassification.csv").unlink(missing_ok=True)  # not from an older compare
    png = forest_plot(table, out_dir / "forest_plot.png", alpha=alpha,
                      title=f"cohort {', '.join(sorted(cohorts))} ({', '.join(sorted(sources))})")
    atomic_write_text(out_dir / "comparison.md", md)
    atomic_write_text(out_dir / "comparison.csv", table.to_csv(index=False))
    write_json(out_dir / "comparison.json", {
        "reference": ref, "n_boot": n_boot, "alpha": alpha, "seed": seed,
        "runs": {n: {"dir": str(d), "kind": model_kind(c), "cohort": str(c.finetune.cohort),
                     "source": data_label(c)}
                 for n, d, c in zip(names, run_dirs, configs)},
        "table": _records(table),
        **({"reclassification": recl[1]} if recl is not None else {})})
    ref_cfg = configs[names.index(ref)].copy()
    OmegaConf.update(ref_cfg, "run_dir", str(out_dir))
    summary = {r["model"]: {k: v for k, v in r.items() if k not in ("model", "paper")}
               for r in _records(table)}
    log_wandb_summary(ref_cfg, "compare", summary, table=table, image=png)
    log.info(md)
    log.info(f"comparison: {out_dir / 'comparison.md'}; figure: {png}")
    return out_dir / "comparison.md", table

"""What kind of model a run is (the proposed model, a baseline, an ablation), read from the
run's own saved config: for the paper's values and the default reference of a comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROPOSED_KIND = "ecg_dan"

_KIND_ALIASES = {"ecg-dan": "ecg_dan", "ecgdan": "ecg_dan", "proposed": "ecg_dan",
                 "biomarkers": "biomarker_cox", "cox_biomarkers": "biomarker_cox",
                 "biomarker-cox": "biomarker_cox"}


def data_label(cfg: Any) -> str:
    """What a run was trained on, for comparisons and reports: a cohort cache by its file
    name (``data.source`` does not apply to it), else ``synthetic`` / ``real``."""
    cache = cfg.data.get("cohort_cache")
    return f"cohort cache {Path(str(cache)).name}" if cache else str(cfg.data.source)


def model_kind(cfg: Any) -> str:
    """The kind of model a finetuning run is, from its saved config.

    In order: ``logging.compare_label`` when set; ``ecg_dan`` (the proposed model) for a run
    of the paper's experiment of its cohort (``name`` is ``finetune_<cohort>`` or starts with
    ``finetune_<cohort>_``, e.g. ``finetune_hyp_synthetic``) that is not trained from
    scratch (else ``ecg_dan_scratch``); the backbone's ``model.name`` when it is not
    ``ecg_dan`` (another registered network); else the run's ``name`` (ablations, e.g.
    ``ablation_scratch_hyp``, have no paper value here).
    """
    label = cfg.logging.get("compare_label") if "logging" in cfg else None
    if label:
        label = str(label).strip().lower()
        return _KIND_ALIASES.get(label, label)
    name = str(cfg.get("name") or "")
    paper = paper_experiment(str(cfg.finetune.cohort))
    if name == paper or name.startswith(paper + "_"):
        return "ecg_dan_scratch" if cfg.finetune.scratch else PROPOSED_KIND
    model_name = str(cfg.model.name)
    if model_name != "ecg_dan":
        return _KIND_ALIASES.get(model_name, model_name)
    return name or model_name


def paper_experiment(cohort: str) -> str:
    """The name of the paper's finetuning experiment of a cohort (``finetune_hyp``)."""
    return f"finetune_{cohort}"


def baseline_features(cfg: Any) -> str | None:
    """The features of a Cox-baseline run (``baseline.features``: ``biomarkers``,
    ``clinical`` = age + sex, ``ecgdan_clinical`` = ECG-DAN's risk + age + sex); None for a
    network run."""
    return str(cfg.baseline.features) if cfg.get("task") == "cox_baseline" else None


def clinical_pair(names: Sequence[str], configs: Sequence[Any]) -> tuple[str, str] | None:
    """``(ECG-DAN + age + sex, age + sex)``: the names of the one run of each of the two Cox
    baselines among the runs, for reclassification; None unless there is exactly one of each."""
    feats = [baseline_features(c) for c in configs]
    new = [n for n, f in zip(names, feats) if f == "ecgdan_clinical"]
    old = [n for n, f in zip(names, feats) if f == "clinical"]
    return (new[0], old[0]) if len(new) == 1 and len(old) == 1 else None

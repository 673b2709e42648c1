"""Survival metrics: Harrell/Uno C, time-dependent AUC, Brier score, bootstrap CIs, reports."""

from ecg_dan.metrics.bootstrap import BootstrapCI, bootstrap_ci
from ecg_dan.metrics.cindex import (
    HarrellCIndex,
    UndefinedMetricError,
    concordance_counts,
    harrell_cindex,
)
from ecg_dan.metrics.survival import (
    BreslowBaseline,
    antolini_cindex,
    breslow_baseline,
    brier_score,
    censoring_km,
    integrated_brier_score,
    kaplan_meier,
    survival_curves,
    time_dependent_auc,
    uno_cindex,
)

__all__ = [
    "BootstrapCI",
    "BreslowBaseline",
    "HarrellCIndex",
    "UndefinedMetricError",
    "antolini_cindex",
    "bootstrap_ci",
    "brier_score",
    "breslow_baseline",
    "censoring_km",
    "concordance_counts",
    "harrell_cindex",
    "integrated_brier_score",
    "kaplan_meier",
    "survival_curves",
    "time_dependent_auc",
    "uno_cindex",
]

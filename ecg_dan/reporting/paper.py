"""The paper's reported values (docs/method.md section 6), shown next to runs on real data."""

from __future__ import annotations

from typing import Any

from ecg_dan.reporting.run_kind import model_kind

#: The paper's Harrell C-index by (model kind, cohort) (docs/method.md section 6): a value, or
#: a (low, high) range where the paper reports one. Shown only next to runs on real data.
PAPER_CINDEX: dict[tuple[str, str], float | tuple[float, float]] = {
    ("ecg_dan", "hyp"): 0.6349,
    ("ecg_dan", "mi"): 0.5805,
    ("biomarker_cox", "mi"): (0.519, 0.540),
}


def paper_value(cfg: Any) -> str:
    """The paper's C-index for this run's (model kind, cohort) as text: only for a run on
    UK Biobank data (``""`` for synthetic data and for another cohort's cache, e.g.
    CODE-15% or a user's own, whose numbers are not comparable)."""
    if str(cfg.data.source) != "real" or cfg.data.get("cohort_cache"):
        return ""
    v = PAPER_CINDEX.get((model_kind(cfg), str(cfg.finetune.cohort)))
    if v is None:
        return ""
    if isinstance(v, tuple):
        return f"{v[0]:.3f}–{v[1]:.3f}"
    return f"{v:.4f}"

"""Ranking people across fold models: each fold model's risk as a normal score within its
own held-out risks, so the top 2% of a run means the same whoever scored them.

Fold models' risks differ by more than a constant: in the demo, on the shared (recalibrated)
scale one fold model's risks stop at 1.14 and the other's at 1.66 (both saturate), so the
top 2% of the pooled out-of-fold risks came from one fold model only, and a new person,
scored by the mean of both, could never reach that threshold (nobody was flagged). Within a
fold model's own held-out rows (people it never saw, like a new person), its risk has a
rank; the normal score of that rank, ``z = Phi^-1(mid-rank / n)``, is on one scale for every
fold model (standard normal over its held-out rows).

- A cohort participant's out-of-fold score: the mean over seeds of z by the fold model that
  held them out (one fold model per seed); the run's reference distribution, its top
  ``finetune.top_fraction`` the Kaplan-Meier high-risk group.
- A new person is scored by every fold model, but their percentile and flag must come from
  the same kind of score as the reference's: each way of taking one fold model per seed
  gives one (``predict`` enumerates them, up to a cap). The percentile is their mean, the
  flag share the fraction of them at or above the threshold, the flag a share of at least
  one half. (A mean over all fold models is a different kind of score: averaging fold models
  that disagree narrows it, and it missed the threshold for everyone in the demo.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from ecg_dan.reporting.absolute_models import FoldModelRows, risk_on_shared_scale

__all__ = ["RANK_TOLERANCE", "normal_score", "oof_ranked", "rank_reference"]


#: Risks closer than this count as tied when ranked: the same ECG scored again may differ in
#: the last float32 digits, and a fold model whose risks saturate has many exact ties.
RANK_TOLERANCE = 1e-6


def normal_score(reference: ArrayLike, values: ArrayLike) -> NDArray:
    """``Phi^-1`` of the mid-rank of ``values`` within the sorted ``reference``
    ((#below + #tied / 2) / n, tied = within :data:`RANK_TOLERANCE`, kept inside
    [0.5 / n, 1 - 0.5 / n])."""
    ref = np.asarray(reference, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    n = ref.size
    below = np.searchsorted(ref, v - RANK_TOLERANCE, side="left")
    tied = np.searchsorted(ref, v + RANK_TOLERANCE, side="right") - below
    p = np.clip((below + 0.5 * tied) / n, 0.5 / n, 1 - 0.5 / n)
    return norm.ppf(p)


def member_references(folds: Sequence[FoldModelRows]) -> list[NDArray]:
    """Each fold model's held-out risks as it wrote them, sorted (raw: a rank must not depend
    on the recalibration, whose slope could even be negative for a useless fold model)."""
    return [np.sort(f.test.risk.to_numpy(np.float64)) for f in folds]


def oof_ranked(folds: Sequence[FoldModelRows]) -> pd.DataFrame:
    """The out-of-fold frame with ``risk_cal`` (shared-scale risk) and ``risk_rank`` (the
    normal score of the risk's rank within the fold model's held-out risks). Ranking
    people across fold models: ``frame.assign(risk=frame.risk_rank)``; fold-level metrics
    are unchanged by it (a monotone map within each fold model)."""
    refs = member_references(folds)
    out = []
    for f, ref in zip(folds, refs):
        out.append(f.test.assign(risk_cal=risk_on_shared_scale(f, f.test),
                                 risk_rank=normal_score(ref, f.test.risk.to_numpy())))
    return pd.concat(out, ignore_index=True)


def rank_reference(folds: Sequence[FoldModelRows], top_fraction: float) -> dict[str, Any]:
    """What percentiles and the high-risk flag are read against (module docstring):
    ``members`` (each fold model's sorted held-out risks), ``risk`` (sorted
    out-of-fold scores per participant) and ``threshold`` (its top-``top_fraction``
    quantile)."""
    ref = np.sort(oof_ranked(folds).groupby("eid")["risk_rank"].mean().to_numpy(np.float64))
    return {"members": member_references(folds), "risk": ref,
            "threshold": float(np.percentile(ref, 100 * (1 - top_fraction)))}

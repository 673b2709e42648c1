"""Calibration of absolute risks against Kaplan-Meier observed risk (numpy).

A Cox network's log-risk ranks participants (the C-index); whether its absolute risks, from
the training fold's Breslow baseline, mean what they say is calibration. At a horizon t:

- :func:`km_risk`: the Kaplan-Meier risk ``1 - S(t)`` of a group with its pointwise CI by
  the exponential Greenwood formula (the log(-log S) transform, as lifelines'
  ``KaplanMeierFitter``), so the observed risk of a small group with few events keeps a
  CI inside [0, 1];
- :func:`calibration_table`: participants split into ``n_groups`` groups (deciles) of
  predicted risk; per group the mean predicted risk against the KM observed risk and CI;
- :func:`calibration_in_the_large`: the whole cohort's KM risk (with CI) against the mean
  predicted risk, their difference and ratio (observed / expected).

Censoring is handled by KM only (participants censored before t count until they leave);
a group nobody of which is followed up to t gives NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import norm

from data_modules.protocol.survival_arrays import check_survival

__all__ = ["calibration_in_the_large", "calibration_table", "km_risk"]


def km_risk(time: ArrayLike, event: ArrayLike, t: float, alpha: float = 0.05
            ) -> tuple[float, float, float]:
    """Kaplan-Meier risk ``1 - S(t)`` and its ``1 - alpha`` CI (exponential Greenwood);
    NaN when nobody is followed up to ``t``."""
    tm, ev, _ = check_survival(time, event, where="km_risk")
    if tm.size == 0 or tm.max() < t:
        return math.nan, math.nan, math.nan
    uniq = np.unique(tm[ev & (tm <= t)])
    if uniq.size == 0:
        return 0.0, 0.0, 0.0
    at_risk = (tm[None, :] >= uniq[:, None]).sum(axis=1).astype(float)
    deaths = ((tm[None, :] == uniq[:, None]) & ev[None, :]).sum(axis=1).astype(float)
    s = float(np.prod(1.0 - deaths / at_risk))
    if s <= 0.0:
        return 1.0, 1.0, 1.0
    surv = at_risk > deaths
    var = float((deaths[surv] / (at_risk[surv] * (at_risk[surv] - deaths[surv]))).sum())
    z = norm.ppf(1 - alpha / 2)
    log_s = math.log(s)
    if log_s == 0.0:
        return 0.0, 0.0, 0.0
    lo_s = math.exp(-math.exp(math.log(-log_s) - z * math.sqrt(var) / log_s))
    hi_s = math.exp(-math.exp(math.log(-log_s) + z * math.sqrt(var) / log_s))
    return 1.0 - s, 1.0 - hi_s, 1.0 - lo_s


def calibration_table(predicted: ArrayLike, time: ArrayLike, event: ArrayLike, t: float,
                      n_groups: int = 10, alpha: float = 0.05) -> pd.DataFrame:
    """Mean predicted vs KM observed risk at ``t`` per group of predicted risk (equal-sized
    groups by rank, lowest first): columns ``group, n, events, predicted, observed,
    observed_low, observed_high``; ``events`` counts events up to ``t``."""
    tm, ev, p = check_survival(time, event, predicted, where="calibration")
    if n_groups < 1 or n_groups > tm.size:
        raise ValueError(f"n_groups must be in [1, {tm.size}], got {n_groups}")
    order = np.argsort(p, kind="stable")
    rows = []
    for g, idx in enumerate(np.array_split(order, n_groups)):
        obs, lo, hi = km_risk(tm[idx], ev[idx], t, alpha)
        rows.append({"group": g + 1, "n": int(idx.size),
                     "events": int((ev[idx] & (tm[idx] <= t)).sum()),
                     "predicted": float(p[idx].mean()), "observed": obs,
                     "observed_low": lo, "observed_high": hi})
    return pd.DataFrame(rows)


def calibration_in_the_large(predicted: ArrayLike, time: ArrayLike, event: ArrayLike,
                             t: float, alpha: float = 0.05) -> dict[str, float]:
    """The cohort's KM observed risk at ``t`` (with CI) against the mean predicted risk:
    ``predicted``, ``observed``, ``observed_low``, ``observed_high``, ``difference``
    (observed - predicted) and ``ratio`` (observed / predicted, the O/E ratio)."""
    tm, ev, p = check_survival(time, event, predicted, where="calibration")
    obs, lo, hi = km_risk(tm, ev, t, alpha)
    mean = float(p.mean())
    return {"predicted": mean, "observed": obs, "observed_low": lo, "observed_high": hi,
            "difference": obs - mean, "ratio": obs / mean if mean > 0 else math.nan}

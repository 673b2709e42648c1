"""Decision curve analysis of absolute risks at a horizon, for censored outcomes (numpy).

A C-index says the model ranks people; a decision curve says whether acting on its absolute
risk does more good than harm. Treating everyone whose predicted risk by ``t`` is at least a
threshold probability ``p_t`` weighs a false positive as ``p_t / (1 - p_t)`` true positives
(the odds at which a clinician is indifferent between treating and not). The net benefit is

    NB(p_t) = TP/n - FP/n * p_t / (1 - p_t),

and with censored follow-up (Vickers, Cronin, Elkin & Gonen, BMC Med Inform Decis Mak 2008;
8:53, "Extensions to decision curve analysis ... censored data") the event rate among those
treated is the Kaplan-Meier risk ``1 - S(t)`` of that group: with ``P(x=1) = n_pos / n``,

    NB = r_pos * P(x=1) - (1 - r_pos) * P(x=1) * p_t / (1 - p_t),

treat-all NB = ``r_all - (1 - r_all) * p_t / (1 - p_t)`` (``r_all`` the whole cohort's KM
risk) and treat-none NB = 0 (Vickers & Elkin, Med Decis Making 2006;26:565-574). Without
censoring before ``t``, the KM risk is the plain proportion of events, so NB reduces to the
TP/FP formula above.

The KM estimates use :func:`ecg_dan.metrics.survival.kaplan_meier` (sorting, O(n log n)),
the same point estimate as :func:`ecg_dan.metrics.calibration.km_risk` without its CI and
its (n_events x n) risk-set matrix, since a curve needs one KM per threshold and the
reclassification bootstrap thousands.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from data_modules.protocol.survival_arrays import check_survival
from ecg_dan.metrics.survival import kaplan_meier

__all__ = ["DECISION_COLUMNS", "decision_curve", "default_thresholds", "km_event_rate"]

DECISION_COLUMNS = ("threshold", "n_positive", "net_benefit_model", "net_benefit_all",
                    "net_benefit_none", "interventions_avoided_per_100")


def km_event_rate(time: ArrayLike, event: ArrayLike, t: float) -> float:
    """Kaplan-Meier risk ``1 - S(t)`` of a group (the point estimate of ``km_risk``).

    NaN for an empty group and when nobody of the group is followed up to ``t``, except when
    the KM curve has already reached 0 (everybody's event observed before ``t``): then 1,
    where ``km_risk`` says NaN (a group of the decision curve above a high threshold can be
    all early events)."""
    tm, ev, _ = check_survival(time, event, where="km_event_rate", allow_empty=True)
    if tm.size == 0:
        return math.nan
    surv = kaplan_meier(tm, ev)
    if tm.max() < t:
        return 1.0 if surv.y[-1] == 0.0 else math.nan
    return float(1.0 - surv(t))


def default_thresholds(predicted_risk: ArrayLike) -> NDArray:
    """Threshold probabilities 0.01, 0.02, ... up to the 99th percentile of the predicted
    risk rounded up to 0.01, at least 0.05 and at most 0.99: past the risks the model gives
    nobody treated by it differs from treat-none, and the curve would only show 0."""
    p = np.asarray(predicted_risk, dtype=float)
    top = min(max(float(np.nanpercentile(p, 99)), 0.05), 0.99)
    return np.arange(1, math.ceil(round(top * 100, 9)) + 1) / 100.0


def decision_curve(predicted_risk: ArrayLike, time: ArrayLike, event: ArrayLike, t: float,
                   thresholds: ArrayLike | None = None) -> pd.DataFrame:
    """Net benefit at horizon ``t`` of treating those with ``predicted_risk >= threshold``,
    against treat-all and treat-none, one row per threshold (module doc).

    Args:
        predicted_risk: each participant's predicted probability of the event by ``t``.
        time, event: follow-up (same unit as ``t``) and event indicator (0/1).
        t: the horizon.
        thresholds: threshold probabilities in (0, 1); default :func:`default_thresholds`.

    Columns (:data:`DECISION_COLUMNS`): ``threshold``, ``n_positive`` (risk >= threshold),
    ``net_benefit_model``, ``net_benefit_all``, ``net_benefit_none`` (0) and
    ``interventions_avoided_per_100`` (net reduction in treatments per 100 people against
    treat-all at the same net benefit: ``(NB_model - NB_all) * (1 - p_t) / p_t * 100``).
    Nobody at or above a threshold gives ``net_benefit_model`` 0 (nobody treated); a group
    nobody of which is followed up to ``t`` gives NaN (so does ``net_benefit_all`` when
    nobody in the cohort is).
    """
    tm, ev, p = check_survival(time, event, predicted_risk, where="decision_curve")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("decision_curve: predicted_risk must be probabilities in [0, 1]")
    th = (default_thresholds(p) if thresholds is None
          else np.atleast_1d(np.asarray(thresholds, dtype=float)))
    if th.ndim != 1 or th.size == 0 or not ((th > 0) & (th < 1)).all():
        raise ValueError(f"decision_curve: thresholds must lie in (0, 1), got {th}")
    n = tm.size
    odds = th / (1.0 - th)
    r_all = km_event_rate(tm, ev, t)
    n_pos = np.array([(p >= pt).sum() for pt in th])
    nb_model = np.zeros(th.size)
    for i, (pt, k) in enumerate(zip(th, n_pos)):
        if k:
            pos = p >= pt
            r = km_event_rate(tm[pos], ev[pos], t)
            nb_model[i] = r * k / n - (1.0 - r) * k / n * odds[i]
    nb_all = r_all - (1.0 - r_all) * odds
    return pd.DataFrame({
        "threshold": th, "n_positive": n_pos.astype(np.int64), "net_benefit_model": nb_model,
        "net_benefit_all": nb_all, "net_benefit_none": np.zeros(th.size),
        "interventions_avoided_per_100": (nb_model - nb_all) / odds * 100.0,
    }, columns=list(DECISION_COLUMNS))

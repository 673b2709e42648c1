"""Reclassification of a new model against an old one at a horizon: continuous NRI and IDI
for censored outcomes (numpy).

The question a clinical reader asks of ECG-DAN + age + sex against age + sex: does the ECG
move people's absolute risk by ``t`` the right way, up for those who will have the event,
down for those who will not?

- **Continuous (category-free) NRI** (Pencina, D'Agostino & Steyerberg, Stat Med 2011;
  30:11-21): ``NRI_events = P(up | event) - P(down | event)``, ``NRI_nonevents = P(down |
  no event) - P(up | no event)``, ``NRI`` their sum (in [-2, 2]); "up" = the new risk is
  higher than the old one, ties move nobody. With censoring, the event status by ``t`` is
  unknown for those censored before it, and Bayes' rule with Kaplan-Meier risks gives the
  estimator of Pencina et al.: with ``r`` the KM risk ``1 - S(t)`` of all,
  ``r_up`` / ``r_down`` that of the up / down group,
  ``P(up | event) = r_up P(up) / r`` and ``P(up | no event) = (1 - r_up) P(up) / (1 - r)``
  (the same for down). Without censoring before ``t`` these are the plain proportions.
- **IDI** = the new model's discrimination slope minus the old one's, a slope being the mean
  predicted risk of those with the event by ``t`` minus that of those without (Pencina,
  D'Agostino, D'Agostino & Vasan, Stat Med 2008;27:157-172). With censoring the means are
  inverse-probability-of-censoring weighted (Uno, Tian, Cai, Kohane & Wei, Stat Med 2013;
  32:2430-2442): an event at ``T_i <= t`` weighs ``1 / G(T_i-)``, an event-free
  participant followed beyond ``t`` weighs ``1 / G(t)`` (the same for all of them, so their
  mean is the plain mean), a participant censored before ``t`` weighs 0; ``G`` is the
  Kaplan-Meier of the censoring. IPCW rather than a KM decomposition because a mean of a
  continuous risk among events has no per-group KM form; both assume censoring independent
  of the risks.

CIs: percentile bootstrap of participants, stratified by event
(:func:`ecg_dan.metrics.bootstrap.bootstrap_cis`), the four measures on the same resamples.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from data_modules.protocol.survival_arrays import as_1d, check_survival
from ecg_dan.metrics.bootstrap import BootstrapCI, bootstrap_cis
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.decision import km_event_rate
from ecg_dan.metrics.survival import kaplan_meier

__all__ = ["RECLASSIFICATION_KEYS", "reclassification", "reclassification_ci"]

RECLASSIFICATION_KEYS = ("nri_events", "nri_nonevents", "nri", "idi")


def _check(new_risk: ArrayLike, old_risk: ArrayLike, time: ArrayLike, event: ArrayLike
           ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    tm, ev, new = check_survival(time, event, new_risk, where="reclassification: new")
    old = as_1d(old_risk, "reclassification: old risk")
    if old.shape != new.shape or not np.isfinite(old).all():
        raise ValueError(f"reclassification: old risk must be {new.size} finite values")
    return new, old, tm, ev


def _group_shares(mask: NDArray, tm: NDArray, ev: NDArray, t: float, r_all: float
                  ) -> tuple[float, float]:
    """(P(group | event by t), P(group | no event by t)) by the KM decomposition."""
    k = int(mask.sum())
    if k == 0:
        return 0.0, 0.0
    r = km_event_rate(tm[mask], ev[mask], t)
    if math.isnan(r):
        raise UndefinedMetricError(f"nobody of a reclassified group is followed up to {t:g}")
    share = k / tm.size
    return r * share / r_all, (1.0 - r) * share / (1.0 - r_all)


def _discrimination_slopes(new: NDArray, old: NDArray, tm: NDArray, ev: NDArray, t: float
                           ) -> tuple[float, float]:
    """IPCW discrimination slopes (new, old) at ``t`` (module doc)."""
    case, control = ev & (tm <= t), tm > t
    if not case.any() or not control.any():
        raise UndefinedMetricError(f"no event or nobody event-free followed up to {t:g}")
    g = kaplan_meier(tm, ev, reverse=True)
    idx = np.searchsorted(g.x, tm[case], side="left") - 1  # G(T_i-): steps before T_i
    w = 1.0 / np.where(idx >= 0, g.y[np.clip(idx, 0, None)], 1.0)
    return tuple(float(np.average(p[case], weights=w) - p[control].mean())  # type: ignore
                 for p in (new, old))


def reclassification(new_risk: ArrayLike, old_risk: ArrayLike, time: ArrayLike,
                     event: ArrayLike, t: float) -> dict[str, float]:
    """Continuous NRI (``nri_events``, ``nri_nonevents``, ``nri``) and ``idi`` of the new
    model's absolute risk by ``t`` against the old model's, with censoring handled as in the
    module doc. Raises :class:`UndefinedMetricError` when nobody has the event by ``t``,
    nobody is followed event-free beyond it, or nobody of the up or down group is followed
    up to ``t``."""
    new, old, tm, ev = _check(new_risk, old_risk, time, event)
    r_all = km_event_rate(tm, ev, t)
    if not 0.0 < r_all < 1.0:
        raise UndefinedMetricError(f"Kaplan-Meier risk by {t:g} is {r_all}: NRI undefined")
    up_e, up_ne = _group_shares(new > old, tm, ev, t, r_all)
    down_e, down_ne = _group_shares(new < old, tm, ev, t, r_all)
    slope_new, slope_old = _discrimination_slopes(new, old, tm, ev, t)
    nri_e, nri_ne = up_e - down_e, down_ne - up_ne
    return {"nri_events": nri_e, "nri_nonevents": nri_ne, "nri": nri_e + nri_ne,
            "idi": slope_new - slope_old}


def reclassification_ci(new_risk: ArrayLike, old_risk: ArrayLike, time: ArrayLike,
                        event: ArrayLike, t: float, n_boot: int = 1000, alpha: float = 0.05,
                        seed: int = 0) -> dict[str, BootstrapCI]:
    """:func:`reclassification` with percentile bootstrap CIs: ``{key: BootstrapCI}`` for
    each of :data:`RECLASSIFICATION_KEYS`, every key on the same resamples of participants
    (stratified by event status)."""
    new, old, tm, ev = _check(new_risk, old_risk, time, event)
    return bootstrap_cis(lambda n_, o_, t_, e_: reclassification(n_, o_, t_, e_, t),
                         new, old, tm, ev.astype(float), n_boot=n_boot, alpha=alpha, seed=seed,
                         stratify=ev)

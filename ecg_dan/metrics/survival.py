"""Censoring-adjusted survival metrics and Breslow survival curves (numpy).

Harrell's C (the paper's metric) depends on the censoring distribution; Uno's C and the
cumulative/dynamic AUC re-weight pairs by inverse probability of censoring weights (IPCW) from
the *training* data, and the integrated Brier score scores calibrated survival curves, which a
Cox model only yields through a baseline hazard (Breslow).

The definitions, edge-case behaviour and error conditions follow scikit-survival
(``concordance_index_ipcw``, ``cumulative_dynamic_auc``, ``brier_score``,
``integrated_brier_score``, ``BreslowEstimator``), against which the tests check these to
~1e-9, with two deliberate differences: risk ties are *exact* equality here, whereas
scikit-survival treats ``|a - b| <= 1e-8`` as a tie; and the time-dependent AUC / Brier score
evaluate the censoring weights only for the samples that use them, so a test event beyond the
training follow-up (frequent in 2-fold CV) does not make them fail as it does in
scikit-survival. pycox's ``EvalSurv.integrated_brier_score``
is not used: it calls ``scipy.integrate.simps``, which SciPy 1.14 removed (we run SciPy 1.17).

Every (time, event[, risk]) input goes through
:func:`data_modules.protocol.survival_arrays.check_survival` (messages name the sample:
``train: ...``, ``test: ...``): unequal lengths, empty samples,
non-finite times or risks and events other than 0/1 are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from data_modules.protocol.survival_arrays import as_1d, check_survival
from ecg_dan.metrics.cindex import (
    UndefinedMetricError,
    _ordering_keys,
    weighted_concordance,
)

__all__ = [
    "BreslowBaseline",
    "antolini_cindex",
    "StepFunction",
    "brier_score",
    "breslow_baseline",
    "censoring_km",
    "integrated_brier_score",
    "kaplan_meier",
    "survival_curves",
    "time_dependent_auc",
    "uno_cindex",
]


def _counts(time: NDArray, event: NDArray[np.bool_]) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Unique times, events, number at risk (time >= t) and censorings at each unique time."""
    uniq, inv = np.unique(time, return_inverse=True)
    inv = inv.ravel()
    k = uniq.shape[0]
    n_total = np.bincount(inv, minlength=k)
    n_event = np.bincount(inv, weights=event.astype(float), minlength=k).astype(np.int64)
    n_at_risk = time.shape[0] - (np.cumsum(n_total) - n_total)
    return uniq, n_event, n_at_risk, n_total - n_event


@dataclass(frozen=True)
class StepFunction:
    """Right-continuous step function: ``f(t) = y[k]`` for the last ``x[k] <= t``; ``before``
    for t < x[0]. Beyond the last jump the value is held (``check_upper`` may forbid it)."""

    x: NDArray
    y: NDArray
    before: float = 0.0

    def __call__(self, t: ArrayLike) -> NDArray:
        t = np.asarray(t, dtype=float)
        idx = np.searchsorted(self.x, t, side="right") - 1
        out = np.where(idx >= 0, self.y[np.clip(idx, 0, None)], self.before)
        return out


def kaplan_meier(time: ArrayLike, event: ArrayLike, reverse: bool = False) -> StepFunction:
    """Kaplan-Meier survival function, or with ``reverse=True`` the censoring survival G(t)
    (events at a tied time are removed from the risk set before the censorings, as in
    scikit-survival's ``kaplan_meier_estimator(reverse=True)``)."""
    t, e, _ = check_survival(time, event, where="kaplan_meier")
    uniq, n_event, n_at_risk, n_cens = _counts(t, e)
    if reverse:
        n_at_risk = n_at_risk - n_event
        n_event = n_cens
    ratio = np.divide(
        n_event, n_at_risk, out=np.zeros(uniq.shape[0], dtype=float), where=n_event != 0
    )
    return StepFunction(uniq, np.cumprod(1.0 - ratio), before=1.0)


def censoring_km(train_time: ArrayLike, train_event: ArrayLike) -> StepFunction:
    """Censoring survival G(t) from training data; identically 1 when nothing is censored."""
    t, e, _ = check_survival(train_time, train_event, where="train")
    if e.all():
        uniq = np.unique(t)
        return StepFunction(uniq, np.ones(uniq.shape[0]), before=1.0)
    return kaplan_meier(t, e, reverse=True)


def _predict_g(g: StepFunction, t: NDArray) -> NDArray:
    """G(t) with scikit-survival's rules: beyond the last training time G is 0 if it reached 0,
    and undefined (error) otherwise."""
    extends = t > g.x[-1]
    if extends.any() and g.y[-1] > 0:
        raise ValueError(
            f"time must not exceed the largest training time {g.x[-1]} (censoring distribution "
            "unknown beyond it); pass tau or restrict the test set"
        )
    out = g(t)
    out[extends] = 0.0
    return out


def _ipcw(g: StepFunction, test_time: NDArray, test_event: NDArray[np.bool_]) -> NDArray:
    """1/G(t_i) for test events, 0 for censored samples."""
    w = np.zeros(test_time.shape[0])
    g_ev = _predict_g(g, test_time[test_event])
    if (g_ev == 0).any():
        raise ValueError("censoring survival function is zero at one or more test event times")
    w[test_event] = 1.0 / g_ev
    return w


def _check_horizons(test_time: NDArray, times: ArrayLike) -> NDArray:
    times = np.atleast_1d(np.asarray(times, dtype=float))
    if times.ndim != 1 or times.shape[0] == 0:
        raise ValueError("times must be a non-empty 1-D array")
    if np.any(np.diff(times) <= 0):
        raise ValueError("times must be strictly increasing")
    if times.max() >= test_time.max() or times.min() < test_time.min():
        raise ValueError(
            f"all times must be within the test follow-up [{test_time.min()}, {test_time.max()})"
        )
    return times


def _train_test_risk(train_time: ArrayLike, train_event: ArrayLike, test_time: ArrayLike,
                     test_event: ArrayLike, risk: ArrayLike
                     ) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
    """Validated arrays of the IPCW metrics: train and test (time, event) and test risk."""
    tr_t, tr_e, _ = check_survival(train_time, train_event, where="train")
    te_t, te_e, r = check_survival(test_time, test_event, risk, where="test")
    return tr_t, tr_e, te_t, te_e, r


def uno_cindex(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    risk: ArrayLike,
    tau: float | None = None,
) -> float:
    """Uno's IPCW C-index (higher risk = earlier event), truncated at ``tau``.

    Harrell's C weights pairs by the censoring pattern of the cohort; Uno's weights each
    comparable pair (i, j) by ``G(t_i)^-2`` (G = censoring KM of the training data), which makes
    it consistent for a censoring-independent concordance on [0, tau). Only events with
    ``t_i < tau`` act as the earlier member of a pair. Same conventions as
    ``sksurv.metrics.concordance_index_ipcw`` (pairs with tied times: an event precedes a
    censoring). Raises :class:`UndefinedMetricError` when no pair carries weight.
    """
    tr_t, tr_e, te_t, te_e, r = _train_test_risk(train_time, train_event, test_time,
                                                 test_event, risk)
    g = censoring_km(tr_t, tr_e)
    in_window = np.ones(te_t.shape[0], dtype=bool) if tau is None else te_t < tau
    w = np.zeros(te_t.shape[0])
    w[in_window] = _ipcw(g, te_t[in_window], te_e[in_window]) ** 2
    key, v = _ordering_keys(te_t, r, te_e)
    concordant, tied, comparable = weighted_concordance(key, v, w)
    if comparable == 0:
        raise UndefinedMetricError("Uno's C undefined: no comparable (weighted) pairs")
    return float((concordant + 0.5 * tied) / comparable)


def time_dependent_auc(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    risk: ArrayLike,
    horizons: ArrayLike,
) -> tuple[NDArray, float]:
    """Cumulative/dynamic AUC at each horizon t, and its survival-weighted mean.

    Cases are events with ``T <= t`` (weighted by IPCW ``1/G(T)``), controls are ``T > t``:
    the AUC is the weighted probability that a case has a higher risk than a control (exact risk
    ties count 1/2). The mean integrates the AUC over the test-set Kaplan-Meier increments, as
    ``sksurv.metrics.cumulative_dynamic_auc`` does. A horizon without cases or controls gives NaN.
    ``horizons`` must be strictly increasing and inside [min, max) of the test times.
    """
    tr_t, tr_e, te_t, te_e, r = _train_test_risk(train_time, train_event, test_time,
                                                 test_event, risk)
    times = _check_horizons(te_t, horizons)
    # IPCW only where used (cases up to the last horizon): scikit-survival evaluates G at every
    # test event and raises when one lies beyond the training follow-up, which is common in
    # 2-fold CV; wherever scikit-survival returns a value the results are identical.
    used = te_t <= times[-1]
    ipcw = np.zeros(te_t.shape[0])
    ipcw[used] = _ipcw(censoring_km(tr_t, tr_e), te_t[used], te_e[used])

    scores = np.full(times.shape[0], np.nan)
    for k, t in enumerate(times):  # loop over horizons only; each is O(n log n)
        case = te_e & (te_t <= t)
        control_risk = np.sort(r[te_t > t])
        if not case.any() or control_risk.shape[0] == 0:
            continue
        rc, wc = r[case], ipcw[case]
        below = np.searchsorted(control_risk, rc, side="left")
        equal = np.searchsorted(control_risk, rc, side="right") - below
        scores[k] = (wc * (below + 0.5 * equal)).sum() / (wc.sum() * control_risk.shape[0])

    if times.shape[0] == 1:
        return scores, float(scores[0])
    s = kaplan_meier(te_t, te_e)(times)
    d = -np.diff(np.r_[1.0, s])
    return scores, float((scores * d).sum() / (1.0 - s[-1]))


@dataclass(frozen=True)
class BreslowBaseline:
    """Breslow baseline cumulative hazard H0 as a step function over the unique training times.

    ``H(t | x) = H0(t) * exp(log_risk(x))``. ``cumhaz(t)`` is 0 before the first training time
    and held constant after the last (extrapolation beyond follow-up is not estimable).
    """

    times: NDArray
    cumhaz_values: NDArray

    def cumhaz(self, t: ArrayLike) -> NDArray:
        return StepFunction(self.times, self.cumhaz_values, before=0.0)(t)

    __call__ = cumhaz

    def baseline_survival(self, t: ArrayLike) -> NDArray:
        return np.exp(-self.cumhaz(t))


def breslow_baseline(
    train_risk: ArrayLike, train_time: ArrayLike, train_event: ArrayLike
) -> BreslowBaseline:
    """Breslow estimator ``H0(t) = sum_{t_k <= t} d_k / sum_{j: t_j >= t_k} exp(eta_j)``.

    A Cox network only learns relative risk; survival probabilities (for the Brier score or
    calibration) need this baseline, fitted on the training fold with the model's log-risk
    ``eta``. The risk-set sums are reverse cumulative sums (no subtraction, so no cancellation).
    Matches ``sksurv``'s ``BreslowEstimator`` / ``CoxPHSurvivalAnalysis.cum_baseline_hazard_``.
    """
    t, e, eta = check_survival(train_time, train_event, train_risk, where="train")
    order = np.argsort(t, kind="stable")
    uniq, n_event, _, _ = _counts(t, e)
    first = np.searchsorted(t[order], uniq, side="left")
    risk_set = np.cumsum(np.exp(eta[order])[::-1])[::-1][first]
    return BreslowBaseline(uniq, np.cumsum(n_event / risk_set))


def survival_curves(baseline: BreslowBaseline, risk: ArrayLike, times: ArrayLike) -> NDArray:
    """Predicted survival ``S(t | x) = exp(-H0(t) exp(risk))``, shape (n_samples, n_times)."""
    eta = as_1d(risk, "risk")
    h0 = baseline.cumhaz(np.atleast_1d(np.asarray(times, dtype=float)))
    return np.exp(-np.outer(np.exp(eta), h0))


def brier_score(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
) -> NDArray:
    """IPCW Brier score at each time (Graf et al. 1999), as ``sksurv.metrics.brier_score``.

    ``surv[i, k]`` is the predicted probability that sample i survives beyond ``times[k]``.
    """
    tr_t, tr_e, _ = check_survival(train_time, train_event, where="train")
    te_t, te_e, _ = check_survival(test_time, test_event, where="test")
    times = _check_horizons(te_t, times)
    s = np.asarray(surv, dtype=float)
    if s.ndim == 1 and times.shape[0] == 1:
        s = s[:, None]
    if s.shape != (te_t.shape[0], times.shape[0]):
        raise ValueError(f"surv must have shape {(te_t.shape[0], times.shape[0])}, got {s.shape}")
    g = censoring_km(tr_t, tr_e)
    g_t = _predict_g(g, times)
    g_t[g_t == 0] = np.inf
    # G(T_i) only matters for cases (events with T_i <= the last time); as in
    # time_dependent_auc, not evaluating it elsewhere avoids scikit-survival's spurious error.
    g_y = np.ones(te_t.shape[0])
    used = te_e & (te_t <= times[-1])
    g_y[used] = _predict_g(g, te_t[used])
    g_y[g_y == 0] = np.inf
    case = (te_t[:, None] <= times[None, :]) & te_e[:, None]
    control = te_t[:, None] > times[None, :]
    contrib = np.square(s) * case / g_y[:, None] + np.square(1.0 - s) * control / g_t[None, :]
    return contrib.mean(axis=0)


def integrated_brier_score(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
) -> float:
    """Brier score integrated over ``times`` (trapezoid rule) and divided by the time span,
    as ``sksurv.metrics.integrated_brier_score``; needs at least two time points."""
    times_arr = np.atleast_1d(np.asarray(times, dtype=float))
    if times_arr.shape[0] < 2:
        raise ValueError("at least two time points are needed for the integrated Brier score")
    bs = brier_score(train_time, train_event, test_time, test_event, surv, times_arr)
    return float(np.trapezoid(bs, times_arr) / (times_arr[-1] - times_arr[0]))


def antolini_cindex(surv: ArrayLike, times: ArrayLike, durations: ArrayLike,
                    events: ArrayLike) -> float:
    """Antolini's time-dependent concordance (Antolini et al. 2005), by pycox's
    ``EvalSurv(...).concordance_td("antolini")``.

    ``surv[k, i]`` is sample i's predicted survival at ``times[k]`` (pycox's layout:
    n_times x n, ``times`` strictly increasing); ``S_i(t)`` is read as a step function (the
    last grid time at or before t; before the first grid time, the first row). A pair is
    comparable when ``t_i < t_j`` and i had the event (or ``t_i == t_j``, i an event and j
    censored), and concordant when ``S_i(t_i) < S_j(t_i)``; ties in the predictions count as
    discordant. Unlike Harrell's C it scores whole survival curves, so it compares a Cox
    model (Breslow curves) with a discrete-time model on the same footing.
    """
    import pandas as pd
    from pycox.evaluation import EvalSurv

    t, e, _ = check_survival(durations, events, where="test")
    grid = np.atleast_1d(np.asarray(times, dtype=float))
    s = np.asarray(surv, dtype=float)
    if s.shape != (grid.shape[0], t.shape[0]):
        raise ValueError(f"surv must have shape (n_times, n) = {(grid.shape[0], t.shape[0])}, "
                         f"got {s.shape}")
    if grid.ndim != 1 or not (np.diff(grid) > 0).all() or not np.isfinite(grid).all():
        raise ValueError("times must be finite and strictly increasing")
    if not np.isfinite(s).all():
        raise ValueError("surv has non-finite values")
    if not e.any():
        raise UndefinedMetricError("Antolini's C is undefined without events (no comparable "
                                   "pair)")
    ev = EvalSurv(pd.DataFrame(s, index=grid), t.astype(np.float64), e.astype(np.int64),
                  censor_surv=None)
    return float(ev.concordance_td("antolini"))

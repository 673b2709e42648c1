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

Beyond the deciles, the calibration measures of Austin, Harrell & van Klaveren (Stat Med
2020, "Graphical calibration curves and the integrated calibration index (ICI) for survival
models"), on the outcome administratively censored at t and the complementary log-log of the
predicted risk, ``cloglog(p) = log(-log(1 - p))`` (for a Cox model ``log H0(t) + eta``, so
any model with a survival curve is treated alike):

- :func:`calibration_slope`: the coefficient of a Cox regression of the outcome on
  ``cloglog(p)`` (ideal 1; below 1 the predictions are too extreme), Wald SE and CI;
- :func:`smoothed_calibration`: a Cox regression on restricted cubic splines of
  ``cloglog(p)`` gives each participant a smoothed observed risk; ICI / E50 / E90 / Emax are
  the mean / median / 90th percentile / maximum of ``|observed - predicted|``, and the
  fitted curve over a grid of predicted risks comes with a pointwise delta-method CI.

Both fit the Cox partial likelihood with Efron's ties by Newton-Raphson (numpy, as
lifelines' ``CoxPHFitter``) and the Breslow baseline hazard; with fewer than
:data:`MIN_EVENTS` events before t they raise :class:`CalibrationNotEstimated`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from data_modules.protocol.survival_arrays import check_survival
from ecg_dan.metrics.bootstrap import bootstrap_ci
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.survival import breslow_baseline

__all__ = [
    "CoxFit",
    "cox_fit",
    "MIN_EVENTS",
    "CalibrationNotEstimated",
    "SmoothedCalibration",
    "calibration_in_the_large",
    "calibration_slope",
    "calibration_table",
    "km_risk",
    "rcs_basis",
    "rcs_knots",
    "smoothed_calibration",
]

#: Fewest events before the horizon for a calibration slope or smoothed curve: below it the
#: Cox fit is noise (or does not converge) and nothing is reported.
MIN_EVENTS = 10
#: Predicted risks are clipped to [RISK_CLIP, 1 - RISK_CLIP] before the complementary
#: log-log, so a risk of exactly 0 or 1 stays finite.
RISK_CLIP = 1e-10
#: Harrell's default knot quantiles (``rms::rcspline.eval``) by number of knots.
HARRELL_QUANTILES = {
    3: (0.10, 0.50, 0.90),
    4: (0.05, 0.35, 0.65, 0.95),
    5: (0.05, 0.275, 0.50, 0.725, 0.95),
    6: (0.05, 0.23, 0.41, 0.59, 0.77, 0.95),
    7: (0.025, 0.1833, 0.3417, 0.50, 0.6583, 0.8167, 0.975),
}


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


class CalibrationNotEstimated(UndefinedMetricError):
    """Too few events before the horizon (or nobody followed up to it) for a calibration
    slope or curve; the message says why (``not estimated: 7 events before 12 ...``)."""


def rcs_knots(x: ArrayLike, n_knots: int = 3) -> NDArray:
    """Harrell's default knots of a restricted cubic spline (``rms::rcspline.eval``): the
    quantiles :data:`HARRELL_QUANTILES` of ``x``, the outer ones at the 5th smallest and
    largest value when n < 100; duplicate knots are dropped (fewer than 3 left: none, a
    linear term only)."""
    if n_knots not in HARRELL_QUANTILES:
        raise ValueError(f"n_knots must be one of {sorted(HARRELL_QUANTILES)}, got {n_knots}")
    x = np.sort(np.asarray(x, dtype=float))
    knots = np.quantile(x, HARRELL_QUANTILES[n_knots])
    if x.size < 100 and x.size >= 10:
        knots[0], knots[-1] = x[4], x[-5]
    knots = np.unique(knots)
    return knots if knots.size >= 3 else np.empty(0)


def rcs_basis(x: ArrayLike, knots: ArrayLike) -> NDArray:
    """Restricted cubic spline basis (linear beyond the outer knots), shape (n, k - 1): ``x``
    then the k - 2 nonlinear terms of Harrell's ``rcspline.eval`` scaled by
    ``(k_last - k_first)^2`` (its ``norm=2``, as ``rms::rcs``); only ``x`` without knots."""
    x = np.asarray(x, dtype=float)
    k = np.asarray(knots, dtype=float)
    if k.size == 0:
        return x[:, None]
    last, prev = k[-1], k[-2]

    def cube(v: NDArray) -> NDArray:
        return np.maximum(v, 0.0) ** 3

    cols = [x]
    for kj in k[:-2]:
        cols.append((cube(x - kj) - cube(x - prev) * (last - kj) / (last - prev)
                     + cube(x - last) * (prev - kj) / (last - prev)) / (last - k[0]) ** 2)
    return np.column_stack(cols)


@dataclass(frozen=True)
class CoxFit:
    """A Cox fit censored at the horizon: coefficients, their covariance, the covariate means
    (the fit is centred), the Breslow ``H0(t)`` at the means and the terms of the delta-method
    variance of ``log H(t | z)``: ``var_h0 + (z - xbar)' cov (z - xbar)``."""

    beta: NDArray
    cov: NDArray
    center: NDArray
    h0: float
    var_h0: float
    xbar: NDArray

    def log_cumhaz(self, x: NDArray) -> tuple[NDArray, NDArray]:
        """``log H(t | x)`` and its delta-method standard error for rows of ``x``."""
        xc = x - self.center
        d = xc - self.xbar
        var = self.var_h0 + np.einsum("ij,jk,ik->i", d, self.cov, d)
        return math.log(self.h0) + xc @ self.beta, np.sqrt(np.maximum(var, 0.0))


def _efron_terms(beta: NDArray, x: NDArray, uniq: NDArray[np.int64], ev_idx: NDArray[np.int64],
                 frac: NDArray, ev: NDArray[np.bool_]
                 ) -> tuple[float, NDArray, NDArray, NDArray, NDArray]:
    """Log partial likelihood (Efron's ties), gradient, Hessian; with the risk-set sums at
    each event (Efron-reduced), for the Breslow variance terms. ``uniq`` maps each row to its
    (ascending) unique time, ``ev_idx`` each event to its time, ``frac`` = l / d within a tie."""
    eta = x @ beta
    shift = eta.max()
    w = np.exp(eta - shift)
    k = int(uniq.max()) + 1
    p = x.shape[1]

    def by_time(v: NDArray, rows: NDArray[np.bool_] | None = None) -> NDArray:
        """Sums of ``v`` (n, m) per unique time, for all rows or only ``rows``."""
        m = v if rows is None else v * rows[:, None]
        return np.stack([np.bincount(uniq, weights=m[:, j], minlength=k)
                         for j in range(m.shape[1])], axis=1)

    wx = w[:, None] * x
    wxx = (wx[:, :, None] * x[:, None, :]).reshape(-1, p * p)
    tot = by_time(np.column_stack([w, wx, wxx]))
    risk = np.cumsum(tot[::-1], axis=0)[::-1]  # sums over time >= each unique time
    dead = by_time(np.column_stack([w, wx, wxx]), ev)
    s = risk[ev_idx] - frac[:, None] * dead[ev_idx]
    s0, s1, s2 = s[:, 0], s[:, 1:1 + p], s[:, 1 + p:].reshape(-1, p, p)
    loglik = float(eta[ev].sum() - (np.log(s0) + shift).sum())
    xbar = s1 / s0[:, None]
    grad = x[ev].sum(axis=0) - xbar.sum(axis=0)
    hess = -(s2 / s0[:, None, None] - xbar[:, :, None] * xbar[:, None, :]).sum(axis=0)
    return loglik, grad, hess, s0, xbar


def cox_fit(x: NDArray, time: NDArray, event: NDArray[np.bool_], t: float,
             max_iter: int = 50, tol: float = 1e-10) -> CoxFit:
    """Cox regression of (time, event) censored at ``t`` on the columns of ``x``: Efron's
    partial likelihood maximised by Newton-Raphson with step halving (from beta = 0, as
    lifelines), the Breslow baseline at ``t``."""
    tm = np.minimum(time, t)
    ev = event & (time <= t)
    center = x.mean(axis=0)
    xc = x - center
    _, uniq = np.unique(tm, return_inverse=True)
    uniq = uniq.ravel()
    order = np.argsort(uniq[ev], kind="stable")
    ev_idx = uniq[ev][order]
    d = np.bincount(ev_idx)
    starts = np.searchsorted(ev_idx, ev_idx, side="left")
    # l = 0..d-1 numbers the tied events of a time in any order: Efron's sum over l does not
    # depend on which event gets which l
    frac = (np.arange(ev_idx.size) - starts) / d[ev_idx]
    beta = np.zeros(x.shape[1])
    loglik, grad, hess, _, _ = _efron_terms(beta, xc, uniq, ev_idx, frac, ev)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError as e:
            raise CalibrationNotEstimated(
                "not estimated: the Cox fit is singular (predicted risks all equal?)") from e
        new = beta + step
        new_ll, new_grad, new_hess, _, _ = _efron_terms(new, xc, uniq, ev_idx, frac, ev)
        while new_ll < loglik - 1e-12 and np.abs(step).max() > tol:
            step /= 2
            new = beta + step
            new_ll, new_grad, new_hess, _, _ = _efron_terms(new, xc, uniq, ev_idx, frac, ev)
        beta, loglik, grad, hess = new, new_ll, new_grad, new_hess
        if np.abs(step).max() < tol:
            break
    else:
        raise CalibrationNotEstimated(f"not estimated: the Cox fit did not converge in "
                                      f"{max_iter} iterations")
    cov = np.linalg.inv(-hess)
    eta = xc @ beta
    h0 = float(breslow_baseline(eta, tm, ev).cumhaz(t))
    # Tsiatis' variance of the Breslow H(t | z), on the log scale: the baseline term
    # sum d / S0^2 / H0^2 plus the coefficient term around the hazard-weighted mean of the
    # risk-set covariate means (the Breslow sums: Efron's reduction off)
    _, _, _, s0, xbar = _efron_terms(beta, xc, uniq, ev_idx, np.zeros_like(frac), ev)
    inc = 1.0 / s0
    return CoxFit(beta=beta, cov=cov, center=center, h0=h0,
                   var_h0=float((inc ** 2).sum() / inc.sum() ** 2),
                   xbar=(inc[:, None] * xbar).sum(axis=0) / inc.sum())


def _horizon_data(predicted_risk: ArrayLike, time: ArrayLike, event: ArrayLike, t: float
                  ) -> tuple[NDArray, NDArray, NDArray[np.bool_], NDArray, int]:
    """Validated (predicted, time, event, cloglog(predicted), events before t); raises
    :class:`CalibrationNotEstimated` below :data:`MIN_EVENTS` events or when nobody is
    followed up to ``t``."""
    tm, ev, p = check_survival(time, event, predicted_risk, where="calibration")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("calibration: predicted risks must lie in [0, 1]")
    events = int((ev & (tm <= t)).sum())
    if events < MIN_EVENTS:
        raise CalibrationNotEstimated(
            f"not estimated: {events} events before {t:g} (minimum {MIN_EVENTS})")
    if tm.max() < t:
        raise CalibrationNotEstimated(f"not estimated: nobody followed up to {t:g}")
    q = np.clip(p, RISK_CLIP, 1 - RISK_CLIP)
    return p, tm, ev, np.log(-np.log1p(-q)), events


def calibration_slope(predicted_risk: ArrayLike, time: ArrayLike, event: ArrayLike, t: float,
                      alpha: float = 0.05) -> dict[str, float]:
    """Calibration slope at ``t``: the coefficient of a Cox regression (Efron ties) of the
    outcome censored at ``t`` on ``cloglog(predicted_risk)``, ideal 1 (< 1: predictions too
    extreme, > 1: too moderate); ``slope``, ``slope_se``, ``slope_low``, ``slope_high``
    (Wald ``1 - alpha`` CI), ``n``, ``events`` (before ``t``). Raises
    :class:`CalibrationNotEstimated` with fewer than :data:`MIN_EVENTS` events."""
    _, tm, ev, lp, events = _horizon_data(predicted_risk, time, event, t)
    fit = cox_fit(lp[:, None], tm, ev, t)
    slope, se = float(fit.beta[0]), float(math.sqrt(fit.cov[0, 0]))
    z = float(norm.ppf(1 - alpha / 2))
    return {"slope": slope, "slope_se": se, "slope_low": slope - z * se,
            "slope_high": slope + z * se, "n": int(tm.size), "events": events}


@dataclass(frozen=True)
class SmoothedCalibration:
    """The smoothed calibration at one horizon (:func:`smoothed_calibration`).

    ``observed`` is each participant's smoothed observed risk (input order); ``curve`` the
    fitted curve on a grid of predicted risks, columns ``predicted, observed, observed_low,
    observed_high``; ``knots`` on the cloglog scale; ``ici_low`` / ``ici_high`` a bootstrap
    CI of the ICI (NaN without bootstrap)."""

    ici: float
    e50: float
    e90: float
    emax: float
    n: int
    events: int
    knots: tuple[float, ...]
    observed: NDArray = field(repr=False)
    curve: pd.DataFrame = field(repr=False)
    ici_low: float = math.nan
    ici_high: float = math.nan

    def summary(self) -> dict[str, float | int]:
        """The scalar measures, for a results table / JSON."""
        return {"ici": self.ici, "ici_low": self.ici_low, "ici_high": self.ici_high,
                "e50": self.e50, "e90": self.e90, "emax": self.emax, "n": self.n,
                "events": self.events}


def smoothed_calibration(predicted_risk: ArrayLike, time: ArrayLike, event: ArrayLike,
                         t: float, n_knots: int = 3, grid: ArrayLike | None = None,
                         alpha: float = 0.05, n_boot: int = 0, seed: int = 0
                         ) -> SmoothedCalibration:
    """Smoothed calibration curve and ICI / E50 / E90 / Emax at ``t`` (Austin, Harrell &
    van Klaveren, Stat Med 2020).

    A Cox model (Efron ties) of the outcome censored at ``t`` on a restricted cubic spline
    of ``cloglog(predicted_risk)`` (``n_knots`` at Harrell's quantiles; 3, as the paper)
    gives each participant the smoothed observed risk ``1 - exp(-H0(t) exp(f(x)))``
    (Breslow ``H0``); the measures summarise ``|observed - predicted|`` over participants.
    ``curve`` evaluates the fit on ``grid`` (default 50 risks from the 1st to the 99th
    percentile of the predicted risks) with a pointwise ``1 - alpha`` CI: delta method on
    ``log H(t | x)`` (Tsiatis' variance, baseline and coefficient uncertainty), mapped to
    risk. ``n_boot > 0`` adds a percentile bootstrap CI of the ICI (the whole fit repeated on
    resampled participants, seeded by ``seed``). Raises :class:`CalibrationNotEstimated`
    with fewer than :data:`MIN_EVENTS` events before ``t``.
    """
    p, tm, ev, lp, events = _horizon_data(predicted_risk, time, event, t)
    knots = rcs_knots(lp, n_knots)
    fit = cox_fit(rcs_basis(lp, knots), tm, ev, t)
    log_h, _ = fit.log_cumhaz(rcs_basis(lp, knots))
    observed = -np.expm1(-np.exp(log_h))
    err = np.abs(observed - p)
    if grid is None:
        lo, hi = np.quantile(p, [0.01, 0.99])
        grid = np.linspace(lo, hi, 50)
    g = np.asarray(grid, dtype=float)
    g_lp = np.log(-np.log1p(-np.clip(g, RISK_CLIP, 1 - RISK_CLIP)))
    g_log_h, g_se = fit.log_cumhaz(rcs_basis(g_lp, knots))
    z = norm.ppf(1 - alpha / 2)
    curve = pd.DataFrame({"predicted": g, "observed": -np.expm1(-np.exp(g_log_h)),
                          "observed_low": -np.expm1(-np.exp(g_log_h - z * g_se)),
                          "observed_high": -np.expm1(-np.exp(g_log_h + z * g_se))})
    ici_low = ici_high = math.nan
    if n_boot > 0:
        def ici(p_b: NDArray, t_b: NDArray, e_b: NDArray) -> float:
            return smoothed_calibration(p_b, t_b, e_b, t, n_knots, grid=g[:1]).ici

        ci = bootstrap_ci(ici, p, tm, ev, n_boot=n_boot, alpha=alpha, seed=seed)
        ici_low, ici_high = ci.low, ci.high
    return SmoothedCalibration(
        ici=float(err.mean()), e50=float(np.median(err)), e90=float(np.quantile(err, 0.9)),
        emax=float(err.max()), n=int(p.size), events=events,
        knots=tuple(float(k) for k in knots), observed=observed, curve=curve,
        ici_low=ici_low, ici_high=ici_high)

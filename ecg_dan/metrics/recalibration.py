"""Out-of-fold recalibration of a Cox-type model's absolute risk (docs/method.md, calibration).

A Cox network's log-risk ``eta`` ranks people; its absolute risk ``1 - exp(-H0(t) e^eta)``
needs a baseline hazard ``H0``. The demo's network ranks well (C 0.74) but its log-risks are
about five times too spread (sd 3.6; the Cox slope of the outcome on them is 0.2, on
training, validation and held-out rows alike): with slope 1 and the Breslow baseline of the
training fold, the many low risks stay near 0 and the high ones saturate at 1, so the mean
predicted risk falls behind the observed one, more so the longer the horizon (O/E 1.07 at
12 months to 1.62 at 60). The fix: a Cox model of the outcome on the centred log-risk,

    H(t | x) = H0_cal(t) * exp(slope * (eta(x) - offset))

``offset`` = the mean log-risk of the fold model's own training-fold rows (a Cox log-risk is
defined up to a constant that differs between fold models; after it, 0 is the typical
training person of every fold model); ``slope`` = the Cox regression coefficient (Efron
ties, :func:`ecg_dan.metrics.calibration.cox_fit`; 1 = the spread is right, < 1 = too
spread), fitted on rows the model did not train on (its inner-validation rows, so an
over-fitted network's training rows cannot flatter it); ``H0_cal`` = the Breslow baseline of
``slope * (eta - offset)`` (rows chosen by the caller,
:mod:`ecg_dan.reporting.absolute_models`). With fewer than :data:`MIN_SLOPE_EVENTS` events
the slope is not estimable with any precision and is held at 1 (the baseline alone is
refitted), which the result records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from data_modules.protocol.survival_arrays import check_survival
from ecg_dan.metrics.calibration import cox_fit
from ecg_dan.metrics.survival import BreslowBaseline, breslow_baseline

__all__ = ["MIN_SLOPE_EVENTS", "CoxRecalibration", "fit_cox_recalibration"]

#: Fewest events on the calibration rows for a fitted slope (else slope 1, baseline only).
MIN_SLOPE_EVENTS = 20


@dataclass(frozen=True)
class CoxRecalibration:
    """``H(t | x) = H0_cal(t) exp(slope (eta - offset))`` (see the module docstring);
    ``n``/``events`` of the rows it was fitted on, ``slope_fitted`` False when the slope was
    held at 1 for want of events."""

    offset: float
    slope: float
    baseline: BreslowBaseline
    n: int
    events: int
    slope_fitted: bool

    def linear_predictor(self, risk: ArrayLike) -> NDArray:
        """The calibrated log hazard ratio against the typical training person."""
        return self.slope * (np.asarray(risk, dtype=np.float64) - self.offset)

    def survival(self, risk: ArrayLike, times: ArrayLike) -> NDArray:
        """Survival ``(n, n_times)`` at ``times``."""
        h0 = self.baseline.cumhaz(np.atleast_1d(np.asarray(times, dtype=np.float64)))
        return np.exp(-np.outer(np.exp(self.linear_predictor(risk)), h0))

    @property
    def max_time(self) -> float:
        return float(self.baseline.times[-1])


def fit_cox_recalibration(centred: ArrayLike, time: ArrayLike, event: ArrayLike,
                          offset: float,
                          baseline_rows: tuple[ArrayLike, ArrayLike, ArrayLike] | None = None,
                          ) -> CoxRecalibration:
    """Fit the recalibration (see the module docstring). ``centred``, ``time``, ``event``:
    rows the model did not train on, their log-risks minus the offset of the fold model that
    scored them (rows of several fold models may be pooled, each centred on its own): the
    slope is fitted on them. ``baseline_rows`` (centred, time, event): the rows of the
    baseline of ``slope * centred`` (default: the same rows). ``offset``: the offset of the
    fold model this recalibration is for."""
    t, e, c = check_survival(time, event, centred, where="recalibration rows")
    if t.size == 0 or not e.any():
        raise ValueError(f"recalibration needs events on rows the model did not train on; "
                         f"{t.size} rows, {int(e.sum())} events")
    slope, fitted = 1.0, False
    if int(e.sum()) >= MIN_SLOPE_EVENTS and np.ptp(c) > 0:
        slope, fitted = float(cox_fit(c[:, None], t, e, math.inf).beta[0]), True
    if baseline_rows is not None:
        bc, bt, be = baseline_rows
        bt, be, bc = check_survival(bt, be, bc, where="baseline rows")
    else:
        bc, bt, be = c, t, e
    base = breslow_baseline(slope * bc, bt, be)
    return CoxRecalibration(float(offset), float(slope), base, int(t.size), int(e.sum()),
                            fitted)

"""The power line (ecg_dan/metrics/power.py) against simulated cohorts with a known effect."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from ecg_dan.metrics.bootstrap import bootstrap_ci
from ecg_dan.metrics.cindex import harrell_cindex
from ecg_dan.metrics.power import events_for_power, power_at, power_columns, power_line


def _cohort(n: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(time, event, risk a, risk b): exponential times with log-hazard x, exponential
    censoring (about half the participants have the event); a sees x through less noise
    than b, so C(a) > C(b) by a fixed amount in the population."""
    x = rng.normal(size=n)
    t, c = rng.exponential(np.exp(-x)), rng.exponential(1.0, size=n)
    a, b = x + 0.6 * rng.normal(size=n), x + 1.2 * rng.normal(size=n)
    return np.minimum(t, c), (t <= c).astype(int), a, b


def _diff(a: np.ndarray, b: np.ndarray, t: np.ndarray, e: np.ndarray) -> float:
    return harrell_cindex(t, a, e) - harrell_cindex(t, b, e)


def _simulate(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(estimated difference, events) of ``m`` independent cohorts of ``n``."""
    out = np.empty((m, 2))
    for i in range(m):
        t, e, a, b = _cohort(n, rng)
        out[i] = _diff(a, b, t, e), e.sum()
    return out[:, 0], out[:, 1]


def test_events_needed_give_80_percent_power_in_simulated_cohorts():
    rng = np.random.default_rng(0)
    t, e, a, b = _cohort(100_000, rng)
    delta = _diff(a, b, t, e)  # the true difference (population of 100k): about 0.054
    assert 0.04 < delta < 0.07

    # one observed cohort: its paired bootstrap (stratified by event, as compare does)
    t, e, a, b = _cohort(1000, rng)
    ci = bootstrap_ci(_diff, a, b, t, e, n_boot=300, seed=1, stratify=e)
    line = power_line(ci.replicates, e.sum(), deltas=(delta,))
    needed = line.events_needed[0]
    assert power_at(line.se, line.events, delta, at_events=needed) == pytest.approx(0.8, abs=1e-5)
    assert needed < line.events and line.power_observed[0] > 0.85

    # many cohorts of the predicted size (same event rate): the test at the level the power
    # line assumes (|d| > z * SE, the SE scaled to each cohort's events) rejects in ~80%
    n80 = round(needed / e.mean())
    m = 500
    d, events = _simulate(n80, m, rng)
    se = line.se * np.sqrt(line.events / events)
    rate = float(np.mean(np.abs(d) > norm.ppf(0.975) * se))
    # tolerance, 3 standard deviations of two errors: the binomial one of m cohorts
    # (sqrt(0.8 * 0.2 / m) = 0.018) and that of one cohort's bootstrap SE (about 9% relative
    # over repeated cohorts at 300 resamples, measured), which moves the rejection rate
    # Phi(0.84 * r) (r = predicted / true SE) by 0.235 * 0.09 = 0.021
    tol = 3 * math.hypot(math.sqrt(0.16 / m), 0.235 * 0.09)
    assert abs(rate - 0.8) < tol, (rate, tol)

    # the SE falls as 1/sqrt(events) at the same event rate: SD * sqrt(events) equal at a
    # quarter of the size, within 3 SDs of the ratio of two SDs of m cohorts each
    d_small, ev_small = _simulate(n80 // 4, m, rng)
    ratio = (d.std(ddof=1) * math.sqrt(events.mean())) / (d_small.std(ddof=1)
                                                          * math.sqrt(ev_small.mean()))
    assert abs(ratio - 1) < 3 * math.sqrt(2 / (2 * m)), ratio


def test_power_formulae_and_columns():
    # events: E * (se * (z_.975 + z_.8) / delta)^2
    assert events_for_power(0.01, 100, 0.02) == pytest.approx(
        100 * (0.01 * (1.959964 + 0.841621) / 0.02) ** 2, rel=1e-5)
    # four times the events halve the SE
    assert power_at(0.02, 100, 0.03, at_events=400) == pytest.approx(power_at(0.01, 100, 0.03))
    assert power_at(1.0, 10, 1e-9) == pytest.approx(0.05, abs=1e-6)  # no effect: the level
    line = power_line(np.array([0.0, 0.02, 0.04, np.nan]), 50)
    assert line.se == pytest.approx(0.02)
    assert list(line.columns()) == power_columns()
    assert power_columns() == ["diff_se", "events_for_0.01", "power_0.01", "events_for_0.02",
                               "power_0.02", "events_for_0.05", "power_0.05"]
    with pytest.raises(ValueError, match="at least 2"):
        power_line([0.1], 10)
    with pytest.raises(ValueError, match="positive"):
        power_line([0.1, 0.1], 10)  # no variation: no SE

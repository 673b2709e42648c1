"""Calibration numerics (ecg_dan/metrics/calibration.py) against lifelines' Kaplan-Meier
estimator: the observed risk and its exponential-Greenwood CI, per risk decile and in the
large. The end-to-end check of ``evaluate finetune``'s calibration is in
tests/test_export_predict.py."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from ecg_dan.metrics.calibration import calibration_in_the_large, calibration_table, km_risk


def _cohort(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(40 * np.exp(-0.8 * x))
    t_cens = rng.uniform(5, 80, size=n)
    time = np.round(np.minimum(t_event, t_cens), 0) + 1  # whole months: many ties
    event = (t_event <= t_cens).astype(int)
    predicted = 1 - np.exp(-(24 / 40) * np.exp(0.8 * x))  # the true 24-month risk
    return predicted, time, event


def _lifelines(time, event, t):
    kmf = KaplanMeierFitter().fit(time, event)
    s = float(kmf.predict(t))
    ci = kmf.confidence_interval_survival_function_
    row = ci[ci.index <= t].iloc[-1]
    return 1 - s, 1 - float(row.iloc[1]), 1 - float(row.iloc[0])


@pytest.mark.parametrize("t", [6.0, 24.0, 24.5, 60.0])
def test_km_risk_and_ci_match_lifelines(t):
    _, time, event = _cohort()
    got = km_risk(time, event, t)
    np.testing.assert_allclose(got, _lifelines(time, event, t), rtol=1e-10, atol=1e-12)
    assert got[1] < got[0] < got[2]


def test_km_risk_edge_cases():
    assert km_risk([5, 6, 7], [0, 0, 0], 6.0) == (0.0, 0.0, 0.0)  # no event yet
    assert all(np.isnan(km_risk([5, 6, 7], [1, 0, 1], 10.0)))  # nobody followed up to 10
    risk, lo, hi = km_risk([1, 2, 3], [1, 1, 1], 3.0)  # everybody had the event
    assert (risk, lo, hi) == (1.0, 1.0, 1.0)


def test_calibration_table_by_decile_matches_lifelines_per_group():
    predicted, time, event = _cohort()
    tab = calibration_table(predicted, time, event, 24.0, n_groups=10)
    assert list(tab.group) == list(range(1, 11)) and tab.n.sum() == len(time)
    order = np.argsort(predicted, kind="stable")
    for (_, row), idx in zip(tab.iterrows(), np.array_split(order, 10)):
        assert row.predicted == pytest.approx(predicted[idx].mean(), rel=1e-12)
        want = _lifelines(time[idx], event[idx], 24.0)
        np.testing.assert_allclose([row.observed, row.observed_low, row.observed_high], want,
                                   rtol=1e-10, atol=1e-12)
        assert row.events == int(((time[idx] <= 24) & (event[idx] == 1)).sum())
    # the true risk is calibrated: higher deciles observe more, and the CIs cover the truth
    assert tab.observed.iloc[-1] > tab.observed.iloc[0]
    covered = (tab.observed_low <= tab.predicted) & (tab.predicted <= tab.observed_high)
    assert covered.mean() >= 0.8


def test_calibration_in_the_large_detects_a_scaled_risk():
    predicted, time, event = _cohort()
    good = calibration_in_the_large(predicted, time, event, 24.0)
    obs, lo, hi = _lifelines(time, event, 24.0)
    assert good["observed"] == pytest.approx(obs, rel=1e-10)
    assert (good["observed_low"], good["observed_high"]) == pytest.approx((lo, hi), rel=1e-10)
    assert good["predicted"] == pytest.approx(predicted.mean())
    assert lo <= good["predicted"] <= hi  # the true risk is calibrated in the large
    bad = calibration_in_the_large(predicted / 2, time, event, 24.0)
    assert bad["difference"] == pytest.approx(obs - predicted.mean() / 2)
    assert bad["ratio"] == pytest.approx(obs / (predicted.mean() / 2))
    assert bad["predicted"] < bad["observed_low"]  # halved risks fall outside the CI

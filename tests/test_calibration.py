"""Calibration numerics (ecg_dan/metrics/calibration.py) against lifelines' Kaplan-Meier
estimator: the observed risk and its exponential-Greenwood CI, per risk decile and in the
large; the calibration slope and the smoothed curve (ICI / E50 / E90) against lifelines'
``CoxPHFitter`` and against simulated cohorts whose true risk is known. The end-to-end check
of ``evaluate finetune``'s calibration is in tests/test_export_predict.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from scipy.stats import norm

from ecg_dan.metrics.calibration import (
    MIN_EVENTS,
    CalibrationNotEstimated,
    calibration_in_the_large,
    calibration_slope,
    calibration_table,
    km_risk,
    rcs_basis,
    rcs_knots,
    smoothed_calibration,
)
from ecg_dan.reporting.figures import calibration_plot


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


# ----------------------------------------------------- calibration slope and smoothed curve
HORIZON = 24.0


def _exponential_cohort(n: int = 2000, seed: int = 0):
    """Exponential survival with hazard exp(eta) / 60 and uniform censoring, times rounded to
    0.1 (ties); the true risk at the horizon is ``1 - exp(-24/60 exp(eta))``."""
    rng = np.random.default_rng(seed)
    eta = rng.normal(0.0, 0.8, size=n)
    t_event = rng.exponential(60 * np.exp(-eta))
    t_cens = rng.uniform(12, 48, size=n)
    time = np.round(np.minimum(t_event, t_cens), 1)
    event = (t_event <= t_cens).astype(int)
    return eta, time, event, 1 - np.exp(-(HORIZON / 60) * np.exp(eta))


@pytest.fixture(scope="module")
def cohort():
    return _exponential_cohort()


def _lifelines_cox(columns: np.ndarray, time, event) -> tuple[CoxPHFitter, pd.DataFrame]:
    """lifelines' Cox (Efron ties) of the outcome censored at the horizon on ``columns``."""
    df = pd.DataFrame(columns, columns=[f"x{j}" for j in range(columns.shape[1])])
    df["T"] = np.minimum(time, HORIZON)
    df["E"] = ((event == 1) & (time <= HORIZON)).astype(int)
    return CoxPHFitter().fit(df, "T", "E"), df.drop(columns=["T", "E"])


def test_calibrated_risks_have_slope_one_and_ici_near_zero(cohort):
    _, time, event, true = cohort
    slope = calibration_slope(true, time, event, HORIZON)
    assert slope["slope_low"] < 1 < slope["slope_high"]
    assert slope["slope"] == pytest.approx(1, abs=0.1)
    assert slope["events"] == int(((time <= HORIZON) & (event == 1)).sum())
    sc = smoothed_calibration(true, time, event, HORIZON)
    assert sc.ici < 0.02 and sc.e50 <= sc.e90 <= sc.emax
    # the curve's pointwise CI covers the diagonal (the true curve) nearly everywhere
    c = sc.curve
    covered = (c.observed_low <= c.predicted) & (c.predicted <= c.observed_high)
    assert covered.mean() >= 0.9 and (c.observed_low < c.observed).all()


def test_halved_risks_are_under_predicted_by_the_expected_amount(cohort):
    _, time, event, true = cohort
    sc = smoothed_calibration(0.5 * true, time, event, HORIZON)
    assert sc.ici == pytest.approx(np.mean(true - 0.5 * true), abs=0.015)
    assert (sc.observed > 0.5 * true).all()
    assert (sc.curve.observed_low > sc.curve.predicted).all()


def test_over_spread_log_risk_gives_slope_one_half(cohort):
    eta, time, event, _ = cohort
    spread = 1 - np.exp(-(HORIZON / 60) * np.exp(2 * eta))
    slope = calibration_slope(spread, time, event, HORIZON)
    assert slope["slope"] == pytest.approx(0.5, abs=0.05)
    assert slope["slope_low"] < 0.5 < slope["slope_high"]


def test_slope_matches_lifelines_cox(cohort):
    eta, time, event, true = cohort
    predicted = 1 - np.exp(-(HORIZON / 60) * np.exp(1.3 * eta))
    got = calibration_slope(predicted, time, event, HORIZON, alpha=0.1)
    cph, _ = _lifelines_cox(np.log(-np.log(1 - predicted))[:, None], time, event)
    assert got["slope"] == pytest.approx(cph.params_.iloc[0], abs=1e-4)
    assert got["slope_se"] == pytest.approx(cph.standard_errors_.iloc[0], rel=1e-4)
    assert got["slope_high"] - got["slope"] == pytest.approx(norm.ppf(0.95) * got["slope_se"])


@pytest.mark.parametrize("n_knots", [3, 4])
def test_spline_fit_matches_lifelines_on_the_same_basis(cohort, n_knots):
    _, time, event, true = cohort
    predicted = np.clip(0.8 * true + 0.02, 0, 1)
    sc = smoothed_calibration(predicted, time, event, HORIZON, n_knots=n_knots,
                              grid=[0.05, 0.2, 0.4])
    x = np.log(-np.log(1 - predicted))
    knots = rcs_knots(x, n_knots)
    assert np.allclose(knots, np.quantile(x, {3: [.1, .5, .9], 4: [.05, .35, .65, .95]}[n_knots]))
    cph, cov = _lifelines_cox(rcs_basis(x, knots), time, event)
    want = 1 - cph.predict_survival_function(cov, times=[HORIZON]).to_numpy().ravel()
    np.testing.assert_allclose(sc.observed, want, atol=1e-4)
    err = np.abs(want - predicted)
    assert (sc.ici, sc.e50, sc.e90, sc.emax) == pytest.approx(
        (err.mean(), np.median(err), np.quantile(err, 0.9), err.max()), abs=1e-4)
    # the CI: delta method on log H(t | z) = log H0(t; beta) + z'beta, with the gradient in
    # beta by finite differences of a hand-written Breslow sum and lifelines' covariance
    tm, ev = np.minimum(time, HORIZON), (event == 1) & (time <= HORIZON)
    basis, z = rcs_basis(x, knots), rcs_basis(np.log(-np.log(1 - sc.curve.predicted)), knots)
    beta = cph.params_.to_numpy()

    def log_h(b: np.ndarray) -> np.ndarray:
        risk_set = (tm[None, :] >= tm[ev][:, None]) @ np.exp(basis @ b)
        return np.log((1 / risk_set).sum()) + z @ b

    grad = np.stack([(log_h(beta + h) - log_h(beta - h)) / 2e-6
                     for h in np.eye(beta.size) * 1e-6], axis=1)
    s0 = (tm[None, :] >= tm[ev][:, None]) @ np.exp(basis @ beta)
    var = (1 / s0 ** 2).sum() / (1 / s0).sum() ** 2 + np.einsum(
        "ij,jk,ik->i", grad, cph.variance_matrix_.to_numpy(), grad)
    high = 1 - np.exp(-np.exp(log_h(beta) + norm.ppf(0.975) * np.sqrt(var)))
    np.testing.assert_allclose(sc.curve.observed_high, high, rtol=1e-3)


def test_rcs_basis_is_linear_beyond_the_outer_knots():
    knots = np.array([-2.0, -1.0, 0.5, 1.0])
    x = np.r_[np.linspace(-5, -2, 7), np.linspace(1, 4, 7)]
    b = rcs_basis(x, knots)
    assert b.shape == (14, 3) and np.array_equal(b[:, 0], x)
    assert np.allclose(b[:7, 1:], 0)  # zero below the first knot
    assert np.allclose(np.diff(b[7:, 1:], 2, axis=0), 0)  # linear above the last
    assert rcs_basis(x, np.empty(0)).shape == (14, 1)
    assert rcs_knots(np.r_[np.zeros(200), 1.0]).size == 0  # collapsed knots: linear only


def test_too_few_events_are_not_estimated():
    time = np.r_[np.arange(1, MIN_EVENTS), np.full(50, 30.0)]
    event = np.r_[np.ones(MIN_EVENTS - 1), np.zeros(50)].astype(int)
    risk = np.linspace(0.05, 0.5, time.size)
    msg = f"not estimated: {MIN_EVENTS - 1} events before 24"
    with pytest.raises(CalibrationNotEstimated, match=msg):
        calibration_slope(risk, time, event, HORIZON)
    with pytest.raises(CalibrationNotEstimated, match=msg):
        smoothed_calibration(risk, time, event, HORIZON)
    event[-1] = 1
    time[-1] = 5.0  # one more event before the horizon: estimable
    assert calibration_slope(risk, time, event, HORIZON)["events"] == MIN_EVENTS
    with pytest.raises(CalibrationNotEstimated, match="nobody followed up to 40"):
        smoothed_calibration(risk, time, event, 40.0)


def test_bootstrap_ci_of_the_ici(cohort):
    _, time, event, true = cohort
    sc = smoothed_calibration(0.5 * true[:500], time[:500], event[:500], HORIZON, n_boot=20)
    assert sc.ici_low < sc.ici < sc.ici_high
    assert np.isnan(smoothed_calibration(true, time, event, HORIZON).summary()["ici_low"])


def test_calibration_plot_draws_smoothed_curves(tmp_path, cohort):
    _, time, event, true = cohort
    tables, curves = [], {}
    for h in (12.0, HORIZON):
        tables.append(calibration_table(true, time, event, h).assign(horizon=h))
        curves[h] = smoothed_calibration(true, time, event, h, grid=np.linspace(0.05, 0.6, 12)
                                         ).curve
    curves[12.0].iloc[3:5, 1:] = np.nan  # a curve with gaps still draws
    out = calibration_plot(pd.concat(tables), tmp_path / "cal.png", curves=curves)
    assert out.stat().st_size > 1000
    without = calibration_plot(pd.concat(tables), tmp_path / "plain.png")
    assert without.stat().st_size > 1000

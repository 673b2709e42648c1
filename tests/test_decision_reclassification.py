"""Decision curves (ecg_dan/metrics/decision.py) and reclassification NRI / IDI
(ecg_dan/metrics/reclassification.py) against independent computations: hand-written
textbook formulas on complete data, lifelines' Kaplan-Meier with censoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from ecg_dan.metrics.calibration import km_risk
from ecg_dan.metrics.cindex import UndefinedMetricError
from ecg_dan.metrics.decision import decision_curve, default_thresholds, km_event_rate
from ecg_dan.metrics.reclassification import (
    RECLASSIFICATION_KEYS,
    reclassification,
    reclassification_ci,
)
from ecg_dan.reporting.figures import decision_curve_plot


def _censored(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Continuous times (no ties) from two risk factors, uniform censoring; the old model
    knows x, the new one x and z; risks are the true ones by ``36`` of each model."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    true = rng.exponential(60 * np.exp(-(x + 0.7 * z)))
    cens = rng.uniform(20, 100, n)
    time, event = np.minimum(true, cens), (true <= cens).astype(float)
    old = 1 - np.exp(-36 / 60 * np.exp(x) * 1.2)
    new = 1 - np.exp(-36 / 60 * np.exp(x + 0.7 * z))
    return new, old, time, event, true


def _lifelines_risk(time: np.ndarray, event: np.ndarray, t: float) -> float:
    return float(1 - KaplanMeierFitter().fit(time, event).predict(t))


# ---------------------------------------------------------------- decision curve

def test_decision_curve_by_hand_without_censoring():
    # 8 people, horizon 10: events before 10 or event-free beyond it (nobody censored before)
    risk = [0.9, 0.7, 0.6, 0.4, 0.35, 0.2, 0.1, 0.05]
    time = [2, 5, 20, 8, 30, 25, 9, 40]
    event = [1, 1, 0, 1, 0, 0, 1, 0]
    got = decision_curve(risk, time, event, 10.0, thresholds=[0.3, 0.5])
    # threshold 0.3: positives = the first 5: TP 3 (0.9, 0.7, 0.4), FP 2; odds 3/7
    # threshold 0.5: positives = the first 3: TP 2, FP 1; odds 1
    assert list(got.n_positive) == [5, 3]
    np.testing.assert_allclose(got.net_benefit_model, [3 / 8 - 2 / 8 * 3 / 7, 2 / 8 - 1 / 8])
    # treat all: prevalence 4/8
    np.testing.assert_allclose(got.net_benefit_all, [0.5 - 0.5 * 3 / 7, 0.5 - 0.5])
    assert (got.net_benefit_none == 0).all()
    np.testing.assert_allclose(got.interventions_avoided_per_100,
                               (got.net_benefit_model - got.net_benefit_all)
                               / (got.threshold / (1 - got.threshold)) * 100)


def test_decision_curve_with_censoring_matches_lifelines():
    new, _, time, event, _ = _censored(300, seed=1)
    th = np.array([0.05, 0.2, 0.4, 0.6])
    got = decision_curve(new, time, event, 30.0, thresholds=th)
    for row in got.itertuples():
        pos = new >= row.threshold
        assert time[pos].max() >= 30.0  # the group is followed up to t: KM defined
        r = _lifelines_risk(time[pos], event[pos], 30.0)
        w = row.threshold / (1 - row.threshold)
        assert row.n_positive == pos.sum()
        assert row.net_benefit_model == pytest.approx(r * pos.mean() - (1 - r) * pos.mean() * w,
                                                      abs=1e-12)
        r_all = _lifelines_risk(time, event, 30.0)
        assert row.net_benefit_all == pytest.approx(r_all - (1 - r_all) * w, abs=1e-12)
        assert km_event_rate(time[pos], event[pos], 30.0) == pytest.approx(
            km_risk(time[pos], event[pos], 30.0)[0], abs=1e-12)


def test_treat_all_identity_perfect_predictor_and_guards():
    new, _, time, event, _ = _censored(200, seed=2)
    below = decision_curve(new, time, event, 30.0, thresholds=[new.min() / 2])
    assert below.net_benefit_model[0] == pytest.approx(below.net_benefit_all[0], abs=1e-12)
    # perfect predictor (no censoring before t): NB = prevalence at every threshold
    time = np.array([1.0, 2, 3, 4, 12, 15, 20, 30, 40, 50])
    event = np.array([1, 1, 1, 1, 0, 1, 0, 0, 1, 0])
    perfect = np.where((time <= 10) & (event == 1), 1.0, 0.0)
    got = decision_curve(perfect, time, event, 10.0, thresholds=[0.1, 0.5, 0.9])
    np.testing.assert_allclose(got.net_benefit_model, 0.4)  # 4 events by 10 among 10
    # beyond follow-up: NaN, not a number
    far = decision_curve(perfect + 0.0, time, event, 100.0, thresholds=[0.5])
    assert np.isnan(far.net_benefit_all[0])
    with pytest.raises(ValueError, match="thresholds"):
        decision_curve(perfect, time, event, 10.0, thresholds=[0.0, 0.5])
    th = default_thresholds(np.linspace(0, 0.3, 101))
    assert th[0] == 0.01 and th[-1] == pytest.approx(0.3) and np.allclose(np.diff(th), 0.01)


def test_decision_curve_plot(tmp_path):
    new, _, time, event, _ = _censored(200, seed=3)
    table = pd.concat([decision_curve(new, time, event, h).assign(horizon=h)
                       for h in (12.0, 36.0)], ignore_index=True)
    out = decision_curve_plot(table, tmp_path / "decision_curve.png", time_unit="months",
                              title="Decision curves")
    assert out.is_file() and out.stat().st_size > 10_000


# ---------------------------------------------------------------- NRI / IDI

def _textbook(new: np.ndarray, old: np.ndarray, case: np.ndarray) -> dict[str, float]:
    """Continuous NRI and IDI on complete data (Pencina et al. 2008, 2011)."""
    up, down = new > old, new < old
    nri_e = up[case].mean() - down[case].mean()
    nri_ne = down[~case].mean() - up[~case].mean()
    idi = (new[case].mean() - new[~case].mean()) - (old[case].mean() - old[~case].mean())
    return {"nri_events": nri_e, "nri_nonevents": nri_ne, "nri": nri_e + nri_ne, "idi": idi}


def test_nri_idi_equal_the_textbook_on_complete_data():
    new, old, _, _, true = _censored(80, seed=4)
    new[:5] = old[:5]  # ties move nobody
    t = 36.0
    case = true <= t
    time = np.where(case, true, np.maximum(true, t + 1))  # nobody censored before t
    got = reclassification(new, old, time, case.astype(float), t)
    want = _textbook(new, old, case)
    for k in RECLASSIFICATION_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_nri_idi_with_censoring_match_lifelines_and_the_uncensored_truth():
    new, old, time, event, true = _censored(600, seed=5)
    t = 36.0
    got = reclassification(new, old, time, event, t)
    # independent: lifelines KM of the up / down groups and of the censoring
    r = _lifelines_risk(time, event, t)
    parts = {}
    for name, mask in (("up", new > old), ("down", new < old)):
        rg, share = _lifelines_risk(time[mask], event[mask], t), mask.mean()
        parts[name] = (rg * share / r, (1 - rg) * share / (1 - r))
    assert got["nri_events"] == pytest.approx(parts["up"][0] - parts["down"][0], abs=1e-10)
    assert got["nri_nonevents"] == pytest.approx(parts["down"][1] - parts["up"][1], abs=1e-10)
    cens = KaplanMeierFitter().fit(time, 1 - event)
    case, control = (event == 1) & (time <= t), time > t
    g_before = cens.predict(time[case] - 1e-9).to_numpy()  # G(T_i-), times have no ties
    w = 1 / g_before
    slope = [np.sum(w * p[case]) / w.sum() - p[control].mean() for p in (new, old)]
    assert got["idi"] == pytest.approx(slope[0] - slope[1], abs=1e-10)
    # and both estimate what the complete data say (n = 600: within sampling error)
    truth = _textbook(new, old, true <= t)
    for k in RECLASSIFICATION_KEYS:
        assert got[k] == pytest.approx(truth[k], abs=0.08), (k, got[k], truth[k])


def test_nri_idi_antisymmetric_zero_for_identical_and_bootstrap_ci():
    new, old, time, event, _ = _censored(300, seed=6)
    ab, ba = reclassification(new, old, time, event, 36.0), reclassification(old, new, time,
                                                                             event, 36.0)
    for k in RECLASSIFICATION_KEYS:
        assert ab[k] == pytest.approx(-ba[k], abs=1e-12)
    assert all(v == 0 for v in reclassification(new, new, time, event, 36.0).values())
    with pytest.raises(UndefinedMetricError):
        reclassification(new, old, time, event, 500.0)  # nobody followed that long
    ci = reclassification_ci(new, old, time, event, 36.0, n_boot=60, seed=1)
    assert set(ci) == set(RECLASSIFICATION_KEYS)
    for k, c in ci.items():
        assert c.estimate == pytest.approx(ab[k]) and c.low <= c.estimate <= c.high, k
    assert ci["nri"].low > 0 and ci["idi"].low > 0  # the new model carries z, the old does not

"""Survival metrics against frozen lifelines / scikit-survival reference values (tests/reference,
written by tests/reference/make_fixtures.py; no import of those libraries), against the live
libraries where they are installed (those tests skip otherwise), input validation, and bootstrap
CI behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ecg_dan.metrics import (
    HarrellCIndex,
    UndefinedMetricError,
    antolini_cindex,
    bootstrap_ci,
    breslow_baseline,
    brier_score,
    censoring_km,
    concordance_counts,
    harrell_cindex,
    integrated_brier_score,
    kaplan_meier,
    survival_curves,
    time_dependent_auc,
    uno_cindex,
)

REFERENCE = sorted((Path(__file__).parent / "reference").glob("survival_*.json"))


def _reference(path: Path) -> tuple[SimpleNamespace, dict]:
    """Inputs (as float arrays; events 0/1) and expected values of one frozen fixture."""
    doc = json.loads(path.read_text())
    inp = {k: np.asarray(v, dtype=float) for k, v in doc["inputs"].items()}
    return SimpleNamespace(**inp), doc["expected"]


def _lifelines_cindex():
    return pytest.importorskip("lifelines.utils").concordance_index


def _sksurv():
    """scikit-survival's metrics, estimators and Surv for the live comparisons."""
    metrics = pytest.importorskip("sksurv.metrics")
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.nonparametric import CensoringDistributionEstimator
    from sksurv.util import Surv

    return SimpleNamespace(metrics=metrics, Surv=Surv, CoxPH=CoxPHSurvivalAnalysis,
                           CensoringKM=CensoringDistributionEstimator)


# ---------------------------------------------------------------- frozen reference fixtures


def test_reference_fixtures_are_present() -> None:
    assert len(REFERENCE) == 4, "run: PYTHONPATH=. python tests/reference/make_fixtures.py"
    for path in REFERENCE:
        doc = json.loads(path.read_text())
        assert {"lifelines", "scikit-survival", "torchsurv"} <= set(doc["libraries"])


# The fixtures hold 13 significant digits; every value below is a reference library's output.
REL = 1e-11


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_harrell_cindex_and_counts(path: Path) -> None:
    x, exp = _reference(path)
    assert harrell_cindex(x.test_time, x.test_risk, x.test_event) == pytest.approx(
        exp["harrell_test"], rel=REL)
    assert harrell_cindex(x.train_time, x.train_risk, x.train_event) == pytest.approx(
        exp["harrell_train"], rel=REL)
    assert list(concordance_counts(x.test_time, x.test_risk, x.test_event)) == exp[
        "harrell_counts_test"]


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_uno_cindex(path: Path) -> None:
    x, exp = _reference(path)
    train = (x.train_time, x.train_event, x.test_time, x.test_event, x.test_risk)
    assert uno_cindex(*train) == pytest.approx(exp["uno"], rel=REL)
    assert uno_cindex(*train, tau=float(x.tau)) == pytest.approx(exp["uno_tau"], rel=REL)


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_time_dependent_auc(path: Path) -> None:
    x, exp = _reference(path)
    auc, mean = time_dependent_auc(x.train_time, x.train_event, x.test_time, x.test_event,
                                   x.test_risk, x.auc_times)
    np.testing.assert_allclose(auc, exp["td_auc"], rtol=REL, atol=0)
    assert mean == pytest.approx(exp["td_auc_mean"], rel=REL)


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_brier_and_integrated_brier_score(path: Path) -> None:
    """Brier score and IBS on scikit-survival's Breslow survival matrix (an input of the
    fixture), against sksurv.metrics.brier_score / integrated_brier_score on that matrix."""
    x, exp = _reference(path)
    args = (x.train_time, x.train_event, x.test_time, x.test_event, x.surv, x.brier_times)
    np.testing.assert_allclose(brier_score(*args), exp["brier"], rtol=REL, atol=0)
    assert integrated_brier_score(*args) == pytest.approx(exp["ibs"], rel=REL)


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_breslow_baseline_and_survival_curves(path: Path) -> None:
    x, exp = _reference(path)
    base = breslow_baseline(x.train_risk, x.train_time, x.train_event)
    np.testing.assert_array_equal(base.times, exp["breslow_times"])
    np.testing.assert_allclose(base.cumhaz_values, exp["breslow_cumhaz"], rtol=REL, atol=0)
    # the fixture's survival matrix is scikit-survival's Breslow survival rounded to 6 decimals
    curves = survival_curves(base, x.test_risk, x.brier_times)
    np.testing.assert_allclose(curves, x.surv, rtol=0, atol=5e-7 + 1e-12)


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_kaplan_meier_and_censoring_km(path: Path) -> None:
    x, exp = _reference(path)
    np.testing.assert_allclose(kaplan_meier(x.train_time, x.train_event)(x.km_grid), exp["km"],
                               rtol=REL, atol=0)
    np.testing.assert_allclose(censoring_km(x.train_time, x.train_event)(x.km_grid),
                               exp["censoring_km"], rtol=REL, atol=0)


# ----------------------------------------------------------------------------- Harrell's C


def _random_survival(rng: np.random.Generator, n: int):
    """Integer times (ties), coarsely rounded risks (ties), random censoring rate."""
    time = rng.integers(1, rng.integers(2, 20), size=n).astype(float)
    risk = np.round(rng.normal(size=n), int(rng.integers(0, 2)))
    event = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(float)
    return time, risk, event


def test_harrell_matches_lifelines_on_random_data_with_ties() -> None:
    concordance_index = _lifelines_cindex()
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        time, risk, event = _random_survival(rng, int(rng.integers(2, 80)))
        if event.sum() == 0:
            continue
        try:
            ref = concordance_index(time, -risk, event)
        except ZeroDivisionError:
            with pytest.raises(UndefinedMetricError):
                harrell_cindex(time, risk, event)
            continue
        assert harrell_cindex(time, risk, event) == pytest.approx(ref, abs=1e-9)
        checked += 1
    assert checked > 250


def test_harrell_matches_lifelines_large_with_continuous_and_tied_values() -> None:
    concordance_index = _lifelines_cindex()
    rng = np.random.default_rng(1)
    n = 20_000
    time = np.round(rng.exponential(size=n), 2)
    risk = np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n))  # 30% share one risk value
    event = rng.random(n) < 0.2
    ref = concordance_index(time, -risk, event)
    assert harrell_cindex(time, risk, event) == pytest.approx(ref, abs=1e-9)


TIE_CASES = [
        # event and censoring at the same time are comparable; event ranked first
        ([1.0, 1.0], [2.0, 1.0], [1, 0], 1.0),
        ([1.0, 1.0], [1.0, 2.0], [1, 0], 0.0),
        # tied risk counts 1/2
        ([1.0, 2.0], [3.0, 3.0], [1, 1], 0.5),
        # two events at the same time are not comparable with each other: only (0,2),(1,2)
        ([1.0, 1.0, 2.0], [5.0, 0.0, 1.0], [1, 1, 0], 0.5),
        # censored earlier than an event: not comparable; only (1, 2)
        ([1.0, 2.0, 3.0], [0.0, 2.0, 1.0], [0, 1, 0], 1.0),
]


@pytest.mark.parametrize(("time", "risk", "event", "expected"), TIE_CASES)
def test_harrell_tie_conventions(time, risk, event, expected) -> None:
    t, r, e = (np.asarray(a, dtype=float) for a in (time, risk, event))
    assert harrell_cindex(t, r, e) == pytest.approx(expected)


def test_harrell_tie_convention_cases_are_lifelines_conventions() -> None:
    concordance_index = _lifelines_cindex()
    for time, risk, event, expected in TIE_CASES:
        t, r, e = (np.asarray(a, dtype=float) for a in (time, risk, event))
        assert concordance_index(t, -r, e) == pytest.approx(expected)


def test_harrell_counts_on_hand_example() -> None:
    # comparable pairs (earlier member has the event): (0,1), (0,2), (0,3), (2,3)
    # concordant (earlier has higher risk): (0,1); tied risk: (0,2); discordant: (0,3), (2,3)
    time = [1.0, 2.0, 3.0, 4.0]
    risk = [2.0, 1.0, 2.0, 3.0]
    event = [1, 0, 1, 0]
    assert concordance_counts(time, risk, event) == (1, 1, 4)
    assert harrell_cindex(time, risk, event) == pytest.approx(1.5 / 4)


def test_harrell_errors() -> None:
    with pytest.raises(UndefinedMetricError, match="comparable"):
        harrell_cindex([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(UndefinedMetricError):
        harrell_cindex([2.0, 2.0], [0.1, 0.2], [1, 1])  # tied event times only
    with pytest.raises(UndefinedMetricError):
        harrell_cindex([], [], [])  # no pairs
    assert concordance_counts([], [], []) == (0, 0, 0)
    # the shared validator's words (data_modules.protocol.survival_arrays.check_survival)
    with pytest.raises(ValueError, match=r"^risk has 1 non-finite value"):
        harrell_cindex([1.0, 2.0], [np.nan, 0.2], [1, 0])
    with pytest.raises(ValueError, match=r"^risk has 1 non-finite value"):
        harrell_cindex([1.0, 2.0], [np.inf, 0.2], [1, 0])
    with pytest.raises(ValueError, match=r"^time has 1 non-finite value\(s\) \(at positions \[1\]"):
        harrell_cindex([1.0, np.inf], [0.1, 0.2], [1, 0])  # refused since the shared validator
    with pytest.raises(ValueError, match=r"^event must hold only 0/1, found \[0.5\]"):
        harrell_cindex([1.0, 2.0], [0.1, 0.2], [1, 0.5])
    with pytest.raises(ValueError, match=r"^time, event, risk lengths differ: 2, 2, 1"):
        harrell_cindex([1.0, 2.0], [0.1], [1, 0])
    with pytest.raises(ValueError, match="1-dimensional"):
        harrell_cindex(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)))


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_harrell_metric_accumulates_batches_and_merges_states(path: Path) -> None:
    x, exp = _reference(path)
    time, risk, event = x.train_time, x.train_risk, x.train_event
    n = time.shape[0]
    ref = exp["harrell_train"]  # lifelines, frozen
    t, r, e = torch.tensor(time), torch.tensor(risk, dtype=torch.float32), torch.tensor(event)
    metric = HarrellCIndex()
    for idx in torch.arange(n).split(5):
        metric.update(r[idx], t[idx], e[idx])
    # float32 risks: the fixture's risks (<= 4 decimals, |r| < 10) keep their order and ties
    assert metric.compute().item() == pytest.approx(ref, rel=REL)
    # merging two metrics (what DDP sync does with the cat states) equals the pooled value
    a, b = HarrellCIndex(), HarrellCIndex()
    a.update(torch.tensor(risk[: n // 2]), t[: n // 2], e[: n // 2])
    b.update(torch.tensor(risk[n // 2 :]), t[n // 2 :], e[n // 2 :])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(ref, rel=REL)
    assert all(fx is not None for fx in a._reductions.values())  # synced on compute
    metric.reset()
    metric.update(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    with pytest.raises(UndefinedMetricError):
        metric.compute()


# ------------------------------------------------------------- IPCW metrics (scikit-survival)


def _cox_data(rng: np.random.Generator, n: int, coef=(0.8, -0.5, 0.3)):
    x = rng.normal(size=(n, 3))
    lp = x @ np.asarray(coef)
    t_event = np.ceil(rng.exponential(np.exp(-lp)) * 20)  # integer times -> ties
    t_cens = np.ceil(rng.uniform(0, 40, n))
    return x, np.minimum(t_event, t_cens), t_event <= t_cens


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(3)
    x_tr, t_tr, e_tr = _cox_data(rng, 400)
    x_te, t_te, e_te = _cox_data(rng, 250)
    return x_tr, t_tr, e_tr, x_te, t_te, e_te


def test_censoring_km_matches_sksurv(split) -> None:
    sk = _sksurv()
    _, t_tr, e_tr, _, t_te, _ = split
    ref = sk.CensoringKM().fit(sk.Surv.from_arrays(e_tr, t_tr))
    grid = np.unique(np.r_[t_te[t_te <= t_tr.max()], 0.5, 3.5])
    np.testing.assert_allclose(censoring_km(t_tr, e_tr)(grid), ref.predict_proba(grid), atol=1e-12)


def test_kaplan_meier_matches_lifelines(split) -> None:
    KaplanMeierFitter = pytest.importorskip("lifelines").KaplanMeierFitter
    _, t_tr, e_tr, *_ = split
    kmf = KaplanMeierFitter().fit(t_tr, e_tr)
    grid = np.linspace(0, t_tr.max(), 57)
    np.testing.assert_allclose(
        kaplan_meier(t_tr, e_tr)(grid), kmf.survival_function_at_times(grid).to_numpy(), atol=1e-12
    )


@pytest.mark.parametrize("tau", [None, 15.0])
def test_uno_cindex_matches_sksurv(split, tau) -> None:
    sk = _sksurv()
    _, t_tr, e_tr, x_te, t_te, e_te = split
    risk = np.round(x_te @ np.array([0.8, -0.5, 0.3]), 1)  # ties in risk
    keep = t_te <= t_tr.max()  # sksurv needs test event times within training follow-up
    ref = sk.metrics.concordance_index_ipcw(
        sk.Surv.from_arrays(e_tr, t_tr), sk.Surv.from_arrays(e_te[keep], t_te[keep]), risk[keep],
        tau=tau,
    )[0]
    got = uno_cindex(t_tr, e_tr, t_te[keep], e_te[keep], risk[keep], tau=tau)
    assert got == pytest.approx(ref, abs=1e-9)
    # and it is not just Harrell's C in disguise
    assert got != pytest.approx(harrell_cindex(t_te[keep], risk[keep], e_te[keep]), abs=1e-6)


def test_uno_without_censoring_equals_harrell() -> None:
    # G == 1 when nothing is censored in training: all weights 1 -> Harrell's C
    concordance_index = _lifelines_cindex()
    rng = np.random.default_rng(4)
    t_tr = rng.integers(1, 30, 100).astype(float)
    t_te = rng.integers(1, 29, 80).astype(float)
    e_te = rng.random(80) < 0.5
    risk = rng.normal(size=80)
    got = uno_cindex(t_tr, np.ones(100), t_te, e_te, risk)
    assert got == pytest.approx(concordance_index(t_te, -risk, e_te), abs=1e-12)


def test_time_dependent_auc_matches_sksurv(split) -> None:
    sk = _sksurv()
    _, t_tr, e_tr, x_te, t_te, e_te = split
    keep = t_te <= t_tr.max()
    t_te, e_te = t_te[keep], e_te[keep]
    risk = np.round(x_te[keep] @ np.array([0.8, -0.5, 0.3]), 1)
    horizons = np.array([3.0, 8.0, 15.0])
    ref_auc, ref_mean = sk.metrics.cumulative_dynamic_auc(
        sk.Surv.from_arrays(e_tr, t_tr), sk.Surv.from_arrays(e_te, t_te), risk, horizons
    )
    auc, mean = time_dependent_auc(t_tr, e_tr, t_te, e_te, risk, horizons)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-9)
    assert mean == pytest.approx(ref_mean, abs=1e-9)
    single, single_mean = time_dependent_auc(t_tr, e_tr, t_te, e_te, risk, [8.0])
    assert single_mean == pytest.approx(ref_auc[1], abs=1e-9)
    with pytest.raises(ValueError, match="follow-up"):
        time_dependent_auc(t_tr, e_tr, t_te, e_te, risk, [t_te.max()])


def test_td_auc_and_brier_defined_when_a_test_event_lies_beyond_training(split) -> None:
    # scikit-survival evaluates G at every test event and raises for one beyond the training
    # follow-up; it never enters the metrics at earlier horizons (it is a control there), so
    # the reference is scikit-survival with that event marked censored.
    sk = _sksurv()
    _, t_tr, e_tr, x_te, t_te, e_te = split
    keep = t_te <= t_tr.max()
    t_te, e_te = np.r_[t_te[keep], t_tr.max() + 5], np.r_[e_te[keep], True]
    risk = np.r_[x_te[keep] @ np.array([0.8, -0.5, 0.3]), 0.0]
    y_tr = sk.Surv.from_arrays(e_tr, t_tr)
    horizons = np.array([4.0, 12.0])
    with pytest.raises(ValueError):
        sk.metrics.cumulative_dynamic_auc(y_tr, sk.Surv.from_arrays(e_te, t_te), risk, horizons)
    e_ref = e_te.copy()
    e_ref[-1] = False
    y_ref = sk.Surv.from_arrays(e_ref, t_te)
    ref_auc, ref_mean = sk.metrics.cumulative_dynamic_auc(y_tr, y_ref, risk, horizons)
    auc, mean = time_dependent_auc(t_tr, e_tr, t_te, e_te, risk, horizons)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    assert mean == pytest.approx(ref_mean, abs=1e-12)
    surv = np.clip(0.9 - 0.01 * risk[:, None] - 0.02 * horizons[None, :], 0, 1)
    _, ref_bs = sk.metrics.brier_score(y_tr, y_ref, surv, horizons)
    np.testing.assert_allclose(
        brier_score(t_tr, e_tr, t_te, e_te, surv, horizons), ref_bs, atol=1e-12
    )


def test_breslow_baseline_matches_sksurv_and_lifelines(split) -> None:
    sk = _sksurv()
    CoxPHFitter = pytest.importorskip("lifelines").CoxPHFitter
    x_tr, t_tr, e_tr, x_te, *_ = split
    cox = sk.CoxPH().fit(x_tr, sk.Surv.from_arrays(e_tr, t_tr))
    base = breslow_baseline(cox.predict(x_tr), t_tr, e_tr)
    np.testing.assert_array_equal(base.times, cox.cum_baseline_hazard_.x)
    np.testing.assert_allclose(base.cumhaz_values, cox.cum_baseline_hazard_.y, rtol=1e-10)
    grid = np.arange(1.0, 30.0)
    ref_surv = np.stack([fn(grid) for fn in cox.predict_survival_function(x_te)])
    np.testing.assert_allclose(survival_curves(base, cox.predict(x_te), grid), ref_surv,
                               atol=1e-10)

    # lifelines centres the covariates: its baseline belongs to the centred linear predictor
    import pandas as pd

    frame = pd.DataFrame(x_tr, columns=["a", "b", "c"]).assign(T=t_tr, E=e_tr.astype(int))
    cph = CoxPHFitter(baseline_estimation_method="breslow").fit(frame, "T", "E")
    lp = (x_tr - x_tr.mean(axis=0)) @ cph.params_.to_numpy()
    ll_base = cph.baseline_cumulative_hazard_.iloc[:, 0]
    ours = breslow_baseline(lp, t_tr, e_tr)(ll_base.index.to_numpy(float))
    np.testing.assert_allclose(ours, ll_base.to_numpy(), rtol=1e-8)


def test_breslow_step_function_edges() -> None:
    base = breslow_baseline([0.0, 0.0, 0.0], [2.0, 4.0, 6.0], [1, 0, 1])
    # H0(2) = 1/3, flat at 4 (censored), H0(6) = 1/3 + 1/1
    np.testing.assert_allclose(base([1.0, 2.0, 5.0, 6.0, 9.0]), [0, 1 / 3, 1 / 3, 4 / 3, 4 / 3])
    np.testing.assert_allclose(base.baseline_survival([2.0]), np.exp([-1 / 3]))


def test_brier_and_integrated_brier_match_sksurv(split) -> None:
    sk = _sksurv()
    x_tr, t_tr, e_tr, x_te, t_te, e_te = split
    keep = t_te <= t_tr.max()
    x_te, t_te, e_te = x_te[keep], t_te[keep], e_te[keep]
    cox = sk.CoxPH().fit(x_tr, sk.Surv.from_arrays(e_tr, t_tr))
    base = breslow_baseline(cox.predict(x_tr), t_tr, e_tr)
    times = np.arange(2.0, 25.0, 1.5)
    surv = survival_curves(base, cox.predict(x_te), times)
    y_tr, y_te = sk.Surv.from_arrays(e_tr, t_tr), sk.Surv.from_arrays(e_te, t_te)
    _, ref_bs = sk.metrics.brier_score(y_tr, y_te, surv, times)
    np.testing.assert_allclose(brier_score(t_tr, e_tr, t_te, e_te, surv, times), ref_bs, atol=1e-12)
    ref_ibs = sk.metrics.integrated_brier_score(y_tr, y_te, surv, times)
    got = integrated_brier_score(t_tr, e_tr, t_te, e_te, surv, times)
    assert got == pytest.approx(ref_ibs, abs=1e-9)


def test_integrated_brier_score_properties(split) -> None:
    """Library-free: a perfect step prediction scores 0, the uninformative S = 0.5 scores 1/4,
    and with one horizon pair the IBS is the trapezoid of the two Brier scores."""
    _, t_tr, e_tr, _, t_te, e_te = split
    keep = t_te <= t_tr.max()
    t_te, e_te = t_te[keep], e_te[keep]
    times = np.array([3.0, 9.0, 15.0])
    # S = 1 while a sample is still known to be alive at t, 0 once it had its event
    perfect = (t_te[:, None] > times[None, :]).astype(float)
    assert integrated_brier_score(t_tr, e_tr, t_te, e_te, perfect, times) == pytest.approx(
        0.0, abs=1e-15)
    # S = 0.5: each case and control adds 1/4 with IPCW weight; without censoring in training
    # (G = 1) and in the test sample, the Brier score is exactly 1/4 at every horizon
    all_ev = np.ones_like(e_te)
    half = np.full((t_te.shape[0], times.shape[0]), 0.5)
    assert integrated_brier_score(np.r_[t_tr, 99.0], np.ones(t_tr.shape[0] + 1), t_te, all_ev,
                                  half, times) == pytest.approx(0.25, rel=1e-14)
    bs = brier_score(t_tr, e_tr, t_te, e_te, perfect[:, :2] * 0.7, times[:2])
    assert integrated_brier_score(t_tr, e_tr, t_te, e_te, perfect[:, :2] * 0.7, times[:2]) == (
        pytest.approx((bs[0] + bs[1]) / 2, rel=1e-14))
    with pytest.raises(ValueError, match="two time points"):
        integrated_brier_score(t_tr, e_tr, t_te, e_te, perfect[:, :1], times[:1])


def test_survival_metrics_validate_inputs_with_the_shared_validator(split) -> None:
    """Every survival metric refuses bad (time, event, risk) with check_survival's words and
    names the sample (train / test) it is about."""
    _, t_tr, e_tr, _, t_te, e_te = split
    keep = t_te <= t_tr.max()
    t_te, e_te = t_te[keep], e_te[keep]
    risk = np.linspace(-1, 1, t_te.shape[0])
    t_nan = t_te.copy()
    t_nan[2] = np.nan
    e_bad = e_tr.astype(float)
    e_bad[0] = 2.0
    r_inf = risk.copy()
    r_inf[1] = np.inf
    with pytest.raises(ValueError, match=r"^test: time has 1 non-finite value\(s\) "
                                         r"\(at positions \[2\]\)"):
        uno_cindex(t_tr, e_tr, t_nan, e_te, risk)
    with pytest.raises(ValueError, match=r"^train: event must hold only 0/1, found \[2.0\]"):
        time_dependent_auc(t_tr, e_bad, t_te, e_te, risk, [5.0])
    with pytest.raises(ValueError, match=r"^test: risk has 1 non-finite value"):
        uno_cindex(t_tr, e_tr, t_te, e_te, r_inf)
    with pytest.raises(ValueError, match=r"^test: time, event, risk lengths differ: "
                                         rf"{t_te.shape[0]}, {t_te.shape[0]}, 3"):
        time_dependent_auc(t_tr, e_tr, t_te, e_te, risk[:3], [5.0])
    surv = np.full((t_te.shape[0], 2), 0.5)
    with pytest.raises(ValueError, match=r"^test: time has 1 non-finite"):
        brier_score(t_tr, e_tr, t_nan, e_te, surv, [3.0, 6.0])
    with pytest.raises(ValueError, match=r"^train: time has 1 non-finite"):
        integrated_brier_score(np.r_[t_tr[:-1], np.inf], e_tr, t_te, e_te, surv, [3.0, 6.0])
    with pytest.raises(ValueError, match=r"^train: risk has 1 non-finite"):
        breslow_baseline(np.r_[np.nan, np.zeros(t_tr.shape[0] - 1)], t_tr, e_tr)
    with pytest.raises(ValueError, match=r"^train: time, event, risk lengths differ"):
        breslow_baseline(np.zeros(3), t_tr, e_tr)
    with pytest.raises(ValueError, match=r"^kaplan_meier: survival data is empty"):
        kaplan_meier([], [])
    with pytest.raises(ValueError, match=r"^train: survival data is empty"):
        censoring_km([], [])
    with pytest.raises(ValueError, match=r"^kaplan_meier: time, event lengths differ: 2, 1"):
        kaplan_meier([1.0, 2.0], [1])


# --------------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_ci_matches_normal_theory() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(loc=2.0, scale=3.0, size=2000)
    est, lo, hi = bootstrap_ci(np.mean, x, n_boot=1000, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert est == pytest.approx(x.mean())
    assert lo < est < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (est - lo) == pytest.approx(hi - est, rel=0.25)


def test_bootstrap_cindex_ci_contains_estimate_narrows_and_is_deterministic() -> None:
    rng = np.random.default_rng(6)

    def sample(n: int):
        x = rng.normal(size=n)
        t = rng.exponential(np.exp(-x))
        c = rng.exponential(2.0, size=n)
        return x, np.minimum(t, c), (t <= c).astype(float)

    def metric(r, t, e):
        return harrell_cindex(t, r, e)

    small = sample(150)
    large = sample(2400)
    res_small = bootstrap_ci(metric, *small, n_boot=300, seed=3)
    res_large = bootstrap_ci(metric, *large, n_boot=300, seed=3)
    for est, lo, hi in (res_small, res_large):
        assert lo <= est <= hi
    # the estimate is the metric on the original data, not the mean of the replicates
    assert res_large.estimate == metric(*large)
    assert res_large.estimate != np.mean(res_large.replicates)
    assert (res_large.high - res_large.low) < 0.5 * (res_small.high - res_small.low)
    again = bootstrap_ci(metric, *small, n_boot=300, seed=3)
    assert tuple(again) == tuple(res_small)
    assert tuple(bootstrap_ci(metric, *small, n_boot=300, seed=4)) != tuple(res_small)


def test_bootstrap_skips_undefined_resamples_and_stratifies() -> None:
    rng = np.random.default_rng(7)
    n = 30
    risk = rng.normal(size=n)
    time = np.arange(1.0, n + 1)
    event = np.zeros(n)
    event[[3, 10]] = 1.0  # two early events -> many resamples without any event

    def metric(r, t, e):
        return harrell_cindex(t, r, e)

    res = bootstrap_ci(metric, risk, time, event, n_boot=400, seed=0)
    # P(no event in a resample) = (28/30)^30 ~ 0.126
    assert 20 < res.n_skipped < 90
    assert res.replicates.shape[0] == 400 - res.n_skipped

    seen: list[float] = []

    def counting(r, t, e):
        seen.append(e.sum())
        return harrell_cindex(t, r, e)

    strat = bootstrap_ci(counting, risk, time, event, n_boot=200, seed=0, stratify=event)
    assert strat.n_skipped == 0
    assert set(seen) == {2.0}  # every resample keeps the two events


def test_bootstrap_input_errors() -> None:
    with pytest.raises(ValueError, match="lengths"):
        bootstrap_ci(lambda a, b: 0.0, np.zeros(3), np.zeros(4))
    with pytest.raises(UndefinedMetricError, match="comparable"):  # undefined on the data
        bootstrap_ci(
            lambda r, t, e: harrell_cindex(t, r, e),
            np.zeros(5),
            np.arange(1.0, 6),
            np.zeros(5),
            n_boot=10,
        )


def test_bootstrap_raises_when_every_resample_is_undefined() -> None:
    calls = {"n": 0}

    def defined_only_once(a):
        calls["n"] += 1
        if calls["n"] > 1:
            raise UndefinedMetricError("undefined on resamples")
        return float(a.mean())

    with pytest.raises(UndefinedMetricError, match="all 5"):
        bootstrap_ci(defined_only_once, np.arange(10.0), n_boot=5)


# ---------------------------------------------------------------- Antolini's time-dependent C


def _antolini_direct(surv_at, time, event) -> float:
    """Antolini et al. (2005) pair by pair: (i, j) comparable when t_i < t_j and i is an
    event (or t_i == t_j, i an event, j censored); concordant when S_i(t_i) < S_j(t_i)."""
    conc = comp = 0
    for i in range(len(time)):
        if not event[i]:
            continue
        for j in range(len(time)):
            if j != i and (time[i] < time[j] or (time[i] == time[j] and not event[j])):
                comp += 1
                conc += surv_at(i, time[i]) < surv_at(j, time[i])
    return conc / comp


def _step_lookup(surv, grid):
    """S_i(t) of surv (n_times x n): the last grid time at or before t (the first before it)."""
    def at(i, t):
        k = 0
        for m, g in enumerate(grid):
            if g <= t:
                k = m
        return surv[k, i]
    return at


def test_antolini_on_a_hand_example() -> None:
    grid = np.array([1.0, 2.0, 3.0])
    surv = np.array([[0.5, 0.9, 0.8], [0.4, 0.6, 0.55], [0.3, 0.5, 0.2]])
    # (0,1), (0,2) at t=1 concordant; (1,2) at t=2: 0.6 > 0.55 discordant
    assert antolini_cindex(surv, grid, [1.0, 2.0, 3.0], [1, 1, 0]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("grid_kind", ["every_time", "coarse"])
def test_antolini_matches_the_direct_pairwise_computation(grid_kind) -> None:
    rng = np.random.default_rng(3)
    n = 60
    time = rng.integers(1, 15, n).astype(float)  # many tied times
    event = rng.random(n) < 0.5  # censoring, incl. censored/event ties at the same time
    grid = (np.unique(time) if grid_kind == "every_time" else np.array([0.5, 4.0, 9.0, 13.0]))
    hazard = np.exp(rng.normal(size=n))
    hazard[:10] = hazard[10:20]  # identical curves: tied predictions count as discordant
    surv = np.exp(-np.outer(grid, hazard) / 10.0)  # n_times x n, non-increasing in time
    got = antolini_cindex(surv, grid, time, event)
    want = _antolini_direct(_step_lookup(surv, grid), time, event)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.0 < got < 1.0


def test_fold_antolini_with_breslow_and_discrete_curves() -> None:
    import pandas as pd

    from ecg_dan.metrics.recalibration import CoxRecalibration
    from ecg_dan.reporting.absolute_models import DiscreteCurves, FoldModelRows
    from ecg_dan.reporting.fold_metrics import fold_antolini

    rng = np.random.default_rng(5)
    mk = lambda n: pd.DataFrame({"risk": rng.normal(size=n),  # noqa: E731
                                 "time": rng.integers(1, 20, n).astype(float),
                                 "event": (rng.random(n) < 0.4).astype(int)})
    train, test = mk(80), mk(40)
    base = breslow_baseline(train.risk, train.time, train.event)
    cal = CoxRecalibration(0.0, 1.0, base, len(train), int(train.event.sum()), False)
    cox = fold_antolini(FoldModelRows((0, 0), test, train, cal))
    grid = np.unique(train.time)
    surv = survival_curves(base, test.risk, grid).T
    want = _antolini_direct(_step_lookup(surv, grid), test.time.to_numpy(),
                            test.event.to_numpy())
    assert cox == pytest.approx(want, abs=1e-12)
    cuts = np.array([0.0, 5.0, 10.0, 15.0, 20.0])
    curves = np.exp(-np.outer(np.exp(test.risk), cuts) / 20.0)  # (n, K)
    disc = fold_antolini(FoldModelRows((0, 0), test, None, DiscreteCurves(curves, cuts)))
    want = _antolini_direct(_step_lookup(curves.T, cuts), test.time.to_numpy(),
                            test.event.to_numpy())
    assert disc == pytest.approx(want, abs=1e-12)


def test_antolini_refusals() -> None:
    with pytest.raises(ValueError, match="shape"):
        antolini_cindex(np.ones((2, 3)), [1.0, 2.0], [1.0, 2.0], [1, 0])
    with pytest.raises(ValueError, match="strictly increasing"):
        antolini_cindex(np.ones((2, 2)), [2.0, 1.0], [1.0, 2.0], [1, 0])
    with pytest.raises(UndefinedMetricError):
        antolini_cindex(np.ones((2, 2)), [1.0, 2.0], [1.0, 2.0], [0, 0])

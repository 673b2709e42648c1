"""Out-of-fold recalibration of Cox-type fold models (ecg_dan.metrics.recalibration,
ecg_dan.reporting.absolute_models) on a hand-built run directory with a known answer: fold
models whose log-risks are twice the true log-hazard (too spread) plus a constant of their
own. The recalibration must find slope ~0.5, use no held-out outcome, match lifelines fitted
on the rows it should use, and give out-of-fold risks whose O/E is ~1, where the training-fold
Breslow baseline of an over-spread log-risk is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_modules.protocol.splits import survival_cv_splits
from ecg_dan.metrics.calibration import km_risk
from ecg_dan.metrics.recalibration import MIN_SLOPE_EVENTS, fit_cox_recalibration
from ecg_dan.reporting.absolute_models import fold_models, risk_on_shared_scale
from ecg_dan.reporting.fold_metrics import absolute_risks
from ecg_dan.run_dir import RunDir

SEEDS = (1, 2)
HORIZONS = (12.0, 36.0)


def _cohort(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_ev = rng.exponential(60.0 * np.exp(-0.8 * x))  # hazard exp(0.8 x) / 60 per month
    t_c = rng.uniform(20, 80, size=n)
    return pd.DataFrame({"eid": np.arange(1000, 1000 + n), "x": 0.8 * x,
                         "time": np.round(np.minimum(t_ev, t_c), 2) + 0.01,
                         "event": (t_ev <= t_c).astype(int)})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[RunDir, pd.DataFrame, dict]:
    """Fold model (s, f) scores everyone 2 x the true log-hazard + its own constant."""
    coh = _cohort()
    rd = RunDir(tmp_path_factory.mktemp("recal"))
    splits = survival_cv_splits(coh.event.to_numpy(), 2, list(SEEDS), 0.2,
                                eids=coh.eid.to_numpy())
    rd.save_splits(splits, meta={"cache": "none.h5", "cohort": "hyp"})
    consts = {}
    for i, s in enumerate(splits):
        consts[(s.seed, s.fold)] = c = 3.0 * i - 2.0
        ff = rd.fold(s.seed, s.fold)
        ff.csv.parent.mkdir(parents=True, exist_ok=True)
        scored = coh.assign(risk=2.0 * coh.x + c, seed=s.seed, fold=s.fold)
        cols = ["eid", "seed", "fold", "risk", "time", "event"]
        scored[scored.eid.isin(s.test_eid)][cols].to_csv(ff.csv, index=False)
        trainval = np.concatenate([s.train_eid, s.val_eid])
        scored[scored.eid.isin(trainval)][cols].to_csv(ff.train_csv, index=False)
    return rd, coh, {"splits": splits, "consts": consts}


def test_slope_offset_pool_and_baseline_on_the_rows_they_should_use(run) -> None:
    from lifelines import CoxPHFitter

    rd, coh, info = run
    folds = fold_models(rd)
    by_key = {(s.seed, s.fold): s for s in info["splits"]}
    for f in folds:
        m = f.model
        split = by_key[f.key]
        # offset: the mean log-risk of the fold model's own training-fold rows
        assert m.offset == pytest.approx(f.train.risk.mean(), abs=1e-12)
        # pool: every fold model's validation rows, centred on its own offset, except the
        # rows this fold model holds out (their outcomes must not calibrate it)
        pool = []
        for g in folds:
            val = g.train[g.train.eid.isin(by_key[g.key].val_eid)]
            pool.append(val.assign(c=val.risk - g.train.risk.mean()))
        pool = pd.concat(pool)
        pool = pool[~pool.eid.isin(split.test_eid)]
        assert m.n == len(pool) and m.events == int(pool.event.sum())
        assert m.events >= MIN_SLOPE_EVENTS and m.slope_fitted
        cph = CoxPHFitter().fit(pd.DataFrame({"c": pool.c, "T": pool.time, "E": pool.event}),
                                "T", "E")
        assert m.slope == pytest.approx(cph.params_["c"], abs=1e-6)
        assert 0.4 < m.slope < 0.6  # the scores are twice the true log-hazard
        # the baseline: Breslow of slope * centred log-risk over the fold model's own
        # training-fold rows, written out
        own = f.train.assign(lp=m.slope * (f.train.risk - m.offset))
        probe = f.test.head(5)
        for t in HORIZONS:
            ev_t = np.unique(own.time[(own.event == 1) & (own.time <= t)])
            h0 = sum(((own.time == s) & (own.event == 1)).sum()
                     / np.exp(own.lp[own.time >= s]).sum() for s in ev_t)
            want = np.exp(-h0 * np.exp(m.slope * (probe.risk - m.offset)))
            np.testing.assert_allclose(m.survival(probe.risk, [t])[:, 0], want, rtol=1e-9)
        # on the shared scale the fold models' constants are gone: slope x true log-hazard
        shared = risk_on_shared_scale(f)
        x = coh.set_index("eid").loc[f.test.eid, "x"].to_numpy()
        assert np.corrcoef(shared, x)[0, 1] == pytest.approx(1.0, abs=1e-9)
        assert abs(np.mean(shared - 2 * m.slope * x)) < 0.15


def test_out_of_fold_absolute_risk_is_calibrated(run) -> None:
    rd, _, _ = run
    per = absolute_risks(fold_models(rd), HORIZONS)
    for t in HORIZONS:
        observed = km_risk(per.time, per.event, t)[0]
        assert observed / per[f"risk@{t:g}"].mean() == pytest.approx(1.0, abs=0.08)


def test_an_over_spread_log_risk_with_a_breslow_baseline_is_miscalibrated(run) -> None:
    """The defect this recalibration fixes (the demo's: log-risks five times too spread,
    slope 0.2): with slope 1 and the training fold's Breslow baseline, the same fold models
    under-predict at long horizons (high risks saturate at 1, the many low ones stay near 0)."""
    from ecg_dan.metrics.survival import breslow_baseline

    rd, _, _ = run
    rows = []
    for f in fold_models(rd):
        base = breslow_baseline(f.train.risk, f.train.time, f.train.event)
        rows.append(f.test.assign(p=1 - np.exp(-base.cumhaz(60.0) * np.exp(f.test.risk))))
    per = pd.concat(rows).groupby("eid").agg(p=("p", "mean"), time=("time", "first"),
                                             event=("event", "first"))
    assert km_risk(per.time, per.event, 60.0)[0] / per.p.mean() > 1.1


def test_too_few_events_hold_the_slope_at_one_and_no_events_refuse() -> None:
    coh = _cohort(200, seed=5)
    few = coh.iloc[:40]
    cal = fit_cox_recalibration(few.x * 2, few.time, few.event, offset=0.0)
    assert few.event.sum() < MIN_SLOPE_EVENTS and not cal.slope_fitted and cal.slope == 1.0
    with pytest.raises(ValueError, match="needs events"):
        fit_cox_recalibration(few.x, few.time, np.zeros(40, dtype=int), offset=0.0)

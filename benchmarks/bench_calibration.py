"""Out-of-fold calibration of a finished Cox run under the ways of giving it absolute risk.

Usage:
    python benchmarks/bench_calibration.py runs/demo_finetune [more run dirs]
    python benchmarks/bench_calibration.py runs/demo_finetune --new-people-seed 7

For each run, from its saved predictions only (nothing is retrained), the out-of-fold O/E
(Kaplan-Meier observed over mean predicted risk) and calibration slope at each of its
horizons, for:

- ``training-fold Breslow``: each fold model's Breslow baseline of its own training-fold
  log-risks (slope 1), what ecg-dan did before the recalibration;
- ``validation rows only``: slope and baseline both fitted on the inner-validation pool
  (:mod:`ecg_dan.reporting.absolute_models`);
- ``shipped``: what :func:`ecg_dan.reporting.absolute_models.fold_models` does (slope from
  the validation pool, baseline from the training-fold rows of ``slope * (eta - offset)``).

Also prints, per fold, the spread (sd) of the log-risks on training, validation and
held-out rows and the Cox slope of the outcome on the held-out rows' centred log-risk:
equal spreads with a slope far below 1 say the network's log-risks are too spread
everywhere (not over-fitted to its training rows).

``--new-people-seed S`` (synthetic runs): builds the run's twin again with
``data.synthetic_seed=S`` (new people of the same generator) under ``--root``, scores its
cohort with the run as new persons (``ecg_dan.predict``, every fold model each) and prints
the C-index, the share flagged high-risk against the run's ``top_fraction``, and O/E and
calibration slope at the run's horizons.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from ecg_dan.metrics.calibration import (
    CalibrationNotEstimated,
    calibration_slope,
    cox_fit,
    km_risk,
)
from ecg_dan.metrics.survival import breslow_baseline
from ecg_dan.reporting.absolute_models import fold_models
from ecg_dan.reporting.fold_metrics import absolute_risks
from ecg_dan.run_dir import RunDir


def _slope(centred: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    return float(cox_fit(centred[:, None], time, event.astype(bool), math.inf).beta[0])


def _row(per: pd.DataFrame, hz: list[float]) -> str:
    out = []
    for h in hz:
        p = per[f"risk@{h:g}"]
        oe = km_risk(per.time, per.event, h)[0] / p.mean()
        try:
            s = calibration_slope(p, per.time, per.event, h)["slope"]
        except CalibrationNotEstimated:
            s = math.nan
        out.append(f"{h:g}: O/E {oe:.2f} slope {s:.2f}")
    return "  ".join(out)


def bench(run_dir: str) -> None:
    rd = RunDir(run_dir)
    cfg = rd.load_config()
    folds = fold_models(rd)
    oof_max = max(f.test.time.max() for f in folds)
    hz = [float(h) for h in cfg.finetune.horizons if h < oof_max]
    print(f"\n{run_dir}: {len(folds)} fold models, horizons {hz} {cfg.data.time_unit}")
    naive, val_only = [], []
    for f in folds:
        test, train = f.test, f.train
        val = train[train.eid.isin(f.val_eid)]
        c = float(train.risk.mean())
        held = _slope(test.risk.to_numpy() - c, test.time.to_numpy(), test.event.to_numpy())
        print(f"  seed{f.key[0]} fold{f.key[1]}: log-risk sd train {train.risk.std():.2f} "
              f"val {val.risk.std():.2f} held-out {test.risk.std():.2f}; slope on held-out "
              f"rows {held:.2f}, shipped slope {f.model.slope:.2f} ({f.model.events} events)")
        base = breslow_baseline(train.risk, train.time, train.event)
        b = _slope(val.risk.to_numpy() - c, val.time.to_numpy(), val.event.to_numpy())
        vbase = breslow_baseline(b * (val.risk - c), val.time, val.event)
        for store, h0, slope in ((naive, base, 1.0), (val_only, vbase, b)):
            lp = slope * (test.risk.to_numpy() - (0.0 if store is naive else c))
            store.append(test[["eid", "seed", "fold", "time", "event"]].assign(**{
                f"risk@{h:g}": 1 - np.exp(-h0.cumhaz(h) * np.exp(lp)) for h in hz}))

    def per(rows: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(rows).groupby("eid").agg(
            {"time": "first", "event": "first", **{f"risk@{h:g}": "mean" for h in hz}})

    print(f"  {'training-fold Breslow':24s}{_row(per(naive), hz)}")
    print(f"  {'validation rows only':24s}{_row(per(val_only), hz)}")
    print(f"  {'shipped':24s}{_row(absolute_risks(folds, hz), hz)}")


def new_people(run_dir: str, seed: int, root: str) -> None:
    import h5py

    from data_modules.sources.ukb import select_cohort
    from ecg_dan.jobs.data import ukb_cache
    from ecg_dan.metrics.cindex import harrell_cindex
    from ecg_dan.predict import load_model

    rd = RunDir(run_dir)
    cfg = rd.load_config([f"data.root={root}", f"data.synthetic_seed={seed}"])
    cache = ukb_cache(cfg)
    rows = select_cohort(cache, str(cfg.finetune.cohort))
    with h5py.File(cache, "r") as f:
        med = f["median"][...][rows]
        time, event = f["time"][...][rows], f["event"][...][rows]
    model = load_model(run_dir)
    model.held_out = None  # none of them is in the run's cohort
    parts = [model.score(med[i:i + 256]) for i in range(0, len(med), 256)]
    s = {k: np.concatenate([p[k] for p in parts]) for k in ("log_risk", "risk", "high_risk",
                                                           "high_risk_share")}
    print(f"\n{run_dir} on new people ({cache.name}, cohort {cfg.finetune.cohort}: "
          f"{len(med)} participants, {int(event.sum())} events): C-index "
          f"{harrell_cindex(time, s['log_risk'], event):.3f}; flagged "
          f"{100 * s['high_risk'].mean():.1f}% (target {100 * model.top_fraction:g}%, mean "
          f"flag share {100 * s['high_risk_share'].mean():.1f}%)")
    per = pd.DataFrame({"time": time, "event": event,
                        **{f"risk@{h:g}": s["risk"][:, k] for k, h in enumerate(model.horizons)}})
    hz = [h for h in model.horizons if h < time.max() and per[f"risk@{h:g}"].notna().all()]
    print(f"  {'new people':24s}{_row(per, hz)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--new-people-seed", type=int, default=None)
    ap.add_argument("--root", default="data/new_people", help="where the new twin is built")
    args = ap.parse_args()
    for run in args.runs:
        bench(run)
        if args.new_people_seed is not None:
            new_people(run, args.new_people_seed, args.root)


if __name__ == "__main__":
    main()

"""Out-of-fold calibration of a finished Cox run under the ways of giving it absolute risk.

Usage:
    python benchmarks/bench_calibration.py runs/demo_finetune [more run dirs]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    for run in ap.parse_args().runs:
        bench(run)


if __name__ == "__main__":
    main()

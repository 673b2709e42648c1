"""The out-of-fold (OOF) prediction frame every report reads: its columns, its check, the
participant-by-seed layout of the bootstraps and the paper's risk groups.

OOF input: a DataFrame with columns ``eid, seed, fold, risk, time, event``: one row per
participant per seed, each participant held out exactly once per seed (repeated k-fold CV),
``risk`` = the model's log-risk (higher = earlier event).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from data_modules.protocol.survival_arrays import check_survival

REQUIRED_COLUMNS = ("eid", "seed", "fold", "risk", "time", "event")


def check_oof(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"OOF frame lacks columns {missing}; needs {list(REQUIRED_COLUMNS)}")
    check_survival(df["time"], df["event"], df["risk"], where="OOF predictions")
    if df.duplicated(["seed", "eid"]).any():
        raise ValueError("a participant appears more than once within a seed (held out twice?)")
    return df


def wide(df: pd.DataFrame) -> tuple[NDArray, NDArray, NDArray]:
    """(risk[n_eid, n_seed], time[n_eid], event[n_eid]) for resampling participants jointly."""
    risk = df.pivot(index="eid", columns="seed", values="risk")
    if risk.isna().any().any():
        raise ValueError("every participant must have a prediction for every seed")
    per_eid = df.groupby("eid")[["time", "event"]].agg(["min", "max"])
    for c in ("time", "event"):
        if not np.array_equal(per_eid[(c, "min")].to_numpy(), per_eid[(c, "max")].to_numpy()):
            raise ValueError(f"{c} of a participant differs between seeds")
    per_eid = per_eid.loc[risk.index]
    return (
        risk.to_numpy(float),
        per_eid[("time", "min")].to_numpy(float),
        per_eid[("event", "min")].to_numpy(float),
    )


def mean_risk_groups(df: pd.DataFrame, top_fraction: float) -> tuple[pd.DataFrame, float]:
    """The paper's risk groups: per participant (index ``eid``, sorted) the OOF log-risk
    averaged over seeds, ``time``, ``event`` and ``high`` (risk >= the (1 - top_fraction)
    quantile of those means); and that threshold."""
    g = df.groupby("eid").agg(
        risk=("risk", "mean"), time=("time", "first"), event=("event", "first")
    )
    thr = float(np.percentile(g["risk"].to_numpy(), 100.0 * (1.0 - top_fraction)))
    g["high"] = g["risk"].to_numpy() >= thr
    return g, thr


def high_risk_groups(
    df: pd.DataFrame, top_fraction: float, grouping: str
) -> tuple[NDArray, NDArray, NDArray]:
    """(time, event, is_high) per analysed unit; high = risk >= the (1 - top_fraction) quantile."""
    q = 100.0 * (1.0 - top_fraction)
    if grouping == "mean_risk":
        g, _ = mean_risk_groups(df, top_fraction)
        return g["time"].to_numpy(float), g["event"].to_numpy(float), g["high"].to_numpy()
    if grouping == "per_seed":
        thr = df.groupby("seed")["risk"].transform(lambda x: np.percentile(x.to_numpy(), q))
        high = (df["risk"] >= thr).to_numpy()
        return df["time"].to_numpy(float), df["event"].to_numpy(float), high
    raise ValueError(f"grouping must be 'mean_risk' or 'per_seed', got {grouping!r}")

"""Synthetic UK Biobank population and heart-failure outcomes with a known hazard.

Survival follows a Weibull proportional-hazards model
    h_i(t) = k t^(k-1) exp(eta_i),  t in years,
    eta_i = log(lambda_c(i)) + beta . x_i,
where x_i are ECG features visible in the median beat (QRS duration, LVH voltage, pathological Q
waves, ST depression, T inversion, AF, heart rate, QTc) plus age. `true_log_hazard` = eta_i, so
ranking by it is the oracle. lambda_c is a per-cohort baseline solved so that each cohort has its
target number of events given every participant's actual censoring time; censoring
is administrative (a fixed end-of-follow-up date, ECG dates uniform over 5.5 years), i.e.
independent and uniform between ~21 and ~87 months.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from data_modules.synthetic.settings import STANDARD_COEFS

# Targets (event fraction per cohort) of the two settings.
EVENT_TARGETS: dict[str, dict[str, float]] = {
    "paper": {"hyp": 0.015, "mi": 0.04},  # UKB-HYP 162/11,575; UKB-MI ~33/800 (docs/method.md s. 6)
    "dense": {"hyp": 0.30, "mi": 0.30},  # enough events for fast tests and smoke runs
}
WEIBULL_SHAPE = 1.2
FIRST_ECG = date(2015, 1, 1)
LAST_ECG = date(2020, 6, 30)
CENSOR_DATE = date(2022, 3, 31)  # 2,646 days (~87 months) after FIRST_ECG

# Log-hazard contributions of the standard twin (the hard twin: settings.HARD_COEFS).
HAZARD_COEFS: dict[str, float] = STANDARD_COEFS

# Label mix of the UK Biobank imaging population (per cohort), as synthetic class names.
_LABELS_GENERAL: dict[str, float] = {
    "NORM": 0.60, "STTC": 0.10, "LVH": 0.08, "1AVB": 0.05, "CRBBB": 0.04, "CLBBB": 0.025,
    "AFIB": 0.035, "IMI": 0.02, "AMI": 0.015, "LVH+1AVB": 0.01, "AFIB+STTC": 0.01,
    "CRBBB+1AVB": 0.01, "IMI+STTC": 0.01,
}
_LABELS_MI: dict[str, float] = {
    "IMI": 0.26, "AMI": 0.21, "IMI+AMI": 0.04, "IMI+1AVB": 0.02, "AMI+CRBBB": 0.02,
    "NORM": 0.17, "STTC": 0.09, "CLBBB": 0.05, "CRBBB": 0.04, "AFIB": 0.03, "AFIB+IMI": 0.02,
    "LVH": 0.03, "1AVB": 0.02,
}


def _norm(d: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    keys = list(d)
    p = np.array([d[k] for k in keys], dtype=float)
    return keys, p / p.sum()


def sample_population(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Participants: eid, age, sex (UKB coding: 1 male), cohort flags, ECG date, synthetic label.

    ~14 % have a prior MI (cohort `mi`, older, mostly men, MI morphology much more likely);
    ~90 % of the others and 70 % of the MI group have hypertension (cohort `hyp`); the rest are
    in neither cohort, as in a real extraction before cohort filtering.
    """
    eids = np.sort(rng.choice(np.arange(1_000_000, 6_030_000), size=n, replace=False))
    mi = rng.random(n) < 0.14
    hyp = np.where(mi, rng.random(n) < 0.70, rng.random(n) < 0.90)
    age = np.clip(rng.normal(63.5, 7.5, n) + 3.0 * mi, 45, 82).round()
    male = np.where(mi, rng.random(n) < 0.80, rng.random(n) < 0.47)
    g_keys, g_p = _norm(_LABELS_GENERAL)
    m_keys, m_p = _norm(_LABELS_MI)
    labels = np.where(mi, np.array(m_keys, dtype=object)[rng.choice(len(m_keys), n, p=m_p)],
                      np.array(g_keys, dtype=object)[rng.choice(len(g_keys), n, p=g_p)])
    span = (LAST_ECG - FIRST_ECG).days
    day = rng.integers(0, span + 1, n)
    ecg_date = pd.to_datetime(FIRST_ECG) + pd.to_timedelta(day, unit="D")
    return pd.DataFrame({"eid": eids, "age": age, "sex": male.astype(np.int8),
                         "hyp": hyp.astype(np.int8), "mi": mi.astype(np.int8),
                         "label": labels, "ecg_date": ecg_date})


def linear_predictor(features: pd.DataFrame | Mapping[str, np.ndarray],
                     coefs: Mapping[str, float] = HAZARD_COEFS) -> np.ndarray:
    """beta . x (without baseline) from a table with the `template_features` columns + age."""
    f = {k: np.asarray(features[k], dtype=float) for k in
         ("age", "qrs_ms", "sokolow_mv", "q_path", "st_min_mv", "t_inv_leads", "af", "hr_bpm",
          "qtc_ms")}
    c = coefs
    st_dep = np.clip(-f["st_min_mv"] - 0.03, 0, None)
    return (c["age"] * (f["age"] - 65) + c["qrs_ms"] * (f["qrs_ms"] - 100)
            + c["sokolow_mv"] * np.clip(f["sokolow_mv"] - 3.0, 0, None)
            + c["q_path"] * f["q_path"] + c["st_dep_mv"] * st_dep
            + c["t_inv_leads"] * f["t_inv_leads"] + c["af"] * f["af"]
            + c["hr_bpm"] * (f["hr_bpm"] - 70) + c["qtc_ms"] * (f["qtc_ms"] - 420))


def _baseline_for_count(thr: np.ndarray, m: int) -> float:
    """log(lambda) giving exactly m events in a group, given each member's event threshold.

    Member i has an event iff log(lambda) >= thr_i, so any value between the m-th and (m+1)-th
    smallest threshold gives m events; take the midpoint.
    """
    t = np.sort(thr)
    if t.size == 0:
        return 0.0
    if m <= 0:
        return float(t[0] - 1.0)
    if m >= t.size:
        return float(t[-1] + 1.0)
    return float(0.5 * (t[m - 1] + t[m]))


def draw_outcomes(rng: np.random.Generator, lp: np.ndarray, hyp: np.ndarray, mi: np.ndarray,
                  ecg_date: pd.Series | np.ndarray, events: str = "paper",
                  shape: float = WEIBULL_SHAPE, coefs: Mapping[str, float] = HAZARD_COEFS
                  ) -> tuple[pd.DataFrame, dict]:
    """Event times from the Weibull PH model; returns the outcome columns and calibration info.

    With unit-exponential draws e_i, T_i = (e_i / exp(eta_i))^(1/k). The baselines are solved on
    these draws so that each cohort has exactly round(target * size) events (the realised rate
    then matches the setting even for a few hundred participants, where a rate calibrated only
    in expectation would scatter by +-50 %). The `mi` cohort's baseline is solved first (its
    members use it even when also in `hyp`), then the baseline of everyone else so that the
    `hyp` cohort as a whole hits its target. Given the baselines the model is an ordinary PH
    model, so eta (`true_log_hazard`) is the oracle risk score.
    """
    if events not in EVENT_TARGETS:
        raise ValueError(f"events must be one of {sorted(EVENT_TARGETS)}, got {events!r}")
    target = EVENT_TARGETS[events]
    lp = np.asarray(lp, dtype=float)
    hyp, mi = np.asarray(hyp).astype(bool), np.asarray(mi).astype(bool)
    ecg = pd.to_datetime(pd.Series(ecg_date)).reset_index(drop=True)
    c_days = (pd.Timestamp(CENSOR_DATE) - ecg).dt.days.to_numpy()
    c_years = c_days / 365.25

    log_e = np.log(rng.exponential(1.0, lp.size))
    thr = log_e - lp - shape * np.log(c_years)  # event iff log(lambda) >= thr
    log_l_mi = _baseline_for_count(thr[mi], int(round(target["mi"] * mi.sum())))
    fixed = int(np.sum(thr[hyp & mi] <= log_l_mi))
    rest = hyp & ~mi
    want = int(round(target["hyp"] * hyp.sum())) - fixed
    log_l_other = _baseline_for_count(thr[rest], want) if rest.any() else log_l_mi
    eta = lp + np.where(mi, log_l_mi, log_l_other)

    t_days = np.exp((log_e - eta) / shape) * 365.25
    event = t_days <= c_days
    time_days = np.where(event, np.maximum(np.ceil(t_days), 1), c_days).astype(np.int64)
    end = ecg + pd.to_timedelta(time_days, unit="D")
    p_event = -np.expm1(-np.exp(eta) * c_years ** shape)
    info = {
        "events": events, "weibull_shape": shape, "time_unit_of_hazard": "years",
        "log_baseline_mi": log_l_mi, "log_baseline_other": log_l_other,
        "expected_rate_hyp": float(p_event[hyp].mean()) if hyp.any() else float("nan"),
        "expected_rate_mi": float(p_event[mi].mean()) if mi.any() else float("nan"),
        "realised_rate_hyp": float(event[hyp].mean()) if hyp.any() else float("nan"),
        "realised_rate_mi": float(event[mi].mean()) if mi.any() else float("nan"),
        "target": dict(target), "coefficients": dict(coefs),
    }
    out = pd.DataFrame({
        "ecg_date": ecg.dt.strftime("%Y-%m-%d"),
        "event": event.astype(np.int8),
        "time_days": time_days,
        "end_date": end.dt.strftime("%Y-%m-%d"),
        "true_log_hazard": np.round(eta, 6),
    })
    return out, info

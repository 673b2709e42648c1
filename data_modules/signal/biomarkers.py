"""The 15 ECG biomarkers of the paper's Cox baseline (docs/method.md section 7), derived from
the UK Biobank device measurements and the stored median beats.

Pure functions: a measurements table (columns :data:`data_modules.sources.ukb.MEASUREMENT_NAMES`,
NaN when absent), the participants' sex (UK Biobank coding, 1 male, 0 female) and, for the
morphology features, the (N, 12, 600) median beats in mV with R at ``R_INDEX``. Every rule
and threshold is listed in docs/data_formats.md ("ECG biomarkers").

Missing values (documented decision): a flag whose input is missing is 0 and its
``<name>_missing`` column is 1; the continuous ``ventricular_rate`` is left NaN here and
imputed with the training fold's median before it is standardised with the training fold's
mean and sd (:func:`fit_preprocessing`), so no held-out value leaks into the model.

Median-beat geometry: the QRS onset is found on the median itself (scanning back from R for
the point where the 12-lead absolute slope falls below 10% of its QRS maximum), the offset is
onset + the device ``QRSDuration`` (or, when that is missing, the same slope rule scanning
forward). The isoelectric reference of every lead is its value 10 ms before the QRS onset
(PR segment). The device's own fiducials (``QOnset``...) refer to the median before it is
re-centred on R in the cache and are not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from data_modules.signal.leads import BEAT_LEN, FS, LEADS, R_INDEX

FEATURES: tuple[str, ...] = (
    "ventricular_rate", "p_duration_gt120", "pr_gt200", "qrs_gt100", "prolonged_qt",
    "abnormal_p_axis", "left_axis_deviation", "right_axis_deviation", "abnormal_qrs_t_angle",
    "rbbb", "lbbb", "lvh", "low_voltage", "st_t_abnormality", "delayed_intrinsicoid",
)
BINARY_FEATURES: tuple[str, ...] = FEATURES[1:]
CONTINUOUS_FEATURES: tuple[str, ...] = FEATURES[:1]

# Thresholds (ms, degrees, mV); docs/data_formats.md lists the rules.
P_DURATION_MS = 120.0
PR_MS = 200.0
QRS_MS = 100.0
QTC_MALE_MS = 450.0
QTC_FEMALE_MS = 460.0
P_AXIS_NORMAL = (0.0, 75.0)
LAD_AXIS = -30.0
RAD_AXIS = 90.0
QRS_T_ANGLE = 100.0
BBB_QRS_MS = 120.0
RBBB_TERMINAL_MV = 0.05  # mean V1 in the last 40 ms of the QRS
SOKOLOW_MV = 3.5
LOW_VOLTAGE_LIMB_MV = 0.5
LOW_VOLTAGE_PRECORDIAL_MV = 1.0
ST_DEPRESSION_MV = 0.1
T_INVERSION_MV = 0.1
T_INVERSION_LEADS = 2
INTRINSICOID_MS = 50.0

_L = {n: i for i, n in enumerate(LEADS)}
LIMB = [_L[n] for n in ("I", "II", "III", "aVR", "aVL", "aVF")]
PRECORDIAL = [_L[n] for n in ("V1", "V2", "V3", "V4", "V5", "V6")]
ST_LEADS = [i for n, i in _L.items() if n != "aVR"]
T_UPRIGHT_LEADS = [_L[n] for n in ("I", "II", "aVL", "V4", "V5", "V6")]


def wrap_degrees(a: np.ndarray | float) -> np.ndarray:
    """Angles into (-180, 180]."""
    a = np.asarray(a, dtype=float)
    w = (a + 180.0) % 360.0 - 180.0
    return np.where(w == -180.0, 180.0, w)


def _col(m: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(m[name], errors="coerce").to_numpy(float) if name in m.columns \
        else np.full(len(m), np.nan)


def _flag(value: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.where(missing, 0, np.asarray(value, bool)).astype(np.int8)
    return v, missing.astype(np.int8)


def qtc_ms(m: pd.DataFrame) -> np.ndarray:
    """Device QTc; Bazett's QT / sqrt(RR in s) where the device left it empty."""
    qtc, qt, rr = _col(m, "QTCInterval"), _col(m, "QTInterval"), _col(m, "RRInterval")
    rr = np.where(np.isnan(rr), 60000.0 / _col(m, "VentricularRate"), rr)
    with np.errstate(invalid="ignore", divide="ignore"):
        bazett = qt / np.sqrt(rr / 1000.0)
    return np.where(np.isnan(qtc), bazett, qtc)


def measurement_features(m: pd.DataFrame, sex: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """The interval/axis biomarkers (9 of 15) from the device measurements alone.

    ``sex``: 1 male, 0 female (UK Biobank coding), for the QTc threshold.
    """
    sex = np.asarray(sex)
    out: dict[str, np.ndarray] = {"ventricular_rate": _col(m, "VentricularRate")}
    rr = _col(m, "RRInterval")
    out["ventricular_rate"] = np.where(np.isnan(out["ventricular_rate"]), 60000.0 / rr,
                                       out["ventricular_rate"])
    pd_, pr, qrs = _col(m, "PDuration"), _col(m, "PQInterval"), _col(m, "QRSDuration")
    pax, rax, tax = _col(m, "PAxis"), _col(m, "RAxis"), _col(m, "TAxis")
    flags = {
        "p_duration_gt120": (pd_ > P_DURATION_MS, np.isnan(pd_)),
        "pr_gt200": (pr > PR_MS, np.isnan(pr)),
        "qrs_gt100": (qrs > QRS_MS, np.isnan(qrs)),
    }
    qtc = qtc_ms(m)
    thr = np.where(sex == 1, QTC_MALE_MS, QTC_FEMALE_MS)
    flags["prolonged_qt"] = (qtc > thr, np.isnan(qtc))
    p = wrap_degrees(pax)
    flags["abnormal_p_axis"] = ((p < P_AXIS_NORMAL[0]) | (p > P_AXIS_NORMAL[1]), np.isnan(pax))
    r = wrap_degrees(rax)
    flags["left_axis_deviation"] = ((r >= -90.0) & (r < LAD_AXIS), np.isnan(rax))
    flags["right_axis_deviation"] = ((r > RAD_AXIS) | (r < -90.0), np.isnan(rax))
    angle = np.abs(wrap_degrees(rax - tax))
    flags["abnormal_qrs_t_angle"] = (angle > QRS_T_ANGLE, np.isnan(rax) | np.isnan(tax))
    for name, (v, miss) in flags.items():
        out[name], out[f"{name}_missing"] = _flag(v, miss)
    return pd.DataFrame(out, index=m.index)


def qrs_onset_offset(beat: np.ndarray, qrs_ms: float = float("nan")) -> tuple[int, int] | None:
    """(onset, offset) sample indices of the QRS in one (12, 600) median with R at R_INDEX,
    or None when the beat has no usable QRS (flat, non-finite)."""
    x = np.asarray(beat, dtype=float)
    if x.shape != (len(LEADS), BEAT_LEN) or not np.isfinite(x).all():
        return None
    slope = np.abs(np.diff(x, axis=1)).sum(axis=0)
    k = int(0.01 * FS)
    slope = np.convolve(slope, np.ones(k) / k, mode="same")
    w = int(0.06 * FS)
    peak = slope[R_INDEX - w:R_INDEX + w].max()
    if not peak > 0:
        return None
    low = slope < 0.1 * peak
    lo_bound = R_INDEX - int(0.15 * FS)
    before = np.flatnonzero(low[lo_bound:R_INDEX])
    onset = lo_bound + int(before[-1]) if before.size else lo_bound
    if np.isfinite(qrs_ms) and qrs_ms > 0:
        offset = onset + int(round(qrs_ms * FS / 1000.0))
    else:
        hi_bound = R_INDEX + int(0.15 * FS)
        after = np.flatnonzero(low[R_INDEX:hi_bound])
        offset = R_INDEX + int(after[0]) if after.size else hi_bound
    return onset, min(offset, BEAT_LEN - 1)


def median_features(medians: np.ndarray, m: pd.DataFrame) -> pd.DataFrame:
    """The morphology biomarkers (6 of 15) from the median beats (N, 12, 600, mV) and the
    device QRS duration / QT interval."""
    medians = np.asarray(medians)
    if medians.ndim != 3 or medians.shape[1:] != (len(LEADS), BEAT_LEN):
        raise ValueError(f"median beats must be (N, {len(LEADS)}, {BEAT_LEN}) unpadded, got "
                         f"{medians.shape}")
    n = medians.shape[0]
    if n != len(m):
        raise ValueError(f"{n} median beats for {len(m)} measurement rows")
    qrs_d, qt = _col(m, "QRSDuration"), _col(m, "QTInterval")
    names = ("rbbb", "lbbb", "lvh", "low_voltage", "st_t_abnormality", "delayed_intrinsicoid")
    vals = {k: np.zeros(n, np.int8) for k in names}
    miss = {k: np.zeros(n, np.int8) for k in names}
    t40 = int(0.04 * FS)
    for i in range(n):
        fid = qrs_onset_offset(medians[i], qrs_d[i])
        if fid is None:
            for k in names:
                miss[k][i] = 1
            continue
        on, off = fid
        x = medians[i].astype(float)
        base = x[:, max(on - int(0.01 * FS), 0)][:, None]
        x = x - base
        qrs = x[:, on:off + 1]
        # bundle branch blocks: wide QRS (device duration) + V1 / lateral morphology
        if np.isnan(qrs_d[i]):
            miss["rbbb"][i] = miss["lbbb"][i] = 1
        elif qrs_d[i] >= BBB_QRS_MS:
            v1_term = x[_L["V1"], max(off - t40, on):off + 1].mean()
            rbbb = v1_term > RBBB_TERMINAL_MV
            v1_area, lat_area = qrs[_L["V1"]].sum(), qrs[[_L["I"], _L["V6"]]].sum(axis=1)
            vals["rbbb"][i] = int(rbbb)
            vals["lbbb"][i] = int(not rbbb and v1_area < 0 and bool((lat_area > 0).all()))
        # LVH: Sokolow-Lyon
        sokolow = -qrs[_L["V1"]].min() + max(qrs[_L["V5"]].max(), qrs[_L["V6"]].max())
        vals["lvh"][i] = int(sokolow >= SOKOLOW_MV)
        # low voltage: every limb lead, or every precordial lead, of small amplitude
        ptp = qrs.max(axis=1) - qrs.min(axis=1)
        vals["low_voltage"][i] = int((ptp[LIMB] < LOW_VOLTAGE_LIMB_MV).all()
                                     or (ptp[PRECORDIAL] < LOW_VOLTAGE_PRECORDIAL_MV).all())
        # ST-T: ST depression at J + 60 ms, or T inversion in >= 2 normally upright leads
        j60 = min(off + int(0.06 * FS), BEAT_LEN - 1)
        st_dep = (x[ST_LEADS, j60] <= -ST_DEPRESSION_MV).any()
        t_end = on + int(round(qt[i] * FS / 1000.0)) if np.isfinite(qt[i]) \
            else off + int(0.3 * FS)
        t_lo, t_hi = min(off + int(0.08 * FS), BEAT_LEN - 1), min(max(t_end, off + int(0.1 * FS)),
                                                                  BEAT_LEN)
        t = x[T_UPRIGHT_LEADS, t_lo:t_hi]
        if t.shape[1] == 0:
            t_inv = 0
        else:
            extreme = t[np.arange(t.shape[0]), np.abs(t).argmax(axis=1)]
            t_inv = int((extreme < -T_INVERSION_MV).sum())
        vals["st_t_abnormality"][i] = int(st_dep or t_inv >= T_INVERSION_LEADS)
        # delayed intrinsicoid deflection: R-peak time in V5 or V6
        rpt = [1000.0 * int(np.argmax(qrs[li])) / FS for li in (_L["V5"], _L["V6"])
               if qrs[li].max() > 0.1]
        vals["delayed_intrinsicoid"][i] = int(any(r > INTRINSICOID_MS for r in rpt))
    out: dict[str, np.ndarray] = {}
    for k in names:
        out[k], out[f"{k}_missing"] = vals[k], miss[k]
    return pd.DataFrame(out, index=m.index)


def biomarker_table(m: pd.DataFrame, sex: Sequence[int] | np.ndarray,
                    medians: np.ndarray | None = None) -> pd.DataFrame:
    """All 15 biomarkers (:data:`FEATURES`) plus a ``<name>_missing`` column per binary
    feature. Without ``medians`` the morphology features are 0 and marked missing."""
    a = measurement_features(m, sex)
    if medians is None:
        names = ("rbbb", "lbbb", "lvh", "low_voltage", "st_t_abnormality",
                 "delayed_intrinsicoid")
        b = pd.DataFrame({c: np.zeros(len(m), np.int8) for k in names
                          for c in (k, f"{k}_missing")}, index=m.index)
        for k in names:
            b[f"{k}_missing"] = 1
    else:
        b = median_features(medians, m)
    t = pd.concat([a, b], axis=1)
    t["ventricular_rate_missing"] = np.isnan(t["ventricular_rate"]).astype(np.int8)
    cols = list(FEATURES) + [f"{k}_missing" for k in FEATURES]
    return t[cols]


def fit_preprocessing(train: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Imputation and standardisation from the training rows only: continuous columns get the
    training median for NaN, then (x - mean) / sd of the training rows."""
    out: dict[str, dict[str, float]] = {}
    for c in train.columns:
        v = pd.to_numeric(train[c], errors="coerce").to_numpy(float)
        if c in CONTINUOUS_FEATURES:
            med = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
            filled = np.where(np.isnan(v), med, v)
            sd = float(filled.std())
            out[c] = {"impute": med, "mean": float(filled.mean()), "sd": sd if sd > 0 else 1.0}
    return out


def apply_preprocessing(x: pd.DataFrame, prep: dict[str, dict[str, float]]) -> pd.DataFrame:
    x = x.copy()
    for c, p in prep.items():
        v = pd.to_numeric(x[c], errors="coerce").to_numpy(float)
        x[c] = (np.where(np.isnan(v), p["impute"], v) - p["mean"]) / p["sd"]
    return x.astype(float)

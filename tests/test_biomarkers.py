"""The 15 ECG biomarkers (data_modules/signal/biomarkers.py) on hand-made measurements and beats:
each threshold just below and just above, and missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_modules.signal import biomarkers as bm
from data_modules.signal.leads import BEAT_LEN, FS, LEADS, R_INDEX
from data_modules.sources.ukb import MEASUREMENT_NAMES

NORMAL = {"VentricularRate": 70, "PQInterval": 160, "PDuration": 100, "QRSDuration": 90,
          "QTInterval": 400, "QTCInterval": 420, "RRInterval": 857, "PAxis": 50,
          "RAxis": 40, "TAxis": 40}


def _meas(**kw) -> pd.DataFrame:
    return pd.DataFrame([{**NORMAL, **kw}], columns=list(MEASUREMENT_NAMES))


def _feat(sex: int = 1, **kw) -> pd.Series:
    return bm.measurement_features(_meas(**kw), [sex]).iloc[0]


@pytest.mark.parametrize("name,key,below,above", [
    ("p_duration_gt120", "PDuration", 120, 121),
    ("pr_gt200", "PQInterval", 200, 201),
    ("qrs_gt100", "QRSDuration", 100, 101),
    ("abnormal_p_axis", "PAxis", 75, 76),
    ("right_axis_deviation", "RAxis", 90, 91),
])
def test_interval_and_axis_thresholds(name, key, below, above):
    assert _feat(**{key: below})[name] == 0
    assert _feat(**{key: above})[name] == 1


def test_axis_rules_and_qrs_t_angle():
    assert _feat(PAxis=0)["abnormal_p_axis"] == 0 and _feat(PAxis=-1)["abnormal_p_axis"] == 1
    assert _feat(RAxis=-30)["left_axis_deviation"] == 0
    assert _feat(RAxis=-31)["left_axis_deviation"] == 1
    assert _feat(RAxis=-91)["left_axis_deviation"] == 0  # extreme axis counts as RAD
    assert _feat(RAxis=-91)["right_axis_deviation"] == 1
    assert _feat(RAxis=10, TAxis=110)["abnormal_qrs_t_angle"] == 0
    assert _feat(RAxis=10, TAxis=111)["abnormal_qrs_t_angle"] == 1
    assert _feat(RAxis=170, TAxis=-80)["abnormal_qrs_t_angle"] == 1  # 250 deg wraps to 110
    assert _feat(RAxis=170, TAxis=-100)["abnormal_qrs_t_angle"] == 0  # 270 wraps to 90


def test_qtc_threshold_is_sex_specific_with_bazett_fallback():
    assert _feat(1, QTCInterval=450)["prolonged_qt"] == 0
    assert _feat(1, QTCInterval=451)["prolonged_qt"] == 1
    assert _feat(0, QTCInterval=460)["prolonged_qt"] == 0
    assert _feat(0, QTCInterval=461)["prolonged_qt"] == 1
    # device QTc empty: Bazett QT / sqrt(RR) = 460 / sqrt(0.81) = 511 ms
    f = _feat(0, QTCInterval=np.nan, QTInterval=460, RRInterval=810)
    assert f["prolonged_qt"] == 1 and f["prolonged_qt_missing"] == 0


def test_missing_measurements_give_zero_flags_and_indicators():
    nan = float("nan")
    f = _feat(PDuration=nan, PQInterval=nan, PAxis=nan, TAxis=nan, VentricularRate=nan,
              RRInterval=nan, QTCInterval=nan)
    for name in ("p_duration_gt120", "pr_gt200", "abnormal_p_axis", "abnormal_qrs_t_angle"):
        assert f[name] == 0 and f[f"{name}_missing"] == 1
    assert np.isnan(f["ventricular_rate"])
    assert f["prolonged_qt"] == 0 and f["prolonged_qt_missing"] == 1  # no RR for Bazett
    assert f["qrs_gt100_missing"] == 0
    # ventricular rate from RR when the device omitted the rate
    assert _feat(VentricularRate=nan, RRInterval=1000)["ventricular_rate"] == 60


def test_all_nan_table_and_no_medians_do_not_crash():
    m = pd.DataFrame(np.nan, index=range(3), columns=list(MEASUREMENT_NAMES))
    t = bm.biomarker_table(m, [1, 0, 1], medians=None)
    assert list(t.columns[:15]) == list(bm.FEATURES)
    assert (t[list(bm.BINARY_FEATURES)] == 0).all().all()
    assert (t[[f"{k}_missing" for k in bm.FEATURES]] == 1).all().all()
    flat = np.zeros((3, 12, BEAT_LEN), np.float32)  # no QRS to find
    t = bm.biomarker_table(m, [1, 0, 1], medians=flat)
    assert (t["lvh_missing"] == 1).all() and (t["lvh"] == 0).all()


def test_preprocessing_uses_training_rows_only():
    train = pd.DataFrame({"ventricular_rate": [60.0, np.nan, 80.0], "lvh": [0, 1, 0]})
    prep = bm.fit_preprocessing(train)
    assert prep["ventricular_rate"] == {"impute": 70.0, "mean": 70.0,
                                        "sd": pytest.approx(np.std([60, 70, 80]))}
    out = bm.apply_preprocessing(pd.DataFrame({"ventricular_rate": [np.nan, 1000.0],
                                               "lvh": [1, 0]}), prep)
    assert out["ventricular_rate"].iloc[0] == 0.0 and out["lvh"].tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- medians
def _gauss(center_ms: float, width_ms: float, amp: float) -> np.ndarray:
    t = (np.arange(BEAT_LEN) - R_INDEX) * 1000.0 / FS
    return amp * np.exp(-0.5 * ((t - center_ms) / width_ms) ** 2)


def _beat(r_amp=None, s_amp=None, t_amp=None, st=None) -> np.ndarray:
    """12 x 600 mV: per-lead R (at 0 ms), S (at +25 ms), T (at +250 ms) and ST level."""
    x = np.zeros((12, BEAT_LEN))
    t = (np.arange(BEAT_LEN) - R_INDEX) * 1000.0 / FS
    for i, lead in enumerate(LEADS):
        x[i] += _gauss(0, 10, (r_amp or {}).get(lead, 0.8))
        x[i] -= _gauss(28, 8, (s_amp or {}).get(lead, 0.3))
        x[i] += _gauss(250, 40, (t_amp or {}).get(lead, 0.25))
        level = (st or {}).get(lead, 0.0)
        x[i] += np.where((t > 80) & (t < 180), level, 0.0)
    return x[None]


def _morph(beat: np.ndarray, **kw) -> pd.Series:
    return bm.median_features(beat, _meas(**kw)).iloc[0]


def test_normal_beat_has_no_morphology_flags():
    f = _morph(_beat())
    for k in ("rbbb", "lbbb", "lvh", "low_voltage", "st_t_abnormality",
              "delayed_intrinsicoid"):
        assert f[k] == 0 and f[f"{k}_missing"] == 0, k


def test_sokolow_lyon_lvh_just_below_and_above():
    # S(V1) + R(V5) about 3.4 vs 3.6 mV (amplitudes against the PR level)
    below = _morph(_beat(r_amp={"V5": 2.0}, s_amp={"V1": 1.4}))
    above = _morph(_beat(r_amp={"V5": 2.0}, s_amp={"V1": 1.6}))
    assert below["lvh"] == 0 and above["lvh"] == 1


def test_low_voltage_limb_leads():
    limb = {n: 0.35 for n in ("I", "II", "III", "aVR", "aVL", "aVF")}
    small_s = {n: 0.1 for n in limb}
    assert _morph(_beat(r_amp=limb, s_amp=small_s))["low_voltage"] == 1  # ~0.45 mV p-p
    limb_big = {n: 0.45 for n in limb}
    assert _morph(_beat(r_amp=limb_big, s_amp=small_s))["low_voltage"] == 0  # ~0.55 mV


def test_st_depression_and_t_inversion():
    assert _morph(_beat(st={"V5": -0.09}))["st_t_abnormality"] == 0
    assert _morph(_beat(st={"V5": -0.12}))["st_t_abnormality"] == 1
    one = {"V5": -0.3}
    two = {"V5": -0.3, "V6": -0.3}
    assert _morph(_beat(t_amp=one))["st_t_abnormality"] == 0  # one lead is not enough
    assert _morph(_beat(t_amp=two))["st_t_abnormality"] == 1


def test_bundle_branch_blocks_need_a_wide_qrs():
    rsr = _beat()
    rsr[0, LEADS.index("V1")] += _gauss(70, 12, 1.0)[None][0]  # terminal R' in V1
    assert _morph(rsr, QRSDuration=119)["rbbb"] == 0
    assert _morph(rsr, QRSDuration=130)["rbbb"] == 1
    qs = _beat(r_amp={"V1": 0.1}, s_amp={"V1": 1.5})  # deep QS/rS in V1, upright I and V6
    assert _morph(qs, QRSDuration=130)["lbbb"] == 1
    assert _morph(qs, QRSDuration=119)["lbbb"] == 0
    f = _morph(qs, QRSDuration=float("nan"))
    assert f["lbbb"] == 0 and f["lbbb_missing"] == 1


def test_delayed_intrinsicoid_deflection():
    late = _beat()
    late[0, LEADS.index("V6")] = _gauss(50, 12, 1.2) + _gauss(250, 40, 0.25)  # late R peak
    assert _morph(late)["delayed_intrinsicoid"] == 1
    assert _morph(_beat())["delayed_intrinsicoid"] == 0


def test_padded_or_wrong_shape_medians_are_refused_not_marked_missing():
    padded = np.zeros((1, len(LEADS), BEAT_LEN + 8))
    with pytest.raises(ValueError, match=r"median beats must be \(N, 12, 600\)"):
        bm.median_features(padded, _meas())

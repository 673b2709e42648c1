"""Synthetic twin: physiology of the beat model, file formats, outcome model, determinism."""

from __future__ import annotations

import ast
import filecmp
import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from data_modules.signal.leads import BEAT_LEN, FS, LEADS, R_INDEX
from data_modules.synthetic import (
    EVENT_TARGETS,
    make_synthetic,
    simulate_record,
    ukb_feature_table,
    write_wfdb,
)
from data_modules.synthetic.beat_model import INDEPENDENT_INDEX
from data_modules.synthetic.outcomes import draw_outcomes, sample_population
from data_modules.synthetic.ptbxl_format import PTBXL_COLUMNS, PTBXL_SIG_NAMES, SCP_STATEMENTS
from data_modules.synthetic.ukb_format import RESOLUTION_UV, cardiology_xml

LI = {name: i for i, name in enumerate(LEADS)}
OUTCOME_COLUMNS = ["eid", "ecg_date", "event", "time_days", "end_date", "hyp", "mi",
                   "true_log_hazard"]


# ---------------------------------------------------------------------------------------------
# Independent measurements on a clean template (not using the generator's parameters)
# ---------------------------------------------------------------------------------------------

def _velocity(beat: np.ndarray) -> np.ndarray:
    """Spatial velocity (mV/s) over the eight independent leads."""
    return np.sqrt((np.diff(beat[list(INDEPENDENT_INDEX)], axis=1) ** 2).sum(0)) * FS


def qrs_bounds(beat: np.ndarray, frac: float = 0.1) -> tuple[int, int]:
    """QRS onset/offset samples: where the spatial velocity stays above frac * max around R."""
    v = _velocity(beat)
    thr = frac * v[R_INDEX - 100:R_INDEX + 100].max()
    i = R_INDEX
    while i > 10 and v[i - 10:i].max() > thr:
        i -= 1
    j = R_INDEX
    while j < BEAT_LEN - 11 and v[j:j + 10].max() > thr:
        j += 1
    return i, j


def qrs_ms(beat: np.ndarray) -> float:
    on, off = qrs_bounds(beat)
    return (off - on) * 1000 / FS


def pr_ms(beat: np.ndarray) -> float:
    """QRS onset minus the first sample whose spatial magnitude exceeds 0.02 mV (P onset)."""
    on, _ = qrs_bounds(beat, frac=0.05)
    mag = np.sqrt((beat[list(INDEPENDENT_INDEX)] ** 2).sum(0))
    idx = np.flatnonzero(mag[:on - 5] > 0.02)
    return (on - idx[0]) * 1000 / FS if idx.size else float("nan")


def records(label: str, n: int = 12, seed0: int = 100, **kw):
    return [simulate_record(np.random.default_rng(seed0 + s), label, **kw) for s in range(n)]


# ---------------------------------------------------------------------------------------------
# Beat model
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["NORM", "CLBBB", "AFIB", "IMI+1AVB"])
def test_lead_identities_hold_with_noise(label):
    rec = simulate_record(np.random.default_rng(1), label, noise="ptbxl")
    for x in (rec.signal, rec.beat):
        i, ii, iii, avr, avl, avf = x[:6]
        assert np.abs(iii - (ii - i)).max() < 1e-6
        assert np.abs(avr + (i + ii) / 2).max() < 1e-6
        assert np.abs(avl - (i - ii / 2)).max() < 1e-6
        assert np.abs(avf - (ii - i / 2)).max() < 1e-6
    assert rec.signal.shape == (12, 5000) and rec.beat.shape == (12, BEAT_LEN)
    assert np.std(rec.signal[LI["II"]]) > 0.05  # not an empty signal


def test_record_shapes_rpeaks_and_fs():
    rec = simulate_record(np.random.default_rng(2), "NORM", fs=100, seconds=10.0, noise="none")
    assert rec.signal.shape == (12, 1000) and rec.fs == 100
    assert rec.beat.shape == (12, BEAT_LEN)  # the template is always 500 Hz
    # R of the template at R_INDEX: the spatial magnitude peaks there
    mag = np.sqrt((rec.beat ** 2).sum(0))
    assert abs(int(np.argmax(mag)) - R_INDEX) <= 5
    # r_peaks point at QRS complexes of the strip: lead II is near its maximum there
    ii = rec.signal[LI["II"]]
    assert rec.r_peaks.size >= 7
    for r in rec.r_peaks[1:-1]:
        assert ii[r] > 0.6 * ii[max(r - 5, 0):r + 6].max()


def test_noise_free_record_repeats_the_template():
    rec = simulate_record(np.random.default_rng(3), "NORM", noise="none")
    r = int(rec.r_peaks[3])
    seg = rec.signal[:, r - 100:r + 150]
    tpl = rec.beat[:, R_INDEX - 100:R_INDEX + 150]
    assert np.corrcoef(seg.ravel(), tpl.ravel())[0, 1] > 0.97


def test_bundle_branch_blocks_widen_qrs():
    norm = [qrs_ms(r.beat) for r in records("NORM", noise="none")]
    lbbb = [qrs_ms(r.beat) for r in records("CLBBB", noise="none")]
    rbbb = [qrs_ms(r.beat) for r in records("CRBBB", noise="none")]
    assert max(norm) < 110
    assert min(lbbb) > 120
    assert min(rbbb) > 115 and np.mean(rbbb) > 125


def test_lbbb_and_rbbb_shapes():
    for rec in records("CLBBB", n=6, noise="none"):
        core = slice(R_INDEX - 35, R_INDEX + 35)  # +-70 ms around R, inside the wide QRS
        v1, v6 = rec.beat[LI["V1"], core], rec.beat[LI["V6"], core]
        assert v1.min() < -0.5 and v1.max() < 0.15  # QS in V1
        assert v6.max() > 0.4 and v6.min() > -0.15  # broad R without S in V6
    for rec in records("CRBBB", n=6, noise="none"):
        on, off = qrs_bounds(rec.beat)
        v1 = rec.beat[LI["V1"], on:off]
        late = v1[int(0.6 * v1.size):]
        assert late.max() > 0.3  # terminal R' in V1
        assert rec.beat[LI["I"], on:off][int(0.6 * v1.size):].min() < -0.1  # wide S in I


def test_first_degree_av_block_prolongs_pr():
    norm = [pr_ms(r.beat) for r in records("NORM", noise="none")]
    avb = [pr_ms(r.beat) for r in records("1AVB", noise="none")]
    assert all(110 <= p <= 200 for p in norm)
    assert min(avb) > 200


def test_atrial_fibrillation_irregular_without_p():
    def rr_cv(rec):
        rr = np.diff(rec.r_peaks)
        return rr.std() / rr.mean()
    af, sr = records("AFIB"), records("NORM")
    assert np.median([rr_cv(r) for r in af]) > 2.5 * np.median([rr_cv(r) for r in sr])
    for rec in af:
        assert np.isnan(pr_ms(rec.beat))  # no P wave before the QRS
        assert rec.features["af"] == 1.0
    assert all(np.isfinite(pr_ms(r.beat)) for r in sr)


def q_depth(beat: np.ndarray, lead: str) -> float:
    """Depth (mV) of an initial negative QRS deflection in one lead; 0 if the QRS starts up."""
    on, _ = qrs_bounds(beat, frac=0.05)
    x = beat[LI[lead], on - 10:on + 40]
    big = np.flatnonzero(np.abs(x) > 0.03)
    if big.size == 0 or x[big[0]] > 0:
        return 0.0
    first = int(big[0])
    end = first + int(np.argmax(x[first:] > 0)) if (x[first:] > 0).any() else x.size
    return float(-x[first:end].min())


def test_infarction_q_waves_in_territory_leads():
    norm, imi, ami = records("NORM", noise="none"), records("IMI", noise="none"), \
        records("AMI", noise="none")
    assert all(q_depth(r.beat, "III") > 0.3 and q_depth(r.beat, "aVF") > 0.15 for r in imi)
    assert all(q_depth(r.beat, "aVF") < 0.1 for r in norm)
    assert np.mean([q_depth(r.beat, "III") for r in norm]) < 0.1
    on = [qrs_bounds(r.beat, frac=0.05)[0] for r in ami]
    assert all(r.beat[LI["V2"], o:o + 20].max() < 0.05 for r, o in zip(ami, on))  # QS in V2
    assert all(q_depth(r.beat, "V2") > 0.5 for r in ami)
    assert all(q_depth(r.beat, "V2") == 0.0 for r in norm)  # normal V2 starts with an r wave
    # repolarisation changes in the territory: T inverted in III (inferior) or V2 (anterior)
    t_win = slice(R_INDEX + 80, R_INDEX + 200)
    assert np.mean([r.beat[LI["III"], t_win].min() for r in imi]) < -0.1
    assert np.mean([r.beat[LI["V2"], t_win].min() for r in ami]) < -0.1


def test_lvh_voltage_and_st_t_changes():
    def sokolow(rec):
        b = rec.beat
        return -b[LI["V1"]].min() + max(b[LI["V5"]].max(), b[LI["V6"]].max())
    norm, lvh = records("NORM", noise="none"), records("LVH", noise="none")
    assert np.mean([sokolow(r) for r in lvh]) > 3.5
    assert np.mean([sokolow(r) for r in lvh]) > np.mean([sokolow(r) for r in norm]) + 1.0
    # ST-T change: ST depression or flattened/inverted T in the lateral leads
    t_win = slice(R_INDEX + 100, R_INDEX + 220)
    norm_t = [r.beat[LI["V5"], t_win].max() for r in norm]
    sttc = records("STTC", noise="none")
    sttc_t = [r.beat[LI["V5"], t_win].max() for r in sttc]
    assert np.median(sttc_t) < 0.5 * np.median(norm_t)
    assert min(r.features["st_min_mv"] for r in sttc) < -0.05


# ---------------------------------------------------------------------------------------------
# Files written by make_synthetic
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("synth")
    return make_synthetic(out, n=60, seed=7, events="dense", n_ukb=60, progress=False)


@pytest.fixture(scope="module")
def db(synth) -> pd.DataFrame:
    return pd.read_csv(synth["ptbxl"] / "ptbxl_database.csv", index_col="ecg_id")


def test_write_wfdb_is_byte_identical_to_wrsamp(tmp_path):
    x = np.random.default_rng(0).normal(0, 0.8, (12, 700))
    write_wfdb(tmp_path / "00042_hr", x, 500)
    ref = tmp_path / "ref"
    ref.mkdir()
    wfdb.wrsamp("00042_hr", fs=500, units=["mV"] * 12, sig_name=list(PTBXL_SIG_NAMES),
                p_signal=x.T.copy(), fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                write_dir=str(ref))
    for ext in (".hea", ".dat"):
        assert filecmp.cmp(tmp_path / f"00042_hr{ext}", ref / f"00042_hr{ext}", shallow=False)


def test_ptbxl_records_read_back(synth, db):
    root = synth["ptbxl"]
    for ecg_id in db.index[:5]:
        sig, meta = wfdb.rdsamp(str(root / db.loc[ecg_id, "filename_hr"]))
        assert sig.shape == (5000, 12) and meta["fs"] == 500
        assert meta["units"] == ["mV"] * 12
        assert meta["sig_name"] == list(PTBXL_SIG_NAMES)
        assert np.abs(sig[:, 2] - (sig[:, 1] - sig[:, 0])).max() <= 0.0021  # III = II - I
        lr, meta_lr = wfdb.rdsamp(str(root / db.loc[ecg_id, "filename_lr"]))
        assert lr.shape == (1000, 12) and meta_lr["fs"] == 100
        assert np.corrcoef(lr[:, 1], sig[::5, 1])[0, 1] > 0.9  # a decimation of the same ECG
    assert (root / "records500" / "00000" / "00001_hr.dat").stat().st_size == 5000 * 12 * 2


def test_ptbxl_header_format_matches_real(synth, ptbxl_dir):
    ours = (synth["ptbxl"] / "records500/00000/00001_hr.hea").read_text().splitlines()
    real = next((ptbxl_dir / "records500").rglob("*_hr.hea")).read_text().splitlines()
    assert len(ours) == len(real)
    assert ours[0].split()[1:] == real[0].split()[1:]  # n_sig, fs, n_samples
    for a, b in zip(ours[1:], real[1:]):
        ta, tb = a.split(), b.split()
        assert ta[1:4] == tb[1:4] and ta[-1] == tb[-1]  # format, gain/units, resolution, name


def test_ptbxl_database_like_real(db, ptbxl_dir):
    real = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    assert list(db.columns) == list(real.columns)
    for col in ("patient_id", "age", "sex", "strat_fold", "validated_by_human", "second_opinion"):
        assert db[col].dtype == real[col].dtype, col
    assert list(db.columns) == list(PTBXL_COLUMNS[1:])


def test_scp_codes_use_the_real_vocabulary(synth, db):
    statements = pd.read_csv(synth["ptbxl"] / "scp_statements.csv", index_col=0)
    assert filecmp.cmp(synth["ptbxl"] / "scp_statements.csv", SCP_STATEMENTS, shallow=False)
    codes = db["scp_codes"].map(ast.literal_eval)
    n_diag, zero = 0, 0
    for c in codes:
        assert isinstance(c, dict) and c
        assert set(c) <= set(statements.index)
        assert all(v in (0.0, 15.0, 35.0, 50.0, 80.0, 100.0) for v in c.values())
        n_diag += sum(1 for k, v in c.items() if v > 0 and statements.loc[k, "diagnostic"] == 1) > 1
        zero += any(v == 0 for v in c.values())
    assert n_diag >= 3 and zero >= len(codes) // 2


def test_scp_codes_and_reports_match_the_simulated_class(synth, db):
    statements = pd.read_csv(synth["ptbxl"] / "scp_statements.csv", index_col=0)
    truth = pd.read_csv(synth["ptbxl"].parent / "ground_truth" / "ptbxl.csv", index_col="ecg_id")
    expect = {"NORM": "NORM", "IMI": "MI", "AMI": "MI", "LVH": "HYP", "CLBBB": "CD",
              "CRBBB": "CD", "1AVB": "CD", "STTC": "STTC"}
    words = {"CLBBB": ("links", "left bundle", "vÄnstersidigt"),
             "CRBBB": ("rechts", "right bundle", "hÖgersidigt"),
             "AFIB": ("vorhofflimmern", "atrial fibrillation", "fÖrmaksflimmer"),
             "NORM": ("normal",)}
    for ecg_id, label in truth["label"].items():
        codes = ast.literal_eval(db.loc[ecg_id, "scp_codes"])
        classes = {statements.loc[k, "diagnostic_class"] for k, v in codes.items() if v > 0}
        for part in label.split("+"):
            if part in expect:
                assert expect[part] in classes, (ecg_id, label, codes)
            if part in words:
                assert any(w in db.loc[ecg_id, "report"] for w in words[part]), ecg_id
            if part == "AFIB":
                assert "AFIB" in codes


def test_strat_fold_is_patient_wise(db):
    assert db.groupby("patient_id")["strat_fold"].nunique().max() == 1
    assert db["patient_id"].duplicated().any()  # some patients have several records
    assert set(db["strat_fold"]) <= set(range(1, 11)) and db["strat_fold"].nunique() >= 8
    assert db.loc[db["strat_fold"] >= 9, "validated_by_human"].all()


def _parse_waveforms(node: ET.Element) -> tuple[np.ndarray, list[str]]:
    res = float(node.find("Resolution").text)
    assert node.find("Resolution").get("units") == "uVperLsb"
    names = [w.get("lead") for w in node.findall("WaveformData")]
    data = {w.get("lead"): np.array([int(v) for v in w.text.split(",")], dtype=float)
            for w in node.findall("WaveformData")}
    return np.stack([data[name] for name in LEADS]) * res / 1000.0, names


def test_xml_round_trip_reproduces_median_beat():
    rng = np.random.default_rng(5)
    rec = simulate_record(rng, "AFIB", noise="ukb")
    median = rec.beat + rng.normal(0, 0.004, rec.beat.shape)
    order = list(rng.permutation(12))
    xml = cardiology_xml(1234567, 66, True, pd.Timestamp("2016-03-04 10:11:12"), rec, median,
                         rng, lead_order=order, wrap_waveforms=True)
    root = ET.fromstring(xml)
    assert root.tag == "CardiologyXML"
    assert root.findtext("PatientInfo/PID") == "1234567"
    assert root.findtext("PatientInfo/Gender") == "MALE"
    assert int(root.findtext("ObservationDateTime/Year")) == 2016
    med, names = _parse_waveforms(root.find("RestingECGMeasurements/MedianSamples"))
    assert names == [LEADS[j] for j in order]
    assert np.abs(med - median).max() <= RESOLUTION_UV / 2000 + 1e-9
    strip, _ = _parse_waveforms(root.find("StripData"))
    assert strip.shape == (12, 5000)
    assert np.abs(strip - rec.signal).max() <= RESOLUTION_UV / 2000 + 1e-9
    m = root.find("RestingECGMeasurements")
    assert m.findtext("PQInterval") == "" and m.findtext("PAxis") == ""  # AF: no P wave
    assert abs(int(m.findtext("QRSDuration")) - rec.features["qrs_ms"]) < 20
    assert "Atrial fibrillation" in [d.text for d in root.iter("DiagnosisText")]


def test_ukb_xml_and_outcomes(synth):
    out = pd.read_csv(synth["ukb_outcomes"])
    assert list(out.columns) == OUTCOME_COLUMNS
    files = sorted(synth["ukb_xml"].glob("*_20205_2_0.xml"))
    assert len(files) == len(out) == 60
    assert {int(f.name.split("_")[0]) for f in files} == set(out["eid"])
    days = (pd.to_datetime(out["end_date"]) - pd.to_datetime(out["ecg_date"])).dt.days
    assert (days == out["time_days"]).all() and (out["time_days"] > 0).all()
    assert out["time_days"].max() <= 87 * 30.5
    assert out["hyp"].mean() > 0.5 and 0.03 < out["mi"].mean() < 0.35
    truth = pd.read_csv(synth["ukb_xml"].parents[1] / "ground_truth" / "ukb.csv", index_col="eid")
    by_eid = out.set_index("eid")
    reordered = 0
    for f in files[:25]:
        root = ET.parse(f).getroot()
        eid = int(root.findtext("PatientInfo/PID"))
        assert f.name == f"{eid}_20205_2_0.xml"
        d = root.find("ObservationDateTime")
        ymd = f"{int(d.findtext('Year')):04d}-{int(d.findtext('Month')):02d}-" \
              f"{int(d.findtext('Day')):02d}"
        assert ymd == by_eid.loc[eid, "ecg_date"]
        med, names = _parse_waveforms(root.find("RestingECGMeasurements/MedianSamples"))
        reordered += names != list(LEADS)
        assert med.shape == (12, BEAT_LEN)
        assert abs(int(np.argmax(np.sqrt((med ** 2).sum(0)))) - R_INDEX) <= 40
        assert np.abs(med[2] - (med[1] - med[0])).max() < 0.012  # III = II - I (+ rounding)
        qrs = float(root.findtext("RestingECGMeasurements/QRSDuration"))
        assert abs(qrs - truth.loc[eid, "qrs_ms"]) < 20
        assert int(root.findtext("PatientInfo/Age")) == int(truth.loc[eid, "age"])
    assert reordered >= 1


def test_true_log_hazard_is_the_feature_model(synth):
    out = pd.read_csv(synth["ukb_outcomes"])
    table = ukb_feature_table(60, seed=7)
    assert (table["eid"].to_numpy() == out["eid"].to_numpy()).all()
    offset = out["true_log_hazard"] - table["linear_predictor"]
    for flag in (0, 1):  # one baseline per group: the mi cohort and everyone else
        assert np.ptp(offset[out["mi"] == flag]) < 1e-5


@pytest.mark.parametrize("n", [300, 5000])
def test_event_rates_hit_targets(n):
    rng = np.random.default_rng(n)
    pop = sample_population(rng, n)
    lp = rng.normal(0, 1.1, len(pop)) + 0.8 * pop["mi"]
    for events, target in EVENT_TARGETS.items():
        out, info = draw_outcomes(np.random.default_rng(1), lp, pop["hyp"], pop["mi"],
                                  pop["ecg_date"], events)
        for coh in ("hyp", "mi"):
            m = pop[coh].to_numpy() == 1
            assert out["event"][m].sum() == round(target[coh] * m.sum()), (events, coh)
            assert abs(info[f"expected_rate_{coh}"] - target[coh]) < 0.5 * target[coh]
        # events happen after the ECG and before the end of follow-up; the rest is censored
        assert (out["time_days"] >= 1).all()
        censored = out["event"] == 0
        assert (out["end_date"][censored] == "2022-03-31").all()
        assert (out["end_date"][~censored] <= "2022-03-31").all()
    with pytest.raises(ValueError):
        draw_outcomes(rng, lp, pop["hyp"], pop["mi"], pop["ecg_date"], "sparse")


def test_event_times_follow_the_hazard_ranking():
    # higher log-hazard -> earlier events: compare the top and bottom risk quintiles
    rng = np.random.default_rng(3)
    pop = sample_population(rng, 4000)
    lp = rng.normal(0, 1.0, len(pop))
    out, _ = draw_outcomes(np.random.default_rng(4), lp, pop["hyp"], pop["mi"],
                           pop["ecg_date"], "dense")
    q = pd.qcut(out["true_log_hazard"], 5, labels=False)
    assert out["event"][q == 4].mean() > 3 * out["event"][q == 0].mean()


def test_oracle_cindex_in_target_range_dense():
    from lifelines.utils import concordance_index

    table = ukb_feature_table(1500, seed=11)
    out, _ = draw_outcomes(np.random.default_rng(2), table["linear_predictor"], table["hyp"],
                           table["mi"], table["ecg_date"], "dense")
    c = concordance_index(out["time_days"], -out["true_log_hazard"], out["event"])
    assert 0.75 <= c <= 0.85
    hyp = table["hyp"].to_numpy() == 1
    c_hyp = concordance_index(out["time_days"][hyp], -out["true_log_hazard"][hyp],
                              out["event"][hyp])
    assert 0.74 <= c_hyp <= 0.86
    # the prior-MI cohort has MI morphology far more often
    mi_morph = table["q_path"] > 0
    assert mi_morph[table["mi"] == 1].mean() > 3 * mi_morph[table["mi"] == 0].mean()


# ---------------------------------------------------------------------------------------------
# Determinism and output directory handling
# ---------------------------------------------------------------------------------------------

def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    def run(name: str, seed: int) -> tuple[str, str]:
        paths = make_synthetic(tmp_path / name, n=6, n_ukb=5, seed=seed, events="dense",
                               progress=False)
        files = [paths["ptbxl"] / "ptbxl_database.csv", paths["ukb_outcomes"],
                 paths["ptbxl"] / "records500/00000/00003_hr.dat",
                 paths["ptbxl"] / "records100/00000/00003_lr.dat"]
        xmls = sorted(paths["ukb_xml"].glob("*.xml"))
        return _digest(files), _digest(xmls)
    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_rerun_replaces_twin_and_refuses_foreign_data(tmp_path):
    make_synthetic(tmp_path / "x", n=5, n_ukb=4, seed=0, progress=False)
    paths = make_synthetic(tmp_path / "x", n=3, n_ukb=2, seed=0, progress=False)
    assert len(list(paths["ukb_xml"].glob("*.xml"))) == 2
    assert len(list((paths["ptbxl"] / "records500").rglob("*.hea"))) == 3
    foreign = tmp_path / "y" / "ptbxl"
    foreign.mkdir(parents=True)
    (foreign / "ptbxl_database.csv").write_text("real data\n")
    with pytest.raises(FileExistsError):
        make_synthetic(tmp_path / "y", n=2, progress=False)
    assert (foreign / "ptbxl_database.csv").read_text() == "real data\n"
    with pytest.raises(ValueError):
        make_synthetic(tmp_path / "z", n=2, events="sometimes", progress=False)


# --- the hard setting (data_modules/synthetic/settings.py) ---------------------------------


def test_severity_scales_the_label_edits_towards_the_subjects_normal_beat():
    from data_modules.synthetic.beat_model import render_template, sample_beat_params

    def params(label, severity=1.0):
        return sample_beat_params(np.random.default_rng(5), label, age=60, female=False,
                                  severity=severity)

    full, half = params("IMI"), params("IMI", 0.5)
    assert full.q_path > 0.4 and half.q_path == pytest.approx(0.5 * full.q_path)
    normal = render_template(params("NORM"))
    # a vanishing severity gives back the same subject's normal beat; 1 changes nothing
    assert np.abs(render_template(params("IMI", 1e-9)) - normal).max() < 1e-6
    assert np.array_equal(render_template(params("IMI", 1.0)), render_template(full))
    d_full = np.abs(render_template(full) - normal).max()
    d_half = np.abs(render_template(half) - normal).max()
    assert 0.3 * d_full < d_half < 0.7 * d_full
    af = params("AFIB", 0.3)
    assert af.af and np.all(af.vectors[0] == 0)  # AF keeps no P wave at any severity
    with pytest.raises(ValueError, match="severity"):
        params("IMI", 0.0)


@pytest.fixture(scope="module")
def hard_synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_hard")
    return make_synthetic(out, n=60, seed=7, events="dense", n_ukb=60, progress=False,
                          setting="hard")


def test_swap_reports_is_a_cycle_among_the_chosen_records():
    from data_modules.synthetic.ptbxl_format import swap_reports

    db = pd.DataFrame({"scp_codes": [f"c{i}" for i in range(200)],
                       "report": [f"r{i}" for i in range(200)], "age": range(200)})
    chosen = swap_reports(db, np.random.default_rng(0), 0.15)
    assert 15 <= chosen.sum() <= 45
    idx = np.flatnonzero(chosen)
    assert (db.scp_codes[~chosen] == [f"c{i}" for i in np.flatnonzero(~chosen)]).all()
    got = [int(c[1:]) for c in db.scp_codes[idx]]
    assert sorted(got) == list(idx) and all(g != i for g, i in zip(got, idx))
    assert (db.report.str[1:] == db.scp_codes.str[1:]).all()  # the pair moves together
    assert (db.age == range(200)).all()


def test_hard_twin_records_its_setting_and_the_swapped_reports(synth, hard_synth):
    from data_modules.synthetic.settings import SETTINGS

    truth = pd.read_csv(Path(hard_synth["manifest"]).parent / "ground_truth" / "ptbxl.csv")
    assert 0 < truth["report_swapped"].sum() < 0.4 * len(truth)  # ~15% of 60 records
    manifest = json.loads(Path(hard_synth["manifest"]).read_text())
    assert manifest["setting"]["name"] == "hard"
    assert manifest["outcomes"]["coefficients"] == SETTINGS["hard"].coefs
    easy = json.loads(Path(synth["manifest"]).read_text())
    assert "setting" not in easy  # the standard twin's files are unchanged
    assert "report_swapped" not in pd.read_csv(
        Path(synth["manifest"]).parent / "ground_truth" / "ptbxl.csv").columns


def test_hard_twin_hazard_uses_the_hard_coefficients(hard_synth):
    out = pd.read_csv(hard_synth["ukb_outcomes"])
    table = ukb_feature_table(60, seed=7, setting="hard")
    assert (table["eid"].to_numpy() == out["eid"].to_numpy()).all()
    offset = out["true_log_hazard"] - table["linear_predictor"]
    for flag in (0, 1):
        assert np.ptp(offset[out["mi"] == flag]) < 1e-5
    standard = ukb_feature_table(60, seed=7)
    assert not np.allclose(standard["linear_predictor"], table["linear_predictor"])
    with pytest.raises(ValueError, match="synthetic setting"):
        ukb_feature_table(5, setting="harder")

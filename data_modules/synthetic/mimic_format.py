"""Write a synthetic MIMIC-IV-ECG twin in the real MIMIC-IV-ECG v1.0 layout.

Layout and conventions of the PhysioNet release ("Diagnostic Electrocardiogram Matched
Subset"): ``files/p<first 4 digits>/p<subject_id>/s<study_id>/<study_id>.{hea,dat}`` (WFDB
format 16, 200 adu/mV, 12 leads in MIMIC's order I, II, III, aVR, aVF, aVL, V1..V6, 5000
samples at 500 Hz, the record line carrying the time and date, a ``# <subject_id>: ...``
comment), ``record_list.csv`` (subject_id, study_id, file_name, ecg_time, path) and
``machine_measurements.csv`` (subject_id, study_id, cart_id, ecg_time, report_0 ...
report_17, bandwidth, filtering, rr_interval, p_onset, p_end, qrs_onset, qrs_end, t_end,
p_axis, qrs_axis, t_axis; 29999 where the cart measured nothing, as in the release).

Each subject keeps his heart across his studies (several per subject, new rhythm and noise
each time), drawn with the PTB-XL twin's class mix; the machine statements (``report_*``)
describe the simulated morphology and rhythm, so an ECG-text alignment can learn from them.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from data_modules.signal.leads import LEADS
from data_modules.synthetic.beat_model import sample_beat_params, simulate_record
from data_modules.synthetic.ptbxl_format import PTBXL_LABELS, _choice, rhythm_code
from data_modules.synthetic.settings import SETTINGS, TwinSetting, draw_severity

MIMIC_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVF", "aVL",
                                "V1", "V2", "V3", "V4", "V5", "V6")
N_REPORT = 18  # report_0 ... report_17
MM_COLUMNS: tuple[str, ...] = (
    "subject_id", "study_id", "cart_id", "ecg_time",
    *(f"report_{i}" for i in range(N_REPORT)),
    "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end",
    "t_end", "p_axis", "qrs_axis", "t_axis")
RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
GAIN = 200.0  # adu/mV, as the release
NOT_MEASURED = 29999  # the release's value for an interval the cart did not measure
MANIFEST = "synthetic_mimic.json"

_RHYTHM = {"SR": "Sinus rhythm", "SBRAD": "Sinus bradycardia", "STACH": "Sinus tachycardia",
           "SARRH": "Sinus arrhythmia", "AFIB": "Atrial fibrillation"}
_STATEMENT = {
    "IMI": "Inferior infarct - age undetermined",
    "AMI": "Anteroseptal infarct - age undetermined",
    "LVH": "Left ventricular hypertrophy",
    "CLBBB": "Left bundle branch block",
    "CRBBB": "Right bundle branch block",
    "1AVB": "1st degree A-V block",
    "STTC_depression": "ST depression - possible ischemia",
    "STTC_inversion": "T wave inversion - possible ischemia",
    "STTC_flat": "Nonspecific T wave abnormalities",
}


def study_path(subject_id: int, study_id: int) -> str:
    """``files/p1000/p10000032/s40689238/40689238`` (no extension), as ``record_list.path``."""
    s = f"{subject_id:08d}"
    return f"files/p{s[:4]}/p{s}/s{study_id:08d}/{study_id:08d}"


def write_mimic_wfdb(stem: str | Path, signal_mv: np.ndarray, when: datetime,
                     subject_id: int, lead_names: tuple[str, ...] = MIMIC_LEADS,
                     fs: int = 500) -> None:
    """``stem``.hea/.dat as the release writes them: format 16, 200 adu/mV, baseline 0, the
    record line with time and date, the subject in a comment. ``signal_mv`` (n_sig, n) in
    mV, rows in the order of ``lead_names``; NaN is written as WFDB's missing value."""
    stem = Path(stem)
    x = np.asarray(signal_mv, dtype=np.float64).T * GAIN
    nan = ~np.isfinite(x)
    d = np.clip(np.round(np.where(nan, 0.0, x)), -32767, 32767).astype("<i2")
    d[nan] = -32768
    name = stem.name
    n_samp, n_sig = d.shape
    checksum = d.astype(np.int64).sum(0) % 65536
    lines = [f"{name} {n_sig} {fs} {n_samp} {when:%H:%M:%S} {when:%d/%m/%Y}"]
    for j in range(n_sig):
        lines.append(f"{name}.dat 16 {GAIN:.1f}(0)/mV 16 0 {int(d[0, j])} {int(checksum[j])} "
                     f"0 {lead_names[j]}")
    lines.append(f"# <subject_id>: {subject_id}")
    stem.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".dat").write_bytes(d.tobytes())


def machine_statements(labels: tuple[str, ...], features: dict, extras: dict,
                       rng: np.random.Generator) -> list[str]:
    """The cart's statements (one per ``report_*`` column) for the simulated record:
    rhythm, findings, and the overall verdict, in the release's wording."""
    rhythm = rhythm_code(features, "AFIB" in labels, rng)
    lines = [_RHYTHM[rhythm]]
    for c in labels:
        if c in ("NORM", "AFIB"):
            continue
        key = f"STTC_{extras.get('sttc_kind', 'flat')}" if c == "STTC" else c
        lines.append(_STATEMENT[key])
    if "LVH" in labels and extras.get("strain") and "STTC" not in labels:
        lines.append("with repolarization abnormality")
    if labels == ("NORM",):
        lines.append("Normal ECG" if rhythm == "SR" else "Otherwise normal ECG")
    else:
        lines.append("Abnormal ECG")
    return lines


def _ms(v: float) -> int:
    return NOT_MEASURED if not np.isfinite(v) else int(round(v))


def write_mimic(out_dir: str | Path, n: int, seed: int,
                setting: TwinSetting = SETTINGS["standard"]) -> tuple[Path, pd.DataFrame]:
    """Write ``n`` studies of about ``n / 3`` subjects (1-6 studies each) into ``out_dir``;
    return it and a ground-truth table per study (label, features)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise FileExistsError(f"{out} exists and was not written by write_mimic; choose an "
                                  "empty output directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 20])
    n_sub = max(1, int(np.ceil(n / 3)))
    subject = np.concatenate([np.arange(n_sub), rng.integers(0, n_sub, max(0, n - n_sub))])[:n]
    subject = np.sort(subject)
    sub_id = np.sort(rng.choice(np.arange(10_000_000, 20_000_000), n_sub, replace=False))
    study_ids = rng.choice(np.arange(40_000_000, 50_000_000), n, replace=False)
    sub_label = _choice(rng, PTBXL_LABELS, n_sub)
    sub_female = rng.random(n_sub) < 0.5
    sub_age = np.clip(rng.normal(63, 17, n_sub), 18, 91).round()
    sub_start = [datetime(2110, 1, 1) + timedelta(days=int(d))
                 for d in rng.integers(0, 90 * 365, n_sub)]
    params: dict[int, object] = {}
    rec_rows, mm_rows, truth = [], [], []
    for i in range(n):
        k = int(subject[i])
        sid, study = int(sub_id[k]), int(study_ids[i])
        r = np.random.default_rng([seed, 21, study])
        if k not in params:
            params[k] = sample_beat_params(np.random.default_rng([seed, 22, k]),
                                           str(sub_label[k]), age=sub_age[k],
                                           female=bool(sub_female[k]),
                                           severity=draw_severity(setting, seed, 22, k))
        p = params[k]
        rec = simulate_record(r, params=p, fs=500, seconds=10.0, noise="ptbxl")
        when = sub_start[k] + timedelta(days=int(r.integers(0, 3 * 365)),
                                        seconds=int(r.integers(0, 86_400 // 60)) * 60)
        rel = study_path(sid, study)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        order = [LEADS.index(name) for name in MIMIC_LEADS]
        write_mimic_wfdb(out / rel, rec.signal[order], when, sid)
        ecg_time = f"{when:%Y-%m-%d %H:%M:%S}"
        rec_rows.append({"subject_id": sid, "study_id": study, "file_name": study,
                         "ecg_time": ecg_time, "path": rel})
        f = rec.features
        lines = machine_statements(rec.labels, f, p.extras, r)
        qrs_on = 40 + int(r.integers(0, 20)) if np.isnan(f["pr_ms"]) else int(f["pr_ms"])
        mm = {"subject_id": sid, "study_id": study, "cart_id": int(r.integers(6800, 6900)),
              "ecg_time": ecg_time,
              **{f"report_{j}": (lines[j] if j < len(lines) else "") for j in range(N_REPORT)},
              "bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter",
              "rr_interval": _ms(f["rr_ms"]),
              "p_onset": NOT_MEASURED if p.af else 40,
              "p_end": NOT_MEASURED if p.af else _ms(40 + f["p_ms"]),
              "qrs_onset": qrs_on + 40,
              "qrs_end": _ms(qrs_on + 40 + f["qrs_ms"]),
              "t_end": _ms(qrs_on + 40 + f["qt_ms"]),
              "p_axis": _ms(f["p_axis"]), "qrs_axis": _ms(f["r_axis"]),
              "t_axis": _ms(f["t_axis"])}
        mm_rows.append(mm)
        truth.append({"subject_id": sid, "study_id": study, "label": "+".join(rec.labels),
                      **{key: f[key] for key in sorted(f)}})
    rl = pd.DataFrame(rec_rows, columns=list(RECORD_LIST_COLUMNS))
    mm = pd.DataFrame(mm_rows, columns=list(MM_COLUMNS))
    order = np.argsort(rl["study_id"].to_numpy(), kind="stable")
    rl.iloc[order].to_csv(out / "record_list.csv", index=False)
    mm.iloc[order].to_csv(out / "machine_measurements.csv", index=False)
    truth = pd.DataFrame(truth).iloc[order].reset_index(drop=True)
    (out / MANIFEST).write_text(json.dumps(
        {"generator": "ecg-dan synthetic MIMIC-IV-ECG twin", "schema": 1, "seed": seed,
         "n_studies": n, "n_subjects": n_sub, "setting": setting.name}, indent=2) + "\n")
    return out, truth

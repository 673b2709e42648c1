"""Write synthetic UK Biobank resting ECGs as CardioSoft `CardiologyXML` files (field 20205).

Element names, order and units follow the CardioSoft export as UK Biobank ships it (see
docs/method.md section 9): ObservationDateTime, PatientInfo, Interpretation/Diagnosis,
RestingECGMeasurements (+ MedianSamples 12 x 600 @ 500 Hz) and StripData (12 x 5000), waveforms
as comma-separated integer counts at 5 uV per LSB. Some files list the leads in another order and
wrap the waveform text in whitespace, and AF files leave the P-wave measurements empty, so that
parsers are exercised on the variations real files have.

`RestingECGMeasurements` carries what the biomarker baseline reads
(data_modules/signal/biomarkers.py), tied to the simulated heart: rate and RR from the strip's R
peaks, PR / P / QRS / QT from the
generating wave timings, QTc (Bazett) from QT and RR, P / QRS / T axes from the simulated
dipoles (frontal projection of the wave's vector area), each with device-like noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_modules.signal.leads import FS, LEADS, R_INDEX
from data_modules.synthetic.beat_model import SyntheticRecord

RESOLUTION_UV = 5  # uV per LSB
_INT_MIN = -32768


def _build_int_table() -> np.ndarray:
    """Every int16 value as 8 ASCII bytes 'value,' padded with spaces, viewed as uint64."""
    text = "".join(f"{v},".ljust(8) for v in range(_INT_MIN, 32768))
    return np.frombuffer(text.encode("ascii"), dtype=np.uint64)


_TABLE: np.ndarray | None = None


def format_counts(counts: np.ndarray) -> str:
    """'12,-3,0,...' for an int array.

    A table lookup plus deleting the padding is ~20x faster than ','.join(map(str, ...)),
    which would otherwise dominate writing thousands of 67,000-value files.
    """
    global _TABLE
    if _TABLE is None:
        _TABLE = _build_int_table()
    key = np.clip(np.asarray(counts, dtype=np.int64).ravel(), _INT_MIN, 32767) - _INT_MIN
    return _TABLE[key].tobytes().translate(None, b" ")[:-1].decode("ascii")


def to_counts(mv: np.ndarray) -> np.ndarray:
    """mV -> integer counts at RESOLUTION_UV uV/LSB."""
    return np.rint(np.asarray(mv) * 1000.0 / RESOLUTION_UV).astype(np.int64)


def _fmt(v: float | None) -> str:
    return "" if v is None or not np.isfinite(v) else str(int(round(v)))


def _wrap_axis(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0


def device_measurements(rec: SyntheticRecord, rng: np.random.Generator) -> dict[str, float]:
    """CardioSoft-like global measurements: the generating values plus measurement noise."""
    f = rec.features
    rr_ms = float(np.mean(np.diff(rec.r_peaks)) * 1000.0 / rec.fs) if rec.r_peaks.size > 1 \
        else f["rr_ms"]
    vr = 60000.0 / rr_ms
    qt = f["qt_ms"] + rng.normal(0, 8)
    af = bool(f["af"])
    nan = float("nan")
    return {
        "VentricularRate": round(vr),
        "PQInterval": nan if af else f["pr_ms"] + rng.normal(0, 6),
        "PDuration": nan if af else f["p_ms"] + rng.normal(0, 6),
        "QRSDuration": f["qrs_ms"] + rng.normal(0, 4),
        "QTInterval": qt,
        "QTCInterval": qt / np.sqrt(rr_ms / 1000.0),
        "RRInterval": rr_ms,
        "PPInterval": nan if af else rr_ms,
        "PAxis": nan if af else _wrap_axis(f["p_axis"] + rng.normal(0, 6)),
        "RAxis": _wrap_axis(f["r_axis"] + rng.normal(0, 4)),
        "TAxis": _wrap_axis(f["t_axis"] + rng.normal(0, 6)),
        "QRSNum": float(rec.r_peaks.size),
    }


_UNITS = {"VentricularRate": "BPM", "PAxis": "degrees", "RAxis": "degrees", "TAxis": "degrees"}

_STATEMENTS = {
    "IMI": "Inferior infarction, possibly old",
    "AMI": "Anteroseptal infarction, age undetermined",
    "LVH": "Left ventricular hypertrophy",
    "CLBBB": "Left bundle branch block",
    "CRBBB": "Right bundle branch block",
    "1AVB": "1st degree AV block",
    "STTC": "ST-T abnormality, consider ischemia",
}


def interpretation(rec: SyntheticRecord) -> tuple[list[str], str]:
    """Device statements and conclusion consistent with the simulated morphology."""
    hr = rec.features["hr_bpm"]
    if rec.features["af"]:
        lines = ["Atrial fibrillation"]
    elif hr < 60:
        lines = ["Sinus bradycardia"]
    elif hr > 100:
        lines = ["Sinus tachycardia"]
    else:
        lines = ["Sinus rhythm"]
    lines += [_STATEMENTS[c] for c in rec.labels if c in _STATEMENTS]
    if "LVH" in rec.labels and rec.params.extras.get("strain"):
        lines.append("with repolarization abnormality")
    abnormal = any(c != "NORM" for c in rec.labels)
    if not abnormal and (hr < 60 or hr > 100):
        conclusion = "Borderline ECG"
    else:
        conclusion = "Abnormal ECG" if abnormal else "Normal ECG"
    return lines, conclusion


def _waveform_block(tag: str, data_mv: np.ndarray, order: list[int], wrap: bool) -> list[str]:
    counts = to_counts(data_mv)
    out = [f"\t<{tag}>" if tag == "StripData" else f"\t\t<{tag}>"]
    ind = "\t\t" if tag == "StripData" else "\t\t\t"
    out += [f"{ind}<NumberOfLeads>{len(order)}</NumberOfLeads>",
            f'{ind}<SampleRate units="Hz">{FS}</SampleRate>',
            f"{ind}<ChannelSampleCountTotal>{counts.shape[1]}</ChannelSampleCountTotal>",
            f'{ind}<Resolution units="uVperLsb">{RESOLUTION_UV}</Resolution>']
    for j in order:
        txt = format_counts(counts[j])
        if wrap:
            txt = f"\n{ind}\t{txt}\n{ind}"
        out.append(f'{ind}<WaveformData lead="{LEADS[j]}">{txt}</WaveformData>')
    out.append(f"\t</{tag}>" if tag == "StripData" else f"\t\t</{tag}>")
    return out


def cardiology_xml(eid: int, age: float, male: bool, when: pd.Timestamp, rec: SyntheticRecord,
                   median_mv: np.ndarray, rng: np.random.Generator,
                   lead_order: list[int] | None = None, wrap_waveforms: bool = False) -> bytes:
    """One CardioSoft XML document (ISO-8859-1 bytes)."""
    order = list(range(12)) if lead_order is None else list(lead_order)
    meas = device_measurements(rec, rng)
    statements, conclusion = interpretation(rec)
    f = rec.features
    on_ms = 1000.0 * (R_INDEX / FS + rec.params.qrs_on)  # fiducials in ms from the median start
    lines = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<CardiologyXML>",
        "\t<ObservationType>RestECG</ObservationType>",
        "\t<ObservationDateTime>",
        f"\t\t<Hour>{when.hour}</Hour>", f"\t\t<Minute>{when.minute}</Minute>",
        f"\t\t<Second>{when.second}</Second>", f"\t\t<Day>{when.day}</Day>",
        f"\t\t<Month>{when.month}</Month>", f"\t\t<Year>{when.year}</Year>",
        "\t</ObservationDateTime>",
        "\t<ClinicalInfo>",
        "\t\t<DeviceInfo>",
        "\t\t\t<Desc>CARDIOSOFT</Desc>",
        "\t\t\t<SoftwareVer>6.73</SoftwareVer>",
        "\t\t\t<AnalysisVer>22</AnalysisVer>",
        "\t\t</DeviceInfo>",
        "\t</ClinicalInfo>",
        "\t<PatientInfo>",
        f"\t\t<PID>{eid}</PID>",
        f'\t\t<Age units="years">{int(age)}</Age>',
        f"\t\t<Gender>{'MALE' if male else 'FEMALE'}</Gender>",
        "\t\t<PaceMaker>no</PaceMaker>",
        "\t</PatientInfo>",
        "\t<FilterSetting>",
        "\t\t<CubicSpline>yes</CubicSpline>",
        "\t\t<Filter50Hz>yes</Filter50Hz>",
        "\t\t<Filter60Hz>no</Filter60Hz>",
        '\t\t<LowPass units="Hz">150</LowPass>',
        '\t\t<HighPass units="Hz">0.04</HighPass>',
        "\t</FilterSetting>",
        "\t<Device-Type>12-Lead ECG</Device-Type>",
        "\t<Interpretation>",
        "\t\t<Diagnosis>",
        *[f"\t\t\t<DiagnosisText>{s}</DiagnosisText>" for s in statements],
        "\t\t</Diagnosis>",
        "\t\t<Conclusion>",
        f"\t\t\t<ConclusionText>{conclusion}</ConclusionText>",
        "\t\t</Conclusion>",
        "\t</Interpretation>",
        "\t<RestingECGMeasurements>",
        "\t\t<DiagnosisVersion>22</DiagnosisVersion>",
    ]
    for key in ("VentricularRate", "PQInterval", "PDuration", "QRSDuration", "QTInterval",
                "QTCInterval", "RRInterval", "PPInterval", "PAxis", "RAxis", "TAxis"):
        lines.append(f'\t\t<{key} units="{_UNITS.get(key, "ms")}">{_fmt(meas[key])}</{key}>')
    lines.append(f"\t\t<QRSNum>{_fmt(meas['QRSNum'])}</QRSNum>")
    af = bool(f["af"])
    fid = {
        "POnset": np.nan if af else on_ms - meas["PQInterval"],
        "POffset": np.nan if af else on_ms - meas["PQInterval"] + meas["PDuration"],
        "QOnset": on_ms,
        "QOffset": on_ms + meas["QRSDuration"],
        "TOffset": on_ms + meas["QTInterval"],
    }
    for key, v in fid.items():
        lines.append(f'\t\t<{key} units="ms">{_fmt(v)}</{key}>')
    lines += _waveform_block("MedianSamples", median_mv, order, wrap_waveforms)
    lines.append("\t</RestingECGMeasurements>")
    lines += _waveform_block("StripData", rec.signal, order, wrap_waveforms)
    lines.append("</CardiologyXML>")
    return ("\n".join(lines) + "\n").encode("iso-8859-1")


def xml_name(eid: int) -> str:
    """UK Biobank bulk file name of the imaging-visit resting ECG."""
    return f"{eid}_20205_2_0.xml"

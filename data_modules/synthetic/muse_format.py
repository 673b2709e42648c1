"""Write synthetic GE MUSE ``RestingECG`` XML files (the hospital export read by
data_modules/sources/muse_xml.py), and the ``muse`` twin of ``ecg-dan synth``.

As MUSE exports them: ``PatientDemographics``, ``TestDemographics`` (AcquisitionDate
MM-DD-YYYY), a ``Median`` and a ``Rhythm`` ``Waveform``, each ``LeadData`` a base64 string
of little-endian int16 at 4.88 uV per bit (``LeadAmplitudeUnits`` MICROVOLTS). Usually the
8 stored leads I, II, V1-V6 (the reader derives III, aVR, aVL, aVF), occasionally all 12;
leads listed in a varied order, base64 sometimes wrapped in lines, so readers are exercised
on the variations real exports have.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_modules.signal.leads import FS, LEADS
from data_modules.synthetic.beat_model import (
    INDEPENDENT,
    SyntheticRecord,
    sample_beat_params,
    simulate_record,
)
from data_modules.synthetic.outcomes import sample_population
from data_modules.synthetic.settings import draw_severity, twin_setting

UNITS_PER_BIT = 4.88  # uV per LSB, as GE MUSE exports
TWELVE_P = 0.15  # share of files storing all 12 leads
SHUFFLE_P = 0.3  # share of files listing the leads in another order
RATE_250_P = 0.15  # share of rhythm strips at 250 Hz (older carts)


def to_counts(mv: np.ndarray) -> np.ndarray:
    """mV -> int16 counts at ``UNITS_PER_BIT`` uV per bit."""
    return np.clip(np.rint(np.asarray(mv) * 1000.0 / UNITS_PER_BIT), -32768, 32767
                   ).astype("<i2")


def _b64(counts: np.ndarray, wrap: bool) -> str:
    text = base64.b64encode(np.asarray(counts, dtype="<i2").tobytes()).decode("ascii")
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76)) if wrap else text


def _waveform(kind: str, x_mv: np.ndarray, fs: int, names: Sequence[str], wrap: bool
              ) -> list[str]:
    out = ["  <Waveform>", f"    <WaveformType>{kind}</WaveformType>",
           "    <WaveformStartTime>0</WaveformStartTime>",
           f"    <NumberofLeads>{len(names)}</NumberofLeads>",
           "    <SampleType>CONTINUOUS_SAMPLES</SampleType>",
           f"    <SampleBase>{fs}</SampleBase>", "    <SampleExponent>0</SampleExponent>",
           "    <HighPassFilter>16</HighPassFilter>", "    <LowPassFilter>150</LowPassFilter>",
           "    <ACFilter>60</ACFilter>"]
    for name in names:
        c = to_counts(x_mv[LEADS.index(name)])
        out += ["    <LeadData>", f"      <LeadByteCountTotal>{2 * c.size}</LeadByteCountTotal>",
                "      <LeadTimeOffset>0</LeadTimeOffset>",
                f"      <LeadSampleCountTotal>{c.size}</LeadSampleCountTotal>",
                f"      <LeadAmplitudeUnitsPerBit>{UNITS_PER_BIT}</LeadAmplitudeUnitsPerBit>",
                "      <LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits>",
                "      <LeadHighLimit>32767</LeadHighLimit>",
                "      <LeadLowLimit>-32768</LeadLowLimit>",
                f"      <LeadID>{name}</LeadID>",
                "      <LeadOffsetFirstSample>0</LeadOffsetFirstSample>",
                "      <FirstSampleBaseline>0</FirstSampleBaseline>",
                "      <LeadSampleSize>2</LeadSampleSize>", "      <LeadOff>FALSE</LeadOff>",
                "      <BaselineSway>FALSE</BaselineSway>",
                f"      <WaveFormData>{_b64(c, wrap)}</WaveFormData>", "    </LeadData>"]
    return out + ["  </Waveform>"]


def muse_xml(patient_id: str, age: float, male: bool, when: pd.Timestamp,
             rec: SyntheticRecord, leads: Sequence[str] = INDEPENDENT,
             wrap: bool = False) -> bytes:
    """One MUSE XML document: ``rec``'s strip (at ``rec.fs``) as the ``Rhythm`` waveform and
    its clean beat (500 Hz) as the ``Median``, storing ``leads`` in the order given."""
    lines = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">',
        "<RestingECG>",
        "  <MuseInfo><MuseVersion>9.0.10.18362</MuseVersion></MuseInfo>",
        "  <PatientDemographics>",
        f"    <PatientID>{patient_id}</PatientID>",
        f"    <PatientAge>{int(age)}</PatientAge>", "    <AgeUnits>YEARS</AgeUnits>",
        f"    <Gender>{'MALE' if male else 'FEMALE'}</Gender>",
        "  </PatientDemographics>",
        "  <TestDemographics>",
        "    <DataType>RESTING</DataType>", "    <Site>1</Site>",
        "    <AcquisitionDevice>MAC55</AcquisitionDevice>",
        f"    <AcquisitionTime>{when:%H:%M:%S}</AcquisitionTime>",
        f"    <AcquisitionDate>{when:%m-%d-%Y}</AcquisitionDate>",
        "  </TestDemographics>",
        "  <RestingECGMeasurements>",
        f"    <VentricularRate>{round(rec.features['hr_bpm'])}</VentricularRate>",
        f"    <QRSDuration>{round(rec.features['qrs_ms'])}</QRSDuration>",
        "  </RestingECGMeasurements>",
        *_waveform("Median", rec.beat, FS, leads, wrap),
        *_waveform("Rhythm", rec.signal, rec.fs, leads, wrap),
        "</RestingECG>",
    ]
    return ("\n".join(lines) + "\n").encode("iso-8859-1")


def muse_variant(rng: np.random.Generator) -> tuple[list[str], bool]:
    """The stored leads (8, sometimes 12; sometimes in another order) and base64 wrapping of
    one file."""
    leads = list(LEADS) if rng.random() < TWELVE_P else list(INDEPENDENT)
    if rng.random() < SHUFFLE_P:
        leads = [leads[i] for i in rng.permutation(len(leads))]
    return leads, bool(rng.random() < 0.5)


def write_muse(out: str | Path, n: int, seed: int = 0, events: str = "dense",
               setting: str = "standard") -> dict[str, Path]:
    """The ``muse`` twin: ``out/muse/xml/<patient>.xml`` (n files) and
    ``out/muse/ground_truth.csv`` (label, stored leads, rate, features). ``events`` is
    accepted for the registry's signature (a MUSE folder has no outcomes)."""
    del events
    ts = twin_setting(setting)
    root = Path(out) / "muse"
    if root.exists():
        if not (root / "ground_truth.csv").is_file():
            raise FileExistsError(f"{root} exists and was not written by ecg-dan synth; "
                                  "choose an empty output directory")
        shutil.rmtree(root)
    (root / "xml").mkdir(parents=True)
    pop = sample_population(np.random.default_rng([seed, 5]), n)
    truth = []
    for row in pop.itertuples(index=False):
        eid = int(row.eid)
        rng = np.random.default_rng([seed, 5, eid])
        params = sample_beat_params(rng, row.label, age=row.age, female=row.sex == 0,
                                    severity=draw_severity(ts, seed, 5, eid))
        fs = 250 if rng.random() < RATE_250_P else 500
        rec = simulate_record(rng, params=params, fs=fs, seconds=10.0, noise="ukb")
        leads, wrap = muse_variant(rng)
        (root / "xml" / f"{eid}.xml").write_bytes(
            muse_xml(str(eid), row.age, bool(row.sex), pd.Timestamp(row.ecg_date), rec,
                     leads, wrap))
        truth.append({"patient_id": eid, "label": "+".join(rec.labels), "fs": fs,
                      "leads": " ".join(leads), **rec.features})
    pd.DataFrame(truth).to_csv(root / "ground_truth.csv", index=False)
    return {"muse_xml": root / "xml", "muse_truth": root / "ground_truth.csv"}

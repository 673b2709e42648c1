"""UK Biobank: CardioSoft XML parsing, outcomes validation, cache build, cohort selection."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_modules.cache import open_cache, read_skipped, read_warnings
from data_modules.errors import DataError
from data_modules.signal.leads import BEAT_LEN, LEADS, R_INDEX
from data_modules.sources import ukb
from data_modules.sources.cardiosoft_xml import (
    MEASUREMENT_NAMES,
    CardiologyXMLError,
    parse_cardiology_xml,
)
from data_modules.sources.ukb import build_ukb_cache, read_outcomes, select_cohort
from tests.test_median_beat import make_record, template

RES = 5  # uV per LSB, as in UK Biobank files


def counts(mv: np.ndarray, res: float = RES) -> np.ndarray:
    return np.rint(np.asarray(mv) * 1000.0 / res).astype(np.int64)


def _block(tag: str, data: dict[str, str], fs: float, res: float | str, n: int,
           n_leads: int = 12) -> str:
    wf = "".join(f'<WaveformData lead="{k}">{v}</WaveformData>\n' for k, v in data.items())
    return (f"<{tag}><NumberOfLeads>{n_leads}</NumberOfLeads>"
            f'<SampleRate units="Hz">{fs}</SampleRate>'
            f"<ChannelSampleCountTotal>{n}</ChannelSampleCountTotal>"
            f'<Resolution units="uVperLsb">{res}</Resolution>\n{wf}</{tag}>')


def lead_text(c: np.ndarray, wrap: bool = False) -> str:
    t = ",".join(str(int(v)) for v in c)
    return f"\n\t\t{t}\n\t" if wrap else t


def write_xml(path: Path, median_mv: np.ndarray | None = None, strip_mv: np.ndarray | None = None,
              *, order: list[str] | None = None, median_fs: float = 500, res: float = RES,
              gender: str = "MALE", age: str = "63", pid: str = "", date=(2015, 6, 1),
              meas: dict[str, str] | None = None, median_leads: dict[str, str] | None = None,
              strip_leads: dict[str, str] | None = None, median_n: int | None = None,
              with_strip: bool = True, res_text: str | None = None) -> Path:
    """Write a small CardioSoft CardiologyXML file. ``*_leads`` override the waveform text of
    individual leads (None value drops the lead); ``order`` lists the leads in file order."""
    median_mv = template() if median_mv is None else median_mv
    order = list(LEADS) if order is None else order
    med = {ld: lead_text(counts(median_mv[LEADS.index(ld)], res)) for ld in order}
    for k, v in (median_leads or {}).items():
        if v is None:
            med.pop(k)
        else:
            med[k] = v
    meas = {"VentricularRate": "60", "PQInterval": "160", "PDuration": "", "QRSDuration": "94",
            "QTInterval": "400", "QTCInterval": "410", "RRInterval": "1000", "PAxis": "",
            "RAxis": "45", "TAxis": "40", **(meas or {})}
    parts = ['<?xml version="1.0" encoding="ISO-8859-1"?>', "<CardiologyXML>",
             "<ObservationDateTime><Hour>10</Hour><Minute>30</Minute><Second>5</Second>"
             f"<Day>{date[2]}</Day><Month>{date[1]}</Month><Year>{date[0]}</Year>"
             "</ObservationDateTime>",
             f'<PatientInfo><PID>{pid}</PID><Age units="years">{age}</Age>'
             f"<Gender>{gender}</Gender></PatientInfo>",
             "<RestingECGMeasurements>",
             *[f"<{k}>{v}</{k}>" for k, v in meas.items()],
             _block("MedianSamples", med, median_fs, res if res_text is None else res_text,
                    median_n if median_n is not None else int(round(1.2 * median_fs))),
             "</RestingECGMeasurements>"]
    if with_strip:
        strip_mv = make_record(np.random.default_rng(0), noise=0.0, wander=0.0, powerline=0.0) \
            if strip_mv is None else strip_mv
        st = {ld: lead_text(counts(strip_mv[LEADS.index(ld)], res), wrap=True) for ld in order}
        for k, v in (strip_leads or {}).items():
            if v is None:
                st.pop(k)
            else:
                st[k] = v
        parts.append(_block("StripData", st, 500, res, 5000))
    parts.append("</CardiologyXML>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\n".join(parts).encode("iso-8859-1"))
    return path


# --------------------------------------------------------------------------- parsing
def test_good_file_parses_to_mv(tmp_path):
    p = write_xml(tmp_path / "1001_20205_2_0.xml", pid="999")
    e = parse_cardiology_xml(p)
    assert e.eid == 1001  # bulk file name wins over PID
    assert e.ecg_datetime.isoformat() == "2015-06-01T10:30:05"
    assert e.age == 63.0 and e.sex == 1
    assert e.median.shape == (12, BEAT_LEN) and e.median.dtype == np.float32
    np.testing.assert_allclose(e.median, counts(template()) * RES / 1000.0, atol=1e-6)
    np.testing.assert_allclose(e.median, template(), atol=RES / 2000 + 1e-6)
    assert e.strip.shape == (12, 5000) and e.strip.dtype == np.float32
    assert e.measurements["VentricularRate"] == 60.0 and e.measurements["RAxis"] == 45.0
    assert np.isnan(e.measurements["PDuration"]) and np.isnan(e.measurements["PAxis"])
    assert set(e.measurements) == set(MEASUREMENT_NAMES)
    assert parse_cardiology_xml(p, strip=False).strip is None
    f = parse_cardiology_xml(write_xml(tmp_path / "x.xml", gender="FEMALE", pid="42", age=""))
    assert f.sex == 0 and f.eid == 42 and np.isnan(f.age)


def test_resolution_and_shuffled_lead_order(tmp_path):
    ref = parse_cardiology_xml(write_xml(tmp_path / "a.xml", pid="1"))
    rng = np.random.default_rng(1)
    order = [LEADS[i] for i in rng.permutation(12)]
    shuffled = parse_cardiology_xml(write_xml(tmp_path / "b.xml", pid="1", order=order))
    np.testing.assert_array_equal(shuffled.median, ref.median)
    np.testing.assert_array_equal(shuffled.strip, ref.strip)
    # another resolution scales accordingly; lead names are matched case-insensitively
    other = write_xml(tmp_path / "c.xml", pid="1", res=2.5)
    e = parse_cardiology_xml(other)
    np.testing.assert_allclose(e.median, template(), atol=2.5 / 2000 + 1e-6)
    other.write_text(other.read_text().replace('lead="aVR"', 'lead="AVR"'))
    np.testing.assert_array_equal(parse_cardiology_xml(other).median, e.median)


def test_other_sample_rate_is_resampled(tmp_path):
    t250 = template()[:, ::2]  # 1.2 s at 250 Hz = 300 samples
    p = write_xml(tmp_path / "r.xml", pid="5", median_mv=t250, median_fs=250)
    e = parse_cardiology_xml(p)
    assert e.median.shape == (12, BEAT_LEN)
    mid = slice(100, 500)
    assert np.corrcoef(e.median[:, mid].ravel(), template()[:, mid].ravel())[0, 1] > 0.999


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(median_leads={"V3": None}), r"MedianSamples/WaveformData\[lead=V3\] missing"),
    (dict(strip_leads={"V3": None}), r"StripData/WaveformData\[lead=V3\] missing"),
    (dict(median_leads={"II": "   "}), r"MedianSamples/WaveformData\[lead=II\] empty"),
    (dict(median_leads={"V1": "1,2,3,4,5,x1,7"}),
     r"MedianSamples/WaveformData\[lead=V1\]: malformed number 'x1' at position 5"),
    (dict(median_leads={"V1": ",".join(["1"] * 599)}),
     r"MedianSamples/WaveformData\[lead=V1\] has 599 values, expected 600"),
    (dict(median_leads={"V1": ",".join(["1"] * 599) + ","}),
     r"MedianSamples/WaveformData\[lead=V1\]: malformed number '' at position 599"),
    (dict(median_leads={"V7": "1,2"}), r"MedianSamples/WaveformData\[lead=V7\]: unknown lead"),
    (dict(median_n=500), r"MedianSamples/ChannelSampleCountTotal: 500 samples at 500 Hz"),
    (dict(res_text="five"), r"MedianSamples/Resolution: malformed number 'five'"),
    (dict(gender=""), r"PatientInfo/Gender"),
    (dict(meas={"QRSDuration": "9a4"}), r"RestingECGMeasurements/QRSDuration: malformed"),
    (dict(date=(2015, 13, 1)), r"ObservationDateTime: invalid date"),
])
def test_bad_files_name_file_and_field(tmp_path, kwargs, pattern):
    p = write_xml(tmp_path / "2001_20205_2_0.xml", **kwargs)
    with pytest.raises(CardiologyXMLError, match=pattern) as e:
        parse_cardiology_xml(p)
    assert str(e.value).startswith(str(p))


def test_unreadable_xml_and_missing_ids(tmp_path):
    p = tmp_path / "3001_20205_2_0.xml"
    p.write_text("<CardiologyXML><PatientInfo>")
    with pytest.raises(CardiologyXMLError, match=r"3001_20205_2_0.xml: not well-formed XML"):
        parse_cardiology_xml(p)
    q = write_xml(tmp_path / "anon.xml", pid="")
    with pytest.raises(CardiologyXMLError, match=r"anon.xml: PatientInfo/PID missing"):
        parse_cardiology_xml(q)
    r = tmp_path / "other.xml"
    r.write_text("<RestECG/>")
    with pytest.raises(CardiologyXMLError, match="expected <CardiologyXML>"):
        parse_cardiology_xml(r)


# --------------------------------------------------------------------------- outcomes
def _outcomes(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_read_outcomes_and_time_units(tmp_path):
    rows = [dict(eid=3, event=1, time_days=300, hyp=1, mi=0, ecg_date="2015-06-01"),
            dict(eid=1, event=0, time_days=2400, hyp=0, mi=1, ecg_date="2016-01-02")]
    p = _outcomes(tmp_path / "o.csv", rows)
    m = read_outcomes(p)
    assert m["eid"].tolist() == [1, 3]  # sorted by eid
    np.testing.assert_allclose(m["time"], [2400 / 30 + 1, 300 / 30 + 1])  # paper: days/30 + 1
    np.testing.assert_allclose(m["time_days"], [2400, 300])
    assert m.attrs["time_unit"] == "months"
    assert m["event"].dtype == np.int8 and m["hyp"].dtype == bool
    d = read_outcomes(p, time_unit="days")
    np.testing.assert_allclose(d["time"], [2400, 300])
    # dates instead of time_days
    q = _outcomes(tmp_path / "q.csv", [
        dict(eid=7, event=1, hyp=1, mi=1, ecg_date="2015-01-01", end_date="2015-03-02")])
    assert read_outcomes(q, time_unit="days")["time"].tolist() == [60.0]
    with pytest.raises(ValueError, match="time_unit"):
        read_outcomes(p, time_unit="weeks")


@pytest.mark.parametrize("edit,pattern", [
    (lambda r: r.pop("mi"), r"missing column\(s\) \['mi'\]"),
    (lambda r: r.pop("time_days"), r"time_days \(or ecg_date \+ end_date\)"),
])
def test_outcomes_missing_columns(tmp_path, edit, pattern):
    rows = [dict(eid=1, event=0, time_days=10, hyp=1, mi=0)]
    for r in rows:
        edit(r)
    with pytest.raises(ValueError, match=pattern):
        read_outcomes(_outcomes(tmp_path / "o.csv", rows))


@pytest.mark.parametrize("field,value,pattern", [
    ("time_days", -5, r"column 'time_days': time must be > 0 days; offending eids \[2\]"),
    ("time_days", 0, r"column 'time_days': time must be > 0 days; offending eids \[2\]"),
    ("time_days", None, r"column 'time_days': missing/non-numeric time for eids \[2\]"),
    ("event", 2, r"column 'event' must be 0/1; offending eids \[2\]"),
    ("hyp", "yes", r"column 'hyp' must be 0/1; offending eids \[2\]"),
    ("eid", 1, r"column 'eid': duplicate eids \[1\]"),
])
def test_outcomes_bad_values_name_column_and_eids(tmp_path, field, value, pattern):
    rows = [dict(eid=1, event=0, time_days=10, hyp=1, mi=0),
            dict(eid=2, event=1, time_days=20, hyp=0, mi=1)]
    rows[1][field] = value
    with pytest.raises(ValueError, match=pattern):
        read_outcomes(_outcomes(tmp_path / "o.csv", rows))


def test_outcomes_dates_errors(tmp_path):
    rows = [dict(eid=1, event=0, hyp=1, mi=0, ecg_date="2015-01-01", end_date="2014-01-01")]
    with pytest.raises(ValueError, match=r"'end_date - ecg_date': time must be > 0"):
        read_outcomes(_outcomes(tmp_path / "o.csv", rows))
    rows[0]["end_date"] = "someday"
    with pytest.raises(ValueError, match=r"column 'end_date': missing or unparseable dates"):
        read_outcomes(_outcomes(tmp_path / "o.csv", rows))


# --------------------------------------------------------------------------- cache
@pytest.fixture()
def ukb_source(tmp_path):
    xml = tmp_path / "xml"
    rng = np.random.default_rng(3)
    order = [LEADS[i] for i in rng.permutation(12)]
    write_xml(xml / "1001_20205_2_0.xml")
    write_xml(xml / "1002_20205_2_0.xml", order=order, gender="FEMALE", age="55")
    write_xml(xml / "1003_20205_2_0.xml", median_leads={"V3": None})
    write_xml(xml / "1004_20205_2_0.xml")
    write_xml(xml / "sub" / "1004_20205_3_0.xml")
    write_xml(xml / "1005_20205_2_0.xml")
    write_xml(xml / "1007_20205_2_0.xml", date=(2016, 2, 3))
    rows = [dict(eid=1001, ecg_date="2015-06-01", event=0, time_days=2000, hyp=1, mi=0,
                 true_log_hazard=-0.5),
            dict(eid=1002, ecg_date="2015-06-01", event=1, time_days=300, hyp=1, mi=0,
                 true_log_hazard=0.7),
            dict(eid=1003, ecg_date="2015-06-01", event=0, time_days=900, hyp=0, mi=1,
                 true_log_hazard=0.0),
            dict(eid=1004, ecg_date="2015-06-01", event=0, time_days=900, hyp=0, mi=1,
                 true_log_hazard=0.0),
            dict(eid=1006, ecg_date="2015-06-01", event=0, time_days=900, hyp=1, mi=1,
                 true_log_hazard=0.0),
            dict(eid=1007, ecg_date="2016-02-03", event=1, time_days=60, hyp=1, mi=1,
                 true_log_hazard=1.2)]
    return xml, _outcomes(tmp_path / "outcomes.csv", rows)


def test_build_ukb_cache(ukb_source, tmp_path, capsys):
    xml, outcomes = ukb_source
    out = tmp_path / "ukb.h5"
    s = build_ukb_cache(xml, outcomes, out, strips=True, workers=2, progress=False)
    assert s.n_records == 3
    # one entry per participant (id = eid), one reason, category first
    ids = [i for i, _ in s.skipped]
    assert ids == ["1003", "1004", "1005", "1006"]
    reasons = dict(s.skipped)
    assert reasons["1003"] == ("unusable XML: 1003_20205_2_0.xml: "
                               "MedianSamples/WaveformData[lead=V3] missing")
    assert reasons["1004"] == ("duplicate ECG files: eid 1004 has 2: 1004_20205_2_0.xml, "
                               f"{os.path.join('sub', '1004_20205_3_0.xml')}")
    assert reasons["1005"].startswith("no outcome row: 1005_20205_2_0.xml: eid 1005")
    assert reasons["1006"] == "no ECG file: outcome row without an ECG file in the XML folder"
    assert s.reason_counts() == {"duplicate ECG files": 1, "no ECG file": 1,
                                 "no outcome row": 1, "unusable XML": 1}
    assert "skipped     1 x unusable XML" in capsys.readouterr().out
    n = 3
    spec = {"median": (np.float32, (n, 12, BEAT_LEN)), "strip": (np.float32, (n, 12, 5000)),
            "eid": (np.int64, (n,)), "time": (np.float32, (n,)), "time_days": (np.float32, (n,)),
            "event": (np.int8, (n,)), "cohort_hyp": (np.bool_, (n,)),
            "cohort_mi": (np.bool_, (n,)), "age": (np.float32, (n,)), "sex": (np.int8, (n,)),
            "measurements": (np.float32, (n, len(MEASUREMENT_NAMES))),
            "true_log_hazard": (np.float32, (n,))}
    with open_cache(out, "ukb") as f:
        for name, (dtype, shape) in spec.items():
            assert f[name].dtype == dtype and f[name].shape == shape, name
        assert h5py.check_string_dtype(f["ecg_date"].dtype).encoding == "utf-8"
        assert list(f["measurements"].attrs["measurement_names"]) == list(MEASUREMENT_NAMES)
        assert f["time"].attrs["time_unit"] == "months"
        np.testing.assert_array_equal(f["eid"][...], [1001, 1002, 1007])
        np.testing.assert_allclose(f["time"][...], [2000 / 30 + 1, 300 / 30 + 1, 60 / 30 + 1],
                                   rtol=1e-6)
        np.testing.assert_allclose(f["time_days"][...], [2000, 300, 60])
        np.testing.assert_array_equal(f["event"][...], [0, 1, 1])
        np.testing.assert_array_equal(f["cohort_hyp"][...], [True, True, True])
        np.testing.assert_array_equal(f["cohort_mi"][...], [False, False, True])
        np.testing.assert_array_equal(f["sex"][...], [1, 0, 1])
        np.testing.assert_allclose(f["age"][...], [63, 55, 63])
        assert f["ecg_date"].asstr()[...].tolist() == ["2015-06-01", "2015-06-01", "2016-02-03"]
        np.testing.assert_allclose(f["true_log_hazard"][...], [-0.5, 0.7, 1.2], rtol=1e-6)
        m = f["measurements"][...]
        assert m[0, MEASUREMENT_NAMES.index("VentricularRate")] == 60
        assert np.isnan(m[:, MEASUREMENT_NAMES.index("PAxis")]).all()
        med = f["median"][...]
        # mV, R at R_INDEX (the template already has it there: re-centring keeps it)
        for i in range(n):
            assert np.corrcoef(med[i].ravel(), template().ravel())[0, 1] > 0.999
            assert abs(int(np.argmax((med[i].astype(float) ** 2).sum(0))) - R_INDEX) <= 1
        np.testing.assert_array_equal(med[0], med[1])  # shuffled lead order mapped back
        strip = make_record(np.random.default_rng(0), noise=0.0, wander=0.0, powerline=0.0)
        for i in range(n):  # strips re-read in row order, mV
            np.testing.assert_allclose(f["strip"][i], counts(strip) * RES / 1000, atol=1e-6)
        assert [tuple(r) for r in read_skipped(f)] == s.skipped
        cfg = json.loads(f.attrs["build_config"])
        assert cfg["time_unit"] == "months" and cfg["strips"] is True

    capsys.readouterr()
    again = build_ukb_cache(xml, outcomes, out, strips=True, workers=2, progress=False)
    assert again.noop and "nothing to do" in capsys.readouterr().out
    days = build_ukb_cache(xml, outcomes, out, time_unit="days", workers=1, progress=False)
    assert not days.noop
    with open_cache(out, "ukb") as f:
        np.testing.assert_allclose(f["time"][...], [2000, 300, 60])
        assert f["time"].attrs["time_unit"] == "days" and "strip" not in f


def test_device_median_is_recentred(tmp_path):
    shifted = np.roll(template(), 45, axis=1)  # device fiducial 90 ms later
    xml = tmp_path / "xml"
    write_xml(xml / "1_20205_2_0.xml", median_mv=shifted, with_strip=False)
    csv = _outcomes(tmp_path / "o.csv", [dict(eid=1, event=1, time_days=5, hyp=1, mi=0)])
    out = tmp_path / "u.h5"
    build_ukb_cache(xml, csv, out, workers=1, progress=False)
    with open_cache(out, "ukb") as f:
        med = f["median"][0]
    mid = slice(60, 540)
    assert np.corrcoef(med[:, mid].ravel(), template()[:, mid].ravel())[0, 1] > 0.999
    raw = tmp_path / "raw.h5"
    build_ukb_cache(xml, csv, raw, workers=1, progress=False, recenter=False)
    with open_cache(raw, "ukb") as f:
        np.testing.assert_allclose(f["median"][0], shifted, atol=RES / 2000 + 1e-6)


def test_ukb_build_is_atomic(ukb_source, tmp_path, monkeypatch):
    xml, outcomes = ukb_source

    def boom(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(ukb, "_parse_task", boom)
    out = tmp_path / "dead.h5"
    with pytest.raises(KeyboardInterrupt):
        build_ukb_cache(xml, outcomes, out, workers=1, progress=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "dead.h5" in p.name]


def test_outcome_errors_stop_the_build(ukb_source, tmp_path):
    xml, outcomes = ukb_source
    df = pd.read_csv(outcomes)
    df.loc[df.eid == 1002, "time_days"] = -1
    df.to_csv(outcomes, index=False)
    with pytest.raises(ValueError, match=r"offending eids \[1002\]"):
        build_ukb_cache(xml, outcomes, tmp_path / "x.h5", workers=1, progress=False)
    assert not (tmp_path / "x.h5").exists()


# --------------------------------------------------------------------------- cohorts
def test_select_cohort(ukb_source, tmp_path):
    xml, outcomes = ukb_source
    out = tmp_path / "c.h5"
    build_ukb_cache(xml, outcomes, out, workers=1, progress=False)
    np.testing.assert_array_equal(select_cohort(out, "hyp"), [0, 1, 2])
    np.testing.assert_array_equal(select_cohort(out, "mi"), [2])
    np.testing.assert_array_equal(select_cohort(out, "all"), [0, 1, 2])
    with h5py.File(out) as f:  # an open file works too
        np.testing.assert_array_equal(select_cohort(f, "mi"), [2])
    with pytest.raises(ValueError, match=r"unknown cohort 'cad'; expected one of"):
        select_cohort(out, "cad")
    df = pd.read_csv(outcomes)
    df.loc[df.eid == 1007, "event"] = 0
    df.to_csv(outcomes, index=False)
    out2 = tmp_path / "c2.h5"
    build_ukb_cache(xml, outcomes, out2, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"cohort 'mi' has no events \(1 participants\)"):
        select_cohort(out2, "mi")


# --------------------------------------------------------------------------- reliability
def test_implausible_overflowing_and_flat_signals_are_skipped(tmp_path):
    """Resolution 5000 (1000x amplitudes), counts beyond int64 and a flat lead: each
    participant skipped once with the reason (the flat-lead rule is PTB-XL's)."""
    xml = tmp_path / "xml"
    big = "99999999999999999999"
    write_xml(xml / "1_20205_2_0.xml", with_strip=False)
    write_xml(xml / "2_20205_2_0.xml", with_strip=False, res_text="5000")
    t = counts(template())
    write_xml(xml / "3_20205_2_0.xml", with_strip=False, median_leads={
        "V1": ",".join([*map(str, t[6][:3]), big, *map(str, t[6][4:])])})
    write_xml(xml / "4_20205_2_0.xml", with_strip=False, median_leads={
        "V2": ",".join(["-" + big, *map(str, t[7][1:])])})
    flat = template().copy()
    flat[8] = 0.0
    write_xml(xml / "5_20205_2_0.xml", with_strip=False, median_mv=flat)
    csv = _outcomes(tmp_path / "o.csv", [dict(eid=e, event=1, time_days=100, hyp=1, mi=0)
                                         for e in range(1, 6)])
    s = build_ukb_cache(xml, csv, tmp_path / "a.h5", workers=1, progress=False)
    reasons = dict(s.skipped)
    assert s.n_records == 1 and [i for i, _ in s.skipped] == ["2", "3", "4", "5"]
    assert reasons["2"].startswith("implausible amplitude: 2_20205_2_0.xml: MedianSamples: "
                                   "implausible amplitude: |x| reaches ")
    assert reasons["3"] == (f"unusable XML: 3_20205_2_0.xml: MedianSamples/WaveformData"
                            f"[lead=V1]: number '{big}' at position 3 is out of range "
                            "(integer overflow)")
    assert "[lead=V2]: number '-" + big + "' at position 0 is out of range" in reasons["4"]
    assert reasons["5"] == "flat lead: 5_20205_2_0.xml: MedianSamples: flat lead(s) V3"
    with open_cache(tmp_path / "a.h5", "ukb") as f:
        assert f["eid"][...].tolist() == [1] and np.abs(f["median"][...]).max() < 20
    # the limit is a builder argument (and part of the build config)
    s2 = build_ukb_cache(xml, csv, tmp_path / "b.h5", workers=1, progress=False,
                         max_abs_mv=5000.0)
    assert "2" not in dict(s2.skipped) and s2.n_records == 2


def test_concurrent_builds_of_one_output_wait_for_each_other(ukb_source, tmp_path,
                                                              monkeypatch):
    """Build A (paused mid-way) and build B of the same file from another source: B waits
    for A's lock; each reports the file it wrote; the final file is B's, no leftovers."""
    import threading

    xml, outcomes = ukb_source
    other = tmp_path / "xml2"
    other.mkdir()
    for name in ("1001_20205_2_0.xml", "1002_20205_2_0.xml"):
        (other / name).write_bytes((xml / name).read_bytes())
    out = tmp_path / "out" / "shared.h5"
    started, gate = threading.Event(), threading.Event()
    real = ukb._parse_task

    def paused(task):
        if threading.current_thread().name == "A":
            started.set()
            gate.wait(20)
        return real(task)

    monkeypatch.setattr(ukb, "_parse_task", paused)
    results: dict = {}

    def run(src):
        try:
            results[threading.current_thread().name] = build_ukb_cache(
                src, outcomes, out, workers=1, progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the asserts below
            results[threading.current_thread().name] = e

    a = threading.Thread(target=run, args=(xml,), name="A")
    a.start()
    assert started.wait(20)
    b = threading.Thread(target=run, args=(other,), name="B")
    b.start()
    b.join(0.5)
    assert b.is_alive(), f"B did not wait for A: {results.get('B')!r}"
    gate.set()
    a.join(30)
    b.join(30)
    ra, rb = results["A"], results["B"]
    assert not isinstance(ra, BaseException), ra
    assert not isinstance(rb, BaseException), rb
    assert (ra.n_records, ra.source) == (3, str(xml.resolve()))
    assert (rb.n_records, rb.source) == (2, str(other.resolve()))
    assert f"3 records written from {xml.resolve()}" in ra.report()
    with open_cache(out, "ukb") as f:
        assert f["eid"][...].tolist() == [1001, 1002]
        assert json.loads(f.attrs["build_config"])["xml_dir"] == str(other.resolve())
    assert [p.name for p in out.parent.iterdir()] == ["shared.h5"]


_KILL_SCRIPT = """
import sys, time
from data_modules.sources import ukb

real = ukb._parse_task


def slow(task):
    time.sleep(0.2)
    return real(task)


ukb._parse_task = slow
ukb.build_ukb_cache(sys.argv[1], sys.argv[2], sys.argv[3], workers=2, progress=False)
"""


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:  # /proc fallback
        kids = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids += [int(k) for k in (task / "children").read_text().split()]
        return kids + [d for k in kids for d in _descendants(k)]
    with contextlib.suppress(psutil.NoSuchProcess):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # zombie: dead


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killed_build_takes_its_workers_with_it(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    xml = tmp_path / "xml"
    first = write_xml(xml / "1_20205_2_0.xml", with_strip=False)
    for eid in range(2, 61):
        os.link(first, xml / f"{eid}_20205_2_0.xml")
    csv = _outcomes(tmp_path / "o.csv", [dict(eid=e, event=1, time_days=100, hyp=1, mi=0)
                                         for e in range(1, 61)])
    script = tmp_path / "build.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(xml), str(csv),
                             str(tmp_path / "k.h5")], env=env)
    try:
        deadline = time.monotonic() + 30
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 2 and proc.poll() is None:
            time.sleep(0.1)
            kids = _descendants(proc.pid)
        assert len(kids) >= 2, f"no workers seen (build exit code {proc.poll()})"
        time.sleep(0.3)  # the workers are inside their tasks
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(map(_alive, kids)):
            time.sleep(0.1)
        left = [k for k in kids if _alive(k)]
        assert not left, f"workers {left} outlived their killed parent"
        # the killed build's temporary files go with the next build of the same output
        assert [p for p in tmp_path.iterdir() if p.name.startswith(".k.h5.")]
        build_ukb_cache(xml, csv, tmp_path / "k.h5", workers=1, progress=False)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".k.h5.")]
    finally:
        for k in [proc.pid, *kids]:
            with contextlib.suppress(OSError):
                os.kill(k, signal.SIGKILL)


def test_full_disk_gives_one_error_and_no_partial_cache(ukb_source, tmp_path, monkeypatch):
    import errno

    xml, outcomes = ukb_source
    out = tmp_path / "out" / "full.h5"

    def no_space(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", no_space)
    with pytest.raises(OSError, match=r"full.h5: writing the cache failed: No space left on "
                                      r"device \(disk full\?\); no cache was written") as e:
        build_ukb_cache(xml, outcomes, out, workers=1, progress=False)
    assert e.value.errno == errno.ENOSPC
    assert list(out.parent.iterdir()) == []  # no cache, no staging/temporary/lock file


@pytest.mark.parametrize("value, error", [
    ("inf", "time must be a finite number of days"), ("-inf", "time must be a finite number"),
    ("1e39", "time must be a finite number"),
    ("1e30", "time beyond 150 years cannot be true"),  # 150 years: just over, refused
    ("54788", "time beyond 150 years cannot be true")])
def test_non_finite_and_impossible_times_are_refused_with_eids(ukb_source, tmp_path, value,
                                                               error):
    xml, outcomes = ukb_source
    df = pd.read_csv(outcomes)
    df["time_days"] = df["time_days"].astype(object)
    df.loc[df.eid == 1002, "time_days"] = value
    df.to_csv(outcomes, index=False)
    with pytest.raises(DataError, match=rf"column 'time_days': {error}.*offending eids "
                                        r"\[1002\]"):
        build_ukb_cache(xml, outcomes, tmp_path / "t.h5", workers=1, progress=False)
    assert not (tmp_path / "t.h5").exists()


def test_doubtful_times_and_dates_are_recorded_warnings(ukb_source, tmp_path, caplog):
    xml, outcomes = ukb_source
    df = pd.read_csv(outcomes)
    df["time_days"] = df["time_days"].astype(float)
    df["end_date"] = (pd.to_datetime(df.ecg_date)
                      + pd.to_timedelta(df.time_days, unit="D")).dt.strftime("%Y-%m-%d")
    df.loc[df.eid == 1001, "time_days"] = 1e-9  # absurd, and disagrees with the dates
    df.loc[df.eid == 1002, "time_days"] = 54787  # 149.99 years: just under the limit
    df.loc[df.eid == 1002, "ecg_date"] = "2015-06-03"  # the XML says 2015-06-01
    df.loc[df.eid == 1007, "time_days"] = 90  # the dates say 60
    df.to_csv(outcomes, index=False)
    with caplog.at_level("WARNING"):
        s = build_ukb_cache(xml, outcomes, tmp_path / "w.h5", workers=1, progress=False)
    assert s.n_records == 3
    msgs: dict[str, list[str]] = {}
    for eid, m in s.warnings:
        msgs.setdefault(eid, []).append(m)
    assert sorted(msgs) == ["1001", "1002", "1007"]
    assert any("time 1e-09 days is outside the plausible span" in m for m in msgs["1001"])
    assert any("time 54787 days is outside the plausible span" in m for m in msgs["1002"])
    assert any("acquisition date 2015-06-01 differs from ecg_date 2015-06-03" in m
               for m in msgs["1002"])
    assert any("time_days 90 disagrees with end_date - ecg_date = 60 days" in m
               for m in msgs["1007"])
    with open_cache(tmp_path / "w.h5", "ukb") as f:
        assert read_warnings(f) == s.warnings
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "1001" in logged and "1002" in logged and "1007" in logged
    assert "warning(s), stored in warnings/" in s.report()

"""GE MUSE XML: the reader against the twin's ground truth, leads by name, derived limb leads,
every bad-input reason, and ``predict``'s routing of XML files by their root element."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_modules.errors import RecordSkip
from data_modules.signal.leads import LEADS
from data_modules.sources.files import discover, load_beat
from data_modules.sources.muse_xml import DERIVED, muse_median, muse_strip, read_muse_xml
from data_modules.synthetic.beat_model import INDEPENDENT, simulate_record
from data_modules.synthetic.muse_format import UNITS_PER_BIT, muse_xml
from data_modules.synthetic.ukb_format import cardiology_xml

QUANTUM_MV = UNITS_PER_BIT / 1000.0
WHEN = pd.Timestamp("2019-03-14 08:12:33")


@pytest.fixture(scope="module")
def rec():
    return simulate_record(np.random.default_rng(3), "NORM", fs=500, noise="ukb")


def _write(path: Path, rec, leads, wrap=False) -> Path:
    path.write_bytes(muse_xml("123", 61, True, WHEN, rec, leads, wrap))
    return path


def test_base64_round_trip_gives_the_twins_signal_in_mv_with_derived_limb_leads(rec, tmp_path):
    leads = [INDEPENDENT[i] for i in np.random.default_rng(0).permutation(8)]  # shuffled
    r = read_muse_xml(_write(tmp_path / "a.xml", rec, leads, wrap=True))
    assert r.leads[:8] == tuple(leads) and r.meta["derived"] == ("III", "aVR", "aVL", "aVF")
    assert r.fs == 500 and r.meta == {**r.meta, "patient_id": "123", "age": 61.0, "sex": 1,
                                      "acquired": "2019-03-14T08:12:33"}
    x = r.in_standard_order()
    for name in INDEPENDENT:  # stored: the truth to within half a bit
        j = LEADS.index(name)
        assert np.abs(x[j] - rec.signal[j]).max() <= QUANTUM_MV / 2 + 1e-9
    i, ii = x[0], x[1]
    for name, formula in DERIVED.items():  # derived: exactly the formula on I and II
        assert np.array_equal(x[LEADS.index(name)], formula(i, ii))
        assert np.abs(x[LEADS.index(name)] - rec.signal[LEADS.index(name)]).max() < 2 * QUANTUM_MV
    assert np.array_equal(x[2], ii - i) and np.allclose(x[3], -(i + ii) / 2)


def test_twelve_stored_leads_are_used_as_stored_in_any_order(rec, tmp_path):
    leads = [LEADS[i] for i in np.random.default_rng(1).permutation(12)]
    r = read_muse_xml(_write(tmp_path / "b.xml", rec, leads))
    assert r.leads == tuple(leads) and r.meta["derived"] == ()
    assert np.abs(r.in_standard_order() - rec.signal).max() <= QUANTUM_MV / 2 + 1e-9


def _edited(src: Path, dst: Path, lead: str, edit) -> Path:
    root = ET.parse(src).getroot()
    rhythm = [w for w in root.iter("Waveform") if w.findtext("WaveformType") == "Rhythm"][0]
    ld = next(d for d in rhythm.iter("LeadData") if d.findtext("LeadID") == lead)
    edit(rhythm, ld)
    ET.ElementTree(root).write(dst)
    return dst


def _set(tag, value):
    def edit(_, ld):
        ld.find(tag).text = value
    return edit


BAD = {  # edit of one rhythm lead -> the reason's expected text
    "missing lead": ("V3", lambda w, ld: w.remove(ld),
                     r"Waveform\[Rhythm\]/LeadData\[LeadID=V3\] missing"),
    "bad base64": ("V1", _set("WaveFormData", "AAE@AgM="),
                   r"LeadData\[LeadID=V1\]/WaveFormData: bad base64"),
    "sample count": ("II", _set("LeadSampleCountTotal", "4999"),
                     r"LeadData\[LeadID=II\]/WaveFormData: 5000 samples, "
                     r"LeadSampleCountTotal says 4999"),
    "unknown unit": ("V5", _set("LeadAmplitudeUnits", "NANOVOLTS"),
                     r"LeadData\[LeadID=V5\]/LeadAmplitudeUnits: unknown unit 'NANOVOLTS'"),
    "NaN": ("I", _set("LeadAmplitudeUnitsPerBit", "NaN"),
            r"LeadData\[LeadID=I\]/LeadAmplitudeUnitsPerBit: non-finite value 'NaN'"),
    "unknown lead": ("V6", _set("LeadID", "V7"),
                     r"LeadData\[LeadID=V7\]: unknown lead name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_skip_naming_file_and_field(case, rec, tmp_path):
    lead, edit, expected = BAD[case]
    src = _write(tmp_path / "src.xml", rec, list(INDEPENDENT))
    bad = _edited(src, tmp_path / "bad.xml", lead, edit)
    with pytest.raises(RecordSkip) as e:
        muse_strip(bad, "site/bad.xml")
    assert re.match(r"unusable XML: site/bad\.xml: Waveform\[Rhythm\]", e.value.reason)
    assert re.search(expected, e.value.reason), e.value.reason


def test_predict_tells_cardiosoft_from_muse_by_the_root_element(rec, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _write(d / "muse.xml", rec, list(INDEPENDENT))
    (d / "cardiosoft.xml").write_bytes(cardiology_xml(7, 60, False, WHEN, rec, rec.beat,
                                                      np.random.default_rng(0)))
    (d / "other.xml").write_text('<?xml version="1.0"?>\n<AnnotatedECG><x/></AnnotatedECG>\n')
    items, skipped = discover([d])
    assert not skipped and [it.id for it in items] == ["cardiosoft", "muse", "other"]
    beats = {}
    for it in items:
        try:
            beats[it.id] = load_beat(it)
        except RecordSkip as e:
            beats[it.id] = e.reason
    assert np.array_equal(beats["muse"], muse_median(d / "muse.xml", "muse.xml")[1])
    assert beats["cardiosoft"].shape == (12, 600)
    for b in (beats["muse"], beats["cardiosoft"]):  # the same heart, however it was stored
        assert np.corrcoef(b[1], rec.beat[1])[0, 1] > 0.95
    assert beats["other"] == ("unknown XML format: other.xml: root element <AnnotatedECG> is "
                              "neither CardioSoft <CardiologyXML> nor GE MUSE <RestingECG>")

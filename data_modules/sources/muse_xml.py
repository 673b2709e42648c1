"""GE MUSE ``RestingECG`` XML exports (the format most hospital ECG systems export):
parsing into a :class:`~data_modules.sources.base.RawRecord` and the median beat.

Layout followed (docs/data_formats.md, "GE MUSE XML"), as public readers of these exports
read it: the element names (``Waveform``/``WaveformType``/``Rhythm``/``LeadData``/``LeadID``/
``WaveFormData``/``SampleBase``/``LeadAmplitudeUnitsPerBit``/``LeadAmplitudeUnits``) as in GE
Healthcare's example extractor ``xmlecgex`` (A. D. Ricke, 2009); base64 of little-endian
int16 per lead, 8 stored leads and the four derived limb leads as in ``ECGXMLReader``
(github.com/will2hew/ECGXMLReader, which returns counts: the scale below is applied here);
the unit scale (MICROVOLTS x 0.001, MILLIVOLTS x 1 to mV) as in nagyl1999's ``muse2wfdb``
converter. Decisions:

* The root element is ``RestingECG``; the ``Waveform`` whose ``WaveformType`` is ``Rhythm``
  is the strip (10 s in practice; any length the median-beat extraction accepts, >= 2 s).
  Its rate is ``SampleBase`` x 10^``SampleExponent`` (exponent 0 when absent), in Hz.
* Each ``LeadData``: ``WaveFormData`` is base64 (whitespace and line breaks ignored) of
  little-endian int16 (``LeadSampleSize`` 2 when given); the decoded count must equal
  ``LeadSampleCountTotal``; mV = counts x ``LeadAmplitudeUnitsPerBit`` x the unit's scale
  (``LeadAmplitudeUnits`` MICROVOLTS: 1e-3, MILLIVOLTS: 1; any other unit is refused rather
  than guessed). ``FirstSampleBaseline`` and ``LeadOffsetFirstSample`` are not applied
  (ECGXMLReader ignores them too; the median-beat extraction removes any offset).
* Leads are taken by their ``LeadID`` (case-insensitive), in whatever order the file lists
  them. MUSE usually stores 8 (I, II, V1-V6): a limb lead that is absent is derived from I
  and II (III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2); a limb
  lead the file does store is used as stored. The record's ``leads`` are the file's names
  followed by the derived ones, mapped to the standard order by name
  (:meth:`RawRecord.in_standard_order`).
* The median beat is the project's own extraction from the strip
  (:func:`data_modules.sources.wfdb_record.strip_median`), not the device's ``Median``
  waveform: the device median is GE 12SL's beat at its own fiducial with its own filters,
  and only the project's extraction makes the beat the same function of the strip for
  PTB-XL pretraining, WFDB and CardioSoft strips and MUSE files in one cohort.
* Demographics (``meta``): ``PatientDemographics/PatientID``, ``PatientAge`` (years; NaN
  when absent or in other ``AgeUnits``), ``Gender`` (MALE -> 1, FEMALE -> 0, else None),
  ``TestDemographics/AcquisitionDate`` (MM-DD-YYYY) + ``AcquisitionTime`` (ISO text, None
  when absent or unreadable). Reading them never rejects a file; the waveform does.
* Every problem is a :class:`MuseXMLError` naming the file and the field, e.g.
  ``<file>: Waveform[Rhythm]/LeadData[LeadID=V3]/WaveFormData: bad base64 (...)``;
  :func:`muse_strip` turns it into a :class:`RecordSkip` (category ``unusable XML``, as for
  CardioSoft files).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from data_modules.errors import DataError, RecordSkip
from data_modules.limits import LimitExceeded
from data_modules.signal.leads import LEADS
from data_modules.signal.median_beat import MAX_ABS_MV
from data_modules.sources.base import RawRecord
from data_modules.sources.wfdb_record import strip_median
from data_modules.sources.xml_format import parse_xml, xml_number, xml_text

ROOT = "RestingECG"
UNIT_MV = {"MICROVOLTS": 1e-3, "MILLIVOLTS": 1.0}  # LeadAmplitudeUnits -> mV per unit
STORED = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")  # what MUSE stores; the rest derived
# Limb leads from I and II (Einthoven / Goldberger)
DERIVED = {
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2.0,
    "aVL": lambda i, ii: i - ii / 2.0,
    "aVF": lambda i, ii: ii - i / 2.0,
}
_LOOKUP = {n.lower(): n for n in LEADS}


class MuseXMLError(DataError):
    """A MUSE XML file that cannot be used; the message names the file and field."""


_text = xml_text


def _number(el: ET.Element, path: str, file: Path, where: str) -> float:
    return xml_number(el, path, file, MuseXMLError, prefix=f"{where}/")


def _rhythm(root: ET.Element, file: Path) -> ET.Element:
    for wf in root.findall("Waveform"):
        if (_text(wf, "WaveformType") or "").lower() == "rhythm":
            return wf
    kinds = [_text(wf, "WaveformType") for wf in root.findall("Waveform")]
    raise MuseXMLError(f"{file}: Waveform[WaveformType=Rhythm] missing (found {kinds})")


def _lead(ld: ET.Element, file: Path, where: str) -> tuple[str, np.ndarray]:
    """One ``LeadData``: its standard lead name and samples in mV."""
    raw_id = _text(ld, "LeadID")
    if raw_id is None:
        raise MuseXMLError(f"{file}: {where}/LeadData/LeadID missing")
    name = _LOOKUP.get(raw_id.lower())
    at = f"{where}/LeadData[LeadID={raw_id}]"
    if name is None:
        raise MuseXMLError(f"{file}: {at}: unknown lead name (expected one of {LEADS})")
    per_bit = _number(ld, "LeadAmplitudeUnitsPerBit", file, at)
    if not per_bit > 0:
        raise MuseXMLError(f"{file}: {at}/LeadAmplitudeUnitsPerBit: {per_bit:g} is not positive")
    unit = (_text(ld, "LeadAmplitudeUnits") or "").upper()
    if unit not in UNIT_MV:
        raise MuseXMLError(f"{file}: {at}/LeadAmplitudeUnits: unknown unit {unit or 'missing'!r}"
                           f" (expected one of {sorted(UNIT_MV)})")
    size = _text(ld, "LeadSampleSize")
    if size is not None and size != "2":
        raise MuseXMLError(f"{file}: {at}/LeadSampleSize: {size} bytes per sample, only 2 "
                           "(int16) is read")
    n = _number(ld, "LeadSampleCountTotal", file, at)
    text = "".join((ld.findtext("WaveFormData") or "").split())
    if not text:
        raise MuseXMLError(f"{file}: {at}/WaveFormData missing or empty")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MuseXMLError(f"{file}: {at}/WaveFormData: bad base64 ({e})") from None
    if len(data) % 2:
        raise MuseXMLError(f"{file}: {at}/WaveFormData: {len(data)} bytes, not a whole "
                           "number of int16 samples")
    counts = np.frombuffer(data, dtype="<i2")
    if counts.size != int(n) or n != int(n):
        raise MuseXMLError(f"{file}: {at}/WaveFormData: {counts.size} samples, "
                           f"LeadSampleCountTotal says {n:g}")
    return name, counts.astype(np.float64) * (per_bit * UNIT_MV[unit])


def _meta(root: ET.Element) -> dict[str, object]:
    age = float("nan")
    t = _text(root, "PatientDemographics/PatientAge")
    units = (_text(root, "PatientDemographics/AgeUnits") or "YEARS").upper()
    if t is not None and units == "YEARS":
        try:
            age = float(t)
        except ValueError:
            pass
    gender = (_text(root, "PatientDemographics/Gender") or "").upper()
    when = None
    d = _text(root, "TestDemographics/AcquisitionDate")
    if d is not None:
        tm = _text(root, "TestDemographics/AcquisitionTime") or "00:00:00"
        try:
            when = dt.datetime.strptime(f"{d} {tm}", "%m-%d-%Y %H:%M:%S").isoformat()
        except ValueError:
            when = None
    return {"patient_id": _text(root, "PatientDemographics/PatientID"), "age": age,
            "sex": {"MALE": 1, "FEMALE": 0}.get(gender), "acquired": when}


def read_muse_xml(path: str | os.PathLike) -> RawRecord:
    """The rhythm strip of one MUSE XML file in mV with its leads by name (absent limb leads
    derived); :class:`MuseXMLError` naming the file and field for anything unusable."""
    p = Path(path)
    try:
        root = parse_xml(p)
    except ET.ParseError as e:
        raise MuseXMLError(f"{p}: not well-formed XML ({e})") from None
    except OSError as e:
        raise MuseXMLError(f"{p}: cannot read ({e})") from None
    if root.tag != ROOT:
        raise MuseXMLError(f"{p}: root element is <{root.tag}>, expected <{ROOT}>")
    wf = _rhythm(root, p)
    where = "Waveform[Rhythm]"
    base = _number(wf, "SampleBase", p, where)
    exp = _text(wf, "SampleExponent")
    try:
        fs = base * 10.0 ** int(exp or 0)
    except ValueError:
        raise MuseXMLError(f"{p}: {where}/SampleExponent: malformed integer {exp!r}") from None
    if not fs > 0:
        raise MuseXMLError(f"{p}: {where}/SampleBase: {fs:g} Hz is not a positive rate")
    leads: dict[str, np.ndarray] = {}
    for ld in wf.findall("LeadData"):
        name, x = _lead(ld, p, where)
        if name in leads:
            raise MuseXMLError(f"{p}: {where}/LeadData[LeadID={name}] appears twice")
        if leads and x.size != next(iter(leads.values())).size:
            first = next(iter(leads))
            raise MuseXMLError(f"{p}: {where}/LeadData[LeadID={name}]/LeadSampleCountTotal: "
                               f"{x.size} samples, lead {first} has "
                               f"{leads[first].size}")
        leads[name] = x
    derived = tuple(n for n in DERIVED if n not in leads)
    needed = STORED if derived else tuple(n for n in STORED if n not in ("I", "II"))
    for n in needed:
        if n not in leads:
            why = f" (needed to derive {','.join(derived)})" if n in ("I", "II") else ""
            raise MuseXMLError(f"{p}: {where}/LeadData[LeadID={n}] missing{why}")
    for n in derived:
        leads[n] = DERIVED[n](leads["I"], leads["II"])
    names = tuple(leads)
    return RawRecord(p.stem, np.stack([leads[n] for n in names]), fs, names,
                     {**_meta(root), "derived": derived})


def muse_strip(path: str | os.PathLike, rel: str) -> tuple[RawRecord, np.ndarray]:
    """One MUSE file's record and its strip (12, T) in the standard lead order;
    :class:`RecordSkip` (``unusable XML: <rel>: <field>: <problem>``) otherwise."""
    path = str(path)
    try:
        rec = read_muse_xml(path)
        return rec, rec.in_standard_order()
    except LimitExceeded:
        raise  # names the file and the limit; not parsed
    except (MuseXMLError, ValueError) as err:
        problem = str(err)
        problem = problem[len(path) + 2:] if problem.startswith(f"{path}: ") else problem
        raise RecordSkip(f"unusable XML: {rel}: {problem}") from None


def muse_median(path: str | os.PathLike, rel: str, max_abs_mv: float = MAX_ABS_MV
                ) -> tuple[RawRecord, np.ndarray]:
    """The record and its median beat (12, 600) at 500 Hz by the project's extraction from
    the rhythm strip, with the shared checks; :class:`RecordSkip` with the reason."""
    rec, x = muse_strip(path, rel)
    return rec, strip_median(x, rec.fs, max_abs_mv, f"strip {rel}")

"""GE CardioSoft ``CardiologyXML`` resting ECGs (UK Biobank field 20205): parsing and the
checks every reader of these files applies (docs/data_formats.md).

Waveforms: counts x ``Resolution`` (uV per LSB) / 1000 = mV; leads are mapped by their
``lead`` attribute (case-insensitive), whatever order the file lists them in; a rate other
than 500 Hz is resampled. Every problem names the file and the field, e.g.
``<file>: StripData/WaveformData[lead=V3] missing``. The participant id is the UK Biobank
bulk file name ``<eid>_20205_<instance>_<array>.xml`` when it matches, else
``PatientInfo/PID``. The UK Biobank cache and ``ecg-dan predict`` both take their beats from
:func:`checked_median`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_modules.errors import DataError, RecordSkip
from data_modules.limits import LimitExceeded
from data_modules.signal.leads import BEAT_LEN, FS, LEADS, N_LEADS
from data_modules.signal.median_beat import MAX_ABS_MV, conform_beat, resample_to, signal_problem
from data_modules.sources.wfdb_record import strip_median
from data_modules.sources.xml_format import parse_xml, xml_number, xml_text

MEASUREMENT_NAMES: tuple[str, ...] = (
    "VentricularRate", "PQInterval", "PDuration", "QRSDuration", "QTInterval",
    "QTCInterval", "RRInterval", "PAxis", "RAxis", "TAxis",
)
MEDIAN_SECONDS = BEAT_LEN / FS  # 1.2 s
STRIP_SECONDS = 10.0
_BULK_NAME = re.compile(r"^(\d+)_20205_\d+_\d+\.xml$", re.IGNORECASE)
_INT64_LIMITS = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)


class CardiologyXMLError(DataError):
    """A CardioSoft XML file that cannot be used; the message names the file and field."""


@dataclass
class CardioSoftECG:
    """One parsed CardioSoft resting ECG (waveforms in mV, in standard lead order by the
    files' ``lead`` attributes)."""

    path: Path
    eid: int
    ecg_datetime: dt.datetime | None
    age: float  # NaN when absent
    sex: int  # UK Biobank coding: 0 female, 1 male
    median: np.ndarray  # (12, 600) float32, the device median as stored (500 Hz)
    strip: np.ndarray | None  # (12, 5000) float32 or None
    measurements: dict[str, float] = field(default_factory=dict)


_text = xml_text


def _number(root: ET.Element, path: str, file: Path, required: bool = True,
            prefix: str = "") -> float:
    """Float value of ``root/path``; NaN when absent/empty unless ``required``."""
    return xml_number(root, path, file, CardiologyXMLError, required, prefix)


def _counts(text: str | None, where: str, file: Path) -> np.ndarray:
    if text is None or not text.strip():
        raise CardiologyXMLError(f"{file}: {where} empty")
    n_expected = text.count(",") + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:  # fast path; stops silently at a bad token, hence the count check
            v = np.fromstring(text, dtype=np.int64, sep=",")
            # strtoll saturates out-of-range numbers: re-check those token by token
            if v.size == n_expected and not np.isin(v, _INT64_LIMITS).any():
                return v
        except (ValueError, DeprecationWarning):
            pass
    tokens = text.split(",")
    for i, tok in enumerate(tokens):
        try:
            v = int(tok)
        except ValueError:
            raise CardiologyXMLError(
                f"{file}: {where}: malformed number {tok.strip()!r} at position {i}") from None
        if not _INT64_LIMITS[0] < v < _INT64_LIMITS[1]:
            raise CardiologyXMLError(f"{file}: {where}: number {tok.strip()!r} at position {i} "
                                     "is out of range (integer overflow)")
    return np.array(tokens, dtype=np.int64)  # pragma: no cover - fast path handles valid text


def _waveforms(root: ET.Element, tag: str, file: Path, seconds: float) -> np.ndarray:
    """(12, round(seconds * 500)) float64 mV from a MedianSamples/StripData element."""
    el = root.find(tag) if tag == "StripData" else root.find(f"RestingECGMeasurements/{tag}")
    name = tag
    if el is None:
        raise CardiologyXMLError(f"{file}: {name} missing")
    fs = _number(el, "SampleRate", file, prefix=f"{name}/")
    res = _number(el, "Resolution", file, prefix=f"{name}/")
    n_total = _number(el, "ChannelSampleCountTotal", file, prefix=f"{name}/")
    if not fs > 0:
        raise CardiologyXMLError(f"{file}: {name}/SampleRate: {fs:g} is not a positive rate")
    if not res > 0:
        raise CardiologyXMLError(f"{file}: {name}/Resolution: {res:g} is not positive")
    expected = int(round(seconds * fs))
    if int(n_total) != expected:
        raise CardiologyXMLError(f"{file}: {name}/ChannelSampleCountTotal: {int(n_total)} "
                                 f"samples at {fs:g} Hz, expected {expected} ({seconds:g} s)")
    n_leads = _text(el, "NumberOfLeads")
    found: dict[int, np.ndarray] = {}
    for wf in el.findall("WaveformData"):
        lead = (wf.get("lead") or "").strip()
        key = {n.lower(): i for i, n in enumerate(LEADS)}.get(lead.lower())
        if key is None:
            raise CardiologyXMLError(f"{file}: {name}/WaveformData[lead={lead}]: unknown lead")
        where = f"{name}/WaveformData[lead={LEADS[key]}]"
        if key in found:
            raise CardiologyXMLError(f"{file}: {where} appears twice")
        v = _counts(wf.text, where, file)
        if v.size != expected:
            raise CardiologyXMLError(f"{file}: {where} has {v.size} values, expected "
                                     f"{expected} (ChannelSampleCountTotal)")
        found[key] = v
    for i, lead in enumerate(LEADS):
        if i not in found:
            raise CardiologyXMLError(f"{file}: {name}/WaveformData[lead={lead}] missing")
    if n_leads is not None and n_leads.isdigit() and int(n_leads) != N_LEADS:
        raise CardiologyXMLError(f"{file}: {name}/NumberOfLeads: {n_leads}, expected 12")
    x = np.stack([found[i] for i in range(N_LEADS)]).astype(np.float64) * res / 1000.0
    if fs != FS:
        x = resample_to(x, fs, FS)
    return x


def bulk_eid(name: str) -> int | None:
    """The eid in a UK Biobank bulk file name ``<eid>_20205_<instance>_<array>.xml``, else
    None (the file's ``PatientInfo/PID`` then names the participant)."""
    m = _BULK_NAME.match(name)
    return int(m.group(1)) if m else None


def _eid(root: ET.Element, path: Path) -> int:
    eid = bulk_eid(path.name)
    if eid is not None:
        return eid
    pid = _text(root, "PatientInfo/PID")
    if pid is None:
        raise CardiologyXMLError(f"{path}: PatientInfo/PID missing and the file name is not "
                                 "<eid>_20205_<instance>_<array>.xml")
    try:
        return int(pid)
    except ValueError:
        raise CardiologyXMLError(f"{path}: PatientInfo/PID: {pid!r} is not an integer") from None


def _datetime(root: ET.Element, path: Path) -> dt.datetime | None:
    base = "ObservationDateTime"
    if root.find(base) is None:
        return None
    parts = {}
    for k in ("Year", "Month", "Day", "Hour", "Minute", "Second"):
        v = _number(root, f"{base}/{k}", path, required=k in ("Year", "Month", "Day"))
        parts[k] = 0 if np.isnan(v) else int(v)
    try:
        return dt.datetime(parts["Year"], parts["Month"], parts["Day"], parts["Hour"],
                           parts["Minute"], parts["Second"])
    except ValueError as e:
        raise CardiologyXMLError(f"{path}: {base}: invalid date/time ({e})") from None


def parse_cardiology_xml(path: str | os.PathLike, strip: bool = True) -> CardioSoftECG:
    """Parse one CardioSoft ``CardiologyXML`` file (UK Biobank field 20205).

    Raises :class:`CardiologyXMLError` naming the file and field for anything unusable.
    ``strip=False`` skips the (slow) rhythm-strip parse.
    """
    p = Path(path)
    try:
        root = parse_xml(p)
    except ET.ParseError as e:
        raise CardiologyXMLError(f"{p}: not well-formed XML ({e})") from None
    except OSError as e:
        raise CardiologyXMLError(f"{p}: cannot read ({e})") from None
    if root.tag != "CardiologyXML":
        raise CardiologyXMLError(f"{p}: root element is <{root.tag}>, expected <CardiologyXML>")
    gender = (_text(root, "PatientInfo/Gender") or "").lower()
    sexes = {"male": 1, "m": 1, "female": 0, "f": 0}
    if gender not in sexes:
        raise CardiologyXMLError(f"{p}: PatientInfo/Gender: {gender or 'missing'!r} is not "
                                 "MALE/FEMALE")
    meas = {k: _number(root, f"RestingECGMeasurements/{k}", p, required=False)
            for k in MEASUREMENT_NAMES}
    return CardioSoftECG(
        path=p,
        eid=_eid(root, p),
        ecg_datetime=_datetime(root, p),
        age=_number(root, "PatientInfo/Age", p, required=False),
        sex=sexes[gender],
        median=_waveforms(root, "MedianSamples", p, MEDIAN_SECONDS).astype(np.float32),
        strip=_waveforms(root, "StripData", p, STRIP_SECONDS).astype(np.float32) if strip
        else None,
        measurements=meas,
    )


def _eid_of_file(path: Path) -> int | None:
    """The eid of a file that could not be used, when it can still be read (for reporting)."""
    m = _BULK_NAME.match(path.name)
    if m:
        return int(m.group(1))
    with contextlib.suppress(Exception):
        return _eid(parse_xml(path), path)
    return None


_SIGNAL_CATEGORY = (("NaN", "NaN samples"), ("flat", "flat lead"),
                    ("implausible", "implausible amplitude"))


def _signal_reason(x: np.ndarray, max_abs_mv: float, what: str, rel: str) -> str | None:
    problem = signal_problem(x, max_abs_mv)
    if problem is None:
        return None
    cat = next(c for prefix, c in _SIGNAL_CATEGORY if problem.startswith(prefix))
    return f"{cat}: {rel}: {what}: {problem}"


def checked_median(path: str | os.PathLike, rel: str, strips: bool = False,
                   recenter: bool = True, max_abs_mv: float = MAX_ABS_MV
                   ) -> tuple[CardioSoftECG, np.ndarray]:
    """Parse one CardioSoft XML file and apply the cache's checks (the signal rule on the
    median and, with ``strips``, the strip); returns the ECG and its median beat (12, 600)
    float32, re-centred on R when ``recenter``. :class:`RecordSkip` with the reason (its
    category first, naming ``rel``) and the eid when readable otherwise. The UK Biobank
    cache and ``ecg-dan predict`` both take their beats from here."""
    path = str(path)
    try:
        e = parse_cardiology_xml(path, strip=strips)
    except LimitExceeded:
        raise  # names the file and the limit; not parsed
    except (CardiologyXMLError, ValueError) as err:
        problem = str(err)
        problem = problem[len(path) + 2:] if problem.startswith(f"{path}: ") else problem
        raise RecordSkip(f"unusable XML: {rel}: {problem}", _eid_of_file(Path(path))) from None
    for what, x in (("MedianSamples", e.median), ("StripData", e.strip)):
        if x is not None:
            reason = _signal_reason(x, max_abs_mv, what, rel)
            if reason is not None:
                raise RecordSkip(reason, e.eid)
    try:
        median = conform_beat(e.median, FS).astype(np.float32) if recenter else e.median
    except ValueError as err:
        raise RecordSkip(f"unusable XML: {rel}: MedianSamples: {err}", e.eid) from None
    return e, median


def cardiosoft_strip_median(path: str | os.PathLike, rel: str,
                            max_abs_mv: float = MAX_ABS_MV) -> np.ndarray:
    """The median beat (12, 600) float32 derived from the file's 10 s strip by the project's
    extraction (not the device median): how a cohort cache (and ``predict`` for a model
    trained on one) makes every format's beat alike. :class:`RecordSkip` as
    :func:`checked_median`."""
    e, _ = checked_median(path, rel, strips=True, recenter=False, max_abs_mv=max_abs_mv)
    return strip_median(e.strip, float(FS), max_abs_mv, f"strip {rel}").astype(np.float32)

"""WFDB records (PTB-XL, PTB-XL+ medians, any WFDB file given to ``ecg-dan predict``): read
with the ``wfdb`` package, or a lenient parser for headers it refuses; leads mapped by the
names in the header, never by position; the median beat of a strip with the shared checks."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from data_modules.errors import RecordSkip
from data_modules.limits import check_file_size, over
from data_modules.signal.median_beat import (
    MAX_ABS_MV,
    BeatExtractionError,
    median_beat,
    signal_problem,
)
from data_modules.sources.base import RawRecord


def _read_header_lenient(stem: Path) -> tuple[float, int, list[dict[str, Any]]]:
    """Minimal WFDB header parser tolerant of a directory prefix in the record name."""
    lines = [ln.strip() for ln in stem.with_suffix(".hea").read_text(errors="replace")
             .splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rec = lines[0].split()
    n_sig = int(rec[1])
    fs = float(rec[2].split("/")[0]) if len(rec) > 2 else 250.0
    n = int(rec[3]) if len(rec) > 3 else -1
    sigs = []
    for ln in lines[1:1 + n_sig]:
        t = ln.split()
        gain_tok = t[2] if len(t) > 2 else "200"
        gain_s, _, _units = gain_tok.partition("/")
        baseline = None
        if "(" in gain_s:
            gain_s, b = gain_s.split("(")
            baseline = int(b.rstrip(")"))
        adczero = int(t[4]) if len(t) > 4 else 0
        sigs.append(dict(file=os.path.basename(t[0]), fmt=t[1].split("x")[0].split(":")[0],
                         gain=float(gain_s),
                         baseline=adczero if baseline is None else baseline,
                         name=t[8] if len(t) > 8 else f"ch{len(sigs)}"))
    return fs, n, sigs


# bytes per sample of the WFDB storage formats (format 212 packs two 12-bit samples in 3)
_FORMAT_BYTES = {"8": 1.0, "16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5,
                 "24": 3.0, "32": 4.0}


def check_wfdb_limits(stem: Path) -> None:
    """Refuse a record beyond the limits of :mod:`data_modules.limits` (header size, signal
    count, samples per signal, size of its signal files) or with signal files shorter than
    its header declares, from the header text and ``stat`` alone: before the WFDB reader
    parses it (its time grows with the square of the signal count) or allocates its samples.
    Malformed headers are left to the readers."""
    hea = stem.with_suffix(".hea")
    check_file_size(hea, "WFDB_HEADER_KB", hea.name)
    lines = [ln.split() for ln in hea.read_text(errors="replace").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        n_sig = int(lines[0][1])
        n = int(lines[0][3]) if len(lines[0]) > 3 else -1
    except (IndexError, ValueError):
        return
    for name, value in (("WFDB_SIGNALS", n_sig), ("WFDB_SAMPLES", n)):
        err = over(name, value, hea.name)
        if err is not None:
            raise err
    need: dict[str, float] = {}
    for t in lines[1:1 + n_sig]:
        fmt = t[1].split("x")[0].split(":")[0].split("+")[0] if len(t) > 1 else ""
        name = os.path.basename(t[0])
        need[name] = need.get(name, 0.0) + _FORMAT_BYTES.get(fmt, float("nan")) * max(n, 0)
    sizes = {}
    for name in need:
        with contextlib.suppress(OSError):
            sizes[name] = (stem.parent / name).stat().st_size
    err = over("WFDB_DAT_MB", sum(sizes.values()), f"{stem.name} signal files")
    if err is not None:
        raise err
    short = [f"{k} holds {sizes[k]} bytes, the header declares {need[k]:.0f} ({n} samples "
             "per signal)" for k in sizes if n > 0 and sizes[k] < need[k]]
    if short:
        raise ValueError(f"truncated: {'; '.join(short)}")  # read_wfdb_12lead names it


def _header_problem(stem: Path) -> str | None:
    """A header value the WFDB reader would turn into a wrong signal instead of refusing
    it: a sampling rate that is not a number > 0 (it reads ``-500`` as 250 Hz), a gain of 0
    (it assumes 200 units/mV: a guess of the scale) or a negative gain (an inverted ECG)."""
    lines = [ln.split() for ln in stem.with_suffix(".hea").read_text(errors="replace")
             .splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return "empty header"
    rec = lines[0]
    if len(rec) > 2:  # fs[/counter frequency[(base counter)]]; absent: WFDB's 250 Hz
        text = rec[2].split("/")[0].split("(")[0]
        try:
            fs = float(text)
        except ValueError:
            return f"header sampling rate {rec[2]!r} is not a number"
        if not math.isfinite(fs) or fs <= 0:
            return f"header sampling rate {rec[2]!r} must be a number > 0"
    try:
        header = _read_header_lenient(stem)[2]
    except Exception:  # noqa: BLE001 - the readers report an unreadable header themselves
        return None
    for sign, what in (("zero", "gain 0 (scale unknown)"),
                       ("negative", "negative gain (an inverted ECG)")):
        bad = [str(h["name"]) for h in header
               if (h["gain"] == 0 if sign == "zero" else h["gain"] < 0)]
        if bad:
            return f"header {what} for lead(s) {','.join(bad)}"
    return None


def read_wfdb(stem: str | os.PathLike) -> RawRecord:
    """One WFDB record as its files hold it (signal in physical units, the header's lead
    names); the wfdb package first, a lenient reader as fallback. The record is checked
    against the input limits first (:func:`check_wfdb_limits`)."""
    stem = Path(stem)
    import wfdb

    if not stem.with_suffix(".hea").is_file():
        raise FileNotFoundError(f"{stem.with_suffix('.hea')} not found")
    check_wfdb_limits(stem)
    problem = _header_problem(stem)
    if problem:
        raise ValueError(problem)
    try:
        rec = wfdb.rdrecord(str(stem))
        return RawRecord(stem.name, np.asarray(rec.p_signal, dtype=np.float64).T, float(rec.fs),
                         tuple(rec.sig_name))
    except Exception as first:  # noqa: BLE001 - retried with the lenient reader below
        try:
            fs, n, sigs = _read_header_lenient(stem)
        except Exception:  # noqa: BLE001
            raise first from None
        if not sigs or len({s["file"] for s in sigs}) != 1 or \
                {s["fmt"] for s in sigs} - {"16", "32"}:
            raise first from None
        dtype = "<i2" if sigs[0]["fmt"] == "16" else "<i4"
        raw = np.fromfile(stem.parent / sigs[0]["file"], dtype=dtype)
        if n < 0 or raw.size != n * len(sigs):
            raise ValueError(f"{stem}: data file holds {raw.size} samples, header says "
                             f"{n} x {len(sigs)}") from first
        d = raw.reshape(n, len(sigs)).T.astype(np.float64)
        base = np.array([s["baseline"] for s in sigs], dtype=np.float64)[:, None]
        gain = np.array([s["gain"] for s in sigs], dtype=np.float64)[:, None]  # 0 refused above
        return RawRecord(stem.name, (d - base) / gain, fs, tuple(s["name"] for s in sigs))


def read_wfdb_12lead(stem: str | os.PathLike, rel: str) -> tuple[np.ndarray, float]:
    """A 12-lead WFDB record (``stem`` without extension) in standard lead order, mV, and its
    sampling rate; :class:`RecordSkip` with the reason (naming ``rel``) when it is unreadable
    (missing or truncated files, a header gain of 0) or not 12 named standard leads."""
    try:
        rec = read_wfdb(stem)
    except FileNotFoundError as e:
        raise RecordSkip(f"record files not found: {rel} ({e})") from e
    except RecordSkip:
        raise  # over a limit or truncated: the reason already names the file
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        raise RecordSkip(f"unreadable WFDB record {rel}: {type(e).__name__}: {e}") from e
    try:
        return rec.in_standard_order(), rec.fs
    except ValueError as e:
        raise RecordSkip(f"{e} in {rel}") from e


def strip_median(x: np.ndarray, fs: float, max_abs_mv: float = MAX_ABS_MV,
                 what: str = "strip") -> np.ndarray:
    """The median beat (12, 600) at 500 Hz of a 12-lead mV strip at ``fs`` Hz, with the
    cache's checks: an implausible strip amplitude (``what`` names it), the median-beat
    extraction's own checks (NaN, flat lead, too short, no consistent beats) and the
    beat's amplitude; :class:`RecordSkip` with the reason otherwise. The PTB-XL cache and
    ``ecg-dan predict`` both derive beats here."""
    problem = amplitude_problem(x, max_abs_mv, what)
    if problem is not None and problem.startswith("implausible"):
        raise RecordSkip(problem)  # NaN and flat leads: reported by median_beat below
    try:
        beat = median_beat(x, fs).beat.astype(np.float64)
    except BeatExtractionError as e:
        raise RecordSkip(f"median beat: {e.reason}") from None
    problem = amplitude_problem(beat, max_abs_mv, "median beat")
    if problem is not None:
        raise RecordSkip(problem)
    return beat


def amplitude_problem(x: np.ndarray, max_abs_mv: float, what: str) -> str | None:
    """The shared signal rule's reason for ``x`` (``what`` names the array), or None."""
    problem = signal_problem(x, max_abs_mv)
    return None if problem is None else f"{problem} ({what})"

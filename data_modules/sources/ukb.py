"""UK Biobank CardioSoft XML + outcomes table -> HDF5 cache (docs/data_formats.md;
docs/method.md sections 6 and 9).

Decisions:

* Waveforms: counts x ``Resolution`` (uV per LSB) / 1000 = mV; leads are mapped by their
  ``lead`` attribute (case-insensitive) into the standard order, whatever order the file
  lists them in. Every problem names the file and the field, e.g.
  ``<file>: StripData/WaveformData[lead=V3] missing``.
* ``SampleRate`` other than 500 Hz is resampled (polyphase) to 500 Hz rather than refused:
  the duration must still be 1.2 s (median) / 10 s (strip), otherwise the count is wrong.
* The device median is re-centred so its R peak sits at ``R_INDEX`` with the same R rule as
  the medians derived for PTB-XL (:func:`data_modules.signal.median_beat.conform_beat`): the
  device puts the beat at its own fiducial, and the same R position in both datasets keeps
  pretraining and finetuning inputs aligned. ``parse_cardiology_xml`` returns the device
  median unchanged; the cache stores the re-centred one (``recenter`` in build_config).
* Participant id: the UK Biobank bulk file name ``<eid>_20205_<instance>_<array>.xml`` is
  authoritative when it matches; otherwise ``PatientInfo/PID``.
* Measurements (``MEASUREMENT_NAMES``): an empty or absent value is NaN (a device may omit
  P measurements in AF); a malformed one is an error (the file is skipped with the reason).
* Waveform counts beyond the int64 range (e.g. ``99999999999999999999``) are a parse error
  naming the file and lead (they used to saturate to INT64_MAX silently).
* Build: every participant is reported once in ``skipped/`` (id = eid, or the file's
  relative path when no eid can be read), with one reason whose category comes first:
  ``unusable XML`` (unparseable XML, a missing/empty lead, bad or overflowing numbers, wrong
  counts), ``NaN samples`` / ``flat lead`` / ``implausible amplitude`` (the one signal rule
  shared with PTB-XL, :func:`data_modules.signal.median_beat.signal_problem`, on the device median
  and, with ``strips``, the strip; |x| > ``max_abs_mv``, default 20 mV, means a wrong
  ``Resolution``), ``duplicate ECG files`` (several ECG files for one eid: which one the
  outcome's ECG date refers to is ambiguous), ``no outcome row``, ``no ECG date``, ``no ECG
  file`` (an outcome row whose eid has no XML file at all; an eid whose file was unusable is
  reported for that file only). The summary counts skips per category.
* Outcome-table errors (missing, non-finite or non-positive times, times beyond
  ``MAX_FOLLOW_UP_YEARS`` (150), events not 0/1, duplicate eids) stop the build: survival
  labels must not be guessed. Doubtful values are kept but recorded as warnings
  (``logging.warning`` and the cache's ``warnings/`` group, with the eids): a time outside
  ``PLAUSIBLE_DAYS`` (1 day .. 60 years), ``time_days`` that disagrees with
  ``end_date - ecg_date`` by more than a day when both are given (``time_days`` is used),
  and an XML acquisition date other than the table's ``ecg_date`` (the XML date is stored;
  the time is the table's).
* Memory: medians are streamed into a staging HDF5 file beside ``out`` as the workers
  parse them and then copied into ``out`` in eid order, so the build's memory does not
  grow with the number of files (only ~1 KB of metadata per file is kept).
* ``time`` in months = days / 30 + 1 (the paper's conversion) or days.
* ``shard`` (``ecg-dan cache ukb --shard K/N``): a part reads the XML files of the
  participants the :class:`~data_modules.cache.Shard` holds (the eid of the bulk file name,
  :func:`shard_key`) and the outcome rows of those eids, so every decision above about one
  participant is taken inside one part; its build config carries ``shard`` and its root
  attribute ``shard`` marks it as a part (it may be empty). ``ecg-dan cache merge`` joins
  the parts into the whole build's cache, bit for bit. A file not named
  ``<eid>_20205_<instance>_<array>.xml`` is assigned by its relative path (its eid is only
  known once it is parsed): when such a participant's files or outcome row land in
  different parts, the merge refuses (the same eid in two parts) - build such a folder
  whole, or rename its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from data_modules.cache import (
    SURVIVAL_KINDS,
    WHOLE,
    Appender,
    BuildSummary,
    Shard,
    atomic_h5,
    build_lock,
    is_complete_cache,
    open_cache,
    parallel_map,
    sha1_file,
    sort_skips,
    staging_h5,
    write_skipped,
    write_strings,
    write_warnings,
)
from data_modules.choices import COHORTS, TIME_UNITS
from data_modules.errors import DataError, RecordSkip
from data_modules.protocol.survival_arrays import MAX_FOLLOW_UP_YEARS, beyond_follow_up
from data_modules.signal.leads import BEAT_LEN, FS, N_LEADS
from data_modules.signal.median_beat import MAX_ABS_MV
from data_modules.sources.cardiosoft_xml import (
    MEASUREMENT_NAMES,
    STRIP_SECONDS,
    bulk_eid,
    checked_median,
    parse_cardiology_xml,
)

log = logging.getLogger(__name__)

# Plausible follow-up span in days (outside: a recorded warning, not an error)
PLAUSIBLE_DAYS = (1.0, 60 * 365.25)



# --------------------------------------------------------------------------- outcomes
def _binary(df: pd.DataFrame, col: str, csv: Path) -> np.ndarray:
    v = pd.to_numeric(df[col], errors="coerce")
    bad = v.isna() | ~v.isin([0, 1])
    if bad.any():
        raise DataError(f"{csv}: column {col!r} must be 0/1; offending eids "
                         f"{df.loc[bad, 'eid'].tolist()[:10]} (values "
                         f"{df.loc[bad, col].tolist()[:10]})")
    return v.to_numpy().astype(np.int8)


def days_to_time(days: ArrayLike, time_unit: str) -> np.ndarray:
    """Days since the ECG -> the cache's ``time`` unit: months = days / 30 + 1 (the paper's
    conversion), or days. The one place this conversion is written."""
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    d = np.asarray(days, dtype=np.float64)
    return d / 30.0 + 1.0 if time_unit == "months" else d


def read_outcomes(csv: str | os.PathLike, time_unit: str = "months") -> pd.DataFrame:
    """Validated outcomes table (docs/data_formats.md): columns ``eid`` (int64), ``event``
    (int8), ``time_days``, ``time`` (in ``time_unit``: months = days / 30 + 1, or days),
    ``hyp``, ``mi`` (bool), ``ecg_date`` (str or NaN) and ``true_log_hazard`` when present.

    Errors (:class:`DataError`: missing columns, non-integer or duplicate eids, missing,
    non-finite or non-positive times, flags other than 0/1) name the column and the
    offending eids. Doubtful values (times outside ``PLAUSIBLE_DAYS``, ``time_days`` that
    disagrees with ``end_date - ecg_date``) are logged and listed as ``(eid, message)`` in
    ``attrs["warnings"]``.
    """
    csv = Path(csv)
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: outcomes table not found")
    df = pd.read_csv(csv)
    missing = [c for c in ("eid", "event", "hyp", "mi") if c not in df.columns]
    has_days = "time_days" in df.columns
    has_dates = "ecg_date" in df.columns and "end_date" in df.columns
    if not has_days and not has_dates:
        missing.append("time_days (or ecg_date + end_date)")
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing}")
    eid = pd.to_numeric(df["eid"], errors="coerce")
    bad = eid.isna() | (eid != eid.round())
    if bad.any():
        raise DataError(f"{csv}: column 'eid': non-integer value(s) "
                         f"{df.loc[bad, 'eid'].tolist()[:10]} in rows "
                         f"{(df.index[bad] + 2).tolist()[:10]}")
    df["eid"] = eid.astype(np.int64)
    dup = df.loc[df["eid"].duplicated(), "eid"].unique().tolist()
    if dup:
        raise DataError(f"{csv}: column 'eid': duplicate eids {dup[:10]}")
    out = pd.DataFrame({"eid": df["eid"].to_numpy()})
    out["event"] = _binary(df, "event", csv)
    out["hyp"] = _binary(df, "hyp", csv).astype(bool)
    out["mi"] = _binary(df, "mi", csv).astype(bool)
    if has_days:
        days = pd.to_numeric(df["time_days"], errors="coerce")
        col = "time_days"
    else:
        e = pd.to_datetime(df["ecg_date"], errors="coerce")
        n = pd.to_datetime(df["end_date"], errors="coerce")
        for c, v in (("ecg_date", e), ("end_date", n)):
            if v.isna().any():
                raise DataError(f"{csv}: column {c!r}: missing or unparseable dates for "
                                 f"eids {df.loc[v.isna(), 'eid'].tolist()[:10]}")
        days = (n - e).dt.days.astype(float)
        col = "end_date - ecg_date"
    if days.isna().any():
        raise DataError(f"{csv}: column {col!r}: missing/non-numeric time for eids "
                         f"{df.loc[days.isna(), 'eid'].tolist()[:10]}")
    with np.errstate(over="ignore"):
        infinite = ~np.isfinite(days.to_numpy(np.float64).astype(np.float32))
    if infinite.any():
        raise DataError(f"{csv}: column {col!r}: time must be a finite number of days; "
                        f"offending eids {df.loc[infinite, 'eid'].tolist()[:10]} (values "
                        f"{days[infinite].tolist()[:10]})")
    nonpos = days <= 0
    if nonpos.any():
        raise DataError(f"{csv}: column {col!r}: time must be > 0 days; offending eids "
                         f"{df.loc[nonpos, 'eid'].tolist()[:10]} (values "
                         f"{days[nonpos].tolist()[:10]})")
    beyond = beyond_follow_up(days.to_numpy(np.float64))
    if beyond.any():
        raise DataError(f"{csv}: column {col!r}: time beyond {MAX_FOLLOW_UP_YEARS} years "
                        f"cannot be true; offending eids {df.loc[beyond, 'eid'].tolist()[:10]} "
                        f"(values {days[beyond].tolist()[:10]} days)")
    warned: list[tuple[str, str]] = []
    lo, hi = PLAUSIBLE_DAYS
    odd = (days < lo) | (days > hi)
    for eid, d in zip(df.loc[odd, "eid"], days[odd]):
        warned.append((str(eid), f"{csv}: column {col!r}: time {d:g} days is outside the "
                                 f"plausible span {lo:g}..{hi:g} days (1 day .. 60 years)"))
    if has_days and has_dates:
        e = pd.to_datetime(df["ecg_date"], errors="coerce")
        n = pd.to_datetime(df["end_date"], errors="coerce")
        by_dates = (n - e).dt.days.astype(float)
        off = by_dates.notna() & ((by_dates - days).abs() > 1)
        for eid, a, b in zip(df.loc[off, "eid"], days[off], by_dates[off]):
            warned.append((str(eid), f"{csv}: time_days {a:g} disagrees with end_date - "
                                     f"ecg_date = {b:g} days; time_days is used"))
    if warned:
        log.warning("%s: %d doubtful outcome value(s), eids %s; first: %s", csv, len(warned),
                    [w[0] for w in warned[:10]], warned[0][1])
    out["time_days"] = days.to_numpy(dtype=np.float64)
    out["time"] = days_to_time(out["time_days"].to_numpy(), time_unit)
    out["ecg_date"] = (pd.to_datetime(df["ecg_date"], errors="coerce").dt.strftime("%Y-%m-%d")
                       if "ecg_date" in df.columns else np.nan)
    if "true_log_hazard" in df.columns:
        v = pd.to_numeric(df["true_log_hazard"], errors="coerce")
        if v.isna().any():
            raise DataError(f"{csv}: column 'true_log_hazard': missing/non-numeric for eids "
                             f"{df.loc[v.isna(), 'eid'].tolist()[:10]}")
        out["true_log_hazard"] = v.to_numpy(dtype=np.float64)
    out = out.sort_values("eid").reset_index(drop=True)
    out.attrs["time_unit"] = time_unit
    out.attrs["warnings"] = warned
    return out


# --------------------------------------------------------------------------- cache
@dataclass(slots=True)
class _Parsed:
    """What the build keeps in memory of one usable file (~250 bytes: the median and the
    measurements are staged on disk)."""

    rel: str
    eid: int
    ecg_date: str | None  # ISO date of ObservationDateTime
    age: float
    sex: int
    row: int = -1  # row in the staging file


def _parse_task(task: tuple[str, str, bool, bool, float]
                ) -> tuple[str, int | None, object]:
    """Worker: parse one file and validate it (its strip too when wanted); return
    ``(path, eid or None, (metadata, median) | reason)`` without the strip, which is
    re-read when written."""
    path, rel, strips, recenter, max_abs_mv = task
    try:
        e, median = checked_median(path, rel, strips, recenter, max_abs_mv)
    except RecordSkip as skip:
        return path, skip.record_id, skip.reason
    meas = np.array([e.measurements.get(k, np.nan) for k in MEASUREMENT_NAMES], np.float32)
    date = None if e.ecg_datetime is None else e.ecg_datetime.date().isoformat()
    return path, e.eid, (_Parsed(rel, e.eid, date, float(e.age), int(e.sex)), median, meas)


def _strip_task(path: str) -> tuple[str, np.ndarray]:
    strip = parse_cardiology_xml(path, strip=True).strip
    assert strip is not None
    return path, strip


def build_ukb_cache(xml_dir: str | os.PathLike, outcomes_csv: str | os.PathLike,
                    out: str | os.PathLike, time_unit: str = "months", strips: bool = False,
                    workers: int = 2, progress: bool = True, recenter: bool = True,
                    max_abs_mv: float = MAX_ABS_MV, shard: Shard = WHOLE) -> BuildSummary:
    """Build the UK Biobank cache of docs/data_formats.md at ``out`` (atomic; a no-op when a
    complete cache with the same config and inputs exists). Medians (and strips) beyond
    +-``max_abs_mv`` mV are skipped with the reason. Returns the :class:`BuildSummary` of
    the file as written (read back from ``out``); a concurrent build of the same ``out``
    waits for this one (lock ``<out>.lock``)."""
    with build_lock(out):
        return _build_ukb_cache(xml_dir, outcomes_csv, out, time_unit, strips, workers,
                                progress, recenter, max_abs_mv, shard)


def _decide(parsed: list[_Parsed], failed: dict[int | str, list[str]], outcomes: pd.DataFrame,
            csv: Path) -> tuple[list[_Parsed], list[tuple[str, str]], list[tuple[str, str]]]:
    """Rows to write (eid order), skips (one per participant) and date warnings."""
    by_eid: dict[int, list[_Parsed]] = {}
    for p in parsed:
        by_eid.setdefault(p.eid, []).append(p)
    rows: list[_Parsed] = []
    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    for key, reasons in failed.items():
        if isinstance(key, str) or key not in by_eid:  # unusable, and no other file
            skipped.append((str(key), "; ".join(reasons)))
    for eid in sorted(by_eid):
        ecgs = by_eid[eid]
        e = ecgs[0]
        if eid in failed:  # files of a participant reported below: list the unusable too
            skipped += [(r.split(": ")[1], r) for r in failed[eid]]
        if len(ecgs) > 1:
            names_ = ", ".join(x.rel for x in ecgs)
            skipped.append((str(eid), f"duplicate ECG files: eid {eid} has {len(ecgs)}: "
                                      f"{names_}"))
        elif eid not in outcomes.index:
            skipped.append((str(eid), f"no outcome row: {e.rel}: eid {eid} is not in {csv}"))
        elif e.ecg_date is None and not isinstance(outcomes.at[eid, "ecg_date"], str):
            skipped.append((str(eid), f"no ECG date: {e.rel}: ObservationDateTime missing and "
                                      "no ecg_date column"))
        else:
            rows.append(e)
            table_date = outcomes.at[eid, "ecg_date"]
            if e.ecg_date is not None and isinstance(table_date, str) \
                    and e.ecg_date != table_date:
                warned.append((str(eid), f"{e.rel}: acquisition date "
                                         f"{e.ecg_date} differs from "
                                         f"ecg_date {table_date} in {csv}; the XML date is "
                                         "stored, the time is the table's"))
    seen = set(by_eid) | {k for k in failed if not isinstance(k, str)}
    skipped += [(str(eid), "no ECG file: outcome row without an ECG file in the XML folder")
                for eid in outcomes.index if eid not in seen]

    return rows, sort_skips(skipped), warned


def _build_ukb_cache(xml_dir: str | os.PathLike, outcomes_csv: str | os.PathLike,
                     out: str | os.PathLike, time_unit: str, strips: bool, workers: int,
                     progress: bool, recenter: bool, max_abs_mv: float, shard: Shard
                     ) -> BuildSummary:
    t0 = time.perf_counter()
    xml_dir, outcomes_csv, out = Path(xml_dir), Path(outcomes_csv), Path(out)
    max_abs_mv = float(max_abs_mv)
    if not max_abs_mv > 0:
        raise ValueError(f"max_abs_mv must be > 0 mV, got {max_abs_mv}")
    if not xml_dir.is_dir():
        raise FileNotFoundError(f"{xml_dir}: XML directory not found")
    files = sorted(xml_dir.rglob("*.xml"))
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    names = "\n".join(str(f.relative_to(xml_dir)) for f in files)
    config = dict(xml_dir=str(xml_dir.resolve()), outcomes=str(outcomes_csv.resolve()),
                  outcomes_sha1=sha1_file(outcomes_csv) if outcomes_csv.is_file() else None,
                  xml_files=len(files), xml_names_sha1=hashlib.sha1(names.encode()).hexdigest(),
                  time_unit=time_unit, strips=bool(strips), recenter=bool(recenter),
                  max_abs_mv=max_abs_mv, **shard.config())
    del names
    if is_complete_cache(out, "ukb", config):
        s = BuildSummary.from_cache(out, "ukb", noop=True)
        log.info(s.report())
        return s
    outcomes = read_outcomes(outcomes_csv, time_unit)
    warned = list(outcomes.attrs.get("warnings", []))
    outcomes = outcomes.set_index("eid")
    if not files:
        raise FileNotFoundError(f"{xml_dir}: no *.xml files")
    if not shard.whole:
        files = [f for f in files if shard.holds(shard_key(str(f.relative_to(xml_dir))))]
        outcomes = outcomes[[shard.holds(eid) for eid in outcomes.index]]

    tasks = [(str(f), str(f.relative_to(xml_dir)), bool(strips), bool(recenter), max_abs_mv)
             for f in files]
    del files
    parsed: list[_Parsed] = []
    failed: dict[int | str, list[str]] = {}
    with atomic_h5(out, "ukb", config) as f:
        with staging_h5(out) as stage:
            staged = Appender(stage, {"median": ((N_LEADS, BEAT_LEN), 16),
                                      "measurements": ((len(MEASUREMENT_NAMES),), 1024)})
            with contextlib.closing(parallel_map(_parse_task, tasks, workers, progress,
                                                  "UKB XML",
                                                  lost=lambda t, why: (t[0], None, why))
                                    ) as results:
                for path, eid, res in results:
                    if isinstance(res, str):
                        rel = str(Path(path).relative_to(xml_dir))
                        failed.setdefault(rel if eid is None else eid, []).append(res)
                        continue
                    meta, median, meas = res
                    meta.row = staged.n + len(staged.buf["median"])
                    staged.add(median=median, measurements=meas)
                    parsed.append(meta)
                    del res, meta, median, meas
            staged.flush()
            rows, skipped, date_warned = _decide(parsed, failed, outcomes, outcomes_csv)
            warned += date_warned
            if date_warned:
                log.warning("%s: %d ECG date(s) differ from the outcomes' ecg_date, eids "
                            "%s", xml_dir, len(date_warned), [w[0] for w in date_warned[:10]])
            if not rows and shard.whole:
                raise DataError(f"{xml_dir}: no usable participant ({len(skipped)} "
                                f"skipped; first reasons: {skipped[:3]}) - refusing to "
                                "write an empty cache")
            app = Appender(f, {"median": ((N_LEADS, BEAT_LEN), 64)})
            src = stage["median"]
            for r in rows:
                app.add(median=src[r.row])
            app.flush()
            all_meas = stage["measurements"][...]
            measurements = all_meas[[r.row for r in rows]]
            del all_meas
        n = len(rows)
        o = outcomes.loc[[e.eid for e in rows]]
        if strips:
            ds = f.create_dataset("strip", shape=(n, N_LEADS, int(STRIP_SECONDS * FS)),
                                  dtype=np.float32, chunks=(1, N_LEADS, int(STRIP_SECONDS * FS)))
            with contextlib.closing(parallel_map(_strip_task, [str(xml_dir / e.rel)
                                                               for e in rows],
                                                  workers, progress, "UKB strips")) as it:
                for i, (_, strip) in enumerate(it):
                    ds[i] = strip
        f.create_dataset("eid", data=np.array([e.eid for e in rows], dtype=np.int64))
        f.create_dataset("time", data=o["time"].to_numpy(np.float32))
        f["time"].attrs["time_unit"] = time_unit
        f.create_dataset("time_days", data=o["time_days"].to_numpy(np.float32))
        f.create_dataset("event", data=o["event"].to_numpy().astype(np.int8))
        f.create_dataset("cohort_hyp", data=o["hyp"].to_numpy(bool))
        f.create_dataset("cohort_mi", data=o["mi"].to_numpy(bool))
        f.create_dataset("age", data=np.array([e.age for e in rows], dtype=np.float32))
        f.create_dataset("sex", data=np.array([e.sex for e in rows], dtype=np.int8))
        dates = [e.ecg_date if e.ecg_date is not None else str(o.at[e.eid, "ecg_date"])
                 for e in rows]
        write_strings(f, "ecg_date", dates)
        m = f.create_dataset("measurements", data=measurements.astype(np.float32))
        m.attrs["measurement_names"] = list(MEASUREMENT_NAMES)
        if "true_log_hazard" in o.columns:
            f.create_dataset("true_log_hazard", data=o["true_log_hazard"].to_numpy(np.float32))
        f.attrs["time_unit"] = time_unit
        write_skipped(f, skipped)
        kept = {str(e.eid) for e in rows}
        write_warnings(f, sort_skips([w for w in warned if w[0] in kept]))
        f.attrs["n_records"] = n
    s = BuildSummary.from_cache(out, "ukb", seconds=time.perf_counter() - t0)
    log.info(s.report())
    return s


def shard_key(rel: str) -> int | str:
    """The unit a sharded build assigns an XML file by: the eid of a bulk file name
    ``<eid>_20205_<instance>_<array>.xml``, else the file's relative path."""
    eid = bulk_eid(Path(rel).name)
    return rel if eid is None else eid


def select_cohort(cache_file: str | os.PathLike | h5py.File, name: str) -> np.ndarray:
    """Row indices of cohort ``hyp`` / ``mi`` / ``all`` in a survival cache (UK Biobank, or
    ``all`` of a cohort cache).

    Raises ``ValueError`` for an unknown name, or a cohort that is empty or has no events
    (the Cox loss and the C-index are undefined without events).
    """
    if name not in COHORTS:
        raise ValueError(f"unknown cohort {name!r}; expected one of {COHORTS}")
    own = not isinstance(cache_file, h5py.File)
    f = open_cache(cache_file, SURVIVAL_KINDS) if own else cache_file
    try:
        n = int(f["eid"].shape[0])
        if name != "all" and f"cohort_{name}" not in f:
            raise ValueError(f"{f.filename}: no cohort flag 'cohort_{name}' in this "
                             f"{f.attrs['kind']} cache (only UK Biobank caches carry "
                             "hyp/mi flags); use finetune.cohort=all")
        mask = np.ones(n, bool) if name == "all" else f[f"cohort_{name}"][...].astype(bool)
        idx = np.flatnonzero(mask)
        events = int(f["event"][...][idx].sum()) if idx.size else 0
        label = f.filename
    finally:
        if own:
            f.close()
    if idx.size == 0:
        raise ValueError(f"{label}: cohort {name!r} is empty")
    if events == 0:
        raise ValueError(f"{label}: cohort {name!r} has no events ({idx.size} participants); "
                         "survival training/evaluation needs at least one")
    return idx

"""A user's own survival cohort: a table naming each participant's ECG file and outcome, and a
folder of ECG files in any format the project reads -> a kind ``cohort`` cache
(``ecg-dan cache cohort``; docs/data_formats.md, "Your own cohort").

Decisions:

* Table (CSV): ``id`` (integer; ids of another form are refused as a whole, one line: map
  them to integers and keep the mapping beside the cohort), ``ecg_file`` (path below
  ``--ecgs``: a WFDB record ``.hea`` at any sampling rate, a CardioSoft or GE MUSE ``.xml``,
  told apart by the root element), ``event`` (0/1), ``age`` (years; empty -> NaN), ``sex``
  (M/F/male/female/1/0, any case; 1 = male as UK Biobank codes it), follow-up as
  ``time_days`` or as ``time`` + ``time_unit`` (days, weeks, months = 30 days - the paper's
  month -, years = 365.25 days; per row). Every other column whose values are all numbers
  (empty -> NaN) is a covariate (``covariates`` (N, K) with ``attrs["names"]``);
  ``true_log_hazard`` (twins) is stored as such; text columns are left out (logged).
* The median beat is derived from the 10 s strip by the project's extraction for every
  format (:func:`data_modules.sources.wfdb_record.strip_median`), the CardioSoft device
  median included: one cohort mixes WFDB, CardioSoft and MUSE files, and only a derived
  beat is the same function of the strip in all of them (and in PTB-XL pretraining). The
  rate of each file's strip is stored in ``fs`` (CardioSoft strips as read: 500 Hz).
* One recorded skip per participant (or orphan file), category first, naming the file and
  id: ``duplicate id`` (every row of an id given twice: which ECG and outcome is meant is
  ambiguous), ``no ECG file`` (a row with an empty ``ecg_file``), ``ECG file not found``,
  ``shared ECG file`` (one file named by several ids), ``unsupported ECG file``, ``bad
  time`` (missing, NaN/inf, <= 0, unknown unit), ``bad event`` (not 0/1), ``bad age``,
  ``bad sex``, the readers' reasons (``unusable XML``, ``unknown XML format``, ``unusable
  WFDB record``, ``median beat``, ``implausible amplitude``, ...), and ``ECG without a table
  row`` (a ``.hea``/``.xml`` file below ``--ecgs`` that no row names; its id is its path).
  Missing columns, ids that are not integers, or no usable row at all stop the build (one
  line). A follow-up outside 1 day .. 60 years is kept with a recorded warning.
* Sharding (``--shard K/N``) is by participant id (an orphan file by its path); every part
  reads the whole table, so decisions that span rows (duplicate ids, shared files) are the
  same in every part. Rows are written in id order as the workers return them (tasks are
  sorted by id), so memory does not grow with the cohort.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_modules.cache import (
    WHOLE,
    Appender,
    BuildSummary,
    Shard,
    atomic_h5,
    build_lock,
    is_complete_cache,
    parallel_map,
    sha1_file,
    sort_skips,
    write_skipped,
    write_strings,
    write_warnings,
)
from data_modules.choices import TIME_UNITS
from data_modules.errors import DataError, RecordSkip
from data_modules.protocol.survival_arrays import MAX_FOLLOW_UP_YEARS, beyond_follow_up
from data_modules.signal.leads import BEAT_LEN, FS, N_LEADS
from data_modules.signal.median_beat import MAX_ABS_MV
from data_modules.sources.cardiosoft_xml import cardiosoft_strip_median
from data_modules.sources.muse_xml import muse_strip
from data_modules.sources.ukb import PLAUSIBLE_DAYS, days_to_time
from data_modules.sources.wfdb_record import read_wfdb_12lead, strip_median
from data_modules.sources.xml_format import xml_format

log = logging.getLogger(__name__)

KIND = "cohort"
DAYS_PER = {"days": 1.0, "weeks": 7.0, "months": 30.0, "years": 365.25}  # time_unit -> days
SEXES = {"m": 1, "male": 1, "1": 1, "f": 0, "female": 0, "0": 0}
RESERVED = ("id", "ecg_file", "time", "time_unit", "time_days", "event", "age", "sex",
            "true_log_hazard")
ECG_SUFFIXES = (".hea", ".xml")
_INT = re.compile(r"[+-]?\d+")


@dataclass(slots=True)
class Participant:
    """One usable table row: what the build keeps of it besides the beat."""

    id: int
    rel: str  # ecg_file as given
    path: str  # the file to read (a WFDB record's stem)
    kind: str  # "wfdb" | "xml"
    time_days: float
    event: int
    age: float
    sex: int
    covariates: tuple[float, ...]
    true_log_hazard: float


def _number(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")


def file_key(path: str | os.PathLike) -> str:
    """One key per ECG file however it is named: a WFDB record by its stem (``x``, ``x.hea``
    and ``x.dat`` are one record), an XML file by its path (absolute and normalised, without
    a file-system call: a table of 10^6 rows is keyed in seconds)."""
    p = os.path.normpath(os.path.abspath(path))
    stem, suffix = os.path.splitext(p)
    return stem if suffix.lower() in (".hea", ".dat") else p


def _ecg_path(ecgs: str, rel: str) -> tuple[str, str] | str:
    """``(path to read, kind)`` of an ``ecg_file``, or the reason it cannot be read."""
    stem, suffix = os.path.splitext(os.path.join(ecgs, rel))
    suffix = suffix.lower()
    if suffix in (".hea", ".dat", "") and os.path.isfile(stem + ".hea"):
        return stem, "wfdb"
    if suffix == ".xml" and os.path.isfile(stem + suffix):
        return stem + suffix, "xml"
    if suffix in (".hea", ".dat", ".xml", ""):
        return f"ECG file not found: {rel} (in {ecgs})"
    return (f"unsupported ECG file: {rel}: expected a WFDB record (.hea) or a CardioSoft / "
            "MUSE XML file (.xml)")


def _participant(r: dict[str, str], i: int, where: str, ecgs: str, covs: list[str]
                 ) -> Participant | str:
    """One table row (text values) as a :class:`Participant`, or the reason it is skipped
    (``where`` names the table row and id)."""
    rel = r["ecg_file"]
    if not rel:
        return f"no ECG file: {where} names no ecg_file"
    t, unit = (r["time_days"], "days") if "time_days" in r else (r["time"],
                                                                   r["time_unit"].lower())
    if unit not in DAYS_PER:
        return f"bad time: {where}: time_unit {unit!r} is not one of {list(DAYS_PER)}"
    days = _number(t) * DAYS_PER[unit]
    if not np.isfinite(days) or days <= 0:
        return f"bad time: {where}: time {t!r} {unit} (must be a finite number > 0)"
    if beyond_follow_up(days):
        return (f"bad time: {where}: time {t!r} {unit} is beyond {MAX_FOLLOW_UP_YEARS} years "
                "and cannot be true")
    if r["event"] not in ("0", "1", "0.0", "1.0"):
        return f"bad event: {where}: event {r['event']!r} is not 0/1"
    age = _number(r["age"]) if r["age"] else float("nan")
    if r["age"] and not (np.isfinite(age) and age >= 0):
        return f"bad age: {where}: age {r['age']!r}"
    sex = SEXES.get(r["sex"].lower())
    if sex is None:
        return f"bad sex: {where}: sex {r['sex']!r} is not one of M/F/male/female/1/0"
    got = _ecg_path(ecgs, rel)
    if isinstance(got, str):
        category, detail = got.split(":", 1)
        return f"{category}: {where}:{detail}"
    return Participant(i, rel, got[0], got[1], float(days), int(float(r["event"])), age, sex,
                       tuple(_number(r[c]) if r[c] else float("nan") for c in covs),
                       _number(r.get("true_log_hazard", "nan")))


def read_cohort_table(csv: str | os.PathLike, ecgs: str | os.PathLike
                      ) -> tuple[list[Participant], list[tuple[str, str]], list[str],
                                 list[tuple[str, str]], set[str]]:
    """The usable rows of a cohort table (docs/data_formats.md), the ``(id, reason)`` of every
    row that is not, the covariate names, ``(id, warning)`` pairs and the ECG files the table
    names (their :func:`file_key`). :class:`DataError` (one line) for missing columns or ids
    that are not integers."""
    csv, ecgs = Path(csv), os.path.abspath(ecgs)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: cohort table not found")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False).apply(lambda c: c.str.strip())
    cols = set(df.columns)
    missing = [c for c in ("id", "ecg_file", "event", "age", "sex") if c not in cols]
    if "time_days" not in cols and not {"time", "time_unit"} <= cols:
        missing.append("time_days (or time + time_unit)")
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing} (docs/data_formats.md, "
                        "'Your own cohort')")
    if "time_days" in cols and "time" in cols:
        raise DataError(f"{csv}: both 'time_days' and 'time' columns; give one")
    bad = ~df["id"].str.fullmatch(_INT)
    if bad.any():
        raise DataError(f"{csv}: column 'id': non-integer value(s) "
                        f"{df.loc[bad, 'id'].tolist()[:5]} in rows "
                        f"{(df.index[bad] + 2).tolist()[:5]}; map ids to integers (keep the "
                        "mapping beside the cohort): the cache stores ids as int64")
    ids = df["id"].astype(np.int64).to_numpy()
    covs = [c for c in df.columns if c not in RESERVED
            and df[c].map(lambda v: v == "" or np.isfinite(_number(v)) or v.lower() == "nan"
                          ).all()]
    text = [c for c in df.columns if c not in RESERVED and c not in covs]
    if text:
        log.info("%s: non-numeric column(s) %s are not covariates", csv, text)
    dups: dict[int, list[int]] = {}  # id given twice or more -> its table rows
    for k, (i, n) in enumerate(zip(ids.tolist(), pd.Series(ids).duplicated(keep=False))):
        if n:
            dups.setdefault(i, []).append(k + 2)
    keys = [file_key(os.path.join(ecgs, rel)) if rel else "" for rel in df["ecg_file"]]
    users: dict[str, list[int]] = {}
    for i, key in zip(ids, keys):
        if key:
            users.setdefault(key, []).append(int(i))
    rows: list[Participant] = []
    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    lo, hi = PLAUSIBLE_DAYS
    for k, r in enumerate(df.to_dict("records")):
        i, where = int(ids[k]), f"{csv.name} row {k + 2}"
        if i in dups:
            if k + 2 == dups[i][0]:  # once per id, at its first row
                skipped.append((str(i), f"duplicate id: id {i} has {len(dups[i])} rows in "
                                        f"{csv.name} (rows {dups[i]})"))
            continue
        sharing = users.get(keys[k], [i])
        if len(sharing) > 1:
            skipped.append((str(i), f"shared ECG file: {r['ecg_file']} is named by ids "
                                    f"{sorted(sharing)}"))
            continue
        got = _participant(r, i, f"{where} (id {i})", ecgs, covs)
        if isinstance(got, str):
            skipped.append((str(i), got))
            continue
        rows.append(got)
        if not lo <= got.time_days <= hi:
            warned.append((str(i), f"{where}: time {got.time_days:g} days is outside the "
                                   f"plausible span {lo:g}..{hi:g} days (1 day .. 60 years)"))
    return rows, skipped, covs, warned, set(users)


def _categorised(reason: str, rel: str) -> str:
    """A reader's reason with its category first (a reason without one: ``unusable ECG``)."""
    return reason if ":" in reason else f"unusable ECG: {rel}: {reason}"


def _beat_task(task: tuple[str, str, str, float]) -> tuple[float, np.ndarray] | str:
    """Worker: one participant's (source rate, median beat) or the reason it is skipped."""
    path, rel, kind, max_abs_mv = task
    try:
        if kind == "wfdb":
            try:
                x, fs = read_wfdb_12lead(path, rel)
            except RecordSkip as e:
                detail = e.reason.replace(f"unreadable WFDB record {rel}: ", "")
                raise RecordSkip(f"unusable WFDB record: {rel}: "
                                 f"{detail.replace(f' in {rel}', '')}") from None
        elif xml_format(path, rel) == "muse":
            rec, x = muse_strip(path, rel)
            fs = rec.fs
        else:
            return float(FS), cardiosoft_strip_median(path, rel, max_abs_mv)
        return float(fs), strip_median(x, fs, max_abs_mv, f"strip {rel}").astype(np.float32)
    except RecordSkip as e:
        return _categorised(e.reason, rel)


def build_cohort_cache(ecgs: str | os.PathLike, table: str | os.PathLike,
                       out: str | os.PathLike, time_unit: str = "months", workers: int = 2,
                       progress: bool = True, max_abs_mv: float = MAX_ABS_MV,
                       shard: Shard = WHOLE) -> BuildSummary:
    """Build the kind ``cohort`` cache of docs/data_formats.md at ``out`` (atomic, under a
    build lock; a no-op when a complete cache with the same config and inputs exists)."""
    with build_lock(out):
        return _build(Path(ecgs), Path(table), Path(out), time_unit, workers, progress,
                      float(max_abs_mv), shard)


def _build(ecgs: Path, table: Path, out: Path, time_unit: str, workers: int, progress: bool,
           max_abs_mv: float, shard: Shard) -> BuildSummary:
    t0 = time.perf_counter()
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    if not max_abs_mv > 0:
        raise ValueError(f"max_abs_mv must be > 0 mV, got {max_abs_mv}")
    if not ecgs.is_dir():
        raise FileNotFoundError(f"{ecgs}: ECG folder not found")
    if not table.is_file():
        raise FileNotFoundError(f"{table}: cohort table not found")
    files = sorted(f for f in ecgs.rglob("*") if f.suffix.lower() in ECG_SUFFIXES
                   and f.is_file())
    names = "\n".join(f.relative_to(ecgs).as_posix() for f in files)
    config = dict(source="cohort", ecgs=str(ecgs.resolve()), table=str(table.resolve()),
                  table_sha1=sha1_file(table), ecg_files=len(files),
                  ecg_names_sha1=hashlib.sha1(names.encode()).hexdigest(),
                  time_unit=time_unit, max_abs_mv=max_abs_mv, **shard.config())
    if is_complete_cache(out, KIND, config):
        s = BuildSummary.from_cache(out, KIND, noop=True)
        log.info(s.report())
        return s
    rows, skipped, covs, warned, named = read_cohort_table(table, ecgs)
    rows = sorted((r for r in rows if shard.holds(r.id)), key=lambda r: r.id)
    skipped = [s for s in skipped if shard.holds(s[0])]
    for f in files:
        rel = f.relative_to(ecgs).as_posix()
        if file_key(f) not in named and shard.holds(rel):
            skipped.append((rel, f"ECG without a table row: {rel} is not named in "
                                 f"{table.name}"))
    tasks = [(r.path, r.rel, r.kind, max_abs_mv) for r in rows]
    kept: list[Participant] = []
    rates: list[float] = []
    with atomic_h5(out, KIND, config) as f:
        app = Appender(f, {"median": ((N_LEADS, BEAT_LEN), 64)})
        with contextlib.closing(parallel_map(_beat_task, tasks, workers, progress,
                                             "cohort ECGs", lost=lambda t, why: why)) as it:
            for r, res in zip(rows, it):
                if isinstance(res, str):
                    skipped.append((str(r.id), res))
                    continue
                app.add(median=res[1])
                kept.append(r)
                rates.append(res[0])
        app.flush()
        skipped = sort_skips(skipped)
        if not kept and shard.whole:
            raise DataError(f"{table}: no usable participant ({len(skipped)} skipped; first "
                            f"reasons: {skipped[:3]}) - refusing to write an empty cache")
        days = np.array([r.time_days for r in kept], dtype=np.float64)
        f.create_dataset("eid", data=np.array([r.id for r in kept], dtype=np.int64))
        f.create_dataset("time", data=days_to_time(days, time_unit).astype(np.float32))
        f["time"].attrs["time_unit"] = time_unit
        f.create_dataset("time_days", data=days.astype(np.float32))
        f.create_dataset("event", data=np.array([r.event for r in kept], dtype=np.int8))
        f.create_dataset("age", data=np.array([r.age for r in kept], dtype=np.float32))
        f.create_dataset("sex", data=np.array([r.sex for r in kept], dtype=np.int8))
        f.create_dataset("fs", data=np.array(rates, dtype=np.float32))
        write_strings(f, "ecg_file", [r.rel for r in kept])
        if covs:
            c = f.create_dataset("covariates", data=np.array(
                [r.covariates for r in kept], dtype=np.float32).reshape(len(kept), len(covs)))
            c.attrs["names"] = covs
        if "true_log_hazard" in pd.read_csv(table, nrows=0).columns:
            f.create_dataset("true_log_hazard", data=np.array(
                [r.true_log_hazard for r in kept], dtype=np.float32))
        f.attrs["time_unit"] = time_unit
        write_skipped(f, skipped)
        ids = {str(r.id) for r in kept}
        write_warnings(f, sort_skips([w for w in warned if w[0] in ids]))
        f.attrs["n_records"] = len(kept)
    s = BuildSummary.from_cache(out, KIND, seconds=time.perf_counter() - t0)
    log.info(s.report())
    return s

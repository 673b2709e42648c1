"""CODE-15% (Zenodo 4916206) and its layout's siblings (SaMi-Trop, Zenodo 4905618) -> a survival
cohort cache (kind ``cohort``, docs/data_formats.md).

Layout (the Zenodo descriptions and the authors' ``antonior92/ecg-preprocessing`` README):
``exams.csv`` (``exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB, SB, ST, AF,
patient_id, death, timey, normal_ecg, trace_file``; SaMi-Trop: ``exam_id, age, is_male,
normal_ecg, death, timey, nn_predicted_age``, no ``patient_id``: one exam per patient) and
HDF5 files (CODE-15%: ``exams_part0.hdf5`` ... ``exams_part17.hdf5`` with datasets
``tracings`` (N, 4096, 12) float32 and ``exam_id`` (N,); SaMi-Trop: one ``exams.hdf5``
holding ``tracings`` only (float64), its rows in the order of ``exams.csv``). 400 Hz,
leads DI, DII, DIII, AVR, AVL, AVF, V1-V6 in that order; 7 s (2,800 samples) or 10 s
(4,000) records zero-padded on both sides (centred) to 4,096 samples. A ``tracings``
attribute ``leads`` (names), when present, overrides that order (the shuffled-lead twin
part uses it): leads are always mapped by name through
:meth:`~data_modules.sources.base.RawRecord.in_standard_order`.

Decisions:

* Unit: the documentation disagrees with itself. The Zenodo/``automatic-ecg-diagnosis``
  text says "floating point numbers at the scale 1e-4V: so it should be multiplied by 1000
  in order to obtain the signals in V" (the two halves contradict each other); the
  preprocessing README says the WFDB signals were "scaled by 2"; the PhysioNet Challenge
  2025 scripts (``prepare_code15_data.py``, ``prepare_samitrop_data.py``, written with the
  dataset's authors) store the values as mV unchanged (gain 1000 per mV). We follow the
  Challenge: 1 unit = 1 mV (``mv_per_unit=1.0``; ``ecg-dan cache code15 --mv-per-unit``
  changes it). The build summary prints the median R amplitude in mV (typically 0.5-2 mV):
  a value 10x or 2x off says the unit is wrong.
* Padding: the leading and trailing samples that are 0 in all 12 leads are cut; the rest is
  resampled to 500 Hz and reduced to its median beat by the project's extraction
  (:func:`data_modules.sources.wfdb_record.strip_median`, the shared signal checks).
* One exam per patient: CODE-15% has no exam date; ``death``/``timey`` are filled "only in
  the first exam of the patient" (Zenodo description), so the survival cohort is the exams
  with an outcome, which is also what the published CODE-15% survival benchmark
  (``cavalab/ecg-survival-benchmark``, ``Code15_ECG_Process_8020.py``) keeps. Should a
  patient have several exams with an outcome, the lowest ``exam_id`` is kept and the others
  are skipped (``not first exam``). Exams without an outcome are skipped as ``no outcome``.
* Time: ``timey`` (years) x 365.25 = days -> ``time`` by
  :func:`data_modules.sources.ukb.days_to_time` (months = days / 30 + 1, or days). A
  ``timey`` of 0 (death or end of follow-up on the exam day) becomes 1 day, as the benchmark
  does (``1/365`` years), with a recorded warning. Event = ``death`` (all-cause mortality).
* ``eid`` = ``exam_id``: the key of both the table and the HDF5 files, so scores of
  ``ecg-dan predict`` join back to ``exams.csv``; ``patient_id`` is stored too. Builds shard
  by ``patient_id`` (SaMi-Trop: by ``exam_id``), the unit the one-exam rule decides on.
* Covariates: ``age`` (years) and ``sex`` (``is_male``: 1 male, 0 female, UK Biobank's
  coding). An exam without them is skipped (``no covariates``).
* Bad input: a missing ``exams.csv`` or no HDF5 file, missing columns, non-integer or
  duplicate ``exam_id`` rows, an HDF5 file that does not open or lacks its datasets
  (truncated download), a ``tracings``/``exam_id`` length mismatch, unknown lead names:
  one-line :class:`DataError` naming the file. Per exam (recorded skips, the category
  before the first ':'): ``no outcome``, ``bad outcome`` (``death`` not 0/1, ``timey``
  non-numeric, NaN, infinite or negative, only one of the two given), ``no covariates``,
  ``not first exam``, ``no tracing`` (a table row whose exam is in no HDF5 file),
  ``duplicate tracings`` (one exam_id in several HDF5 rows), ``no exams.csv row`` (an HDF5
  row whose exam_id is not in the table: the padding rows with exam_id 0 at the end of
  each part, id ``<file>#<row>``), ``empty tracing`` (all zeros), ``unreadable tracing``
  and the signal checks' categories (``flat lead``, ``implausible amplitude``, ``median
  beat``, ...).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data_modules.cache import (
    WHOLE,
    Appender,
    BuildSummary,
    Shard,
    atomic_h5,
    build_lock,
    close_handles,
    is_complete_cache,
    parallel_map,
    sha1_file,
    sort_skips,
    worker_handle,
    write_skipped,
    write_warnings,
)
from data_modules.choices import TIME_UNITS
from data_modules.errors import DataError, RecordSkip
from data_modules.protocol.survival_arrays import MAX_FOLLOW_UP_YEARS, beyond_follow_up
from data_modules.signal.leads import BEAT_LEN, N_LEADS
from data_modules.signal.median_beat import MAX_ABS_MV
from data_modules.sources.base import RawRecord
from data_modules.sources.ukb import days_to_time
from data_modules.sources.wfdb_record import strip_median

log = logging.getLogger(__name__)

FS_CODE15 = 400.0
LEADS_CODE15 = ("DI", "DII", "DIII", "AVR", "AVL", "AVF",
                "V1", "V2", "V3", "V4", "V5", "V6")
MV_PER_UNIT = 1.0  # see the module docstring
DAYS_PER_YEAR = 365.25
_ALIASES = {"di": "I", "dii": "II", "diii": "III"}  # the Brazilian names of the limb leads


@dataclass(frozen=True)
class Layout:
    """A source with this layout: its name (the build config's ``source``), the HDF5 files'
    glob and whether they carry ``exam_id`` (else rows follow ``exams.csv``)."""

    name: str
    pattern: str
    has_exam_id: bool
    has_patient_id: bool


CODE15 = Layout("code15", "exams_part*.hdf5", has_exam_id=True, has_patient_id=True)
SAMITROP = Layout("samitrop", "exams.hdf5", has_exam_id=False, has_patient_id=False)
LAYOUTS = {x.name: x for x in (CODE15, SAMITROP)}


# --------------------------------------------------------------------------- table
def _flag(v: object) -> float:
    """``True``/``False``/1/0 (any case) -> 1.0/0.0; empty -> NaN; anything else -> -1."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    s = str(v).strip().lower()
    if s == "":
        return np.nan
    return {"true": 1.0, "1": 1.0, "1.0": 1.0, "false": 0.0, "0": 0.0, "0.0": 0.0}.get(s, -1.0)


def read_exams(csv: str | os.PathLike, layout: Layout = CODE15) -> pd.DataFrame:
    """``exams.csv`` with ``exam_id`` (int64, unique), ``patient_id`` (int64; SaMi-Trop: the
    exam_id), ``age``, ``sex`` (float, NaN when missing), ``death`` (1/0, NaN when empty, -1
    when not a flag), ``timey`` (float years, NaN when empty) and ``timey_raw`` (the text,
    to tell empty from non-numeric), in file order. :class:`DataError` for missing columns
    and non-integer or duplicate ids."""
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: exams table not found")
    need = ["exam_id", "age", "is_male", "death", "timey"]
    if layout.has_patient_id:
        need.append("patient_id")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False, usecols=lambda c: c in need)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for col in ("exam_id", "patient_id") if layout.has_patient_id else ("exam_id",):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = v.isna() | (v != v.round())
        if bad.any():
            raise DataError(f"{csv}: column {col!r}: non-integer value(s) "
                            f"{df.loc[bad, col].tolist()[:10]} in rows "
                            f"{(df.index[bad] + 2).tolist()[:10]}")
        out[col] = v.astype(np.int64)
    if not layout.has_patient_id:
        out["patient_id"] = out["exam_id"]
    dup = out.loc[out["exam_id"].duplicated(), "exam_id"].unique().tolist()
    if dup:
        raise DataError(f"{csv}: column 'exam_id': duplicate exam_ids {dup[:10]}")
    out["age"] = pd.to_numeric(df["age"], errors="coerce")
    out["sex"] = df["is_male"].map(_flag).replace(-1.0, np.nan)
    out["death"] = df["death"].map(_flag)
    out["timey_raw"] = df["timey"].str.strip()
    with np.errstate(invalid="ignore"):
        out["timey"] = pd.to_numeric(df["timey"], errors="coerce")
    return out


def _outcome_problem(row) -> str | None:
    """Why an exam's outcome cannot be used (None: usable; ``"none"``: both empty)."""
    death, raw, t = row.death, row.timey_raw, row.timey
    if np.isnan(death) and raw == "":
        return "none"
    if np.isnan(death) or raw == "":
        return (f"bad outcome: exam_id {row.exam_id}: only one of death and timey "
                f"(timey={raw!r}) is given")
    if death not in (0.0, 1.0):
        return f"bad outcome: exam_id {row.exam_id}: death must be True/False (0/1)"
    if not np.isfinite(t):
        return f"bad outcome: exam_id {row.exam_id}: timey {raw!r} is not a finite number"
    if t < 0:
        return f"bad outcome: exam_id {row.exam_id}: negative timey {t:g} years"
    if beyond_follow_up(t, "years"):
        return (f"bad outcome: exam_id {row.exam_id}: timey {t:g} years is beyond "
                f"{MAX_FOLLOW_UP_YEARS} years and cannot be true")
    return None


# --------------------------------------------------------------------------- HDF5 files
def _part_files(root: Path, layout: Layout) -> list[Path]:
    def number(p: Path) -> tuple[int, str]:
        m = re.search(r"(\d+)", p.stem)
        return (int(m.group(1)) if m else -1, p.name)

    return sorted(root.glob(layout.pattern), key=number)


def _part_index(path: Path, layout: Layout, table_ids: np.ndarray
                ) -> tuple[np.ndarray, tuple[str, ...], int]:
    """exam_id of every row of one HDF5 file, its lead names and its sample count;
    :class:`DataError` when the file does not open or lacks what the layout promises."""
    try:
        with h5py.File(path, "r") as f:
            if "tracings" not in f:
                raise DataError(f"{path}: no dataset 'tracings'")
            tr = f["tracings"]
            if tr.ndim != 3 or tr.shape[2] != N_LEADS:
                raise DataError(f"{path}: 'tracings' has shape {tr.shape}, expected "
                                f"(N, samples, {N_LEADS})")
            leads = tr.attrs.get("leads")
            leads = LEADS_CODE15 if leads is None else tuple(
                x.decode() if isinstance(x, bytes) else str(x) for x in leads)
            n, n_samples = int(tr.shape[0]), int(tr.shape[1])
            if layout.has_exam_id:
                if "exam_id" not in f:
                    raise DataError(f"{path}: no dataset 'exam_id'")
                ids = np.asarray(f["exam_id"][...]).astype(np.int64).ravel()
            else:
                ids = table_ids
            if ids.shape[0] != n:
                what = "'exam_id'" if layout.has_exam_id else "exams.csv"
                raise DataError(f"{path}: 'tracings' has {n} rows, {what} has "
                                f"{ids.shape[0]}")
    except OSError as e:
        raise DataError(f"{path}: unreadable HDF5 file (truncated or damaged download?): "
                        f"{e}") from None
    try:
        RawRecord("", np.zeros((N_LEADS, 1)), FS_CODE15, _standard_names(leads)
                  ).in_standard_order()
    except ValueError as e:
        raise DataError(f"{path}: 'tracings' leads {list(leads)}: {e}") from None
    return ids, leads, n_samples


def _standard_names(leads: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_ALIASES.get(x.strip().lower(), x) for x in leads)


def strip_padding(x: np.ndarray) -> np.ndarray:
    """(12, T) without the leading and trailing samples that are 0 in every lead."""
    nz = np.flatnonzero(np.any(x != 0, axis=0))
    return x[:, nz[0]:nz[-1] + 1] if nz.size else x[:, :0]


def _tracing(path: str, row: int) -> np.ndarray:
    return np.asarray(worker_handle(path)["tracings"][row], dtype=np.float64)


def exam_median(x: np.ndarray, leads: tuple[str, ...], exam_id: int, where: str,
                mv_per_unit: float = MV_PER_UNIT, max_abs_mv: float = MAX_ABS_MV
                ) -> np.ndarray:
    """The (12, 600) median beat (mV, 500 Hz) of one tracing (samples, leads) as stored;
    :class:`RecordSkip` with the reason."""
    rec = RawRecord(str(exam_id), strip_padding(np.asarray(x, np.float64).T * mv_per_unit),
                    FS_CODE15, _standard_names(leads))
    if rec.signal.shape[1] == 0:
        raise RecordSkip(f"empty tracing: exam_id {exam_id} ({where}) is all zeros", exam_id)
    try:
        beat = strip_median(rec.in_standard_order(), FS_CODE15, max_abs_mv,
                            f"tracing {where}")
    except RecordSkip as e:
        raise RecordSkip(f"{e.reason} [exam_id {exam_id}]", exam_id) from None
    return beat


def _task(task: tuple[str, int, int, tuple[str, ...], float, float]
          ) -> tuple[int, np.ndarray | str]:
    """Worker: the median beat of one exam, or the reason it is skipped."""
    path, row, exam_id, leads, mv, max_abs = task
    where = f"{Path(path).name} row {row}"
    try:
        x = _tracing(path, row)
    except Exception as e:  # noqa: BLE001 - a damaged chunk: this exam only
        return exam_id, f"unreadable tracing: exam_id {exam_id} ({where}): {type(e).__name__}: {e}"
    try:
        return exam_id, exam_median(x, leads, exam_id, where, mv, max_abs).astype(np.float32)
    except RecordSkip as e:
        return exam_id, e.reason


@dataclass(frozen=True)
class _Tasks(Sequence):
    """The exams to extract as arrays, read by :func:`parallel_map` a slice at a time as
    :func:`_task`'s tuples (a tuple per exam held for the whole build would grow with it)."""

    paths: tuple[str, ...]
    leads: tuple[tuple[str, ...], ...]
    part: np.ndarray
    row: np.ndarray
    eid: np.ndarray
    mv_per_unit: float
    max_abs_mv: float

    def __len__(self) -> int:
        return int(self.eid.size)

    def __getitem__(self, k):  # noqa: ANN001, ANN204 - an int or a slice, as a list's
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        p = int(self.part[k])
        return (self.paths[p], int(self.row[k]), int(self.eid[k]), self.leads[p],
                self.mv_per_unit, self.max_abs_mv)


# --------------------------------------------------------------------------- build
def build_code15_cache(root: str | os.PathLike, out: str | os.PathLike,
                       time_unit: str = "months", workers: int = 2, progress: bool = True,
                       shard: Shard = WHOLE, source: str = "code15",
                       mv_per_unit: float = MV_PER_UNIT,
                       max_abs_mv: float = MAX_ABS_MV) -> BuildSummary:
    """Build the cohort cache of a CODE-15%-layout folder ``root`` (``source``: ``code15``
    or ``samitrop``) at ``out`` (atomic, under ``<out>.lock``; a no-op when a complete cache
    with the same config exists). ``shard`` builds one part (by patient; ``ecg-dan cache
    merge`` joins the parts). Returns the summary of the file as written."""
    with build_lock(out):
        return _build(Path(root), Path(out), time_unit, workers, progress, shard,
                      LAYOUTS[source], float(mv_per_unit), float(max_abs_mv))


def _build(root: Path, out: Path, time_unit: str, workers: int, progress: bool, shard: Shard,
           layout: Layout, mv_per_unit: float, max_abs_mv: float) -> BuildSummary:
    t0 = time.perf_counter()
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    if not mv_per_unit > 0 or not max_abs_mv > 0:
        raise ValueError("mv_per_unit and max_abs_mv must be > 0")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {layout.name} folder not found")
    csv = root / "exams.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: exams table not found")
    parts = _part_files(root, layout)
    if not parts:
        raise FileNotFoundError(f"{root}: no {layout.pattern} file")
    config = dict(source=layout.name, root=str(root.resolve()), exams_sha1=sha1_file(csv),
                  parts=[(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in parts],
                  time_unit=time_unit, mv_per_unit=mv_per_unit, max_abs_mv=max_abs_mv,
                  **shard.config())
    if is_complete_cache(out, "cohort", config):
        s = BuildSummary.from_cache(out, "cohort", noop=True)
        log.info(s.report())
        return s
    exams = read_exams(csv, layout)
    table_ids = exams["exam_id"].to_numpy()

    # where each exam's tracing is: every HDF5 row's exam_id, part and row, as arrays (a
    # Python object per exam would make the build's memory grow with the source)
    leads: list[tuple[str, ...]] = []
    ids, part, row = [], [], []
    for k, p in enumerate(parts):
        i, lp, _ = _part_index(p, layout, table_ids)
        leads.append(lp)
        ids.append(i)
        part.append(np.full(i.size, k, np.int32))
        row.append(np.arange(i.size, dtype=np.int64))
    ids, part, row = (np.concatenate(a) for a in (ids, part, row))

    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    for j in np.flatnonzero(~np.isin(ids, table_ids)):  # tracings without a table row
        i, p, r = int(ids[j]), parts[int(part[j])], int(row[j])  # (the padding rows)
        sid = f"{p.name}#{r}" if i == 0 else str(i)
        if shard.holds(sid):
            skipped.append((sid, f"no exams.csv row: exam_id {i} ({p.name} row {r}) is not "
                                 f"in {csv.name}"))
    by_id = np.argsort(ids, kind="stable")  # an exam's rows stay in (part, row) order
    ids, part, row = ids[by_id], part[by_id], row[by_id]
    del by_id, table_ids

    held = np.fromiter((shard.holds(int(p)) for p in exams["patient_id"]), bool, len(exams))
    exams = exams[held].sort_values("exam_id").reset_index(drop=True)
    usable = np.zeros(len(exams), bool)  # an outcome and covariates
    for k, r in enumerate(exams.itertuples(index=False)):
        e = int(r.exam_id)
        problem = _outcome_problem(r)
        if problem == "none":
            skipped.append((str(e), f"no outcome: exam_id {e}: death/timey empty (given "
                                    "only for a patient's first exam)"))
        elif problem is not None:
            skipped.append((str(e), problem))
        elif not np.isfinite(r.age) or np.isnan(r.sex):
            skipped.append((str(e), f"no covariates: exam_id {e}: age or is_male missing"))
        else:
            usable[k] = True
    exams = exams[usable].reset_index(drop=True)
    first = exams.groupby("patient_id", sort=False)["exam_id"].transform("first").to_numpy()
    eid = exams["exam_id"].to_numpy()
    lo, hi = np.searchsorted(ids, eid, "left"), np.searchsorted(ids, eid, "right")
    chosen = np.zeros(len(exams), bool)
    for k in range(len(exams)):
        e = int(eid[k])
        if first[k] != e:
            skipped.append((str(e), f"not first exam: exam_id {e}: patient "
                                    f"{int(exams.at[k, 'patient_id'])} already has exam "
                                    f"{int(first[k])} with an outcome"))
        elif hi[k] == lo[k]:
            skipped.append((str(e), f"no tracing: exam_id {e} is in no {layout.pattern} "
                                    f"file of {root}"))
        elif hi[k] - lo[k] > 1:
            skipped.append((str(e), f"duplicate tracings: exam_id {e} in " + ", ".join(
                f"{parts[int(part[j])].name} row {int(row[j])}" for j in range(lo[k], hi[k]))))
        else:
            chosen[k] = True
    exams, at = exams[chosen].reset_index(drop=True), lo[chosen]
    days = exams["timey"].to_numpy(np.float64) * DAYS_PER_YEAR
    for e in exams.loc[days == 0, "exam_id"]:
        warned.append((str(e), f"{csv.name}: exam_id {e}: timey 0 taken as 1 day"))
    days[days == 0] = 1.0
    tasks = _Tasks(tuple(str(p) for p in parts), tuple(leads), part[at], row[at],
                   exams["exam_id"].to_numpy(), mv_per_unit, max_abs_mv)
    del ids, part, row, first, eid, lo, hi, at

    # results come in task order, i.e. by exam_id: written as they come
    ok = np.zeros(len(tasks), bool)
    with atomic_h5(out, "cohort", config) as f:
        app = Appender(f, {"median": ((N_LEADS, BEAT_LEN), 64)})
        try:
            with contextlib.closing(parallel_map(_task, tasks, workers, progress,
                                                 f"{layout.name} exams",
                                                 lost=lambda t, why: (t[2], why))) as results:
                for k, (e, res) in enumerate(results):
                    if isinstance(res, str):
                        skipped.append((str(e), res))
                        continue
                    app.add(median=res)
                    ok[k] = True
        finally:
            close_handles()
        app.flush()
        if not ok.any():
            raise DataError(f"{root}: no usable exam ({len(skipped)} skipped; first "
                            f"reasons: {sort_skips(skipped)[:3]}) - "
                            "refusing to write an empty cache")
        eids = tasks.eid[ok]
        days = days[ok]
        f.create_dataset("eid", data=eids)
        f.create_dataset("patient_id", data=exams["patient_id"].to_numpy(np.int64)[ok])
        f.create_dataset("time", data=days_to_time(days, time_unit).astype(np.float32))
        f["time"].attrs["time_unit"] = time_unit
        f.create_dataset("time_days", data=days.astype(np.float32))
        f.create_dataset("event", data=exams["death"].to_numpy(np.float64)[ok].astype(np.int8))
        f.create_dataset("age", data=exams["age"].to_numpy(np.float64)[ok].astype(np.float32))
        f.create_dataset("sex", data=exams["sex"].to_numpy(np.float64)[ok].astype(np.int8))
        f.attrs["time_unit"] = time_unit
        write_skipped(f, sort_skips(skipped))
        kept = {str(e) for e in eids}
        write_warnings(f, sort_skips([w for w in warned if w[0] in kept]))
        f.attrs["n_records"] = int(eids.size)
    s = BuildSummary.from_cache(out, "cohort", seconds=time.perf_counter() - t0)
    log.info(s.report())
    return s

"""MIMIC-IV-ECG -> a pretraining corpus cache (kind ``corpus``; docs/data_formats.md).

Source: PhysioNet "MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset" v1.0, about
800,000 10 s 12-lead ECGs at 500 Hz of about 160,000 patients::

    <root>/record_list.csv            subject_id, study_id, file_name, ecg_time, path
    <root>/machine_measurements.csv   subject_id, study_id, cart_id, ecg_time,
                                      report_0 ... report_17, bandwidth, filtering,
                                      rr_interval, p_onset, ..., p_axis, qrs_axis, t_axis
    <root>/files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}   (record_list.path + .hea)

Decisions:

* Leads are mapped by the names in each header (the release lists I, II, III, aVR, aVF,
  aVL, V1..V6: aVF before aVL, unlike PTB-XL), never by position; any other set of names
  is a skipped record. A record at another rate is resampled by the median-beat
  extraction (``strip_median``, the PTB-XL cache's derivation), so R sits at sample 240.
* Text: the non-empty ``report_0`` ... ``report_17`` machine statements in column order,
  each stripped of surrounding blanks and a trailing period, joined with ``". "`` and ended
  with ``"."`` (``"Sinus rhythm. Normal ECG."``): sentence-shaped text for a sentence
  encoder, read through the ``report_raw`` recipe. A study without a
  ``machine_measurements`` row or without any statement is skipped (``no machine report``):
  an ECG without text cannot be aligned with text.
* Folds: ``fold`` 1..10 is a stable hash of ``subject_id`` (:func:`patient_fold`), so all
  studies of a patient share a fold and a patient never spans training (1-8), validation
  (9) and test (10); the same on every machine and in every shard.
* Sharding (``--shard K/N``) is by ``subject_id``; rows are sorted by ``study_id``
  (``record_id``), skips by study_id too, so merged parts equal a whole build.
* Bad input: a record_list row whose WFDB files are missing or unreadable, unknown or
  duplicate lead names, a wrong lead count, NaN samples (the release writes them for lost
  samples), flat leads, implausible amplitudes and failed beat extraction are recorded
  skips with the reason; a missing table, a missing column or a duplicate study_id is a
  :class:`DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

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
    write_skipped,
    write_strings,
)
from data_modules.errors import DataError, RecordSkip
from data_modules.signal.leads import BEAT_LEN, FS, N_LEADS
from data_modules.signal.median_beat import MAX_ABS_MV, clean_ecg
from data_modules.sources.wfdb_record import read_wfdb_12lead, strip_median

log = logging.getLogger(__name__)

CORPUS = "mimic_ecg"
MEDIAN_VERSION = 1  # the PTB-XL cache's derivation (bump with it)
TEXT_VERSION = 1  # bump when report_text changes: invalidates caches
N_FOLDS = 10
RECORD_LIST_COLUMNS = ("subject_id", "study_id", "path")
REPORT_COLUMNS = tuple(f"report_{i}" for i in range(18))


def patient_fold(subject_id: int) -> int:
    """The patient's fold 1..10: a stable hash of ``subject_id`` (salted so it does not
    coincide with a shard's hash)."""
    h = hashlib.sha1(f"fold:{int(subject_id)}".encode()).digest()
    return int.from_bytes(h[:8], "big") % N_FOLDS + 1


def report_text(lines: list[Any]) -> str:
    """The machine statements of one study as one text (see the module docstring); ``""``
    when none is non-empty."""
    parts = []
    for v in lines:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        s = str(v).strip().rstrip(".").strip()
        if s:
            parts.append(s)
    return ". ".join(parts) + "." if parts else ""


def _read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
              ) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: MIMIC-IV-ECG table not found (expected the release's root "
                        "folder, holding record_list.csv, machine_measurements.csv, files/)")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    wanted = [*required, *(c for c in optional if c in header and c not in required)]
    # only the columns used: machine_measurements.csv holds 800,000 rows of 33 columns
    df = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=wanted)
    for col in ("subject_id", "study_id"):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = v.isna() | (v != v.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {i + 2}: field {col}: {df[col].iloc[i]!r} is not an "
                            "integer id")
        df[col] = v.astype(np.int64)
    dup = df["study_id"][df["study_id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: field study_id: duplicate study_id(s) {dup[:10]}")
    return df


def read_record_list(root: str | os.PathLike) -> pd.DataFrame:
    """``record_list.csv`` indexed by study_id (ascending): subject_id, path, ecg_time."""
    df = _read_csv(Path(root) / "record_list.csv", RECORD_LIST_COLUMNS, ("ecg_time",))
    if "ecg_time" not in df.columns:
        df["ecg_time"] = ""
    return df.set_index("study_id").sort_index()


def read_reports(root: str | os.PathLike) -> dict[int, str]:
    """study_id -> joined machine statements, from ``machine_measurements.csv``."""
    path = Path(root) / "machine_measurements.csv"
    head = pd.read_csv(path, nrows=0).columns if path.is_file() else []
    cols = [c for c in REPORT_COLUMNS if c in head]
    if path.is_file() and not cols:
        raise DataError(f"{path}: no report_0 ... report_17 columns")
    df = _read_csv(path, ("subject_id", "study_id", *cols))
    texts = [report_text(list(row)) for row in df[cols].itertuples(index=False)]
    return dict(zip(df["study_id"].tolist(), texts))


def _process(task: tuple[int, str, str, float]) -> tuple[int, Any]:
    """Worker: (study_id, WFDB stem, its relative path, max |mV|) -> (study_id, (median,
    median_clean) | skip reason)."""
    study_id, stem, rel, max_abs_mv = task
    try:
        x, fs = read_wfdb_12lead(stem, rel)
        beat = strip_median(x, fs, max_abs_mv, f"strip {rel}")
        return study_id, (beat.astype(np.float32), clean_ecg(beat, FS).astype(np.float32))
    except RecordSkip as e:
        return study_id, e.reason
    except ValueError as e:  # a malformed header the readers did not classify
        return study_id, f"unreadable WFDB record {rel}: {e}"


def build_mimic_cache(root: str | os.PathLike, out: str | os.PathLike, workers: int = 2,
                      progress: bool = True, max_abs_mv: float = MAX_ABS_MV,
                      shard: Shard = WHOLE) -> BuildSummary:
    """Build the MIMIC-IV-ECG corpus cache at ``out`` (atomic, under ``<out>.lock``; a no-op
    when a complete cache of the same config exists). ``shard`` builds the part of the
    patients it holds. Returns the :class:`BuildSummary` read back from ``out``."""
    with build_lock(out):
        return _build(Path(root), Path(out), workers, progress, float(max_abs_mv), shard)


def _build(root: Path, out: Path, workers: int, progress: bool, max_abs_mv: float,
           shard: Shard) -> BuildSummary:
    t0 = time.perf_counter()
    if not max_abs_mv > 0:
        raise ValueError(f"max_abs_mv must be > 0 mV, got {max_abs_mv}")
    rl_csv, mm_csv = root / "record_list.csv", root / "machine_measurements.csv"
    config = dict(source=str(root.resolve()), corpus=CORPUS,
                  record_list_sha1=sha1_file(rl_csv) if rl_csv.is_file() else None,
                  machine_measurements_sha1=sha1_file(mm_csv) if mm_csv.is_file() else None,
                  median_version=MEDIAN_VERSION, text_version=TEXT_VERSION,
                  max_abs_mv=max_abs_mv, **shard.config())
    if is_complete_cache(out, "corpus", config):
        s = BuildSummary.from_cache(out, "corpus", noop=True)
        log.info(s.report())
        return s

    records = read_record_list(root)
    reports = read_reports(root)
    records = records[[shard.holds(s) for s in records["subject_id"]]]
    skipped: list[tuple[str, str]] = []
    tasks = []
    for study_id, row in records.iterrows():
        text = reports.get(int(study_id))
        if not text:
            why = "no row in machine_measurements.csv" if text is None else \
                "all report_* statements empty"
            skipped.append((str(study_id), f"no machine report: {why}"))
            continue
        rel = str(row["path"]).strip()
        tasks.append((int(study_id), str(root / rel), rel, max_abs_mv))

    kept: list[int] = []
    with atomic_h5(out, "corpus", config) as f:
        app = Appender(f, {"median": ((N_LEADS, BEAT_LEN), 64),
                           "median_clean": ((N_LEADS, BEAT_LEN), 64)})
        with contextlib.closing(parallel_map(_process, tasks, workers, progress,
                                             "MIMIC-IV-ECG",
                                             lost=lambda t, why: (t[0], why))) as results:
            for study_id, res in results:
                if isinstance(res, str):
                    skipped.append((str(study_id), res))
                    continue
                app.add(median=res[0], median_clean=res[1])
                kept.append(study_id)
        app.flush()
        m = records.loc[kept]
        f.create_dataset("record_id", data=np.asarray(kept, dtype=np.int64))
        f.create_dataset("patient_id", data=m["subject_id"].to_numpy(np.int64))
        f.create_dataset("fold", data=np.asarray([patient_fold(s) for s in m["subject_id"]],
                                                 dtype=np.int8))
        f["fold"].attrs["rule"] = "sha1('fold:<subject_id>') mod 10 + 1 (patient-level)"
        write_strings(f, "report", [reports[i] for i in kept])
        write_strings(f, "ecg_time", m["ecg_time"].astype(str).tolist())
        skipped.sort(key=lambda t: int(t[0]))
        write_skipped(f, skipped)
        f.attrs["n_records"] = len(kept)
        f.attrs["corpus"] = CORPUS
        f.attrs["median_source"] = "derived"
        if not kept and shard.whole:
            raise DataError(f"{root}: no usable record ({len(skipped)} skipped; first "
                            f"reasons: {skipped[:3]}) - refusing to write an empty cache")
    s = BuildSummary.from_cache(out, "corpus", seconds=time.perf_counter() - t0)
    log.info(s.report())
    return s

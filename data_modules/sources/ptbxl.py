"""PTB-XL -> HDF5 cache (docs/data_formats.md, "PTB-XL cache"; docs/method.md sections 1 and 5).

Decisions:

* ``median`` is derived from the 500 Hz record (``filename_hr``) by
  :func:`data_modules.signal.median_beat.median_beat` whatever ``strips`` says; the 100 Hz file is
  only read for ``strips="100"``.
* ``median_clean = clean_ecg(median)``: the beat is cleaned *after* taking the median,
  as docs/method.md section 1 specifies ("the beat cleaned per lead", the authors applied
  ``neurokit2.ecg_clean`` to the median beat). Cleaning the strip first and taking the
  median of the cleaned windows gives a slightly different target (the 0.5 Hz high-pass
  then acts on 10 s instead of 1.2 s, with less edge effect), but it would not be the
  paper's target and UK Biobank only has the device median, so the beat-level cleaning is
  the only one that is identical for both datasets.
* Superclass labels use only codes with likelihood > 0 (data_formats.md). The sample's
  README counts single-superclass records including likelihood-0 codes (290 NORM, 51 STTC,
  37 CD, 31 MI); with the > 0 rule the counts are 290, 50, 37, 32.
* Every record that does not make it into the cache is listed in ``skipped/`` with the
  reason (unreadable/truncated WFDB, a header gain of 0, wrong sampling rate, lead count or
  names, length, NaN, flat lead, implausible amplitude, no beats, unknown SCP code, not
  validated when ``validated_only``). NaN, flat leads and amplitudes follow the one rule
  shared with UK Biobank, :func:`data_modules.signal.median_beat.signal_problem`, applied to the
  strips and to the stored beat: |x| > ``max_abs_mv`` (default 20 mV; the real sample
  stays below 12 mV) means a wrong gain or unit (a WFDB gain of 1 gives hundreds of mV).
  A header gain of 0 is refused (WFDB reads it as 200, a guess of the scale).
  Metadata that cannot be parsed (bad ``scp_codes``, duplicate ``ecg_id``, missing
  columns) is an error naming the file, the row and the field: labels must not be guessed.
* ``limit`` restricts the source to the first ``limit`` ecg_ids (a quick build); records
  beyond it are not listed as skipped.
* ``shard`` (``ecg-dan cache ptbxl --shard K/N``) keeps the records whose ecg_id the
  :class:`~data_modules.cache.Shard` holds (after ``limit``); the part's build config
  carries ``shard`` and its root attribute ``shard`` marks it as a part (it may be empty).
  ``ecg-dan cache merge`` joins the parts into the whole build's cache, bit for bit.
* Records run in ``workers`` forked processes (chunked, results in ecg_id order) and are
  streamed into resizable datasets, so full PTB-XL with 500 Hz strips (~5 GB) never sits in
  memory. ``build_config`` holds the source path, the metadata table's SHA-1, strips,
  validated_only, ptbxl_plus_dir, limit, max_abs_mv and ``MEDIAN_VERSION``; the same config
  on a complete cache is a no-op (``workers``/``progress`` do not change the output).
  Builds of one output are serialised by a lock on ``<out>.lock`` (the second waits).

PTB-XL+ (``ptbxl_plus_dir``): the median beats are read from the 12SL medians instead
of being derived. Expected layout (PTB-XL+ 1.0.1)::

    <ptbxl_plus_dir>/median_beats/12sl/<NN000>/<ecg_id:05d>_medians.{hea,dat}
    (a flat <ptbxl_plus_dir>/median_beats/12sl/<ecg_id:05d>_medians.{hea,dat} also works)

WFDB records of 12 leads at 500 Hz. Leads are mapped by name; a beat at another rate is
resampled to 500 Hz; a beat of other length is cropped/padded around its R peak, and every
beat is shifted so its R peak (same rule as the derived medians) sits at ``R_INDEX``.
Headers whose record line carries a directory prefix (reported for the public release) are
read with a lenient header parser. Records without a PTB-XL+ median are skipped with that
reason. Beats whose peak-to-peak amplitude exceeds 20 mV are taken to be in microvolts (a
unit inconsistency reported for PTB-XL+ medians) and divided by 1000; the number of such
beats is stored in the root attribute ``ptbxl_plus_rescaled_uV``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import math
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
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
    sort_skips,
    write_skipped,
    write_strings,
)
from data_modules.errors import DataError, RecordSkip
from data_modules.signal.leads import BEAT_LEN, FS, N_LEADS, SUPERCLASSES
from data_modules.signal.median_beat import (
    MAX_ABS_MV,
    BeatExtractionError,
    clean_ecg,
    conform_beat,
    signal_problem,
)
from data_modules.sources.wfdb_record import (
    amplitude_problem,
    read_wfdb,
    read_wfdb_12lead,
    strip_median,
)

log = logging.getLogger(__name__)

PTBXL_URL = ("https://physionet.org/static/published-projects/ptb-xl/"
             "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip")
PTBXL_PAGE = "https://physionet.org/content/ptb-xl/1.0.3/"
MEDIAN_VERSION = 1  # bump when the median-beat algorithm changes: invalidates caches
NOISE_FLAGS = ("baseline_drift", "static_noise", "burst_noise", "electrodes_problems",
               "extra_beats", "pacemaker")
REQUIRED_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "report", "scp_codes", "strat_fold",
                    "validated_by_human", "filename_lr", "filename_hr", *NOISE_FLAGS)
STRIP_OPTIONS = {"none": None, "100": 100, "500": 500}
RECORD_SECONDS = 10
PLUS_UV_PTP = 20.0  # mV; larger medians are taken to be in microvolts


class PTBXLDownloadError(RuntimeError):
    """PTB-XL could not be downloaded/unpacked; the message says how to proceed offline."""


# --------------------------------------------------------------------------- metadata
def _parse_scp(value: Any, csv: Path, ecg_id: Any) -> dict[str, float]:
    where = f"{csv}: row ecg_id={ecg_id}: field scp_codes"
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: empty value")
    try:
        d = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise DataError(f"{where}: cannot parse {value!r} as a dict literal ({e})") from e
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a dict, got {type(d).__name__} ({value!r})")
    out: dict[str, float] = {}
    for k, v in d.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) \
                or not math.isfinite(v) or not 0 <= v <= 100:
            raise DataError(f"{where}: bad entry {k!r}: {v!r} (code -> likelihood 0..100)")
        out[k] = float(v)
    return out


def read_ptbxl_metadata(root: str | os.PathLike) -> pd.DataFrame:
    """``ptbxl_database.csv`` indexed by ``ecg_id`` (ascending), ``scp_codes`` parsed to dicts.

    Raises :class:`DataError` naming the file, the row (ecg_id) and the field for values
    that cannot be used (labels would otherwise be silently wrong).
    """
    csv = Path(root) / "ptbxl_database.csv"
    if not csv.is_file():
        inner = _find_root(Path(root)) if Path(root).is_dir() else None
        hint = f" (the release is in {inner}: pass that folder)" if inner else ""
        raise FileNotFoundError(f"{csv}: PTB-XL metadata table not found{hint}")
    df = pd.read_csv(csv)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing}")
    ids = pd.to_numeric(df["ecg_id"], errors="coerce")
    if ids.isna().any() or (ids != ids.round()).any():
        bad = df.loc[ids.isna() | (ids != ids.round()), "ecg_id"].tolist()[:5]
        raise DataError(f"{csv}: field ecg_id: non-integer value(s) {bad}")
    df["ecg_id"] = ids.astype(np.int64)
    dup = df["ecg_id"][df["ecg_id"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{csv}: field ecg_id: duplicate ecg_id(s) {dup[:10]}")
    df = df.set_index("ecg_id").sort_index()
    df["scp_codes"] = [_parse_scp(v, csv, i) for i, v in df["scp_codes"].items()]
    for col, lo, hi in (("strat_fold", 1, 10), ("sex", 0, 1)):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = v.isna() | (v < lo) | (v > hi) | (v != v.round())
        if bad.any():
            i = df.index[bad][0]
            raise DataError(f"{csv}: row ecg_id={i}: field {col}: {df.loc[i, col]!r} "
                            f"is not an integer in {lo}..{hi}")
        df[col] = v.astype(np.int64)
    v = df["validated_by_human"]
    if v.dtype != bool:
        norm = v.astype(str).str.strip().str.lower().map({"true": True, "false": False,
                                                          "1": True, "0": False})
        if norm.isna().any():
            i = df.index[norm.isna()][0]
            raise DataError(f"{csv}: row ecg_id={i}: field validated_by_human: "
                            f"{v.loc[i]!r} is not a boolean")
        df["validated_by_human"] = norm.astype(bool)
    for col in ("age", "patient_id"):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = (v.isna() & df[col].notna()) | ~np.isfinite(v.fillna(0)) | (v < 0)
        if bad.any():
            i = df.index[bad][0]
            raise DataError(f"{csv}: row ecg_id={i}: field {col}: {df.loc[i, col]!r} "
                            "is not a finite number >= 0")
        df[col] = v
    for col in ("filename_hr", "filename_lr"):
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            raise DataError(f"{csv}: row ecg_id={df.index[bad][0]}: field {col}: empty")
    return df


def read_scp_statements(root: str | os.PathLike) -> pd.DataFrame:
    """``scp_statements.csv`` indexed by SCP code (from ``root``, else the packaged copy)."""
    path = Path(root) / "scp_statements.csv"
    if not path.is_file():
        path = Path(__file__).resolve().parents[1] / "resources" / "scp_statements.csv"
    st = pd.read_csv(path, index_col=0)
    if "diagnostic_class" not in st.columns:
        raise DataError(f"{path}: missing column 'diagnostic_class'")
    return st


def superclass_labels(scp_codes: Mapping[str, float], statements: pd.DataFrame) -> np.ndarray:
    """Multi-hot (5,) float32 over ``SUPERCLASSES`` from the ``diagnostic_class`` of the
    codes with likelihood > 0. Unknown codes raise ``KeyError`` (labels must not be guessed);
    non-diagnostic codes (no class) do not count."""
    y = np.zeros(len(SUPERCLASSES), dtype=np.float32)
    for code, lik in scp_codes.items():
        if code not in statements.index:
            raise KeyError(f"unknown SCP code {code!r} (not in scp_statements.csv)")
        if lik <= 0:
            continue
        cls = statements.at[code, "diagnostic_class"]
        if isinstance(cls, str) and cls in SUPERCLASSES:
            y[SUPERCLASSES.index(cls)] = 1.0
    return y


def _load_record(stem: Path, expect_fs: int, rel: str) -> np.ndarray:
    """A 10 s 12-lead record at ``expect_fs`` Hz in standard lead order, mV; ValueError
    (:class:`RecordSkip`) with the reason otherwise."""
    x, fs = read_wfdb_12lead(stem, rel)
    if abs(fs - expect_fs) > 1e-6:
        raise RecordSkip(f"wrong sampling rate: {fs:g} Hz in {rel}, expected {expect_fs}")
    n = RECORD_SECONDS * expect_fs
    if x.shape[1] != n:
        raise RecordSkip(f"wrong length: {x.shape[1]} samples in {rel}, expected {n}")
    return x


def _plus_stem(plus_dir: Path, ecg_id: int) -> Path | None:
    base = plus_dir / "median_beats" / "12sl"
    name = f"{ecg_id:05d}_medians"
    for cand in (base / f"{ecg_id // 1000 * 1000:05d}" / name, base / name):
        if cand.with_suffix(".hea").is_file():
            return cand
    return None


def _process(task: tuple[int, str, str | None, str | None, int | None, float]
             ) -> tuple[int, Any]:
    """Worker: (ecg_id, hr stem, lr stem, plus dir, strip fs, max |mV|) -> (ecg_id, arrays |
    reason)."""
    ecg_id, hr, lr, plus, strip_fs, max_abs_mv = task
    root_rel = Path(hr).name
    try:
        rescaled = False
        if plus is not None:
            stem = _plus_stem(Path(plus), ecg_id)
            if stem is None:
                return ecg_id, "no PTB-XL+ median: median_beats/12sl/.../" \
                                f"{ecg_id:05d}_medians.hea not found"
            try:
                rec = read_wfdb(stem)
            except Exception as e:  # noqa: BLE001
                return ecg_id, f"unreadable PTB-XL+ median {stem.name}: {type(e).__name__}: {e}"
            try:
                b, fs = rec.in_standard_order(), rec.fs
            except ValueError as e:
                return ecg_id, f"PTB-XL+ median {stem.name}: {e}"
            if np.all(np.isfinite(b)) and np.ptp(b, axis=1).max() > PLUS_UV_PTP:
                b, rescaled = b / 1000.0, True
            problem = signal_problem(b, max_abs_mv)
            if problem is not None:
                return ecg_id, f"PTB-XL+ median {stem.name}: {problem}"
            beat = conform_beat(b, fs)
            x = None
        else:
            x = _load_record(Path(hr), 500, root_rel)
            beat = strip_median(x, 500, max_abs_mv, f"strip {root_rel}")
        problem = amplitude_problem(beat, max_abs_mv, "median beat")
        if problem is not None:
            return ecg_id, problem
        strip = None
        if strip_fs == 500:
            strip = x if x is not None else _load_record(Path(hr), 500, root_rel)
        elif strip_fs == 100:
            strip = _load_record(Path(lr), 100, Path(lr).name)
        if strip is not None and not np.all(np.isfinite(strip)):
            return ecg_id, "NaN samples in strip"
        if strip is not None and strip is not x:  # x was checked above
            name = Path(lr).name if strip_fs == 100 else root_rel
            problem = amplitude_problem(strip, max_abs_mv, f"strip {name}")
            if problem is not None:
                return ecg_id, problem
        return ecg_id, (beat.astype(np.float32), clean_ecg(beat, FS).astype(np.float32),
                        None if strip is None else strip.astype(np.float32), rescaled)
    except BeatExtractionError as e:
        return ecg_id, f"median beat: {e.reason}"
    except ValueError as e:
        return ecg_id, str(e)


def build_ptbxl_cache(root: str | os.PathLike, out: str | os.PathLike, strips: str = "none",
                      ptbxl_plus_dir: str | os.PathLike | None = None, workers: int = 2,
                      validated_only: bool = False, progress: bool = True,
                      limit: int | None = None, max_abs_mv: float = MAX_ABS_MV,
                      shard: Shard = WHOLE) -> BuildSummary:
    """Build the PTB-XL cache of docs/data_formats.md at ``out`` (atomic; no-op when a
    complete cache with the same config exists). Records whose strip or beat leaves
    +-``max_abs_mv`` mV are skipped with the reason. Returns the :class:`BuildSummary` of
    the file as written (read back from ``out``). A concurrent build of the same ``out``
    waits for this one (lock ``<out>.lock``)."""
    with build_lock(out):
        return _build_ptbxl_cache(root, out, strips, ptbxl_plus_dir, workers, validated_only,
                                  progress, limit, max_abs_mv, shard)


def _build_ptbxl_cache(root: str | os.PathLike, out: str | os.PathLike, strips: str,
                       ptbxl_plus_dir: str | os.PathLike | None, workers: int,
                       validated_only: bool, progress: bool, limit: int | None,
                       max_abs_mv: float, shard: Shard) -> BuildSummary:
    t0 = time.perf_counter()
    max_abs_mv = float(max_abs_mv)
    if not max_abs_mv > 0:
        raise ValueError(f"max_abs_mv must be > 0 mV, got {max_abs_mv}")
    root, out = Path(root), Path(out)
    strips = str(strips)
    if strips not in STRIP_OPTIONS:
        raise ValueError(f"strips must be one of {list(STRIP_OPTIONS)}, got {strips!r}")
    strip_fs = STRIP_OPTIONS[strips]
    plus = Path(ptbxl_plus_dir) if ptbxl_plus_dir is not None else None
    if plus is not None and not (plus / "median_beats" / "12sl").is_dir():
        raise FileNotFoundError(f"{plus}: no median_beats/12sl directory (expected the PTB-XL+ "
                                "root holding median_beats/12sl/<NN000>/<id>_medians.hea)")
    csv = root / "ptbxl_database.csv"
    config = dict(source=str(root.resolve()), strips=strips, validated_only=bool(validated_only),
                  metadata_sha1=sha1_file(csv) if csv.is_file() else None,
                  ptbxl_plus_dir=None if plus is None else str(plus.resolve()),
                  limit=limit, median_version=MEDIAN_VERSION, max_abs_mv=max_abs_mv,
                  **shard.config())
    if is_complete_cache(out, "ptbxl", config):
        s = BuildSummary.from_cache(out, "ptbxl", noop=True)
        log.info(s.report())
        return s

    meta = read_ptbxl_metadata(root)
    statements = read_scp_statements(root)
    if limit is not None:
        meta = meta.iloc[:int(limit)]
    if not shard.whole:
        meta = meta[[shard.holds(i) for i in meta.index]]
    skipped: list[tuple[str, str]] = []
    labels: dict[int, np.ndarray] = {}
    tasks = []
    for ecg_id, row in meta.iterrows():
        if validated_only and not row["validated_by_human"]:
            skipped.append((str(ecg_id), "not validated_by_human (validated_only)"))
            continue
        try:
            labels[ecg_id] = superclass_labels(row["scp_codes"], statements)
        except KeyError as e:
            skipped.append((str(ecg_id), f"labels: {e.args[0]}"))
            continue
        tasks.append((int(ecg_id), str(root / row["filename_hr"]), str(root / row["filename_lr"]),
                      None if plus is None else str(plus), strip_fs, max_abs_mv))

    kept: list[int] = []
    n_rescaled = 0
    with atomic_h5(out, "ptbxl", config) as f:
        specs = {"median": ((N_LEADS, BEAT_LEN), 64), "median_clean": ((N_LEADS, BEAT_LEN), 64)}
        if strip_fs is not None:
            specs["strip"] = ((N_LEADS, RECORD_SECONDS * strip_fs), 8)
        app = Appender(f, specs)
        # closing() stops the worker pool at once if anything below raises
        with contextlib.closing(parallel_map(_process, tasks, workers, progress,
                                             "PTB-XL", lost=lambda t, why: (t[0], why))) as results:
            for ecg_id, res in results:
                if isinstance(res, str):
                    skipped.append((str(ecg_id), res))
                    continue
                beat, clean, strip, rescaled = res
                n_rescaled += int(rescaled)
                arrays = dict(median=beat, median_clean=clean)
                if strip_fs is not None:
                    arrays["strip"] = strip
                app.add(**arrays)
                kept.append(ecg_id)
        app.flush()
        m = meta.loc[kept]
        f.create_dataset("ecg_id", data=np.asarray(kept, dtype=np.int64))
        f.create_dataset("patient_id",
                         data=m["patient_id"].fillna(-1).to_numpy().astype(np.int64))
        f.create_dataset("age", data=m["age"].to_numpy(dtype=np.float32))
        f.create_dataset("sex", data=m["sex"].to_numpy().astype(np.int8))
        f.create_dataset("strat_fold", data=m["strat_fold"].to_numpy().astype(np.int8))
        f.create_dataset("validated_by_human", data=m["validated_by_human"].to_numpy(bool))
        for col in NOISE_FLAGS:
            flag = m[col].notna() & (m[col].astype(str).str.strip() != "")
            f.create_dataset(col, data=flag.to_numpy(bool))
        write_strings(f, "report", m["report"].fillna("").astype(str).tolist())
        write_strings(f, "scp_codes", [json.dumps(d) for d in m["scp_codes"]])
        f.create_dataset("superclass", data=np.stack([labels[i] for i in kept]).astype(np.float32)
                         if kept else np.zeros((0, len(SUPERCLASSES)), np.float32))
        f["superclass"].attrs["names"] = list(SUPERCLASSES)
        skipped = sort_skips(skipped)
        write_skipped(f, skipped)
        f.attrs["n_records"] = len(kept)
        f.attrs["median_source"] = "ptbxl_plus_12sl" if plus is not None else "derived"
        if plus is not None:
            f.attrs["ptbxl_plus_rescaled_uV"] = n_rescaled
        if len(kept) == 0 and shard.whole:
            raise DataError(f"{root}: no usable record ({len(skipped)} skipped; first "
                            f"reasons: {skipped[:3]}) - refusing to write an empty cache")
    s = BuildSummary.from_cache(out, "ptbxl", seconds=time.perf_counter() - t0)
    log.info(s.report())
    return s


# --------------------------------------------------------------------------- download
def _offline_help(url: str, why: str) -> str:
    return (f"could not fetch PTB-XL from {url}: {why}.\n"
            f"To use real PTB-XL without network here: download it on a connected machine "
            f"from {PTBXL_PAGE} (the 'Download the ZIP file' link, ~1.7 GB), copy and unzip "
            "it, then build the cache from the folder that holds ptbxl_database.csv:\n"
            "  ecg-dan cache ptbxl --root <that folder> --out data/ptbxl.h5 --workers 8\n"
            "To run without PTB-XL, generate the synthetic twin (same source formats) and "
            "build its cache:\n"
            "  ecg-dan synth --out data/synthetic --n 2000\n"
            "  ecg-dan cache ptbxl --root data/synthetic/ptbxl --out data/ptbxl.h5")


def _find_root(dest: Path) -> Path | None:
    for cand in [dest, *sorted(p.parent for p in dest.glob("*/ptbxl_database.csv"))]:
        if (cand / "ptbxl_database.csv").is_file():
            return cand
    return None


def fetch_ptbxl(dest: str | os.PathLike, url: str = PTBXL_URL, timeout: float = 10) -> Path:
    """Download and unpack the PTB-XL zip into ``dest``; returns the folder holding
    ``ptbxl_database.csv``. Already present -> returned without downloading.
    Fails fast (``timeout`` seconds per network operation) with :class:`PTBXLDownloadError`
    explaining the manual route and the synthetic alternative."""
    dest = Path(dest)
    found = _find_root(dest) if dest.is_dir() else None
    if found is not None:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / "ptbxl-download.zip.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as fh:
            shutil.copyfileobj(r, fh, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise PTBXLDownloadError(_offline_help(url, f"{type(e).__name__}: {e}")) from e
    try:
        with zipfile.ZipFile(part) as z:
            base = dest.resolve()
            for name in z.namelist():
                target = (dest / name).resolve()
                if base != target and base not in target.parents:
                    raise PTBXLDownloadError(f"{url}: unsafe path {name!r} in zip")
            z.extractall(dest)
    except zipfile.BadZipFile as e:
        raise PTBXLDownloadError(_offline_help(url, f"not a valid zip file ({e})")) from e
    finally:
        part.unlink(missing_ok=True)
    found = _find_root(dest)
    if found is None:
        raise PTBXLDownloadError(_offline_help(url, "the archive holds no ptbxl_database.csv"))
    return found

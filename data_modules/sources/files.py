"""ECGs to score (``ecg-dan predict``): WFDB records, CardioSoft and GE MUSE XML files, folders
of them, and PTB-XL / UK Biobank / cohort HDF5 caches -> 12 x 600 median beats at 500 Hz.

Every beat comes from the cache builders' own code, so a new ECG is prepared exactly as the
training data were: WFDB strips at any sampling rate through
:func:`data_modules.sources.wfdb_record.strip_median` (read by name into the standard lead order,
resampled to 500 Hz by the median-beat extraction, the shared signal rule), CardioSoft XML through
:func:`data_modules.sources.cardiosoft_xml.checked_median` (the device median, re-centred on R),
GE MUSE XML through :func:`data_modules.sources.muse_xml.muse_median` (derived from the rhythm
strip), cache rows as stored (already checked when the cache was built; the signal rule is
applied again so a cache built with a looser ``max_abs_mv`` is held to the default). An XML
file's format is told by its root element when it is read
(:func:`data_modules.sources.xml_format.xml_format`); an XML of neither kind is a recorded
skip naming its root element. A record that cannot be used raises
:class:`data_modules.errors.RecordSkip` with the reason; a batch records it and goes on.

Discovery (:func:`discover`): a folder is searched recursively for ``*.hea`` (a WFDB record
each), ``*.xml`` and ``*.h5``/``*.hdf5``; the other files of a WFDB record (its ``.dat``)
go with it, and every other file (a README, a photo, a ``.dat`` without its header) is a
recorded skip, as is a file named on the command line that is none of these, a missing
path, or a cache that does not open. An ECG's id is its path below the folder given,
without extension (``site2/123_20205_2_0``), the file's name without extension for a file
given on its own, or the cache's ecg_id / eid; two ECGs with one id are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_modules.cache import ID_DATASET, CacheError, close_handles, open_cache, worker_handle
from data_modules.errors import DataError, RecordSkip
from data_modules.signal.median_beat import MAX_ABS_MV, signal_problem
from data_modules.sources.cardiosoft_xml import cardiosoft_strip_median, checked_median
from data_modules.sources.muse_xml import muse_median
from data_modules.sources.wfdb_record import read_wfdb_12lead, strip_median
from data_modules.sources.xml_format import xml_format

__all__ = ["ECGItem", "close_caches", "discover", "load_beat"]

WFDB_SUFFIXES = (".hea", ".dat")
XML_SUFFIXES = (".xml",)
CACHE_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class ECGItem:
    """One ECG to score: ``kind`` is ``wfdb`` (``path`` = the record's stem), ``xml``
    (CardioSoft or MUSE, told apart when read) or
    ``cache`` (``path`` = the HDF5 file, ``row`` = its row); ``id`` names it in the output
    (the file's path below the folder given without extension, a file given alone: its
    name without extension, or the cache's ecg_id / eid)."""

    id: str
    source: str
    kind: str
    path: str
    row: int = -1


def _cache_items(path: Path) -> list[ECGItem]:
    with open_cache(path) as f:
        kind = str(f.attrs["kind"])
        ids = f[ID_DATASET[kind]][...]
    return [ECGItem(str(int(i)), str(path), "cache", str(path), r) for r, i in enumerate(ids)]


def _file_id(path: Path, root: Path | None) -> str:
    """A file's id: its path below ``root`` (the folder given) without extension, else its
    name without extension."""
    return path.relative_to(root).with_suffix("").as_posix() if root else path.stem


def _not_an_ecg(path: Path) -> str:
    if path.suffix.lower() == ".dat":
        return (f"not an ECG file: {path.name} is a WFDB signal file without its header "
                f"({path.with_suffix('.hea').name})")
    return (f"not an ECG file: {path.name} is neither a WFDB record (.hea), a CardioSoft or "
            "MUSE XML file (.xml) nor an HDF5 cache (.h5)")


def _file_items(path: Path, root: Path | None = None) -> list[ECGItem]:
    suffix = path.suffix.lower()
    if suffix in WFDB_SUFFIXES:
        stem = path.with_suffix("")
        return [ECGItem(_file_id(stem, root), str(stem.with_suffix(".hea")), "wfdb",
                        str(stem))]
    if suffix in XML_SUFFIXES:
        return [ECGItem(_file_id(path, root), str(path), "xml", str(path))]
    if suffix in CACHE_SUFFIXES:
        return _cache_items(path)
    raise RecordSkip(_not_an_ecg(path))


def _items_or_reason(path: Path, root: Path | None = None) -> list[ECGItem] | str:
    """The ECGs of one file, or why it cannot be used (the same reason whether the file was
    named or found in a folder)."""
    try:
        return _file_items(path, root)
    except CacheError as e:
        return f"unusable cache: {e}"
    except RecordSkip as e:
        return e.reason


def _unique_ids(items: list[ECGItem]) -> None:
    """Refuse two ECGs with one id: their rows could not be told apart or joined back."""
    first: dict[str, str] = {}
    for it in items:
        where = f"{it.source}" + (f" row {it.row}" if it.row >= 0 else "")
        if it.id in first:
            raise DataError(
                f"two inputs have the id {it.id!r}: {first[it.id]} and {where}. An id is the "
                "path below the folder given without extension (a file given on its own: "
                "its name without extension; a cache row: its ecg_id / eid); give the "
                "folders' common parent instead, or score them in separate runs")
        first[it.id] = where


def discover(paths: list[str | os.PathLike]
             ) -> tuple[list[ECGItem], list[tuple[str, str, str]]]:
    """The ECGs named by ``paths`` (files, WFDB stems without extension, folders searched
    recursively, caches expanded to their rows) in the order given, each once, and the
    ``(id, source, reason)`` of every path that could not be used (in a folder: every file
    that is not an ECG or part of a WFDB record). :class:`DataError` when two ECGs would
    share an id."""
    items: list[ECGItem] = []
    skipped: list[tuple[str, str, str]] = []
    seen: set[tuple[str, int]] = set()

    def add(new: list[ECGItem]) -> None:
        for it in new:
            key = (str(Path(it.path).resolve()), it.row)
            if key not in seen:
                seen.add(key)
                items.append(it)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            records = {f.with_suffix("") for f in files if f.suffix.lower() == ".hea"}
            for f in files:
                if f.suffix.lower() not in (".hea", *XML_SUFFIXES, *CACHE_SUFFIXES):
                    if f.with_suffix("") not in records:  # else: a WFDB record's .dat
                        skipped.append((_file_id(f, p), str(f), _not_an_ecg(f)))
                    continue
                got = _items_or_reason(f, p)
                if isinstance(got, str):
                    skipped.append((_file_id(f, p), str(f), got))
                else:
                    add(got)
            continue
        if not p.exists() and p.with_name(p.name + ".hea").is_file():
            p = p.with_name(p.name + ".hea")  # a WFDB record named by its stem
        if not p.is_file():
            skipped.append((p.stem, str(p), f"not found: {p}"))
            continue
        got = _items_or_reason(p)
        if isinstance(got, str):
            skipped.append((p.stem, str(p), got))
        else:
            add(got)
    _unique_ids(items)
    return items, skipped


def _cache_row(path: str, row: int) -> np.ndarray:
    return np.asarray(worker_handle(path)["median"][row], dtype=np.float64)


def close_caches() -> None:
    """Close the caches this process opened for :func:`load_beat` (end of a batch)."""
    close_handles()


def load_beat(item: ECGItem, max_abs_mv: float = MAX_ABS_MV,
              cardiosoft: str = "device") -> np.ndarray:
    """The (12, 600) float32 median beat (mV, 500 Hz, R at ``R_INDEX``) of one ECG;
    :class:`RecordSkip` with the reason when it cannot be used. ``cardiosoft``: a CardioSoft
    file's beat is its device median (``device``, as UK Biobank caches hold) or derived from
    its strip (``strip``, as cohort caches hold); the model file says which."""
    name = Path(item.source).name
    if item.kind == "wfdb":
        x, fs = read_wfdb_12lead(item.path, name)
        return strip_median(x, fs, max_abs_mv, f"strip {name}").astype(np.float32)
    if item.kind == "xml":
        if xml_format(item.path, name) == "muse":
            return muse_median(item.path, name, max_abs_mv)[1].astype(np.float32)
        if cardiosoft == "strip":
            return cardiosoft_strip_median(item.path, name, max_abs_mv).astype(np.float32)
        return checked_median(item.path, name, max_abs_mv=max_abs_mv)[1].astype(np.float32)
    if item.kind == "cache":
        beat = _cache_row(item.path, item.row)
        problem = signal_problem(beat, max_abs_mv)
        if problem is not None:
            raise RecordSkip(f"{problem} (median beat, row {item.row} of {name})")
        return beat.astype(np.float32)
    raise ValueError(f"unknown ECG item kind {item.kind!r}")

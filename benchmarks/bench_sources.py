"""Cache-build throughput per source: ECGs/s per core of reading a record and deriving its
median beat, the original extraction against today's, and the wall time of the big corpora.

Usage:
    python benchmarks/bench_sources.py                   # every source, 200 twin records each
    python benchmarks/bench_sources.py --n 100 --blocks 4
    python benchmarks/bench_sources.py --compare 500     # + identity of old/new on 500 records
    python benchmarks/bench_sources.py --builds --n 100  # each source's whole cache build

A source is one ``SOURCES`` entry: a twin writer (a ``data_modules.synthetic.formats.FORMATS``
name, or a function writing files) and a reader (items found in the written files -> one
(12, T) mV strip and its rate, or a device median). A source whose twin or reader has not
landed in this checkout prints "not available in this checkout".

For each source, in one process, blocks alternate the original extraction
(tests/reference/median_beat_reference.py) and today's on the same records; each block
prints its CPU time per wall second (the machine is shared: 1.0 = this process had a whole
core). ECGs/s per core = records / process CPU seconds (reader + median beat, no cache
write). The speed-up is the ratio of the summed CPU times. The estimate of a full build
assumes ``--cores`` (32) workers each at the per-core rate (a build's own overhead - the
HDF5 write in the parent, the shard merge - is not included).

``--compare N`` checks that today's extraction gives the original's output (beat bit for
bit, R peaks, detection lead, skip reasons) on N real PTB-XL records (``--ptbxl``, default
../shared/data/ptbxl-500 or ECG_DAN_PTBXL_DIR) and N PTB-XL twin records.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_modules.errors import RecordSkip  # noqa: E402
from data_modules.signal import median_beat as today  # noqa: E402
from data_modules.sources import cardiosoft_xml, wfdb_record  # noqa: E402
from tests.reference import median_beat_reference as original  # noqa: E402

CORPORA = {"CODE-15%": 345_779, "MIMIC-IV-ECG": 800_035}
DEFAULT_PTBXL = Path(os.environ.get("ECG_DAN_PTBXL_DIR", ROOT.parent / "shared" / "data" /
                                    "ptbxl-500"))


class NotAvailable(Exception):
    """The source's twin writer or reader is not in this checkout."""


@contextlib.contextmanager
def extraction(impl: Any) -> Iterator[None]:
    """Run the readers with ``impl``'s median-beat functions (the original or today's)."""
    names = {wfdb_record: ("median_beat", "signal_problem", "BeatExtractionError"),
             cardiosoft_xml: ("conform_beat",)}
    saved = {(m, n): getattr(m, n) for m, ns in names.items() for n in ns if hasattr(m, n)}
    try:
        for m, n in saved:
            setattr(m, n, getattr(impl, n))
        yield
    finally:
        for (m, n), v in saved.items():
            setattr(m, n, v)


# --- readers: one record -> its median beat (what a cache builder does per record) ---------

def wfdb_median(stem: Path) -> None:
    x, fs = wfdb_record.read_wfdb_12lead(stem, stem.name)
    wfdb_record.strip_median(x, fs)


def xml_median(path: Path) -> None:
    cardiosoft_xml.checked_median(path, path.name)


def array_median(item: tuple[np.ndarray, float]) -> None:
    wfdb_record.strip_median(*item)


def hdf5_median(item: tuple[Path, int]) -> None:
    """One CODE-15%-format exam: ``tracings`` (N, 4096, 12) at 400 Hz, zero-padded."""
    import h5py  # deferred: only this source needs it

    path, row = item
    with h5py.File(path, "r") as f:
        x = np.asarray(f["tracings"][row], dtype=np.float64).T
    keep = np.flatnonzero(np.abs(x).sum(axis=0) > 0)
    if len(keep):
        x = x[:, keep[0]:keep[-1] + 1]
    wfdb_record.strip_median(x, 400.0)


# --- twins ---------------------------------------------------------------------------------

def _format(*keys: str) -> Callable[..., dict[str, Any]]:
    from data_modules.synthetic.formats import FORMATS  # deferred: imports pandas

    for name, writer in FORMATS.items():
        if any(k in name.lower() for k in keys):
            return writer
    raise NotAvailable(f"no twin format named like {'/'.join(keys)} in FORMATS")


def _files(paths: dict[str, Any], pattern: str) -> list[Path]:
    roots = [Path(p) for p in paths.values() if isinstance(p, (str, Path)) and Path(p).is_dir()]
    found = sorted({f for r in roots for f in r.rglob(pattern)})
    if not found:
        raise NotAvailable(f"the twin wrote no {pattern} files")
    return found


def ptbxl_real(tmp: Path, n: int) -> list[Path]:
    found = sorted((DEFAULT_PTBXL / "records500").glob("*/*.hea"))[:n]
    if not found:
        raise NotAvailable(f"real PTB-XL sample not found at {DEFAULT_PTBXL}")
    return [f.with_suffix("") for f in found]


def ptbxl_real_strips(tmp: Path, n: int) -> list[tuple[np.ndarray, float]]:
    """The real records read beforehand: the median-beat extraction's cost alone."""
    return [wfdb_record.read_wfdb_12lead(s, s.name) for s in ptbxl_real(tmp, n)]


def ptbxl_twin(tmp: Path, n: int) -> list[Path]:
    from data_modules.synthetic import make_synthetic  # deferred: imports pandas

    paths = make_synthetic(tmp / "ptbxl", n=n, seed=0, n_ukb=1, progress=False)
    return [f.with_suffix("") for f in sorted(Path(paths["ptbxl"]).rglob("records500/*/*.hea"))]


def ukb_twin(tmp: Path, n: int) -> list[Path]:
    from data_modules.synthetic import make_synthetic  # deferred: imports pandas

    paths = make_synthetic(tmp / "ukb", n=1, seed=0, n_ukb=n, progress=False)
    return sorted(Path(paths["ukb_xml"]).glob("*.xml"))[:n]


def code15_twin(tmp: Path, n: int) -> list[tuple[Path, int]]:
    import h5py  # deferred: only this source needs it

    paths = _format("code15", "code-15")(tmp / "code15", n, 0, "dense", "standard")
    items = []
    for f in _files(paths, "*.hdf5"):
        with h5py.File(f, "r") as h:
            items += [(f, i) for i in range(h["tracings"].shape[0])]
    return items[:n]


def mimic_twin(tmp: Path, n: int) -> list[Path]:
    paths = _format("mimic")(tmp / "mimic", n, 0, "dense", "standard")
    return [f.with_suffix("") for f in _files(paths, "*.hea")][:n]


def muse_twin(tmp: Path, n: int) -> list[Path]:
    paths = _format("muse")(tmp / "muse", n, 0, "dense", "standard")
    return _files(paths, "*.xml")[:n]


def muse_median(path: Path) -> None:
    from data_modules.sources.muse_xml import muse_median as read  # deferred: XML reader

    read(path, path.name)


def standin_400hz(tmp: Path, n: int) -> list[tuple[np.ndarray, float]]:
    """CODE-15%-shaped strips in memory (12 x 4096 at 400 Hz): the extraction's cost alone."""
    from data_modules.synthetic.beat_model import LABELS, simulate_record

    rng = np.random.default_rng(0)
    return [(simulate_record(rng, LABELS[i % len(LABELS)], fs=400, seconds=4096 / 400).signal,
             400.0) for i in range(n)]


@dataclass(frozen=True)
class Source:
    name: str
    twin: Callable[[Path, int], list]  # writes the records, returns the reader's items
    read: Callable[[Any], None]  # one item -> its median beat
    derives: bool = True  # the median beat is derived from the strip (else: device median)


SOURCES = [
    Source("PTB-XL WFDB 500 Hz, real sample", ptbxl_real, wfdb_median),
    Source("PTB-XL 500 Hz real sample, median beat only (strips in memory)", ptbxl_real_strips,
           array_median),
    Source("PTB-XL WFDB 500 Hz, twin", ptbxl_twin, wfdb_median),
    Source("UK Biobank CardioSoft XML, twin (device median)", ukb_twin, xml_median, False),
    Source("CODE-15% HDF5 400 Hz, twin", code15_twin, hdf5_median),
    Source("MIMIC-IV-ECG WFDB 500 Hz, twin", mimic_twin, wfdb_median),
    Source("GE MUSE XML, twin", muse_twin, muse_median),
    Source("stand-in: 12 x 4096 at 400 Hz in memory", standin_400hz, array_median),
]


# --- timing --------------------------------------------------------------------------------

def run_block(read: Callable[[Any], None], items: list) -> tuple[float, float, int]:
    """(process CPU s, wall s, skips) of reading ``items`` and deriving their beats."""
    skips = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for item in items:
        try:
            read(item)
        except RecordSkip:
            skips += 1
    return time.process_time() - c0, time.perf_counter() - w0, skips


def time_source(src: Source, items: list, blocks: int) -> dict[str, float]:
    """Alternate original and today's extraction in ``blocks`` blocks over ``items``."""
    for impl in (original, today):  # warm-up: imports, filter design caches
        with extraction(impl):
            run_block(src.read, items[:2])
    cpu = {"original": 0.0, "today": 0.0}
    chunks = [c for c in np.array_split(np.arange(len(items)), blocks) if len(c)]
    for b, idx in enumerate(chunks):
        part = [items[i] for i in idx]
        order = ("original", "today") if b % 2 == 0 else ("today", "original")
        line = []
        for name in order:
            with extraction(original if name == "original" else today):
                c, w, skips = run_block(src.read, part)
            cpu[name] += c
            line.append(f"{name} {len(part) / c:6.1f} ECG/s/core [CPU/wall {c / w:.2f}]")
        print(f"    block {b + 1}: {len(part)} records: " + "; ".join(line) +
              (f" ({skips} skipped)" if skips else ""))
    n = sum(len(c) for c in chunks)
    return {k: n / v for k, v in cpu.items()}


def compare(n: int, tmp: Path) -> None:
    """Today's extraction against the original on real and twin records."""
    for label, make in (("real PTB-XL", ptbxl_real), ("PTB-XL twin", ptbxl_twin)):
        try:
            stems = make(tmp, n)
        except NotAvailable as e:
            print(f"  {label}: {e}")
            continue
        differ = skipped = 0
        for stem in stems:
            x, fs = wfdb_record.read_wfdb_12lead(stem, stem.name)
            out = []
            for impl in (original, today):
                try:
                    r = impl.median_beat(x, fs)
                    out.append((r.beat, r.r_peaks, r.detection_lead, r.n_beats, r.consistency))
                except impl.BeatExtractionError as e:
                    out.append(e.reason)
            a, b = out
            if isinstance(a, str) or isinstance(b, str):
                skipped += isinstance(a, str)
                differ += a != b
            elif not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                      and a[2:] == b[2:]):
                differ += 1
                print(f"    {stem.name}: max |diff| {np.abs(a[0] - b[0]).max():.3g} mV")
        print(f"  {label}: {len(stems)} records ({skipped} skipped by both): "
              f"{differ} differ from the original (beat bit for bit, R peaks, detection lead, "
              f"beat count, consistency, skip reason)")


def _builds() -> dict[str, tuple[str, Callable[[dict[str, Any], Path], Any]]]:
    """source -> (twin format, its whole cache build with one worker)."""
    from data_modules.sources.code15 import build_code15_cache
    from data_modules.sources.cohort_table import build_cohort_cache
    from data_modules.sources.mimic_ecg import build_mimic_cache
    from data_modules.sources.ptbxl import build_ptbxl_cache
    from data_modules.sources.samitrop import build_samitrop_cache
    from data_modules.sources.ukb import build_ukb_cache

    kw = {"workers": 1, "progress": False}
    return {
        "PTB-XL (WFDB 500 Hz)": ("ptbxl+ukb", lambda p, o: build_ptbxl_cache(p["ptbxl"], o, **kw)),
        "UK Biobank (CardioSoft XML)": ("ptbxl+ukb", lambda p, o: build_ukb_cache(
            p["ukb_xml"], p["ukb_outcomes"], o, **kw)),
        "CODE-15% (HDF5 400 Hz)": ("code15", lambda p, o: build_code15_cache(p["code15"], o,
                                                                            **kw)),
        "SaMi-Trop (HDF5 400 Hz)": ("samitrop", lambda p, o: build_samitrop_cache(
            p["samitrop"], o, **kw)),
        "MIMIC-IV-ECG (WFDB 500 Hz)": ("mimic", lambda p, o: build_mimic_cache(p["mimic"], o,
                                                                              **kw)),
        "own cohort (WFDB 250-1000 Hz, CardioSoft, MUSE)": ("cohort", lambda p, o:
                                                            build_cohort_cache(
                                                                p["cohort_ecgs"],
                                                                p["cohort_table"], o, **kw)),
    }


def bench_builds(n: int, tmp: Path, cores: int) -> None:
    """Each source's whole cache build (read, beat, checks, HDF5 write) with one worker, in
    this process: (records written + skipped) / process CPU seconds."""
    from data_modules.synthetic.formats import FORMATS  # deferred: imports pandas

    print(f"\nwhole cache builds, {n} twin records each, one worker (ECGs/s per core = "
          "records written and skipped / CPU seconds of this process)")
    for name, (fmt, build) in _builds().items():
        kw = {"n_ukb": n} if fmt == "ptbxl+ukb" else {}
        paths = FORMATS[fmt](tmp / name[:6], n=n, seed=0, events="dense", setting="standard",
                             **kw)
        c0, w0 = time.process_time(), time.perf_counter()
        s = build(paths, tmp / f"{name[:6]}.h5")
        c, w = time.process_time() - c0, time.perf_counter() - w0
        done = s.n_records + s.n_skipped
        per_core = done / c
        est = {k: v / (per_core * cores) / 60 for k, v in CORPORA.items()}
        print(f"  {name}: {done} records in {c:.1f} CPU s [CPU/wall {c / w:.2f}]: "
              f"{per_core:.1f} ECGs/s per core" +
              (f"; {cores} cores: CODE-15% {est['CODE-15%']:.1f} min" if "CODE" in name else "")
              + (f"; {cores} cores: MIMIC-IV-ECG {est['MIMIC-IV-ECG']:.1f} min"
                 if "MIMIC" in name else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="records per source")
    ap.add_argument("--blocks", type=int, default=4, help="alternating blocks per source")
    ap.add_argument("--cores", type=int, default=32, help="cores of the estimate's machine")
    ap.add_argument("--compare", type=int, default=0, metavar="N",
                    help="first check old/new identity on N real and N twin records")
    ap.add_argument("--only", nargs="+", default=[], help="sources whose name contains one")
    ap.add_argument("--builds", action="store_true",
                    help="only time each source's whole cache build (one worker, HDF5 write)")
    args = ap.parse_args(argv)
    if args.builds:
        with tempfile.TemporaryDirectory() as tmp:
            bench_builds(args.n, Path(tmp), args.cores)
        return 0
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{args.n} records per source, {args.blocks} blocks")
    rates: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare:
            print(f"\nidentity of today's extraction with the original ({args.compare} records)")
            compare(args.compare, Path(tmp) / "compare")
        for src in SOURCES:
            if args.only and not any(k.lower() in src.name.lower() for k in args.only):
                continue
            print(f"\n{src.name}")
            try:
                items = src.twin(Path(tmp) / f"s{len(rates)}", args.n)
            except NotAvailable as e:
                print(f"  not available in this checkout ({e})")
                continue
            rates[src.name] = r = time_source(src, items, args.blocks)
            print(f"  {len(items)} records: original {r['original']:.1f}, today "
                  f"{r['today']:.1f} ECGs/s per core (x{r['today'] / r['original']:.2f})")
    print(f"\nestimated wall time of a full build on {args.cores} cores (per-core rate x "
          f"{args.cores}, reader + median beat):")
    basis = {"CODE-15%": ("CODE-15% HDF5", "stand-in: 12 x 4096"),
             "MIMIC-IV-ECG": ("MIMIC-IV-ECG", "PTB-XL WFDB 500 Hz, twin")}
    for corpus, n in CORPORA.items():
        name = next((s for k in basis[corpus] for s in rates if s.startswith(k)), None)
        if name is None:
            print(f"  {corpus}: no measured source to base it on")
            continue
        est = {k: n / (v * args.cores) / 60 for k, v in rates[name].items()}
        print(f"  {corpus} ({n:,} ECGs, from '{name}'): original {est['original']:.1f} min, "
              f"today {est['today']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

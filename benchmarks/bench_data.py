"""Data-pipeline throughput: DataModule read rate (and, when available, cache build rate).

Usage:
    python benchmarks/bench_data.py                      # synthetic-shaped caches, 5,000 records
    python benchmarks/bench_data.py --n 2000 --workers 0 2 4
    python benchmarks/bench_data.py --cache path/to/ptbxl.h5 --cache path/to/ukb.h5
    python benchmarks/bench_data.py --build              # also time the PTB-XL cache builder
    python benchmarks/bench_data.py --ukb-memory 2000 20000   # peak RSS of UKB cache builds

For each cache it times one full pass of the TRAIN loader with the training transforms
(PTB-XL: per-sample lead masking; UKB: event-stratified batches + per-batch masking),
for each worker count, and prints samples/s. Epoch 1 includes worker start-up; epoch 2
reuses the persistent workers. A raw h5py baseline (one record per read, random order,
vs one list-indexed read per batch) shows why the datasets read one record at a time.

``--ukb-memory N ...`` (a benchmark, not a test) builds a UK Biobank cache of N synthetic
participants in a fresh process and prints its peak RSS (the build process's ``VmHWM``, and
``ru_maxrss`` of RUSAGE_CHILDREN, i.e. its largest worker): the builder streams medians to
disk, so the figures should not grow with N. The XML comes from ``data_modules.synthetic``
(a few hundred distinct participants, hard-linked under N bulk file names, so generating
20,000 takes seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_modules.h5cache import open_cache  # noqa: E402
from data_modules.ptbxl_datamodule import PTBXLDataModule  # noqa: E402
from data_modules.splits import Split  # noqa: E402
from data_modules.ukb_datamodule import UKBDataModule  # noqa: E402

_CHUNK = 500


def _root_attrs(f: h5py.File, kind: str, n: int) -> None:
    f.attrs["schema_version"] = 1
    f.attrs["kind"] = kind
    f.attrs["build_config"] = json.dumps({"source": "benchmarks/bench_data.py", "random": True})
    f.attrs["n_records"] = n
    s = f.create_group("skipped")
    s.create_dataset("id", shape=(0,), dtype=h5py.string_dtype())
    s.create_dataset("reason", shape=(0,), dtype=h5py.string_dtype())


def _beats(f: h5py.File, name: str, n: int, rng: np.random.Generator) -> None:
    d = f.create_dataset(name, shape=(n, 12, 600), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        d[a:b] = rng.normal(0, 0.3, size=(b - a, 12, 600)).astype(np.float32)


def write_ptbxl_like(path: Path, n: int, seed: int = 0) -> Path:
    """Random numbers in the PTB-XL cache layout of docs/data_formats.md (complete=True)."""
    rng = np.random.default_rng(seed)
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        _beats(f, "median", n, rng)
        _beats(f, "median_clean", n, rng)
        f.create_dataset("ecg_id", data=np.arange(1, n + 1, dtype=np.int64))
        f.create_dataset("patient_id", data=np.arange(n, dtype=np.int64))
        f.create_dataset("age", data=rng.uniform(20, 90, n).astype(np.float32))
        f.create_dataset("sex", data=rng.integers(0, 2, n).astype(np.int8))
        f.create_dataset("strat_fold", data=(np.arange(n) % 10 + 1).astype(np.int8))
        f.create_dataset("validated_by_human", data=rng.random(n) < 0.7)
        for flag in ("baseline_drift", "static_noise", "burst_noise", "electrodes_problems",
                     "extra_beats", "pacemaker"):
            f.create_dataset(flag, data=np.zeros(n, dtype=bool))
        f.create_dataset("report", data=np.array(["-"] * n, dtype=object), dtype=s)
        f.create_dataset("scp_codes", data=np.array(["{}"] * n, dtype=object), dtype=s)
        f.create_dataset("superclass", data=(rng.random((n, 5)) < 0.3).astype(np.float32))
        _root_attrs(f, "ptbxl", n)
        f.attrs["complete"] = True
    return path


def write_ukb_like(path: Path, n: int, seed: int = 0, event_rate: float = 0.04) -> Path:
    """Random numbers in the UK Biobank cache layout (complete=True)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        _beats(f, "median", n, rng)
        f.create_dataset("eid", data=np.arange(n, dtype=np.int64) + 1_000_000)
        days = rng.uniform(30, 2600, n).astype(np.float32)
        t = f.create_dataset("time", data=days / 30 + 1)
        t.attrs["time_unit"] = "months"
        f.create_dataset("time_days", data=days)
        f.create_dataset("event", data=(rng.random(n) < event_rate).astype(np.int8))
        f.create_dataset("cohort_hyp", data=np.ones(n, dtype=bool))
        f.create_dataset("cohort_mi", data=rng.random(n) < 0.1)
        f.create_dataset("age", data=rng.uniform(45, 80, n).astype(np.float32))
        f.create_dataset("sex", data=rng.integers(0, 2, n).astype(np.int8))
        f.create_dataset("ecg_date", data=np.array(["2016-01-01"] * n, dtype=object),
                         dtype=h5py.string_dtype())
        _root_attrs(f, "ukb", n)
        f.attrs["complete"] = True
    return path


def _kind(path: Path) -> str:
    with h5py.File(path, "r") as f:
        k = f.attrs.get("kind")
    return k.decode() if isinstance(k, bytes) else str(k)


def _time_passes(loader: Iterable, epochs: int = 2) -> list[tuple[int, float]]:
    out = []
    for epoch in range(epochs):
        bs = getattr(loader, "batch_sampler", None)
        if hasattr(bs, "set_epoch"):
            bs.set_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(int(b["x"].shape[0]) for b in loader)
        out.append((n, time.perf_counter() - t0))
    return out


def _report(label: str, passes: list[tuple[int, float]]) -> None:
    parts = [f"epoch {i + 1}: {n / dt:8.0f} samples/s ({n} in {dt:.2f} s)"
             for i, (n, dt) in enumerate(passes)]
    print(f"  {label:<22} " + " | ".join(parts))


def bench_raw_reads(path: Path, batch: int = 128, n_max: int = 2048) -> None:
    """h5py baseline: one record per read vs one sorted list-indexed read per batch."""
    with h5py.File(path, "r") as f:
        d = f["median"]
        n = min(d.shape[0], n_max)
        idx = np.random.default_rng(0).permutation(d.shape[0])[:n]
        t0 = time.perf_counter()
        for i in idx:
            d[int(i)]
        per_row = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for a in range(0, n, batch):
            d[np.sort(idx[a : a + batch]).tolist()]
        listed = n / (time.perf_counter() - t0)
    print(f"  raw h5py 'median': one record per read {per_row:8.0f} rec/s | "
          f"list-indexed batch of {batch} {listed:8.0f} rec/s")


def bench_ptbxl(path: Path, workers: list[int], batch_size: int, epochs: int) -> None:
    print(f"PTB-XL-style cache {path}")
    bench_raw_reads(path, batch_size)
    for w in workers:
        dm = PTBXLDataModule(path, batch_size=batch_size, num_workers=w, seed=72)
        loader = dm.train_dataloader()
        _report(f"train, num_workers={w}", _time_passes(loader, epochs))
        del loader, dm


def bench_ukb(path: Path, workers: list[int], batch_size: int, epochs: int) -> None:
    print(f"UKB-style cache {path}")
    bench_raw_reads(path, batch_size)
    with open_cache(path, "ukb") as f:
        n = int(f["median"].shape[0])
        eid = f["eid"][...].astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    parts = {"train": rows[rows % 10 < 8], "val": rows[rows % 10 == 8],
             "test": rows[rows % 10 == 9]}
    split = Split(0, 0, parts["train"], parts["val"], parts["test"],
                  eid[parts["train"]], eid[parts["val"]], eid[parts["test"]])
    for w in workers:
        dm = UKBDataModule(path, "all", split, batch_size=batch_size, num_workers=w, seed=42)
        loader = dm.train_dataloader()
        _report(f"train, num_workers={w}", _time_passes(loader, epochs))
        del loader, dm


def bench_cache_build(n: int = 500, workers: int = 2) -> None:
    """Cache build rate from a synthetic PTB-XL directory of ``n`` records (records/s)."""
    try:
        from data_modules.ptbxl import build_ptbxl_cache
        from data_modules.synthetic import make_synthetic
    except ImportError as e:
        print(f"cache build: skipped: builder not available ({e})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            t0 = time.perf_counter()
            paths = make_synthetic(Path(tmp) / "synth", n=n, seed=0, n_ukb=1, progress=False)
            t_synth = time.perf_counter() - t0
            t0 = time.perf_counter()
            build_ptbxl_cache(paths["ptbxl"], Path(tmp) / "ptbxl.h5", workers=workers,
                              progress=False)
            dt = time.perf_counter() - t0
        except TypeError as e:  # the builder's signature changed
            print(f"cache build: skipped: builder not available (unexpected signature: {e})")
            return
    print(f"cache build: synthetic directory of {n} records in {t_synth:.1f} s; PTB-XL cache "
          f"built at {n / dt:.1f} records/s ({dt:.1f} s, {workers} workers)")


_RSS_SCRIPT = """
import json, resource, sys, time
from data_modules.ukb import build_ukb_cache


def hwm_kb():
    # VmHWM: the peak RSS of this process's own memory. ru_maxrss(SELF) would also count the
    # parent's memory at fork (Linux keeps the high-water mark across exec).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


before = hwm_kb()
t0 = time.perf_counter()
s = build_ukb_cache(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]),
                    progress=False)
print(json.dumps(dict(n=s.n_records, seconds=time.perf_counter() - t0, import_kb=before,
                      self_kb=hwm_kb(),
                      children_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)))
"""


def _ukb_source(tmp: Path, n: int, n_distinct: int = 200, seed: int = 0) -> tuple[Path, Path]:
    """XML folder of ``n`` participants and their outcomes table (synthetic)."""
    import pandas as pd

    from data_modules.synthetic import make_synthetic

    paths = make_synthetic(tmp / "synth", n=1, n_ukb=min(n, n_distinct), seed=seed,
                           progress=False)
    files = sorted(paths["ukb_xml"].glob("*.xml"))
    xml = tmp / "xml"
    xml.mkdir()
    eids = 1_000_000 + np.arange(n)
    for i, eid in enumerate(eids):
        os.link(files[i % len(files)], xml / f"{eid}_20205_2_0.xml")
    rng = np.random.default_rng(seed)
    csv = tmp / "outcomes.csv"
    pd.DataFrame(dict(eid=eids, event=(rng.random(n) < 0.05).astype(int),
                      time_days=rng.integers(30, 4000, n), hyp=1, mi=0)).to_csv(csv, index=False)
    return xml, csv


def bench_ukb_memory(sizes: list[int], workers: int = 2) -> None:
    """Peak RSS of UKB cache builds of each size, each in a fresh process."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            xml, csv = _ukb_source(Path(tmp), n)
            t_src = time.perf_counter() - t0
            r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(xml), str(csv),
                                str(Path(tmp) / "ukb.h5"), str(workers)], env=env,
                               capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            size = (Path(tmp) / "ukb.h5").stat().st_size / 2**20
        print(f"UKB cache build, N={n} ({m['n']} records, {workers} workers): "
              f"{m['seconds']:.1f} s (source {t_src:.1f} s), cache {size:.0f} MiB; peak RSS "
              f"main {m['self_kb'] / 1024:.0f} MiB (after imports {m['import_kb'] / 1024:.0f} "
              f"MiB), largest worker {m['children_kb'] / 1024:.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, action="append", default=[],
                    help="a real cache to read (repeatable); default: synthetic-shaped caches")
    ap.add_argument("--n", type=int, default=5000, help="records per synthetic-shaped cache")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--build", action="store_true", help="also time the cache builder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    ap.add_argument("--ukb-memory", type=int, nargs="+", metavar="N",
                    help="only measure the peak RSS of UKB cache builds of N participants")
    args = ap.parse_args(argv)
    if args.ukb_memory:
        bench_ukb_memory(args.ukb_memory, workers=max(args.workers))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, h5py {h5py.__version__}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        caches = list(args.cache)
        if not caches:
            t0 = time.perf_counter()
            caches = [write_ptbxl_like(Path(tmp) / "ptbxl_like.h5", args.n),
                      write_ukb_like(Path(tmp) / "ukb_like.h5", args.n)]
            print(f"wrote two synthetic-shaped caches of {args.n} records in "
                  f"{time.perf_counter() - t0:.1f} s")
        for path in caches:
            kind = _kind(path)
            if kind == "ptbxl":
                bench_ptbxl(path, args.workers, args.batch_size, args.epochs)
            elif kind == "ukb":
                bench_ukb(path, args.workers, args.batch_size, args.epochs)
            else:
                print(f"{path}: unknown cache kind {kind!r}, skipped")
    if args.build:
        bench_cache_build()
    return 0


if __name__ == "__main__":
    sys.exit(main())

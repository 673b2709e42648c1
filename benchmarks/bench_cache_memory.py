"""Peak RSS of a PTB-XL cache build, of ``ecg-dan cache merge`` and of a CODE-15% build at
several sizes (is the memory flat in the number of records?). UK Biobank builds:
``bench_data.py --ukb-memory``.

Usage:
    python benchmarks/bench_cache_memory.py build DIR 300 3000    # PTB-XL (twin) of >= 3000 records
    python benchmarks/bench_cache_memory.py merge DIR 3000 30000
    python benchmarks/bench_cache_memory.py code15 SCRATCH [--stub-median] 10000 100000

``build``: ``build_ptbxl_cache(DIR, limit=N, workers=2)`` in a fresh process per N: the build
process's peak RSS (VmHWM) and its largest worker's (ru_maxrss of RUSAGE_CHILDREN).
``merge``: the merge of 3 parts of N records, in a fresh process per N; the parts are built
before, in another process, from DIR's metadata rows repeated under new ecg_ids with a stub
instead of the median extraction (random beats: the merge's cost does not depend on them).
``code15``: ``build_code15_cache(SRC, workers=2)`` in a fresh process per N, SRC a
CODE-15%-shaped source of N exams written under SCRATCH (deleted after) in another process:
the ``exams.csv`` of a 200-patient CODE-15% twin (``data_modules/synthetic/code15_format.py``:
several exams per patient, only the first with ``death``/``timey``) repeated under new
exam_ids and patient_ids, and ``exams_partK.hdf5`` files of 20,000 rows (+ the zero padding
row, exam_id 0, as the real parts) whose ``tracings`` (n, 4096, 12) float32 repeat the
twin's ~290 distinct tracings: those are stored once per part, gzip-compressed in chunks of
one row, and ``tracings`` is an HDF5 virtual dataset mapping each block of rows onto them
(h5py reads it as a plain dataset; 10^5 distinct noisy float rows would take ~8-15 GB even
gzip-compressed, as per-row chunks cannot share a repeat). ``--stub-median`` replaces the
per-exam median extraction (``code15.exam_median``) by a (12, 600) slice of the tracing,
as ``merge`` does: the tracing is still read and decompressed, the build's bookkeeping,
staging and writing are real; the extraction's own memory is per record (one tracing at a
time in a worker), measured without the stub at the smaller N.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd


def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def cpu_s(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


what, src, tmp, n = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
if what in ("build", "parts", "merge"):  # as measured before: the same imports
    import data_modules.sources.ptbxl as px
    from data_modules.cache import Shard
if what == "code15src":
    sys.path.insert(0, sys.argv[5])
    from bench_cache_memory import write_code15_source

    print(json.dumps(write_code15_source(tmp / "src", n)))
    sys.exit()
if what in ("code15", "code15stub"):
    import data_modules.sources.code15 as c15

    if what == "code15stub":  # the tracing is read; a slice of it stands in for the median
        c15.exam_median = lambda x, *a: np.ascontiguousarray(np.asarray(x)[1748:2348].T)
    before, t0 = hwm_mib(), time.perf_counter()
    s = c15.build_code15_cache(tmp / "src", tmp / "c.h5", workers=2, progress=False)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
elif what == "build":
    before, t0 = hwm_mib(), time.perf_counter()
    s = px.build_ptbxl_cache(src, tmp / "c.h5", limit=n, workers=2, progress=False)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
elif what == "parts":
    db = pd.read_csv(src / "ptbxl_database.csv")
    rep = db.iloc[np.arange(n) % len(db)].copy()
    rep["ecg_id"] = np.arange(1, n + 1)
    rep.to_csv(tmp / "ptbxl_database.csv", index=False)
    (tmp / "scp_statements.csv").write_bytes((src / "scp_statements.csv").read_bytes())
    rng = np.random.default_rng(0)
    px._process = lambda t: (t[0], (rng.normal(size=(12, 600)).astype(np.float32),) * 2
                             + (None, False))
    for k in range(3):
        px.build_ptbxl_cache(tmp, tmp / f"p{k}.h5", workers=1, progress=False,
                             shard=Shard(k, 3))
    sys.exit()
else:  # merge, in a process of its own
    from data_modules.cache.merge import merge_caches

    before, t0 = hwm_mib(), time.perf_counter()
    s = merge_caches([tmp / f"p{k}.h5" for k in (2, 0, 1)], tmp / "m.h5")
    kids = 0.0
print(json.dumps(dict(n=s.n_records, skipped=s.n_skipped, seconds=time.perf_counter() - t0,
                      before=before, peak=hwm_mib(), kids=kids,
                      cpu=cpu_s(resource.RUSAGE_SELF), kids_cpu=cpu_s(resource.RUSAGE_CHILDREN))))
"""

ROWS_PER_PART = 20_000  # the real parts hold ~20k exams each
TWIN_PATIENTS = 200


def write_code15_source(out: Path, n: int) -> dict:
    """A CODE-15%-shaped source of ``n`` exams in ``out`` (see the module docstring)."""
    import h5py
    import numpy as np
    import pandas as pd

    from data_modules.synthetic.code15_format import write_code15

    twin = write_code15(out / "twin", n=TWIN_PATIENTS, parts=1)["code15"]
    table = pd.read_csv(twin / "exams.csv", dtype=str, keep_default_na=False)
    with h5py.File(twin / "exams_part0.hdf5", "r") as f:
        row_of = {int(e): r for r, e in enumerate(f["exam_id"][...])}
        rows = np.array([row_of[int(e)] for e in table["exam_id"]])
        distinct = np.concatenate([f["tracings"][...][rows], np.zeros((1, 4096, 12),
                                                                    np.float32)])
    k = len(table)  # distinct tracings, in table order; row k: the padding row
    reps = -(-n // k)
    big = pd.concat([table] * reps, ignore_index=True).iloc[:n]
    block = np.repeat(np.arange(reps), k)[:n]
    big["exam_id"] = big["exam_id"].astype(np.int64) + 4_000_000 * block
    pid = big["patient_id"].astype(np.int64)
    big["patient_id"] = pid + (int(pid.max()) + 1) * block
    big.to_csv(out / "exams.csv", index=False)
    del twin, table
    ids = big["exam_id"].to_numpy()
    for p, a in enumerate(range(0, n, ROWS_PER_PART)):
        b = min(n, a + ROWS_PER_PART)
        lay = h5py.VirtualLayout(shape=(b - a + 1, 4096, 12), dtype=np.float32)
        src = h5py.VirtualSource(".", "distinct", shape=distinct.shape)
        r = a
        while r < b:  # rows r.. map onto distinct rows r % k.. up to the block's end
            m = min(b, r + k - r % k) - r
            lay[r - a:r - a + m] = src[r % k:r % k + m]
            r += m
        lay[b - a] = src[k]
        with h5py.File(out / f"exams_part{p}.hdf5", "w") as f:
            f.create_dataset("distinct", data=distinct, chunks=(1, 4096, 12),
                             compression="gzip", shuffle=True)
            f.create_virtual_dataset("tracings", lay, fillvalue=0)
            f.create_dataset("exam_id", data=np.append(ids[a:b], 0).astype(np.int64))
    import shutil

    shutil.rmtree(out / "twin")
    first = big["death"] != ""
    return dict(exams=n, distinct=k, parts=-(-n // ROWS_PER_PART),
                patients=int(big["patient_id"].nunique()), with_outcome=int(first.sum()))



def main(argv: list[str]) -> int:
    stub = "--stub-median" in argv
    argv = [a for a in argv if a != "--stub-median"]
    if len(argv) < 3 or argv[0] not in ("build", "merge", "code15") or (stub and
                                                                       argv[0] != "code15"):
        print(__doc__)
        return 2
    what, src, sizes = argv[0], Path(argv[1]), [int(a) for a in argv[2:]]
    steps = {"build": ["build"], "merge": ["parts", "merge"],
             "code15": ["code15src", "code15stub" if stub else "code15"]}[what]
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=src if what == "code15" else None) as tmp:
            t0 = time.perf_counter()
            for step in steps:
                r = subprocess.run([sys.executable, "-c", _CHILD, step, str(src), tmp, str(n),
                                    str(here)], env=env, capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"{what} N={n} failed:\n{r.stderr[-3000:]}")
                if step == "parts":
                    continue
                m = json.loads(r.stdout.strip().splitlines()[-1])
                if step == "code15src":
                    print(f"CODE-15%-shaped source: {m['exams']} exams of {m['patients']} "
                          f"patients ({m['with_outcome']} with an outcome), {m['parts']} "
                          f"part(s); tracings: {m['distinct']} distinct twin tracings "
                          "(gzip, chunked per row) repeated through an HDF5 virtual dataset; "
                          f"written in {time.perf_counter() - t0:.0f} s", flush=True)
                    t0 = time.perf_counter()
        kids = f", largest worker {m['kids']:.0f} MiB" if m["kids"] else ""
        name = {"code15": "CODE-15% build" + (" (stub median)" if stub else "")}.get(
            what, f"PTB-XL {what}")
        print(f"{name}, N={n} ({m['n']} records, {m['skipped']} skipped): "
              f"{m['seconds']:.1f} s ({time.perf_counter() - t0:.0f} s in all; CPU "
              f"{m['cpu']:.0f} s main + {m['kids_cpu']:.0f} s workers); peak RSS "
              f"{m['peak']:.0f} MiB (before: {m['before']:.0f} MiB){kids}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

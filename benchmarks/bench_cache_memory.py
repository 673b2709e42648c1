"""Peak RSS of a PTB-XL cache build and of ``ecg-dan cache merge`` at several sizes (is the
memory flat in the number of records?). UK Biobank builds: ``bench_data.py --ukb-memory``.

Usage:
    python benchmarks/bench_cache_memory.py build DIR 300 3000    # PTB-XL (twin) of >= 3000 records
    python benchmarks/bench_cache_memory.py merge DIR 3000 30000

``build``: ``build_ptbxl_cache(DIR, limit=N, workers=2)`` in a fresh process per N: the build
process's peak RSS (VmHWM) and its largest worker's (ru_maxrss of RUSAGE_CHILDREN).
``merge``: the merge of 3 parts of N records, in a fresh process per N; the parts are built
before, in another process, from DIR's metadata rows repeated under new ecg_ids with a stub
instead of the median extraction (random beats: the merge's cost does not depend on them).
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
import data_modules.sources.ptbxl as px
from data_modules.cache import Shard


def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


what, src, tmp, n = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
if what == "build":
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
print(json.dumps(dict(n=s.n_records, seconds=time.perf_counter() - t0, before=before,
                      peak=hwm_mib(), kids=kids)))
"""


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("build", "merge"):
        print(__doc__)
        return 2
    what, src, sizes = argv[0], Path(argv[1]), [int(a) for a in argv[2:]]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH",
                                                                                    "")])}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for step in (["parts", "merge"] if what == "merge" else ["build"]):
                r = subprocess.run([sys.executable, "-c", _CHILD, step, str(src), tmp, str(n)],
                                   env=env, capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"{what} N={n} failed:\n{r.stderr[-3000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
        kids = f", largest worker {m['kids']:.0f} MiB" if m["kids"] else ""
        print(f"PTB-XL {what}, N={n} ({m['n']} records): {m['seconds']:.1f} s "
              f"({time.perf_counter() - t0:.0f} s in all); peak RSS {m['peak']:.0f} MiB "
              f"(before: {m['before']:.0f} MiB){kids}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

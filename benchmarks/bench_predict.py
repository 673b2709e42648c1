"""Throughput of ``ecg-dan predict`` (ECGs/s, end to end: discovery, reading, median beats,
scoring, writing), per input kind, on a fixed number of CPU threads.

Usage:
    python benchmarks/bench_predict.py --model runs/demo_finetune          # after `make demo`
    python benchmarks/bench_predict.py --model model.safetensors \\
        --data data/synthetic-n2000-s0-dense --n 200 --threads 2 --workers 2

Inputs (from ``--data``, a synthetic twin as ``make demo`` writes it, or generated into a
temporary folder when absent): the first ``--n`` CardioSoft XML files, the first ``--n``
500 Hz WFDB records (median beats derived with neurokit2: the slow kind), and the UK
Biobank cache rows of the same files (``--cache``, optional). Each kind is scored in one
``run_predict`` call; the model is loaded once per call (included in the time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model file or finetuning run directory")
    ap.add_argument("--data", type=Path, default=None,
                    help="synthetic twin folder holding ukb/xml and ptbxl/records500")
    ap.add_argument("--cache", type=Path, default=None, help="a UK Biobank cache to score")
    ap.add_argument("--n", type=int, default=200, help="files of each kind")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--workers", type=int, default=2, help="processes reading the inputs")
    args = ap.parse_args()

    import torch

    from ecg_dan.jobs.predict import run_predict

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    data = args.data
    if data is None:
        from data_modules.synthetic import make_synthetic

        data = tmp / "synthetic"
        make_synthetic(data, n=args.n, seed=0, events="dense", progress=False)
    kinds = {
        "CardioSoft XML": sorted((data / "ukb" / "xml").glob("*.xml"))[: args.n],
        "WFDB 500 Hz": sorted((data / "ptbxl" / "records500").rglob("*.hea"))[: args.n],
    }
    if args.cache is not None:
        kinds["UK Biobank cache rows"] = [args.cache]
    print(f"model {args.model}; torch threads {torch.get_num_threads()}, reader workers "
          f"{args.workers}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| input | ECGs | seconds | ECGs/s |\n|---|---|---|---|")
    for name, files in kinds.items():
        t0 = time.perf_counter()
        s = run_predict(args.model, files, tmp / f"{name.split()[0]}.csv", workers=args.workers,
                        threads=args.threads, progress=False)
        dt = time.perf_counter() - t0
        n = s["n_scored"] + s["n_skipped"]
        print(f"| {name} | {n} | {dt:.1f} | {n / dt:.1f} |")


if __name__ == "__main__":
    main()

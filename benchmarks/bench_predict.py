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

Where the time goes, per kind, each part timed alone after the end-to-end call: *model load*
(``load_model``), *extraction* (discovery + reading + median beats, ``--workers`` processes
as ``predict`` runs them; and in this process alone, for the CPU-seconds per ECG), *network*
(``EnsembleModel.score`` of the extracted beats in batches of 256: the fold models, the
shared scale, absolute risks). CPU time per wall second of this process is printed for each.
"""

from __future__ import annotations

import argparse
import functools
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
    print("| input | ECGs | seconds | ECGs/s | model load s | extraction s (workers; 1 "
          "process, CPU/wall) | network s (CPU/wall) | extraction share |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, files in kinds.items():
        t0 = time.perf_counter()
        s = run_predict(args.model, files, tmp / f"{name.split()[0]}.csv", workers=args.workers,
                        threads=args.threads, progress=False)
        dt = time.perf_counter() - t0
        n = s["n_scored"] + s["n_skipped"]
        parts = where_time_goes(args.model, files, args.workers)
        ext = parts["extract"]
        share = ext / (ext + parts["network"] + parts["load"])
        print(f"| {name} | {n} | {dt:.1f} | {n / dt:.1f} | {parts['load']:.1f} | {ext:.1f}; "
              f"{parts['extract1']:.1f} ({parts['extract1_cpu']:.2f}) | {parts['network']:.1f} "
              f"({parts['network_cpu']:.2f}) | {100 * share:.0f}% |", flush=True)


def where_time_goes(model_path: str, files: list[Path], workers: int) -> dict[str, float]:
    """Seconds of the model load, the extraction (``workers`` processes; 1 process) and the
    network, each timed alone (CPU per wall second of this process for the last two)."""
    import numpy as np

    # deferred: torch and the project load after the thread setting of main()
    from data_modules.cache import parallel_map
    from data_modules.sources.files import close_caches, discover
    from ecg_dan.jobs.predict import _load
    from ecg_dan.predict import load_model

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_model(model_path)
    out["load"] = time.perf_counter() - t0
    rule = model.manifest["preprocessing"].get("cardiosoft_beat", "device")

    def extract(n_workers: int) -> list:
        items, _ = discover(list(files))
        if {it.kind for it in items} <= {"cache"}:
            n_workers = 1
        try:
            load = functools.partial(_load, cardiosoft=rule)
            return [b for _, b in parallel_map(load, items, n_workers,
                                               False, "ECGs") if not isinstance(b, str)]
        finally:
            close_caches()

    t0 = time.perf_counter()
    extract(workers)
    out["extract"] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    beats = extract(1)
    out["extract1"] = time.perf_counter() - t0
    out["extract1_cpu"] = (time.process_time() - c0) / out["extract1"]
    t0, c0 = time.perf_counter(), time.process_time()
    for a in range(0, len(beats), 256):
        model.score(np.stack(beats[a:a + 256]), model.horizons)
    out["network"] = time.perf_counter() - t0
    out["network_cpu"] = (time.process_time() - c0) / max(out["network"], 1e-9)
    return out


if __name__ == "__main__":
    main()

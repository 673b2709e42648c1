"""Time record text embeddings at full PTB-XL scale (target: < 60 s on CPU, default model).

Generates 21,799 synthetic ``scp_codes`` dicts from the real SCP statement vocabulary
(1-4 codes per record, likelihoods drawn from {0, 15, 35, 50, 80, 100}, as in PTB-XL) and
times ``embed_records(..., recipe="scp_structured")`` with a cold then a warm on-disk
cache. Optionally also times the raw-report recipe on a real PTB-XL sample.

    .venv/bin/python benchmarks/bench_text.py [--n 21799] [--ptbxl ../shared/data/ptbxl-500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ecg_dan.text import (
    DEFAULT_TEXT_ENCODER,
    embed_records,
    load_statements,
    load_text_encoder,
    record_texts,
)

LIKELIHOODS = (0.0, 15.0, 35.0, 50.0, 80.0, 100.0)


def synthetic_codes(n: int, vocabulary: list[str], seed: int) -> list[dict[str, float]]:
    """PTB-XL-like code dicts: 1-4 distinct codes, likelihoods from the PTB-XL set."""
    rng = np.random.default_rng(seed)
    out = []
    for k in rng.integers(1, 5, size=n):
        codes = rng.choice(vocabulary, size=int(k), replace=False)
        out.append({str(c): float(rng.choice(LIKELIHOODS)) for c in codes})
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=21799, help="number of synthetic records")
    ap.add_argument("--model", default=DEFAULT_TEXT_ENCODER)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temp dir")
    ap.add_argument("--ptbxl", type=Path, default=None, help="also time report_raw here")
    args = ap.parse_args()

    statements = load_statements()
    codes = synthetic_codes(args.n, list(statements.index), args.seed)
    encoder, t_load = timed(lambda: load_text_encoder(args.model, device=args.device))
    distinct = {
        t for pairs in record_texts(codes, None, "scp_structured", statements) for t, _ in pairs
    }

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        run = lambda: embed_records(  # noqa: E731
            codes, None, "scp_structured", encoder, statements, cache_dir, progress=False
        )
        cold, t_cold = timed(run)
        warm, t_warm = timed(run)
        assert np.array_equal(cold, warm)
        result = {
            "model": encoder.name,
            "revision": encoder.revision,
            "dim": encoder.dim,
            "records": args.n,
            "distinct_texts": len(distinct),
            "model_load_s": round(t_load, 2),
            "scp_structured_cold_s": round(t_cold, 2),
            "scp_structured_warm_s": round(t_warm, 2),
        }
        if args.ptbxl is not None:
            import pandas as pd

            db = pd.read_csv(args.ptbxl / "ptbxl_database.csv")
            raw = lambda: embed_records(  # noqa: E731
                db["scp_codes"],
                db["report"],
                "report_raw",
                encoder,
                statements,
                cache_dir,
                progress=False,
                record_ids=db["ecg_id"],
            )
            _, t_raw_cold = timed(raw)
            _, t_raw_warm = timed(raw)
            result.update(
                raw_records=len(db),
                raw_distinct_texts=int(db["report"].fillna("").str.strip().nunique()),
                report_raw_cold_s=round(t_raw_cold, 2),
                report_raw_warm_s=round(t_raw_warm, 2),
            )

    print(
        f"text encoder {result['model']} @ {result['revision']} ({result['dim']}-d), "
        f"loaded in {result['model_load_s']} s"
    )
    print(
        f"scp_structured: {args.n} records, {len(distinct)} distinct texts: "
        f"cold cache {result['scp_structured_cold_s']} s, "
        f"warm cache {result['scp_structured_warm_s']} s"
    )
    if "report_raw_cold_s" in result:
        print(
            f"report_raw: {result['raw_records']} real reports, {result['raw_distinct_texts']} "
            f"distinct: cold {result['report_raw_cold_s']} s, warm {result['report_raw_warm_s']} s"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

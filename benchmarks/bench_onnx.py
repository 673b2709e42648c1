"""ONNX Runtime against PyTorch: the ensemble's network (every fold model's encoder and risk
head, prepared beats -> log-risks) in one process, same weights, alternating blocks.

    python benchmarks/bench_onnx.py                        # 10 fold models, default size
    python benchmarks/bench_onnx.py --model model.safetensors --blocks 5 --threads 2

Without ``--model`` the ensemble is ``--members`` fold models of the default architecture
(``demo_finetune``'s model config, Cox head) with random weights: speed does not depend on
the weights. With ``--model`` (a model file or a finetuning run directory) it is that run's
ensemble. The graph is exported by :func:`ecg_dan.onnx_export.module_to_onnx` (what ``ecg-dan
export --format onnx`` writes) and run by :func:`ecg_dan.onnx_model.ort_session`.

For each batch size (``--batches``, default 128 and 1) blocks alternate PyTorch, ONNX
Runtime, PyTorch, ... (``--blocks`` of each, ``--seconds`` per block at least), each
printing samples/s, the CPU time per wall second (``--threads``: 2.0 = both threads
busy; less = a shared machine) and samples per CPU second (the figure a shared machine
disturbs least). The summary gives each side's median and the median of the
per-pair ratios with its range. The two sides' log-risks are compared first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecg_dan.onnx_export import FoldRisks, module_to_onnx  # noqa: E402
from ecg_dan.onnx_model import INPUT, ort_session  # noqa: E402


def random_ensemble(members: int) -> FoldRisks:
    """``members`` fold models of the default architecture (Cox head), random weights."""
    from ecg_dan.config import load_config, model_config
    from ecg_dan.lit.finetune import SurvivalFinetuneModule
    from ecg_dan.models.registry import build_model

    cfg = load_config("demo_finetune", [])
    torch.manual_seed(0)
    mods = [SurvivalFinetuneModule(build_model(model_config(cfg)), finetune=cfg.finetune,
                                   optim=cfg.optim, config=None) for _ in range(members)]
    return FoldRisks(mods).eval()


def run_ensemble(path: str) -> FoldRisks:
    from ecg_dan.predict import load_model

    return FoldRisks([m.module for m in load_model(path).members]).eval()


def timed_block(fn: Callable[[], None], batch: int, seconds: float) -> tuple[float, float]:
    """(samples/s, CPU seconds per wall second) of calls of ``fn`` for ``seconds`` at least
    (after one warm-up call)."""
    fn()  # warm
    n, c0, t0 = 0, time.process_time(), time.perf_counter()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - t0
        if wall >= seconds:
            return n * batch / wall, (time.process_time() - c0) / wall


def compare(model: FoldRisks, threads: int, batches: list[int], blocks: int,
            seconds: float) -> dict[int, dict[str, float]]:
    """Alternating PyTorch / ONNX Runtime blocks per batch size; prints each block and a
    summary line per batch size; returns the medians and the ratio per batch size."""
    torch.set_num_threads(threads)
    x0 = torch.randn(2, 12, 608)
    t = time.perf_counter()
    session = ort_session(module_to_onnx(model, x0), threads)
    print(f"export + session: {time.perf_counter() - t:.1f} s", flush=True)
    xs = torch.randn(max(batches), 12, 608)
    with torch.inference_mode():
        want = model(xs).numpy()
    got = session.run(None, {INPUT: xs.numpy()})[0]
    print(f"max |log-risk| difference ONNX Runtime vs PyTorch: {np.abs(got - want).max():.2e} "
          f"(|log-risk| up to {np.abs(want).max():.1f})", flush=True)
    out = {}
    for b in batches:
        x = xs[:b].contiguous()
        xn = x.numpy()

        def torch_step(x=x) -> None:
            with torch.inference_mode():
                model(x)

        def ort_step(xn=xn) -> None:
            session.run(None, {INPUT: xn})

        rates: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        per_cpu: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        for k in range(blocks):
            for name, fn in (("torch", torch_step), ("onnxruntime", ort_step)):
                rate, cpu = timed_block(fn, b, seconds)
                rates[name].append(rate)
                per_cpu[name].append(rate / cpu)
                print(f"batch {b:4d} block {k} {name:12s} {rate:9.1f} samples/s  "
                      f"CPU/wall {cpu:.2f}  {rate / cpu:9.1f} samples per CPU s", flush=True)
        ratios = [o / t for o, t in zip(rates["onnxruntime"], rates["torch"])]
        med = {n: statistics.median(r) for n, r in rates.items()}
        cpu_med = {n: statistics.median(r) for n, r in per_cpu.items()}
        out[b] = {**med, "ratio": statistics.median(ratios)}
        print(f"batch {b}: PyTorch {med['torch']:.1f}, ONNX Runtime {med['onnxruntime']:.1f} "
              f"samples/s (median of {blocks}; per CPU second {cpu_med['torch']:.1f} vs "
              f"{cpu_med['onnxruntime']:.1f}); ONNX Runtime / PyTorch x{out[b]['ratio']:.2f} "
              f"(pairs x{min(ratios):.2f}-x{max(ratios):.2f})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model file or run directory (default: "
                   "random fold models of the default architecture)")
    p.add_argument("--members", type=int, default=10, help="fold models without --model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1])
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="per block, at least")
    args = p.parse_args(argv)
    model = run_ensemble(args.model) if args.model else random_ensemble(args.members)
    n_params = sum(p.numel() for p in model.parameters()) / len(model.folds)
    import onnxruntime

    print(f"{len(model.folds)} fold models of {n_params / 1e6:.2f} M parameters, "
          f"{args.threads} threads, torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}", flush=True)
    compare(model, args.threads, args.batches, args.blocks, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

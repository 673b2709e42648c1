"""Backbone speed: training and inference throughput, peak memory.

The comparison with the authors' own code (same weights, one process) is
``benchmarks/bench_vs_reference.py``; this script compares ecg-dan's kernels with the
reference's computation path re-run on ecg-dan's modules.

    python benchmarks/bench_backbone.py [--batch 128] [--steps 10] [--threads 2] [--compile]

Training step = forward + backward + AdamW step of encoder + decoder with MSE loss.
The "reference path" row runs the same weights the way the reference implementation
computes them: twelve temporal modules in a Python loop over leads, native batch norm and
NCHW/NCW convolutions (``ecg_dan.models.kernels.reference_kernels``). Timings on shared
machines vary; each figure is the median (and best) of ``--repeats`` timed blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from ecg_dan.models import ECGDAN, ModelConfig, count_parameters
from ecg_dan.models.attention import LeadwiseTemporalAttention, per_lead_reference
from ecg_dan.models.kernels import reference_kernels


class _LoopTemporal(torch.nn.Module):
    """Wraps the batched module's weights in the reference's per-lead loop."""

    def __init__(self, inner: LeadwiseTemporalAttention) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, need_weights=False):
        out, w = per_lead_reference(self.inner, x)
        return out, (w if need_weights else None)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(model: torch.nn.Module, device: str, batch: int, steps: int, repeats: int,
          warmup: int = 2) -> dict[str, float]:
    x = torch.randn(batch, 12, 608, device=device)
    target = torch.randn(batch, 12, 608, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast:
            loss = F.mse_loss(model(x)["recon"].float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.inference_mode(), autocast:
            model.encoder(x)

    def rates(fn) -> list[float]:
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            out.append(batch * steps / (time.perf_counter() - t0))
        return out

    model.train()
    train = rates(train_step)
    model.eval()
    infer = rates(infer_step)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mb())
    return {"train": statistics.median(train), "train_best": max(train),
            "infer": statistics.median(infer), "infer_best": max(infer), "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (GPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch}, "
          f"input 12 x 608")
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        model = ECGDAN(ModelConfig()).to(device)
        n_enc, n_dec = count_parameters(model.encoder), count_parameters(model.decoder)
        print(f"\n[{name}] parameters: encoder {n_enc:,}, decoder {n_dec:,}")
        ref = ECGDAN(ModelConfig()).to(device)
        ref.load_state_dict(model.state_dict())
        ref.encoder.temporal = _LoopTemporal(ref.encoder.temporal)
        rows = [("ecg-dan (batched, fast kernels)", model, contextlib.nullcontext),
                ("reference path (loop, native)", ref, reference_kernels)]
        if args.compile:
            rows.append(("ecg-dan + torch.compile", torch.compile(model), contextlib.nullcontext))
        print(f"{'variant':34s} {'train samples/s':>22s} {'infer samples/s':>22s} "
              f"{'peak MB':>8s}")
        print(f"{'':34s} {'median (best)':>22s} {'median (best)':>22s}")
        results = {}
        for label, m, ctx in rows:
            with ctx():
                r = bench(m, device, args.batch, args.steps, args.repeats)
            results[label] = r
            print(f"{label:34s} {r['train']:14.1f} ({r['train_best']:5.1f}) "
                  f"{r['infer']:14.1f} ({r['infer_best']:5.1f}) {r['peak_mb']:8.0f}")
        fast, slow = results[rows[0][0]], results[rows[1][0]]
        print(f"speed-up over the reference path: train x{fast['train'] / slow['train']:.2f}, "
              f"inference x{fast['infer'] / slow['infer']:.2f}")

if __name__ == "__main__":
    main()

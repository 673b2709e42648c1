"""Backbone speed: training and inference throughput, peak memory (issue: >= 2.5x reference).

    python benchmarks/bench_backbone.py [--batch 128] [--steps 10] [--threads 2] [--compile]

Training step = forward + backward + AdamW step of encoder + decoder with MSE loss.
"Loop" rows run the twelve temporal modules as a Python loop over leads, the way the
reference implementation does, on the same weights, for a same-machine comparison.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from ecg_dan.models import ECGDAN, ModelConfig, count_parameters
from ecg_dan.models.attention import LeadwiseTemporalAttention, per_lead_reference


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


def bench(model: torch.nn.Module, device: str, batch: int, steps: int, warmup: int = 2
          ) -> dict[str, float]:
    x = torch.randn(batch, 12, 608, device=device)
    target = torch.randn(batch, 12, 608, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        with autocast:
            loss = F.mse_loss(model(x)["recon"].float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    train = batch * steps / (time.perf_counter() - t0)
    model.eval()
    with torch.inference_mode():
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t0 = time.perf_counter()
            with autocast:
                model.encoder(x)
        sync()
    infer = batch * steps / (time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mb())
    return {"train": train, "infer": infer, "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
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
        rows = [("batched (ecg-dan)", model)]
        loop = ECGDAN(ModelConfig()).to(device)
        loop.load_state_dict(model.state_dict())
        loop.encoder.temporal = _LoopTemporal(loop.encoder.temporal)
        rows.append(("per-lead loop (reference style)", loop))
        if args.compile:
            rows.append(("batched + torch.compile", torch.compile(model)))
        print(f"{'variant':34s} {'train samples/s':>16s} {'infer samples/s':>16s} "
              f"{'peak MB':>9s}")
        for label, m in rows:
            r = bench(m, device, args.batch, args.steps)
            print(f"{label:34s} {r['train']:16.1f} {r['infer']:16.1f} {r['peak_mb']:9.0f}")


if __name__ == "__main__":
    main()

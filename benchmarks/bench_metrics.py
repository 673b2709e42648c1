"""Survival numerics speed: Harrell's C vs lifelines, Cox loss forward + backward.

    python benchmarks/bench_metrics.py [--sizes 10000 50000 200000] [--batch 1024]
                                       [--repeats 3] [--threads 2] [--device cpu|cuda]

C-index: ``ecg_dan.metrics.harrell_cindex(time, risk, event)`` vs
``lifelines.utils.concordance_index(time, -risk, event)`` (both O(n log n); lifelines walks a
tree in Python, ours is vectorised numpy), on data with tied times and risks and 70% censoring;
the two values are printed to show they agree. Cox loss: ``cox_ph_loss`` (Breslow / Efron) vs
``torchsurv.loss.cox.neg_partial_log_likelihood``, forward + backward, median of many calls.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from lifelines.utils import concordance_index

from ecg_dan.losses import cox_ph_loss
from ecg_dan.metrics import harrell_cindex


def _best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_cindex(sizes: list[int], repeats: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{'n':>8} {'ecg_dan (s)':>12} {'lifelines (s)':>14} {'speed-up':>9}  C (both)")
    for n in sizes:
        t = np.round(rng.exponential(50.0, size=n))  # integer-ish times: many ties
        risk = np.round(rng.normal(size=n), 2)  # risk ties
        e = rng.random(n) < 0.3
        ours_s, ours = _best_of(lambda t=t, risk=risk, e=e: harrell_cindex(t, risk, e), repeats)
        ll_s, ll = _best_of(lambda t=t, risk=risk, e=e: concordance_index(t, -risk, e), repeats)
        print(f"{n:>8} {ours_s:>12.4f} {ll_s:>14.4f} {ll_s / ours_s:>8.1f}x  {ours:.6f} / {ll:.6f}")


def _time_backward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n: int) -> float:
    for _ in range(5):
        fn(x).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(n):
        x.grad = None
        t0 = time.perf_counter()
        fn(x).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_cox(batch: int, device: str, calls: int) -> None:
    from torchsurv.loss.cox import neg_partial_log_likelihood

    g = torch.Generator().manual_seed(0)
    log_risk = torch.randn(batch, generator=g).to(device).requires_grad_()
    time_ = torch.randint(1, 90, (batch,), generator=g).float().to(device)  # months: ties
    event = (torch.rand(batch, generator=g) < 0.05).to(device)  # ~UKB-MI event rate
    print(f"\nCox loss forward+backward, batch {batch}, float32, {device} (median of {calls})")
    for ties in ("breslow", "efron"):
        ms = 1e3 * _time_backward(
            lambda x, ties=ties: cox_ph_loss(x, time_, event, ties), log_risk, calls
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_ms = 1e3 * _time_backward(
                lambda x, ties=ties: neg_partial_log_likelihood(
                    x, event, time_, ties_method=ties, reduction="sum"
                ),
                log_risk,
                calls,
            )
        print(f"  {ties:<8} ecg_dan {ms:8.3f} ms   torchsurv {ref_ms:8.3f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench_cindex(args.sizes, args.repeats)
    bench_cox(args.batch, args.device, args.calls)


if __name__ == "__main__":
    main()

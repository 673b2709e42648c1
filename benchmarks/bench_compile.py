"""``torch.compile`` on the CPU, measured: compile time and steady-state rate, against eager.

    python benchmarks/bench_compile.py                       # inference, then training
    python benchmarks/bench_compile.py --what infer --blocks 5
    timeout 1500 nice python benchmarks/bench_compile.py --what train --batch 64

Inference = the encoder's forward (eval, inference mode), compiled as ``torch.compile`` of
the encoder. Training = encoder + decoder + MSE + backward + AdamW, the backbone compiled in
place as ``trainer.compile`` does (``nn.Module.compile``; the optimizer stays eager). For each:
the first compiled call's wall time (the compile, one step included), a check that the
compiled outputs match eager, then ``--blocks`` alternating timed blocks eager / compiled with
samples/s and CPU time per wall second. Pay-back: the samples after which the compile has
paid for itself (compile time / saved seconds per sample), against ``--epoch-samples`` (the
demo's epoch; default: the synthetic twin's pretraining training part, ~1,600 records).
Output is printed (flushed) as it comes, so a run cut by ``timeout`` keeps what it measured.
The compile is cold: inductor's cache is a fresh temporary folder (``--warm-cache``: the
user's cache, as a second run of the same model would see it).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecg_dan.models import ECGDAN, ModelConfig  # noqa: E402


def say(*a: object) -> None:
    print(*a, flush=True)


def timed(fn: Callable[[], None], steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds per wall second) of ``steps`` calls."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    wall = time.perf_counter() - t0
    return wall, (time.process_time() - c0) / wall


def infer_fns(model: ECGDAN, batch: int) -> tuple[Callable, Callable]:
    x = torch.randn(batch, 12, 608)
    eager = copy.deepcopy(model.encoder).eval()
    compiled = torch.compile(copy.deepcopy(model.encoder).eval())

    def run(m: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            with torch.inference_mode():
                return m(x)
        return step

    return run(eager), run(compiled)


def train_fns(model: ECGDAN, batch: int) -> tuple[Callable, Callable]:
    x, target = torch.randn(batch, 12, 608), torch.randn(batch, 12, 608)

    def make(m: ECGDAN) -> Callable[[], torch.Tensor]:
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def step() -> torch.Tensor:
            m.train()
            loss = F.mse_loss(m(x)["recon"], target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    eager, compiled = copy.deepcopy(model), copy.deepcopy(model)
    compiled.compile()  # as ecg_dan.trainer.maybe_compile does for the backbone
    return make(eager), make(compiled)


def measure(what: str, eager: Callable, compiled: Callable, batch: int, steps: int,
            blocks: int, epoch_samples: int) -> None:
    say(f"\n[{what}] batch {batch}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs")
    e0 = eager()
    t0, c0 = time.perf_counter(), time.process_time()
    c_out = compiled()
    compile_s = time.perf_counter() - t0
    cpu = (time.process_time() - c0) / compile_s
    diff = float((e0.float() - c_out.float()).abs().max())
    say(f"  first compiled call (compile + 1 step): {compile_s:.1f} s [CPU/wall {cpu:.2f}]; "
        f"max |eager - compiled| of the first output {diff:.2g}")
    eager()
    compiled()  # a second call: any recompile (e.g. a guard on the step) shows here
    ratios, rates = [], {"eager": [], "compiled": []}
    for b in range(blocks):
        line = []
        walls = {}
        for name, fn in (("eager", eager), ("compiled", compiled)):
            wall, cpu = timed(fn, steps)
            walls[name] = wall
            rates[name].append(batch * steps / wall)
            line.append(f"{name} {batch * steps / wall:7.1f}/s [CPU/wall {cpu:.2f}]")
        ratios.append(walls["eager"] / walls["compiled"])
        say(f"  block {b + 1}: " + " | ".join(line) + f" | compiled/eager x{ratios[-1]:.2f}")
    re, rc = statistics.median(rates["eager"]), statistics.median(rates["compiled"])
    say(f"  median: eager {re:.1f}/s, compiled {rc:.1f}/s, "
        f"speed-up x{statistics.median(ratios):.2f}"
        f" (blocks x{min(ratios):.2f}-x{max(ratios):.2f})")
    saved = 1 / re - 1 / rc  # seconds saved per sample
    if saved <= 0:
        say(f"  pay-back: never (compiled is not faster); compile costs {compile_s:.0f} s = "
            f"{compile_s * re:.0f} eager samples")
    else:
        n = compile_s / saved
        say(f"  pay-back after {n:,.0f} samples = {n / epoch_samples:.1f} epochs of "
            f"{epoch_samples} samples")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", default="infer,train", help="infer, train or both (comma list)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per training block")
    p.add_argument("--infer-steps", type=int, default=6, help="steps per inference block")
    p.add_argument("--epoch-samples", type=int, default=1600,
                   help="samples of one demo epoch, for the pay-back")
    p.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk cache")
    args = p.parse_args(argv)
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-compile-")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ECGDAN(ModelConfig())
    say(f"torch {torch.__version__}, {args.threads} threads, float32, 12 x 608")
    for what in args.what.split(","):
        if what == "infer":
            e, c = infer_fns(model, args.batch)
            measure("inference (encoder, eval)", e, c, args.batch, args.infer_steps,
                    args.blocks, args.epoch_samples)
        elif what == "train":
            e, c = train_fns(model, args.batch)
            measure("training step (encoder + decoder + AdamW)", e, c, args.batch, args.steps,
                    args.blocks, args.epoch_samples)
        else:
            p.error(f"--what: unknown {what!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

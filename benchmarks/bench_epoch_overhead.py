"""The 5% epoch target: a whole Lightning Trainer epoch against a bare training loop of the
same backbone over the same batches, in alternating blocks of one process.

    python benchmarks/bench_epoch_overhead.py                        # pretraining, 4 pairs
    python benchmarks/bench_epoch_overhead.py --stage finetune --pairs 6 --batches 12
    python benchmarks/bench_epoch_overhead.py --profile              # + where the Trainer's
                                                                     #   extra time goes

Data: a synthetic-shaped cache (random beats in the PTB-XL or UK Biobank cache layout, as
``bench_data.py`` writes it; random text embeddings) of ``--n`` records, batch ``--batch``,
the DataModule the pipeline builds, ``data.num_workers`` 0 (the default: the loader runs in
this process and is counted).

Each pair is two blocks, in alternating order (Trainer first in odd pairs, bare first in even):

* **Trainer**: a fresh ``ecg_dan.trainer.build_trainer`` (the real job's callbacks: best and
  last checkpoints, learning-rate monitor, CSV logger; no progress bar, no W&B, as under
  ``WANDB_MODE=disabled``) fitting the stage's real LightningModule (``AlignmentPretrainModule``
  with cosine alignment / ``SurvivalFinetuneModule``, from the stage's config) for one epoch of
  ``--batches`` training batches and one validation batch. Two times: *epoch* = from
  ``on_train_epoch_start`` to the end of the last training batch (the loader, Lightning's loop,
  the module's step with its divergence checks and per-step logging, the optimizer and the
  scheduler); *fit* = the whole ``trainer.fit`` call (also setup, validation with the
  pretraining's batch-norm re-estimation, checkpoint writes, teardown).
* **bare**: the same module's loss (``_losses`` / ``alpha * survival + (1 - alpha) * MSE``), its
  backward and the job's AdamW (``ecg_dan.schedules.build_optimizer``) over the same number
  of batches, taken from the same DataModule and finished beforehand (no loader cost).

Printed per pair: samples/s and CPU time per wall second of each block, the ratio
Trainer-epoch wall / bare wall (> 1 = the Trainer is slower) and the same in CPU seconds;
then the median ratio, its min-max and interquartile range. Target: median <= 1.05.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import (  # noqa: E402
    _module,
    _stage_config,
    make_datamodule,
    write_ptbxl_like,
    write_ukb_like,
)


class EpochTimer:
    """Lightning callback: wall and CPU time from the epoch's start to its last batch's end."""

    def __init__(self) -> None:
        import lightning as L  # deferred: keeps --help fast

        outer = self

        class CB(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                outer.t0, outer.c0, outer.n = time.perf_counter(), time.process_time(), 0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                outer.n += int(batch["x"].shape[0])
                outer.wall = time.perf_counter() - outer.t0
                outer.cpu = time.process_time() - outer.c0

        self.callback = CB()


def bare_loss(kind: str, module, batch: dict) -> torch.Tensor:
    """The module's training loss without Lightning (no logging, no checks)."""
    if kind == "ptbxl":
        return module._losses(batch)["loss"]
    from ecg_dan.losses.reconstruction import reconstruction_mse  # deferred: finetuning only

    out = module(batch["x"])
    return (module.alpha * module.objective.loss(out["head"], batch)
            + (1.0 - module.alpha) * reconstruction_mse(out["recon"], batch["target"]))


def iqr(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("pretrain", "finetune"), default="pretrain")
    p.add_argument("--n", type=int, default=1200, help="records in the synthetic cache")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=8, help="training batches per epoch block")
    p.add_argument("--pairs", type=int, default=4, help="Trainer/bare block pairs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true",
                   help="after the pairs, cProfile one Trainer epoch (top functions)")
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    import lightning as L  # deferred: after the thread setting

    L.seed_everything(0, verbose=False)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    kind = "ptbxl" if args.stage == "pretrain" else "ukb"
    tmp = Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    cache = (write_ptbxl_like if kind == "ptbxl" else write_ukb_like)(tmp / f"{kind}.h5", args.n)
    dm = make_datamodule(kind, cache, args.batch, 0)
    dm.setup("fit")
    batches = []
    for i, b in enumerate(dm.train_dataloader()):
        if i == args.batches:
            break
        batches.append(dm.on_after_batch_transfer(b, 0))
    if len(batches) < args.batches:
        p.error(f"--n {args.n} gives {len(batches)} training batches < --batches")
    cfg = _stage_config(kind, tmp / "cfg", args.batch, args.batches)
    module = _module(kind, cfg, dm)
    bare = copy.deepcopy(module).train()
    from ecg_dan.schedules import build_optimizer  # deferred: after the thread setting

    opt = build_optimizer(bare.parameters(), 1e-4, (0.9, 0.95), 0.01)  # the real job's AdamW
    samples = args.batch * args.batches

    def trainer_block(k: int) -> tuple[float, float, float, float]:
        from ecg_dan.trainer import build_trainer  # deferred: after the thread setting

        timer = EpochTimer()
        trainer = build_trainer(cfg, tmp / f"run{k}", callbacks=[timer.callback])
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.fit(module, datamodule=dm)
        fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert timer.n == samples, (timer.n, samples)
        return timer.wall, timer.cpu, fit_wall, fit_cpu

    def bare_block() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for batch in batches:
            loss = bare_loss(kind, bare, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    print(f"torch {torch.__version__}, lightning {L.__version__}, {args.threads} threads; "
          f"{args.stage}, batch {args.batch}, {args.batches} batches ({samples} samples) an "
          f"epoch; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    trainer_block(0)  # warm-up (first-call allocations, oneDNN primitives)
    bare_block()
    ratios, cpu_ratios, fit_ratios = [], [], []
    for k in range(1, args.pairs + 1):
        if k % 2:
            ew, ec, fw, fc = trainer_block(k)
            bw, bc = bare_block()
        else:
            bw, bc = bare_block()
            ew, ec, fw, fc = trainer_block(k)
        ratios.append(ew / bw)
        cpu_ratios.append(ec / bc)
        fit_ratios.append(fw / bw)
        print(f"pair {k}: Trainer epoch {samples / ew:6.1f}/s [CPU/wall {ec / ew:.2f}] "
              f"(fit {fw:.1f} s [CPU/wall {fc / fw:.2f}]) | bare {samples / bw:6.1f}/s "
              f"[CPU/wall {bc / bw:.2f}] | epoch/bare x{ratios[-1]:.3f} wall, "
              f"x{cpu_ratios[-1]:.3f} CPU; fit/bare x{fit_ratios[-1]:.2f}", flush=True)
    for label, xs in (("Trainer epoch / bare, wall", ratios),
                      ("Trainer epoch / bare, CPU seconds", cpu_ratios),
                      ("whole fit / bare, wall", fit_ratios)):
        lo, hi = iqr(xs)
        print(f"{label:34s} median x{statistics.median(xs):.3f}  min-max "
              f"x{min(xs):.3f}-x{max(xs):.3f}  IQR x{lo:.3f}-x{hi:.3f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        trainer_block(args.pairs + 1)
        prof.disable()
        print("\none Trainer block under cProfile, top 25 by own time:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

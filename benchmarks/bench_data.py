"""Data-pipeline throughput: the loaders the pipelines build, against the backbone's rate.

Usage:
    python benchmarks/bench_data.py                      # synthetic-shaped caches, 5,000 records
    python benchmarks/bench_data.py --n 2000 --epoch-batches 10
    python benchmarks/bench_data.py --cache path/to/ptbxl.h5 --cache path/to/ukb.h5
    python benchmarks/bench_data.py --build              # also time the PTB-XL cache builder
    python benchmarks/bench_data.py --ukb-memory 2000 20000   # peak RSS of UKB cache builds

For each cache (PTB-XL: pretraining batches; UKB: finetuning batches), in a fresh process:

* loader: ``DataModule.train_dataloader()`` + ``on_after_batch_transfer`` (the on-device
  finishing, here on the CPU the model runs on), one full pass, with the beats in memory
  (the default) and streamed per record (``max_bytes=0``, the fallback);
* backbone: ECG-DAN training steps (encoder + decoder + MSE + AdamW) on fixed tensors;
* epoch: the stage's LightningModule fitted by ``ecg_dan.trainer.build_trainer`` (the
  pipeline's callbacks and loggers) for ``--epoch-batches`` batches, its rate timed from the
  first to the last training batch, next to the same module stepped in a plain loop;
* the process's peak RSS (VmHWM).

Every block prints CPU time per wall second (2.0 = both cores busy for us; less = the
machine is shared). The loader target is >= 20x the backbone's training rate.

``--ukb-memory N ...`` (a benchmark, not a test) builds a UK Biobank cache of N synthetic
participants in a fresh process and prints its peak RSS (the build process's ``VmHWM``, and
``ru_maxrss`` of RUSAGE_CHILDREN, i.e. its largest worker): the builder streams medians to
disk, so the figures should not grow with N. The XML comes from ``data_modules.synthetic``
(a few hundred distinct participants, hard-linked under N bulk file names, so generating
20,000 takes seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_modules.cache import open_cache  # noqa: E402
from data_modules.loading.datasets import DEFAULT_MAX_BYTES  # noqa: E402
from data_modules.loading.ptbxl_datamodule import PTBXLDataModule  # noqa: E402
from data_modules.loading.ukb_datamodule import UKBDataModule  # noqa: E402
from data_modules.protocol.splits import Split  # noqa: E402

_CHUNK = 500


def _root_attrs(f: h5py.File, kind: str, n: int) -> None:
    f.attrs["schema_version"] = 1
    f.attrs["kind"] = kind
    f.attrs["build_config"] = json.dumps({"source": "benchmarks/bench_data.py", "random": True})
    f.attrs["n_records"] = n
    s = f.create_group("skipped")
    s.create_dataset("id", shape=(0,), dtype=h5py.string_dtype())
    s.create_dataset("reason", shape=(0,), dtype=h5py.string_dtype())


def _beats(f: h5py.File, name: str, n: int, rng: np.random.Generator) -> None:
    d = f.create_dataset(name, shape=(n, 12, 600), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        d[a:b] = rng.normal(0, 0.3, size=(b - a, 12, 600)).astype(np.float32)


def write_ptbxl_like(path: Path, n: int, seed: int = 0) -> Path:
    """Random numbers in the PTB-XL cache layout of docs/data_formats.md (complete=True)."""
    rng = np.random.default_rng(seed)
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        _beats(f, "median", n, rng)
        _beats(f, "median_clean", n, rng)
        f.create_dataset("ecg_id", data=np.arange(1, n + 1, dtype=np.int64))
        f.create_dataset("patient_id", data=np.arange(n, dtype=np.int64))
        f.create_dataset("age", data=rng.uniform(20, 90, n).astype(np.float32))
        f.create_dataset("sex", data=rng.integers(0, 2, n).astype(np.int8))
        f.create_dataset("strat_fold", data=(np.arange(n) % 10 + 1).astype(np.int8))
        f.create_dataset("validated_by_human", data=rng.random(n) < 0.7)
        for flag in ("baseline_drift", "static_noise", "burst_noise", "electrodes_problems",
                     "extra_beats", "pacemaker"):
            f.create_dataset(flag, data=np.zeros(n, dtype=bool))
        f.create_dataset("report", data=np.array(["-"] * n, dtype=object), dtype=s)
        f.create_dataset("scp_codes", data=np.array(["{}"] * n, dtype=object), dtype=s)
        f.create_dataset("superclass", data=(rng.random((n, 5)) < 0.3).astype(np.float32))
        _root_attrs(f, "ptbxl", n)
        f.attrs["complete"] = True
    return path


def write_ukb_like(path: Path, n: int, seed: int = 0, event_rate: float = 0.04) -> Path:
    """Random numbers in the UK Biobank cache layout (complete=True)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        _beats(f, "median", n, rng)
        f.create_dataset("eid", data=np.arange(n, dtype=np.int64) + 1_000_000)
        days = rng.uniform(30, 2600, n).astype(np.float32)
        t = f.create_dataset("time", data=days / 30 + 1)
        t.attrs["time_unit"] = "months"
        f.create_dataset("time_days", data=days)
        f.create_dataset("event", data=(rng.random(n) < event_rate).astype(np.int8))
        f.create_dataset("cohort_hyp", data=np.ones(n, dtype=bool))
        f.create_dataset("cohort_mi", data=rng.random(n) < 0.1)
        f.create_dataset("age", data=rng.uniform(45, 80, n).astype(np.float32))
        f.create_dataset("sex", data=rng.integers(0, 2, n).astype(np.int8))
        f.create_dataset("ecg_date", data=np.array(["2016-01-01"] * n, dtype=object),
                         dtype=h5py.string_dtype())
        _root_attrs(f, "ukb", n)
        f.attrs["complete"] = True
    return path


def _kind(path: Path) -> str:
    with h5py.File(path, "r") as f:
        k = f.attrs.get("kind")
    return k.decode() if isinstance(k, bytes) else str(k)


class Block:
    """Wall and process CPU time of a block of work (CPU/wall shows a shared machine)."""

    def __enter__(self) -> Block:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = (time.process_time() - self.c0) / self.wall


def vm_hwm_mb() -> float:
    """Peak RSS of this process (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ukb_split(path: Path) -> Split:
    with open_cache(path, "ukb") as f:
        n = int(f["median"].shape[0])
        eid = f["eid"][...].astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    parts = {"train": rows[rows % 10 < 8], "val": rows[rows % 10 == 8],
             "test": rows[rows % 10 == 9]}
    return Split(0, 0, parts["train"], parts["val"], parts["test"],
                 eid[parts["train"]], eid[parts["val"]], eid[parts["test"]])


def make_datamodule(kind: str, path: Path, batch_size: int, workers: int,
                    max_bytes: int | None = DEFAULT_MAX_BYTES, text_dim: int = 384):
    """The DataModule a pretraining / finetuning run builds (random text embeddings)."""
    if kind == "ptbxl":
        with open_cache(path, "ptbxl") as f:
            n = int(f["median"].shape[0])
        text = np.random.default_rng(0).normal(size=(n, text_dim)).astype(np.float32)
        return PTBXLDataModule(path, batch_size=batch_size, num_workers=workers, seed=72,
                               text_embeddings=text, max_bytes=max_bytes)
    return UKBDataModule(path, "all", _ukb_split(path), batch_size=batch_size,
                         num_workers=workers, seed=42, max_bytes=max_bytes)


def loader_rate(dm) -> tuple[float, Block, int]:
    """One pass of the train loader, each batch finished as on the model's device."""
    loader = dm.train_dataloader()
    n = 0
    with Block() as b:
        for batch in loader:
            batch = dm.on_after_batch_transfer(batch, 0)
            n += int(batch["x"].shape[0])
    return n / b.wall, b, n


def backbone_rate(batch: int, steps: int) -> tuple[float, Block]:
    """ECG-DAN training steps (encoder + decoder + MSE + AdamW) on fixed tensors."""
    import torch.nn.functional as F

    from ecg_dan.models import ECGDAN, ModelConfig

    model = ECGDAN(ModelConfig()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, target = torch.randn(batch, 12, 608), torch.randn(batch, 12, 608)

    def step() -> None:
        loss = F.mse_loss(model(x)["recon"], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with Block() as b:
        for _ in range(steps):
            step()
    return batch * steps / b.wall, b


def _stage_config(kind: str, run_dir: Path, batch_size: int, n_batches: int):
    from ecg_dan.config import load_config

    name = "pretrain" if kind == "ptbxl" else "finetune_hyp"
    over = [f"run_dir={run_dir}", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            "logging.wandb=false", f"trainer.limit_train_batches={n_batches}",
            "trainer.limit_val_batches=1", f"trainer.threads={torch.get_num_threads()}"]
    over.append(f"pretrain.batch_size={batch_size}" if kind == "ptbxl"
                else f"finetune.batch_size={batch_size}")
    if kind == "ukb":
        over += ["finetune.scratch=true", "checkpoint.monitor=val/cindex",
                 "checkpoint.mode=max"]
    return load_config(name, over)


def _module(kind: str, cfg, dm):
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    from ecg_dan.models.registry import build_model

    if kind == "ptbxl":
        from ecg_dan.lit.pretrain import AlignmentPretrainModule

        return AlignmentPretrainModule(build_model(c["model"]), pretrain=c["pretrain"],
                                       optim=c["optim"], text_dim=dm.text_dim, config=c)
    from ecg_dan.jobs.finetune import build_finetune_module

    return build_finetune_module(cfg, None)


class _TrainTimer:
    """Lightning callback: wall/CPU time from the first to the last training batch."""

    def __init__(self) -> None:
        import lightning as L

        outer = self

        class CB(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == 0:
                    outer.t0, outer.c0 = time.perf_counter(), time.process_time()
                    outer.n = 0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                outer.n += int(batch["x"].shape[0])
                outer.wall = time.perf_counter() - outer.t0
                outer.cpu = (time.process_time() - outer.c0) / outer.wall

        self.callback = CB()


def epoch_rates(kind: str, dm, batch_size: int, n_batches: int, tmp: Path) -> dict:
    """The pipeline's Trainer vs the same module's training step in a plain loop."""
    from ecg_dan.trainer import build_trainer

    cfg = _stage_config(kind, tmp / f"run_{kind}", batch_size, n_batches)
    torch.manual_seed(0)
    module = _module(kind, cfg, dm)
    timer = _TrainTimer()
    trainer = build_trainer(cfg, tmp / f"run_{kind}", callbacks=[timer.callback])
    trainer.fit(module, datamodule=dm)
    # the first batch's time is not counted by the timer (its start is the origin)
    lightning = (timer.n - batch_size) / timer.wall
    torch.manual_seed(0)
    plain = _module(kind, cfg, dm).train()
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    loader = dm.train_dataloader()
    n = 0
    with Block() as b:
        for i, batch in enumerate(loader):
            if i == n_batches:
                break
            batch = dm.on_after_batch_transfer(batch, 0)
            if kind == "ptbxl":
                loss = plain._losses(batch)["loss"]
            else:
                out = plain(batch["x"])
                loss = (plain.alpha * plain.objective.loss(out["head"], batch)
                        + (1 - plain.alpha) * ((out["recon"][..., 4:-4] - batch["target"]) ** 2
                                               ).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += int(batch["x"].shape[0])
    return {"lightning": lightning, "lightning_cpu": timer.cpu, "plain": n / b.wall,
            "plain_cpu": b.cpu}


def _per_core(rate: float, cpu: float) -> float:
    """Samples per CPU-second of this process: comparable across blocks of a shared machine."""
    return rate / max(cpu, 1e-9)


def run_stage(kind: str, path: Path, args: argparse.Namespace) -> dict:
    """All figures of one stage (run in a fresh process: its peak RSS is the stage's)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out: dict = {"kind": kind}
    for mode, max_bytes in (("memory", DEFAULT_MAX_BYTES), ("stream", 0)):
        for w in args.workers:
            dm = make_datamodule(kind, path, args.batch_size, w, max_bytes)
            rate, b, n = loader_rate(dm)  # epoch 1 (loads the beats / starts workers)
            rate2, b2, _ = loader_rate(dm)
            out[f"loader_{mode}_w{w}"] = dict(rate1=rate, rate=rate2, cpu=b2.cpu, n=n,
                                              in_memory=dm.store.in_memory)
    # backbone blocks before and after the epoch blocks (a shared machine drifts)
    r1, b1 = backbone_rate(args.batch_size, args.backbone_steps)
    with tempfile.TemporaryDirectory() as tmp:
        dm = make_datamodule(kind, path, args.batch_size, 0)
        out["epoch"] = epoch_rates(kind, dm, args.batch_size, args.epoch_batches, Path(tmp))
    r2, b2 = backbone_rate(args.batch_size, args.backbone_steps)
    out["backbone"], out["backbone_cpu"] = (r1 + r2) / 2, (b1.cpu + b2.cpu) / 2
    out["peak_rss_mb"] = vm_hwm_mb()
    return out


def print_stage(r: dict, batch_size: int) -> None:
    stage = "pretraining (PTB-XL)" if r["kind"] == "ptbxl" else "finetuning (UKB)"
    bb = r["backbone"]
    print(f"\n{stage}, batch {batch_size}")
    print(f"  backbone training (enc + dec + AdamW): {bb:8.1f} samples/s  "
          f"[CPU/wall {r['backbone_cpu']:.2f}]")
    for key, v in r.items():
        if not key.startswith("loader_"):
            continue
        _, mode, w = key.split("_")
        per_cpu = _per_core(v["rate"], v["cpu"]) / _per_core(bb, r["backbone_cpu"])
        print(f"  loader, beats {mode:<6} num_workers={w[1:]}: {v['rate']:8.0f} samples/s "
              f"(epoch 1 {v['rate1']:.0f}; {v['n']} samples) [CPU/wall {v['cpu']:.2f}] = "
              f"x{v['rate'] / bb:.0f} the backbone's training rate (per CPU-second x{per_cpu:.0f})")
    e = r["epoch"]
    per_core = _per_core(e["lightning"], e["lightning_cpu"])
    print(f"  epoch through the pipeline's Trainer: {e['lightning']:8.1f} samples/s "
          f"[CPU/wall {e['lightning_cpu']:.2f}] = x{e['lightning'] / bb:.2f} the bare backbone "
          f"(per CPU-second x{per_core / _per_core(bb, r['backbone_cpu']):.2f}), "
          f"x{e['lightning'] / e['plain']:.2f} the same module in a plain loop "
          f"({e['plain']:.1f} samples/s [CPU/wall {e['plain_cpu']:.2f}]; per CPU-second "
          f"x{per_core / _per_core(e['plain'], e['plain_cpu']):.2f})")
    print(f"  peak RSS of this stage's process: {r['peak_rss_mb']:.0f} MiB")


def bench_raw_reads(path: Path, batch: int = 128, n_max: int = 2048) -> None:
    """h5py baseline: one record per read vs one sorted list-indexed read per batch."""
    with h5py.File(path, "r") as f:
        d = f["median"]
        n = min(d.shape[0], n_max)
        idx = np.random.default_rng(0).permutation(d.shape[0])[:n]
        with Block() as b1:
            for i in idx:
                d[int(i)]
        with Block() as b2:
            for a in range(0, n, batch):
                d[np.sort(idx[a : a + batch]).tolist()]
    print(f"{path.name}: raw h5py 'median' reads: one record per read {n / b1.wall:8.0f} rec/s "
          f"[CPU/wall {b1.cpu:.2f}] | list-indexed batch of {batch} {n / b2.wall:8.0f} rec/s "
          f"[CPU/wall {b2.cpu:.2f}]")


def bench_cache_build(n: int = 500, workers: int = 2) -> None:
    """Cache build rate from a synthetic PTB-XL directory of ``n`` records (records/s)."""
    try:
        from data_modules.sources.ptbxl import build_ptbxl_cache
        from data_modules.synthetic import make_synthetic
    except ImportError as e:
        print(f"cache build: skipped: builder not available ({e})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            t0 = time.perf_counter()
            paths = make_synthetic(Path(tmp) / "synth", n=n, seed=0, n_ukb=1, progress=False)
            t_synth = time.perf_counter() - t0
            t0 = time.perf_counter()
            build_ptbxl_cache(paths["ptbxl"], Path(tmp) / "ptbxl.h5", workers=workers,
                              progress=False)
            dt = time.perf_counter() - t0
        except TypeError as e:  # the builder's signature changed
            print(f"cache build: skipped: builder not available (unexpected signature: {e})")
            return
    print(f"cache build: synthetic directory of {n} records in {t_synth:.1f} s; PTB-XL cache "
          f"built at {n / dt:.1f} records/s ({dt:.1f} s, {workers} workers)")


_RSS_SCRIPT = """
import json, resource, sys, time
from data_modules.sources.ukb import build_ukb_cache


def hwm_kb():
    # VmHWM: the peak RSS of this process's own memory. ru_maxrss(SELF) would also count the
    # parent's memory at fork (Linux keeps the high-water mark across exec).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


before = hwm_kb()
t0 = time.perf_counter()
s = build_ukb_cache(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]),
                    progress=False)
print(json.dumps(dict(n=s.n_records, seconds=time.perf_counter() - t0, import_kb=before,
                      self_kb=hwm_kb(),
                      children_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)))
"""


def _ukb_source(tmp: Path, n: int, n_distinct: int = 200, seed: int = 0) -> tuple[Path, Path]:
    """XML folder of ``n`` participants and their outcomes table (synthetic)."""
    import pandas as pd

    from data_modules.synthetic import make_synthetic

    paths = make_synthetic(tmp / "synth", n=1, n_ukb=min(n, n_distinct), seed=seed,
                           progress=False)
    files = sorted(paths["ukb_xml"].glob("*.xml"))
    xml = tmp / "xml"
    xml.mkdir()
    eids = 1_000_000 + np.arange(n)
    for i, eid in enumerate(eids):
        os.link(files[i % len(files)], xml / f"{eid}_20205_2_0.xml")
    rng = np.random.default_rng(seed)
    csv = tmp / "outcomes.csv"
    pd.DataFrame(dict(eid=eids, event=(rng.random(n) < 0.05).astype(int),
                      time_days=rng.integers(30, 4000, n), hyp=1, mi=0)).to_csv(csv, index=False)
    return xml, csv


def bench_ukb_memory(sizes: list[int], workers: int = 2) -> None:
    """Peak RSS of UKB cache builds of each size, each in a fresh process."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            xml, csv = _ukb_source(Path(tmp), n)
            t_src = time.perf_counter() - t0
            r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(xml), str(csv),
                                str(Path(tmp) / "ukb.h5"), str(workers)], env=env,
                               capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            size = (Path(tmp) / "ukb.h5").stat().st_size / 2**20
        print(f"UKB cache build, N={n} ({m['n']} records, {workers} workers): "
              f"{m['seconds']:.1f} s (source {t_src:.1f} s), cache {size:.0f} MiB; peak RSS "
              f"main {m['self_kb'] / 1024:.0f} MiB (after imports {m['import_kb'] / 1024:.0f} "
              f"MiB), largest worker {m['children_kb'] / 1024:.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, action="append", default=[],
                    help="a real cache to read (repeatable); default: synthetic-shaped caches")
    ap.add_argument("--n", type=int, default=5000, help="records per synthetic-shaped cache")
    ap.add_argument("--workers", type=int, nargs="+", default=[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--backbone-steps", type=int, default=6)
    ap.add_argument("--epoch-batches", type=int, default=12,
                    help="training batches of the Trainer / plain-loop epoch comparison")
    ap.add_argument("--build", action="store_true", help="also time the cache builder")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--ukb-memory", type=int, nargs="+", metavar="N",
                    help="only measure the peak RSS of UKB cache builds of N participants")
    ap.add_argument("--stage", nargs=2, metavar=("KIND", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ukb_memory:
        bench_ukb_memory(args.ukb_memory, workers=2)
        return 0
    if args.stage:  # child process: one stage, figures as JSON on the last line
        print(json.dumps(run_stage(args.stage[0], Path(args.stage[1]), args)))
        return 0
    print(f"torch {torch.__version__}, h5py {h5py.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, batch {args.batch_size}")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "WANDB_MODE": "disabled"}
    passthrough = ["--batch-size", str(args.batch_size), "--threads", str(args.threads),
                   "--backbone-steps", str(args.backbone_steps), "--epoch-batches",
                   str(args.epoch_batches), "--workers", *map(str, args.workers)]
    with tempfile.TemporaryDirectory() as tmp:
        caches = list(args.cache)
        if not caches:
            t0 = time.perf_counter()
            caches = [write_ptbxl_like(Path(tmp) / "ptbxl_like.h5", args.n),
                      write_ukb_like(Path(tmp) / "ukb_like.h5", args.n)]
            print(f"wrote two synthetic-shaped caches of {args.n} records in "
                  f"{time.perf_counter() - t0:.1f} s")
        for path in caches:
            kind = _kind(path)
            if kind not in ("ptbxl", "ukb"):
                print(f"{path}: unknown cache kind {kind!r}, skipped")
                continue
            bench_raw_reads(path, args.batch_size)
            r = subprocess.run([sys.executable, __file__, "--stage", kind, str(path),
                                *passthrough], env=env, capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-3000:])
                return r.returncode
            print_stage(json.loads(r.stdout.strip().splitlines()[-1]), args.batch_size)
    if args.build:
        bench_cache_build()
    return 0


if __name__ == "__main__":
    sys.exit(main())

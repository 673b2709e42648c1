"""ECG-DAN against the authors' code, side by side in one process, with the same weights.

    python benchmarks/bench_vs_reference.py --authors /path/to/LLM-ECG-Dual-Attention
    python benchmarks/bench_vs_reference.py --authors PATH --blocks 5 --steps 2 --profile

``--authors`` is a checkout of https://github.com/cherise215/LLM-ECG-Dual-Attention (only
``multi_modal_heart/model/`` is used; nothing is fetched; ``fastai``, imported there but
not used by this model, is stubbed when absent). Without it the script says so and exits.

Both models are built as the authors' ``tasks/pretrain.py`` builds theirs (12 x 608 input,
z 512): ours from a seed, theirs loaded with our weights (encoder through
``tests/reference/make_authors_fixtures.our_to_authors``, decoder through
:func:`our_decoder_to_authors`); their reconstructions are compared in float64 before any
timing. Then, in float32 at ``--batch`` (128) and ``--threads`` (2), blocks alternate:
training step (encoder + decoder + MSE + AdamW: ours fused on the CPU as ecg-dan trains,
theirs torch's default) and inference (encoder forward, eval,
inference mode) of each model. Each block prints samples/s and the CPU time per wall
second (2.0 = both threads busy for us; less = a shared machine). Also printed: FLOPs per
sample (``torch.utils.flop_counter``), the machine's SGEMM rate, and the share of it each
side reaches. ``--profile`` adds where our training step spends its time and FLOPs (input
convolutions + residual blocks, temporal attention, cross-lead attention, pooling,
decoder, optimizer) and torch.profiler's most expensive operators.

Inference is also timed at batch 1 (``--infer1-steps`` calls a block), and, unless
``--no-onnx``, through ONNX Runtime: our encoder (eval: each conv + batch norm folded, as
PyTorch runs it) exported with ``torch.onnx.export`` (dynamic batch axis) into a temporary
folder and run by an ``onnxruntime.InferenceSession`` with ``intra_op_num_threads`` =
``--threads`` (all graph optimisations on); its ``z`` is checked against PyTorch's first.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reference"))

from ecg_dan.models import ECGDAN, ModelConfig  # noqa: E402
from ecg_dan.schedules import build_optimizer  # noqa: E402

AUTHORS_KW = dict(num_leads=12, time_steps=608, z_dims=512, linear_out=512,
                  downsample_factor=5, base_feature_dim=4, if_VAE=False,
                  use_attention_pool=False, no_linear_in_E=True)


def our_decoder_to_authors(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our decoder state dict -> theirs (``ECGAttentionAE.decoder``)."""
    out = {}
    for key, t in ours.items():
        if key.startswith("blocks."):
            _, idx, rest = key.split(".", 2)
            rest = (rest.replace("up_proj.", "idfunc_1.").replace("up.", "idfunc_0.")
                    .replace("skip.", "idfunc_1."))
            key = f"decoder.{idx}.{rest}"
        elif key.startswith("final."):
            key = "final_conv." + key[len("final."):]
        elif not key.startswith("linear."):
            raise KeyError(f"no mapping for our decoder key {key}")
        out[key] = t.clone()
    return out


def build_pair(authors: Path, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, theirs) with the same weights."""
    import make_authors_fixtures as fx

    ECGAttentionAE = fx._import_authors(authors)
    torch.manual_seed(seed)
    ours = ECGDAN(ModelConfig())
    theirs = ECGAttentionAE(**AUTHORS_KW)
    theirs.encoder.load_state_dict(fx.our_to_authors(ours.encoder.state_dict()), strict=True)
    theirs.decoder.load_state_dict(our_decoder_to_authors(ours.decoder.state_dict()),
                                   strict=True)
    return ours, theirs


def check_agreement(ours: torch.nn.Module, theirs: torch.nn.Module) -> float:
    """Max |recon_ours - recon_theirs| in float64, eval mode (dropout off)."""
    a, b = copy.deepcopy(ours).double().eval(), copy.deepcopy(theirs).double().eval()
    x = torch.randn(4, 12, 608, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        return float((a(x)["recon"] - b(x)).abs().max())


def _recon(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["recon"] if isinstance(out, dict) else out


def _encode(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.encoder(x)


def train_step_fn(model: torch.nn.Module, batch: int, ours: bool = False,
                  fused: bool = False) -> Callable[[], None]:
    """One training step; ``ours``: with ecg-dan's optimizer (``build_optimizer``), else
    torch's default AdamW as the authors' code builds it; ``fused``: AdamW's fused CPU kernel
    (measured slower over the whole step: docs/benchmarks.md)."""
    x, target = torch.randn(batch, 12, 608), torch.randn(batch, 12, 608)
    opt = (torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
           if fused else build_optimizer(model.parameters(), 1e-4, (0.9, 0.999), 0.01) if ours
           else torch.optim.AdamW(model.parameters(), lr=1e-4))

    def step() -> None:
        model.train()
        loss = F.mse_loss(_recon(model, x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(model: torch.nn.Module, batch: int) -> Callable[[], None]:
    x = torch.randn(batch, 12, 608)

    def step() -> None:
        model.eval()
        with torch.inference_mode():
            _encode(model, x)

    return step


def export_onnx(model: torch.nn.Module, folder: Path) -> Path:
    """Our encoder (eval) as an ONNX graph with a dynamic batch axis."""
    enc = copy.deepcopy(model.encoder).eval()
    path = folder / "encoder.onnx"
    torch.onnx.export(enc, (torch.randn(2, 12, 608),), str(path), input_names=["beats"],
                      output_names=["z"], dynamic_axes={"beats": {0: "batch"}, "z": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def onnx_session(path: Path, threads: int):
    import onnxruntime as ort  # deferred: optional, only for the ONNX row

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_infer_fn(sess, batch: int) -> Callable[[], None]:
    x = torch.randn(batch, 12, 608).numpy()

    def step() -> None:
        sess.run(None, {"beats": x})

    return step


def onnx_agreement(model: torch.nn.Module, sess) -> float:
    """Max |z_onnx - z_torch| (float32, eval) on 8 random inputs."""
    x = torch.randn(8, 12, 608, generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.inference_mode():
        z = model.encoder(x).numpy()
    return float(abs(sess.run(None, {"beats": x.numpy()})[0] - z).max())


def flops_per_sample(model: torch.nn.Module, train: bool, batch: int = 8) -> float:
    x = torch.randn(batch, 12, 608)
    counter = FlopCounterMode(display=False)
    if train:
        model.train()
        with counter:
            F.mse_loss(_recon(model, x), torch.randn(batch, 12, 608)).backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad(), counter:
            _encode(model, x)
    return counter.get_total_flops() / batch


def sgemm_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def timed_block(fn: Callable[[], None], steps: int, batch: int) -> tuple[float, float]:
    """(samples/s, CPU seconds per wall second) of ``steps`` calls."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    wall = time.perf_counter() - t0
    return batch * steps / wall, (time.process_time() - c0) / wall


def profile_ours(model: ECGDAN, batch: int, gemm: float, steps: int = 2) -> None:
    """Time and FLOP shares of our training step's parts; the heaviest operators."""
    enc, dec = model.encoder, model.decoder
    x, target = torch.randn(batch, 12, 608), torch.randn(batch, 12, 608)
    model.train()
    h = enc.features(x).detach()
    a = enc.attend(h)[0].detach()
    z = enc.pool(a).detach()
    L, C, T = h.shape[2], h.shape[1], h.shape[3]
    tokens_t = h.permute(2, 0, 3, 1).contiguous()
    tokens_c = h.permute(0, 2, 1, 3).reshape(batch, L, C * T).contiguous()
    parts: dict[str, Callable[[], torch.Tensor]] = {
        "input convs + residual blocks (1x5 convs)": lambda: enc.features(x).sum(),
        "temporal attention (12 leads, batched)": lambda: enc.temporal(tokens_t.requires_grad_()
                                                                      )[0].sum(),
        "cross-lead attention": lambda: enc.cross_lead(tokens_c.requires_grad_())[0].sum(),
        "pooling": lambda: enc.pool(a.requires_grad_()).sum(),
        "decoder": lambda: F.mse_loss(dec(z.requires_grad_()), target),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []
    for name, fn in parts.items():
        fn().backward()  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            fn().backward()
        flops = counter.get_total_flops()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn().backward()
        rows.append((name, (time.perf_counter() - t0) / steps, flops))
    model.zero_grad(set_to_none=False)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    rows.append(("AdamW step", (time.perf_counter() - t0) / steps, 0))
    total_t = sum(r[1] for r in rows)
    total_f = sum(r[2] for r in rows)
    print(f"\nour training step by part (forward + backward, batch {batch}; parts timed "
          f"separately, sum {total_t * 1e3:.0f} ms):")
    print(f"  {'part':44s} {'time':>7s} {'FLOPs':>7s} {'GFLOP/s':>8s} {'of SGEMM':>9s}")
    for name, t, f in rows:
        rate = f / t / 1e9
        print(f"  {name:44s} {100 * t / total_t:6.1f}% {100 * f / max(total_f, 1):6.1f}% "
              f"{rate:8.1f} {100 * rate / gemm:8.1f}%")
    step = train_step_fn(model, batch)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print("\ntorch.profiler, one training step, top operators by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12,
                                    max_name_column_width=40))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--authors", type=Path, help="checkout of cherise215/LLM-ECG-Dual-Attention")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=3, help="alternating timed blocks per figure")
    p.add_argument("--steps", type=int, default=2, help="steps per training block")
    p.add_argument("--infer-steps", type=int, default=6, help="steps per inference block")
    p.add_argument("--infer1-steps", type=int, default=40,
                   help="calls per batch-1 inference block (0: no batch-1 rows)")
    p.add_argument("--no-onnx", action="store_true", help="no ONNX Runtime rows")
    p.add_argument("--no-train", action="store_true", help="inference rows only")
    p.add_argument("--fused-adamw-row", action="store_true",
                   help="also our model with AdamW's fused CPU kernel (an attempt not kept)")
    p.add_argument("--profile", action="store_true", help="profile our training step")
    args = p.parse_args(argv)
    if args.authors is None or not (args.authors / "multi_modal_heart" / "model").is_dir():
        print("skipped: give --authors PATH, a checkout of "
              "https://github.com/cherise215/LLM-ECG-Dual-Attention (nothing is fetched)")
        return 0
    torch.set_num_threads(args.threads)
    ours, theirs = build_pair(args.authors.resolve())
    err = check_agreement(ours, theirs)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, 12 x 608, "
          f"float32; same weights: max |recon_ours - recon_theirs| = {err:.2g} (float64)")
    if err > 1e-9:
        print("the two models disagree: the weight mapping is wrong; no timing")
        return 1
    gemm = sgemm_gflops()
    f_train = {n: flops_per_sample(m, True) for n, m in (("ours", ours), ("theirs", theirs))}
    f_infer = {n: flops_per_sample(m, False) for n, m in (("ours", ours), ("theirs", theirs))}
    print(f"SGEMM (1024^3, best of 3): {gemm:.0f} GFLOP/s; FLOPs per sample: training "
          f"{f_train['ours'] / 1e6:.1f} M (authors {f_train['theirs'] / 1e6:.1f} M), "
          f"inference {f_infer['ours'] / 1e6:.1f} M (authors {f_infer['theirs'] / 1e6:.1f} M)")
    # (figure, model) -> (step, calls per block, samples per call)
    fns: dict[tuple[str, str], tuple[Callable[[], None], int, int]] = {}
    if not args.no_train:
        fns[("train", "ours")] = (train_step_fn(ours, args.batch, ours=True), args.steps,
                                  args.batch)
        if args.fused_adamw_row:
            fns[("train", "ours-fused-adamw")] = (
                train_step_fn(copy.deepcopy(ours), args.batch, ours=True, fused=True),
                args.steps, args.batch)
        fns[("train", "theirs")] = (train_step_fn(theirs, args.batch), args.steps, args.batch)
    fns[("infer", "ours")] = (infer_fn(ours, args.batch), args.infer_steps, args.batch)
    fns[("infer", "theirs")] = (infer_fn(theirs, args.batch), args.infer_steps, args.batch)
    if args.infer1_steps:
        fns[("infer1", "ours")] = (infer_fn(ours, 1), args.infer1_steps, 1)
        fns[("infer1", "theirs")] = (infer_fn(theirs, 1), args.infer1_steps, 1)
    if not args.no_onnx:
        tmp = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
        t0 = time.perf_counter()
        sess = onnx_session(export_onnx(ours, tmp), args.threads)
        print(f"ONNX: encoder exported and session built in {time.perf_counter() - t0:.1f} s; "
              f"max |z_onnx - z_torch| = {onnx_agreement(ours, sess):.2g} (float32)")
        fns[("infer", "onnx")] = (onnx_infer_fn(sess, args.batch), args.infer_steps, args.batch)
        if args.infer1_steps:
            fns[("infer1", "onnx")] = (onnx_infer_fn(sess, 1), args.infer1_steps, 1)
    for fn, _, _ in fns.values():
        fn()  # warm-up
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
    for block in range(args.blocks):
        line = []
        for key, (fn, steps, n) in fns.items():
            r, cpu = timed_block(fn, steps, n)
            rates[key].append(r)
            line.append(f"{key[0]} {key[1]:6s} {r:7.1f}/s [CPU/wall {cpu:.2f}]")
        print(f"block {block + 1}: " + " | ".join(line), flush=True)
    print(f"\n{'figure (median of blocks)':34s} {'authors':>10s} {'ecg-dan':>10s} {'ratio':>7s}"
          "   (ratio of the per-block ratios: median, min-max)")
    rows = (("train", "ours", "training samples/s"),
            ("train", "ours-fused-adamw", "training, ours with fused AdamW"),
            ("infer", "ours", f"inference b{args.batch} samples/s"),
            ("infer", "onnx", f"inference b{args.batch} ONNX Runtime"),
            ("infer1", "ours", "inference b1 samples/s"),
            ("infer1", "onnx", "inference b1 ONNX Runtime"))
    for what, who, label in rows:
        if (what, who) not in rates:
            continue
        theirs_r, ours_r = rates[(what, "theirs")], rates[(what, who)]
        a, o = statistics.median(theirs_r), statistics.median(ours_r)
        per_block = [x / y for x, y in zip(ours_r, theirs_r)]
        print(f"{label:34s} {a:10.1f} {o:10.1f} {o / a:6.2f}x   "
              f"(x{statistics.median(per_block):.2f}, x{min(per_block):.2f}-x{max(per_block):.2f})")
        if who == "ours" and what != "infer1":
            fl = f_train if what == "train" else f_infer
            print(f"{'  share of SGEMM rate':34s} {100 * a * fl['theirs'] / 1e9 / gemm:9.1f}% "
                  f"{100 * o * fl['ours'] / 1e9 / gemm:9.1f}%")
    if args.profile:
        profile_ours(ours, args.batch, gemm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

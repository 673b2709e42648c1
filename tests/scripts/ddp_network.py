"""Two-process (gloo, CPU) check that DDP with synchronised batch norm trains the real
ECG-DAN network exactly as one process on the global batch.

Run directly (``python tests/scripts/ddp_network.py``); ``tests/test_ddp_syncbn.py`` runs it
in a subprocess. Float64 throughout, so any difference beyond rounding is a wrong formula.

1. Layer level, unequal shards (3 / 5 samples): ``ChannelsLastBatchNorm2d`` on its fast
   channels-last kernel and on the native path (``reference_kernels``, NCHW input), and the
   heads' ``nn.BatchNorm1d`` (2-D and 3-D input) after ``convert_sync_batchnorm``: outputs,
   input gradients, summed parameter gradients and running statistics (two steps) equal
   those of torch's ``nn.BatchNorm`` on the whole batch.
2. Network level: ECG-DAN backbone + risk head (dropout p=0, batch norm in train mode), loss
   = Cox partial likelihood (risk sets gathered across ranks) + reconstruction MSE, global
   batch of 8 real-size (12 x 608) beats split 4 / 4. With ``convert_sync_batchnorm`` and
   then ``DistributedDataParallel`` (Lightning's order), the DDP-averaged gradient of every
   parameter, the loss, the outputs and every batch norm's running statistics equal the
   single-process ones to 1e-10 (relative).
3. Without synchronisation the gradients and running statistics differ (so check 2 can fail).
Exits non-zero on any failure.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

WORLD = 2
LAYER_SIZES = (3, 5)
BATCH = 8  # network check: 4 per rank (equal shards: the mean MSE averages exactly)


def _max_rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    """max |a - b| relative to max(largest |b|, floor)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(floor)).item()


def _close(a: torch.Tensor, b: torch.Tensor, what: str, tol: float = 1e-10,
           floor: float = 1e-30) -> None:
    """Equal to ``tol`` relative to the largest entry of ``b`` (or to ``floor``, for tensors
    that are structurally ~0, such as the gradient of a bias feeding a normalisation)."""
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}")
    if a.numel() and _max_rel(a, b, floor) > tol:
        raise AssertionError(f"{what}: relative difference {_max_rel(a, b, floor):.3g} > {tol}")


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _bn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _layer_checks(rank: int) -> None:
    import torch.distributed as dist
    from torch import nn

    from ecg_dan.models.batchnorm import (
        ChannelsLastBatchNorm2d,
        SyncBatchNorm,
        convert_sync_batchnorm,
    )
    from ecg_dan.models.kernels import reference_kernels

    lo = sum(LAYER_SIZES[:rank])
    hi = lo + LAYER_SIZES[rank]
    n = sum(LAYER_SIZES)
    cl = torch.channels_last
    cases = [  # name, module, input shape, memory format, reference kernels
        ("channels-last fast", ChannelsLastBatchNorm2d(8), (n, 8, 3, 16), cl, False),
        ("channels-last native", ChannelsLastBatchNorm2d(4), (n, 4, 3, 16), None, True),
        ("BatchNorm1d 2-D", nn.BatchNorm1d(6), (n, 6), None, False),
        ("BatchNorm1d 3-D", nn.BatchNorm1d(6, momentum=None), (n, 6, 5), None, False),
    ]
    for name, module, shape, fmt, reference in cases:
        g = torch.Generator().manual_seed(11)
        module = module.double().train()
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5, generator=g)
            module.bias.normal_(generator=g)
        native = nn.BatchNorm2d if isinstance(module, nn.BatchNorm2d) else nn.BatchNorm1d
        ref = native(module.num_features, momentum=module.momentum).double().train()
        ref.load_state_dict(module.state_dict())
        sync = convert_sync_batchnorm(copy.deepcopy(module))
        if isinstance(module, ChannelsLastBatchNorm2d):
            assert type(sync) is ChannelsLastBatchNorm2d and sync.sync, name
        else:
            assert type(sync) is SyncBatchNorm, name
        for step in range(2):
            x = 3 * torch.randn(shape, generator=g, dtype=torch.float64) + 2
            r = torch.randn(shape, generator=g, dtype=torch.float64)
            if fmt is not None:
                x = x.contiguous(memory_format=fmt)
            xr = x.clone().requires_grad_()
            ref.zero_grad()
            y_ref = ref(xr)
            (y_ref * r).sum().backward()
            xl = x[lo:hi].clone().requires_grad_()
            if fmt is not None:
                xl = x[lo:hi].clone().contiguous(memory_format=fmt).requires_grad_()
            sync.zero_grad()
            if reference:
                with reference_kernels():
                    y = sync(xl)
            else:
                y = sync(xl)
            (y * r[lo:hi]).sum().backward()  # a sum over ranks: DDP-summed grads are exact
            what = f"rank {rank} {name} step {step}"
            _close(y.detach(), y_ref.detach()[lo:hi], f"{what} output")
            _close(xl.grad, xr.grad[lo:hi], f"{what} input grad")
            for pname in ("weight", "bias"):
                gsum = getattr(sync, pname).grad.clone()
                dist.all_reduce(gsum)
                _close(gsum, getattr(ref, pname).grad, f"{what} {pname} grad")
            for key, value in _bn_state(ref).items():
                _close(_bn_state(sync)[key].double(), value.double(), f"{what} {key}")


def _network_checks(rank: int) -> None:
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from ecg_dan.losses.cox import cox_ph_loss
    from ecg_dan.models import ECGDAN, ModelConfig, RiskHead
    from ecg_dan.models.batchnorm import ChannelsLastBatchNorm2d, convert_sync_batchnorm

    class Net(nn.Module):
        """What the finetuning module runs: backbone, then the risk head on z."""

        def __init__(self, cfg: ModelConfig) -> None:
            super().__init__()
            self.backbone = ECGDAN(cfg)
            self.head = RiskHead(cfg.latent_dim, dropout=0.0)

        def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            out = self.backbone(x)
            return out, self.head(out["z"]).squeeze(-1)

    torch.manual_seed(0)
    cfg = ModelConfig(attn_dropout=0.0)
    model = Net(cfg).double().train()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(BATCH, cfg.n_leads, cfg.seq_len, generator=g, dtype=torch.float64)
    time = torch.tensor([3.0, 7.0, 2.0, 9.0, 5.0, 4.0, 8.0, 6.0], dtype=torch.float64)
    event = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    per = BATCH // WORLD
    lo, hi = rank * per, (rank + 1) * per

    def step(m: nn.Module, xs, ts, es, gather: bool):
        m.zero_grad()
        out, risk = m(xs)
        loss = cox_ph_loss(risk, ts, es, gather=gather) + F.mse_loss(out["recon"], xs)
        loss.backward()
        return loss.detach(), out["z"].detach(), risk.detach()

    ref = copy.deepcopy(model)
    ref_loss, ref_z, ref_risk = step(ref, x, time, event, gather=False)
    ref_grads = _grads(ref)
    ref_stats = _bn_state(ref)

    # As Lightning does it: convert, then wrap in DDP (which averages the gradients).
    sync = convert_sync_batchnorm(copy.deepcopy(model))
    n_sync = sum(isinstance(m, ChannelsLastBatchNorm2d) and m.sync for m in sync.modules())
    n_head = sum(type(m).__name__ == "SyncBatchNorm" for m in sync.head.modules())
    if n_sync == 0 or n_head != 2:
        raise AssertionError(f"conversion: {n_sync} channels-last, {n_head} head batch norms")
    loss, z, risk = step(DistributedDataParallel(sync), x[lo:hi], time[lo:hi], event[lo:hi],
                         gather=True)
    grads = _grads(sync)
    loss_mean = loss.clone()
    torch.distributed.all_reduce(loss_mean)
    _close(loss_mean / WORLD, ref_loss, f"rank {rank} loss")
    _close(z, ref_z[lo:hi], f"rank {rank} embedding")
    _close(risk, ref_risk[lo:hi], f"rank {rank} log-risk")
    if grads.keys() != ref_grads.keys():
        raise AssertionError(f"gradient sets differ: {set(grads) ^ set(ref_grads)}")
    # Some gradients are structurally ~0 (biases feeding a normalisation; the Cox gradient
    # sums to 0 over the batch): their floor is 1e-3 x the model's largest gradient.
    floor = 1e-3 * max(g.abs().max().item() for g in ref_grads.values())
    worst = max(_max_rel(grads[n], ref_grads[n], floor) for n in ref_grads)
    for n, ref_g in ref_grads.items():
        _close(grads[n], ref_g, f"rank {rank} grad {n}", floor=floor)
    stats = _bn_state(sync)
    for key, value in ref_stats.items():
        _close(stats[key].double(), value.double(), f"rank {rank} {key}")
    if rank == 0:
        print(f"synchronised: {len(ref_grads)} parameter gradients and {len(ref_stats)} "
              f"batch norm buffers match, worst relative difference {worst:.2e}")

    # 3: the same step without synchronised batch norm is measurably different.
    plain = copy.deepcopy(model)
    step(DistributedDataParallel(plain), x[lo:hi], time[lo:hi], event[lo:hi], gather=True)
    plain_grads = _grads(plain)
    diff = max(_max_rel(plain_grads[n], ref_grads[n], floor) for n in ref_grads)
    stat_diff = max(_max_rel(v.double(), ref_stats[k].double())
                    for k, v in _bn_state(plain).items() if "running" in k)
    if diff < 1e-3 or stat_diff < 1e-3:
        raise AssertionError(f"unsynchronised BN should differ: grad {diff}, stats {stat_diff}")
    if rank == 0:
        print(f"unsynchronised: worst relative gradient difference {diff:.2e}, "
              f"running statistics {stat_diff:.2e}")


def _checks(rank: int) -> None:
    _layer_checks(rank)
    _network_checks(rank)


def main() -> int:
    from _spawn import run_world

    return run_world(_checks, "ddp_network", WORLD)


if __name__ == "__main__":
    sys.exit(main())

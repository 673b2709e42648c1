"""BatchNorm2d for channels-last activations with few channels (4-16), as in ECG-DAN.

oneDNN's channels-last convolutions are ~10x faster than NCHW ones for these (1x5)
convolutions on 4-16 channels, but PyTorch's native channels-last batch norm is slow for
them (scalar loops for C=4, a slow backward for C=8-16). Viewing the (N*H*W, C) activation
as a wide (rows, 64) matrix turns every per-channel statistic into a vectorised column sum.
Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; eval mode and
non-channels-last inputs use the native kernel.

Under DDP, :func:`convert_sync_batchnorm` gives every batch norm of a model SyncBatchNorm
semantics: training-mode statistics are those of the global batch (all ranks), and the
backward all-reduces the per-channel gradient sums, exactly as ``torch.nn.SyncBatchNorm``
does, so outputs, running statistics and (DDP-averaged) gradients equal single-process batch
norm on the concatenated batch. Unlike torch's class it also runs on CPU (gloo), and the
channels-last layers keep their fast kernel (they only switch on their ``sync`` flag).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ecg_dan.models.kernels import fast_kernels


def _wide_factor(rows: int, channels: int, width: int = 64) -> int:
    k = 1
    while k * channels < width and rows % (2 * k) == 0:
        k *= 2
    return k


def _channel_sums(rows: Tensor, k: int, channels: int) -> Tensor:
    """Per-channel sums of a (rows, k*C) matrix from :func:`_as_rows`.

    As a matrix-vector product: BLAS gemv reads the matrix ~5x faster than ``sum(0)``,
    which reduces these narrow (64-column) matrices row by row.
    """
    return torch.mv(rows.t(), rows.new_ones(rows.shape[0])).view(k, channels).sum(0)


def _as_rows(x: Tensor, k: int) -> Tensor:
    """(B, C, H, W) channels-last -> (B*H*W/k, k*C) view, channel fastest."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(-1, k * C)


# ---------------------------------------------------------------- synchronised statistics


def _sync_group(bn: nn.Module):
    """The process group to synchronise ``bn`` over now, or None (plain batch norm)."""
    if not (getattr(bn, "sync", False) and bn.training and dist.is_available()
            and dist.is_initialized()):
        return None
    group = bn.process_group if bn.process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _global_moments(n: int, mean: Tensor, var: Tensor, group) -> tuple[int, Tensor, Tensor]:
    """Combine every rank's (count, mean, biased variance) into those of the global batch.

    One all-gather of float64 per-rank moments, combined with Chan et al.'s pairwise formula
    (no sum-of-squares cancellation); ranks may hold unequal or empty shards.
    """
    C = mean.numel()
    local = torch.cat([mean.new_tensor([float(n)]), mean, var * n]).to(torch.float64)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local.contiguous(), group=group)
    stats = torch.stack(parts)
    counts, means, m2 = stats[:, :1], stats[:, 1:1 + C], stats[:, 1 + C:]
    total = int(counts.sum().item())
    if total == 0:
        raise ValueError("batch norm on an empty global batch")
    g_mean = (counts * means).sum(0) / total
    g_var = (m2 + counts * (means - g_mean) ** 2).sum(0) / total
    return total, g_mean.to(mean.dtype), g_var.to(var.dtype)


def _all_reduce_pair(a: Tensor, b: Tensor, group) -> tuple[Tensor, Tensor]:
    """Sum two per-channel vectors over the ranks (one all-reduce)."""
    both = torch.cat([a, b])
    dist.all_reduce(both, group=group)
    return both[: a.numel()], both[a.numel():]


def _update_running_stats(bn: _BatchNorm, mean: Tensor, var: Tensor, n: float) -> None:
    if not bn.track_running_stats:
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), m)
        bn.running_var.lerp_((var * n / max(n - 1, 1)).to(bn.running_var.dtype), m)


class _SyncBatchNorm(torch.autograd.Function):
    """Batch norm over the global batch for any (N, C, *) input, layout and device."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, group):
        C = x.shape[1]
        xc = x.transpose(0, 1).reshape(C, -1)
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        xc = xc.to(dtype)
        n = xc.shape[1]
        mean = xc.sum(1) / max(n, 1)
        var = (xc - mean[:, None]).pow_(2).sum(1) / max(n, 1)
        n, mean, var = _global_moments(n, mean, var, group)
        invstd = torch.rsqrt(var + eps)
        shape = (1, C) + (1,) * (x.dim() - 2)
        w = weight.to(dtype) if weight is not None else torch.ones_like(mean)
        b = bias.to(dtype) if bias is not None else torch.zeros_like(mean)
        scale = w * invstd
        y = (x.to(dtype) * scale.view(shape) + (b - mean * scale).view(shape)).to(x.dtype)
        ctx.save_for_backward(x, w, mean, invstd)
        ctx.n, ctx.group, ctx.affine = n, group, weight is not None
        count = torch.tensor(float(n), dtype=torch.float64)
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx, grad: Tensor, _gm: Tensor, _gv: Tensor, _gc: Tensor):
        x, w, mean, invstd = ctx.saved_tensors
        C, n = x.shape[1], ctx.n
        shape = (1, C) + (1,) * (x.dim() - 2)
        dims = [d for d in range(x.dim()) if d != 1]
        g = grad.to(mean.dtype)
        xhat = (x.to(mean.dtype) - mean.view(shape)) * invstd.view(shape)
        sum_g = g.sum(dims)
        sum_gxhat = (g * xhat).sum(dims)
        grad_weight, grad_bias = (sum_gxhat, sum_g) if ctx.affine else (None, None)
        sum_g, sum_gxhat = _all_reduce_pair(sum_g, sum_gxhat, ctx.group)
        a = (w * invstd).view(shape)
        gx = a * (g - (sum_g / n).view(shape) - xhat * (sum_gxhat / n).view(shape))
        return gx.to(x.dtype), grad_weight, grad_bias, None, None


def _sync_forward(bn: _BatchNorm, x: Tensor, group) -> Tensor:
    if x.dim() < 2:
        raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")
    y, mean, var, n = _SyncBatchNorm.apply(x, bn.weight, bn.bias, bn.eps, group)
    _update_running_stats(bn, mean, var, float(n))
    return y


class _ChannelsLastBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, group=None):
        B, C, H, W = x.shape
        k = _wide_factor(B * H * W, C)
        xv = _as_rows(x, k)
        n = B * H * W
        mean = _channel_sums(xv, k, C) / max(n, 1)
        centred = xv - mean.repeat(k)
        var = _channel_sums(centred.pow_(2), k, C) / max(n, 1)  # two-pass: no cancellation
        if group is not None:  # SyncBatchNorm: moments of the global batch
            n, mean, var = _global_moments(n, mean, var, group)
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        y = torch.addcmul((bias - mean * scale).repeat(k), xv, scale.repeat(k))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.k, ctx.n, ctx.group = k, n, group
        out = y.view(B, H, W, C).permute(0, 3, 1, 2)
        count = torch.tensor(float(n), dtype=torch.float64)
        ctx.mark_non_differentiable(mean, var, count)
        return out, mean, var, count

    @staticmethod
    def backward(ctx, grad: Tensor, _gm: Tensor, _gv: Tensor, _gc: Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        k = ctx.k
        B, C, H, W = x.shape
        n = ctx.n
        gv = _as_rows(grad.contiguous(memory_format=torch.channels_last), k)
        xv = _as_rows(x, k)
        sum_g = _channel_sums(gv, k, C)
        sum_gx = _channel_sums(gv * xv, k, C)
        sum_gxhat = invstd * (sum_gx - mean * sum_g)  # dL/dweight
        grad_weight, grad_bias = sum_gxhat, sum_g
        if ctx.group is not None:
            # dL/dx needs the sums over the global batch; dL/dweight, dL/dbias stay local
            # (DDP averages parameter gradients), as in torch.nn.SyncBatchNorm.
            sum_g, sum_gxhat = _all_reduce_pair(sum_g, sum_gxhat, ctx.group)
        a = weight * invstd
        b = -a * invstd * sum_gxhat / n
        c = -a * sum_g / n - b * mean
        gx = torch.addcmul(c.repeat(k), gv, a.repeat(k)).addcmul_(xv, b.repeat(k))
        return gx.view(B, H, W, C).permute(0, 3, 1, 2), grad_weight, grad_bias, None, None


class ChannelsLastBatchNorm2d(nn.BatchNorm2d):
    """Drop-in ``nn.BatchNorm2d``; fast training path for channels-last inputs.

    With ``sync`` on (see :func:`convert_sync_batchnorm`) and a torch.distributed world of
    more than one process, training-mode statistics are those of the global batch.
    """

    sync: bool = False
    process_group = None

    def forward(self, x: Tensor) -> Tensor:
        fast = (fast_kernels() and self.training and self.affine and self.track_running_stats
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and x.shape[1] > 1 and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64))
        group = _sync_group(self)
        if group is not None:
            if fast:
                y, mean, var, n = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias,
                                                               self.eps, group)
                _update_running_stats(self, mean, var, float(n))
                return y
            return _sync_forward(self, x, group)
        if not fast:
            return super().forward(x)
        y, mean, var, _ = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(
                self.num_batches_tracked)
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var * n / max(n - 1, 1), m)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", sync=True" if self.sync else "")



class SyncBatchNorm(_BatchNorm):
    """Batch norm with ``nn.SyncBatchNorm`` semantics that also runs on CPU (gloo).

    :func:`convert_sync_batchnorm` puts it in place of torch batch norms (the heads'
    ``nn.BatchNorm1d``); same parameters, buffers and state-dict keys. Outside a training
    step under a multi-process torch.distributed group it is plain batch norm. Deliberately
    not an ``nn.SyncBatchNorm`` subclass: DDP refuses to wrap those on CPU.
    """

    sync = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype)
        self.process_group = process_group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        group = _sync_group(self)
        if group is None:
            return super().forward(x)
        self._check_input_dim(x)
        return _sync_forward(self, x, group)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Give every batch norm in ``module`` SyncBatchNorm semantics; returns the module.

    ``ChannelsLastBatchNorm2d`` layers switch on ``sync`` (keeping their fast kernel); other
    torch batch norms (including ``nn.SyncBatchNorm``, which has no CPU path) become
    :class:`SyncBatchNorm`, sharing the original parameters and buffers. Only has an effect
    while torch.distributed runs more than one process; undone by
    :func:`revert_sync_batchnorm`.
    """
    out = module
    if isinstance(module, ChannelsLastBatchNorm2d):
        module.sync, module.process_group = True, process_group
    elif isinstance(module, SyncBatchNorm):
        module.process_group = process_group
    elif isinstance(module, _BatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group)
        _move_state(module, out)
        out._ecg_dan_original_class = type(module)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` (the original batch norm classes come back)."""
    out = module
    if isinstance(module, ChannelsLastBatchNorm2d):
        module.sync, module.process_group = False, None
    elif isinstance(module, SyncBatchNorm):
        cls = getattr(module, "_ecg_dan_original_class", None)
        if cls is not None:  # else built as SyncBatchNorm: it stays one
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats)
            _move_state(module, out)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


def _move_state(src: _BatchNorm, dst: _BatchNorm) -> None:
    """``dst`` takes ``src``'s parameters and buffers (the same tensors) and mode."""
    if src.affine:
        with torch.no_grad():
            dst.weight, dst.bias = src.weight, src.bias
    if src.track_running_stats:
        dst.running_mean, dst.running_var = src.running_mean, src.running_var
        dst.num_batches_tracked = src.num_batches_tracked
    dst.train(src.training)
    if hasattr(src, "qconfig"):
        dst.qconfig = src.qconfig

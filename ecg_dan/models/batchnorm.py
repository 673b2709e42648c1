"""BatchNorm2d for channels-last activations with few channels (4-16), as in ECG-DAN.

oneDNN's channels-last convolutions are ~10x faster than NCHW ones for these (1x5)
convolutions on 4-16 channels, but PyTorch's native channels-last batch norm is slow for
them (scalar loops for C=4, a slow backward for C=8-16). Viewing the (N*H*W, C) activation
as a wide (rows, 64) matrix turns every per-channel statistic into a vectorised column sum.
Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; eval mode and
non-channels-last inputs use the native kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecg_dan.models.kernels import fast_kernels


def _wide_factor(rows: int, channels: int, width: int = 64) -> int:
    k = 1
    while k * channels < width and rows % (2 * k) == 0:
        k *= 2
    return k


def _as_rows(x: Tensor, k: int) -> Tensor:
    """(B, C, H, W) channels-last -> (B*H*W/k, k*C) view, channel fastest."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(-1, k * C)


class _ChannelsLastBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        B, C, H, W = x.shape
        k = _wide_factor(B * H * W, C)
        xv = _as_rows(x, k)
        n = B * H * W
        mean = xv.sum(0).view(k, C).sum(0) / n
        centred = xv - mean.repeat(k)
        var = centred.pow_(2).sum(0).view(k, C).sum(0) / n  # two-pass: no cancellation
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        y = torch.addcmul((bias - mean * scale).repeat(k), xv, scale.repeat(k))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.k = k
        out = y.view(B, H, W, C).permute(0, 3, 1, 2)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad: Tensor, _gm: Tensor, _gv: Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        k = ctx.k
        B, C, H, W = x.shape
        n = B * H * W
        gv = _as_rows(grad.contiguous(memory_format=torch.channels_last), k)
        xv = _as_rows(x, k)
        sum_g = gv.sum(0).view(k, C).sum(0)
        sum_gx = (gv * xv).sum(0).view(k, C).sum(0)
        sum_gxhat = invstd * (sum_gx - mean * sum_g)  # dL/dweight
        a = weight * invstd
        b = -a * invstd * sum_gxhat / n
        c = -a * sum_g / n - b * mean
        gx = torch.addcmul(c.repeat(k), gv, a.repeat(k)).addcmul_(xv, b.repeat(k))
        return gx.view(B, H, W, C).permute(0, 3, 1, 2), sum_gxhat, sum_g, None


class ChannelsLastBatchNorm2d(nn.BatchNorm2d):
    """Drop-in ``nn.BatchNorm2d``; fast training path for channels-last inputs."""

    def forward(self, x: Tensor) -> Tensor:
        fast = (fast_kernels() and self.training and self.affine and self.track_running_stats
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and x.shape[1] > 1 and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64))
        if not fast:
            return super().forward(x)
        y, mean, var = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(
                self.num_batches_tracked)
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var * n / max(n - 1, 1), m)
        return y


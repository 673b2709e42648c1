"""Residual blocks over (B, C, leads, time) tensors, convolving along time only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecg_dan.models.batchnorm import ChannelsLastBatchNorm2d
from ecg_dan.models.kernels import fast_kernels


class ChannelsLastConv1d(nn.Conv1d):
    """nn.Conv1d evaluated as a channels-last (B, C, 1, T) 2-D convolution on CPU.

    Same weights and output values; oneDNN's NHWC kernels run these 12/48-channel
    convolutions over 608 samples 2-3x faster (forward + backward) than the NCW path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not fast_kernels() or x.device.type != "cpu" or self.padding_mode != "zeros"
                or isinstance(self.padding, str)):
            return super().forward(x)
        return self.forward_2d(x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
                               ).squeeze(2)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        """The same convolution on a (B, C, 1, T) channels-last tensor."""
        return F.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]),
                        (0, self.padding[0]), (1, self.dilation[0]), self.groups)


class TimeConv2d(nn.Conv2d):
    """(1 x k) convolution along time; the single-channel case as one matrix product.

    For 1 -> 1 channels over (B, 1, 12, 608), oneDNN's convolution (forward + backward) is
    ~3x slower than multiplying the overlapping length-k windows (``unfold``, a view) by
    the k weights. The parameters are those of nn.Conv2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not fast_kernels() or self.in_channels != 1 or self.out_channels != 1
                or self.stride != (1, 1) or self.dilation != (1, 1)
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super().forward(x)
        k = self.kernel_size[1]
        pad = self.padding[1]
        windows = F.pad(x, (pad, pad)).unfold(-1, k, 1)  # (B, 1, H, T, k)
        out = windows @ self.weight.view(k)
        return out if self.bias is None else out + self.bias


class ResBlock2d(nn.Module):
    """Residual block of docs/method.md sections 2-3.

    ``mode="down"``: main path strided (1x5) conv, skip = MaxPool(1,2) + 1x1 conv.
    ``mode="up"``: ConvTranspose(1,4)/2 + 1x1 conv first (it becomes the identity),
    then the (1x5) convs. ``mode="same"``: no resampling, 1x1 conv on the skip path.
    Main path: conv -> BN -> LeakyReLU -> conv -> BN -> LeakyReLU; output GELU(main + skip).
    """

    def __init__(self, in_ch: int, out_ch: int, mode: str = "same", kernel: int = 5) -> None:
        super().__init__()
        if mode not in ("down", "up", "same"):
            raise ValueError(f"mode must be down/up/same, got {mode!r}")
        self.mode = mode
        pad = (0, (kernel - 1) // 2)
        if mode == "up":
            self.up = nn.ConvTranspose2d(in_ch, out_ch, (1, 4), stride=(1, 2), padding=(0, 1))
            self.up_proj = nn.Conv2d(out_ch, out_ch, 1, bias=False)
            first_in, stride = out_ch, 1
        else:
            first_in, stride = in_ch, 2 if mode == "down" else 1
            self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=True)
        self.conv1 = TimeConv2d(first_in, out_ch, (1, kernel), stride=(1, stride), padding=pad,
                                bias=False)
        self.bn1 = ChannelsLastBatchNorm2d(out_ch)
        self.conv2 = TimeConv2d(out_ch, out_ch, (1, kernel), padding=pad, bias=False)
        self.bn2 = ChannelsLastBatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = fast_kernels()
        if self.mode == "up":
            x = self._upsample(x) if fast else self.up_proj(self.up(x))
            identity = x
        elif self.mode == "down":
            identity = self.skip(F.max_pool2d(x, (1, 2)))
        else:
            identity = self.skip(x)
        if fast and not self.training:
            h = F.leaky_relu(_conv_bn_eval(self.conv1, self.bn1, x))
            h = F.leaky_relu(_conv_bn_eval(self.conv2, self.bn2, h))
        else:
            h = F.leaky_relu(self.bn1(self.conv1(x)))
            h = F.leaky_relu(self.bn2(self.conv2(h)))
        return F.gelu(h + identity)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        """``up_proj(up(x))`` on a channels-last x as one ordinary (1x3) convolution.

        Both are linear, so the 1x1 projection folds into the transposed convolution's
        weight and bias. That (1x4, stride 2, padding 1) transposed convolution gives output
        2t from inputs t-1, t (taps 3, 1) and output 2t+1 from t, t+1 (taps 2, 0): a (1x3)
        convolution with 2 x out channels, one per output phase, whose channels-last result
        is already the interleaved (B, leads, 2T, out) tensor. oneDNN runs this ~1.3x faster
        (forward + backward) than the transposed convolution, and the 1x1 pass is gone.
        """
        if self.up.weight.shape[2:] != (1, 4) or self.up.stride != (1, 2) \
                or self.up.padding != (0, 1) or not x.is_contiguous(
                    memory_format=torch.channels_last):
            return self.up_proj(self.up(x))
        proj = self.up_proj.weight.flatten(1)  # (out, out)
        w = torch.einsum("po,iok->pik", proj, self.up.weight.flatten(2))  # (out, in, 4)
        zero = w.new_zeros(w.shape[:2] + (1,))
        even = torch.cat([w[..., 3:4], w[..., 1:2], zero], -1)  # taps on x[t-1], x[t], x[t+1]
        odd = torch.cat([zero, w[..., 2:3], w[..., 0:1]], -1)
        weight = torch.cat([even, odd]).unsqueeze(2)  # (2 * out, in, 1, 3), phase-major
        bias = (proj @ self.up.bias).repeat(2)
        h = F.conv2d(x, weight, bias, 1, (0, 1))
        B, _, L, T = h.shape
        return h.permute(0, 2, 3, 1).reshape(B, L, 2 * T, -1).permute(0, 3, 1, 2)


def _conv_bn_eval(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))`` in eval mode as one convolution: the running statistics and affine
    parameters folded into the weight and bias (no separate normalisation pass)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bias, conv.stride, conv.padding)

"""Residual blocks over (B, C, leads, time) tensors, convolving along time only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock2d(nn.Module):
    """Residual block of METHOD.md sections 2-3.

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
        self.conv1 = nn.Conv2d(first_in, out_ch, (1, kernel), stride=(1, stride), padding=pad,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, (1, kernel), padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "up":
            x = self.up_proj(self.up(x))
            identity = x
        elif self.mode == "down":
            identity = self.skip(F.max_pool2d(x, (1, 2)))
        else:
            identity = self.skip(x)
        h = F.leaky_relu(self.bn1(self.conv1(x)))
        h = F.leaky_relu(self.bn2(self.conv2(h)))
        return F.gelu(h + identity)

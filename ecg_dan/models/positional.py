"""Fixed sinusoidal positional codes (Vaswani et al.), as in the reference encoder."""

from __future__ import annotations

import math

import torch


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table: sin on even, cos on odd feature indices."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table

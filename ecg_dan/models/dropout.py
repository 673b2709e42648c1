"""Batch-wise dropout: one mask per batch (docs/method.md section 4).

Inside a Cox risk set every subject must be scored by the same sub-network, otherwise the
partial likelihood compares risks computed with different features. Sharing the dropout
mask across the batch dimension guarantees that.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchwiseDropout(nn.Module):
    """Dropout whose mask is drawn once and broadcast along ``batch_dim``."""

    def __init__(self, p: float = 0.5, batch_dim: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.batch_dim = batch_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = list(x.shape)
        shape[self.batch_dim] = 1
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_dim={self.batch_dim}"


def make_dropout(p: float, batchwise: bool, batch_dim: int = 0) -> nn.Module:
    """Standard or batch-wise dropout, chosen by config."""
    return BatchwiseDropout(p, batch_dim) if batchwise else nn.Dropout(p)

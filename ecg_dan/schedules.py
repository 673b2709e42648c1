"""Per-step learning-rate schedule: linear warm-up then cosine decay to 0 (METHOD.md section 5)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.2):
    """Multiplier for ``LambdaLR``: 0 -> 1 over the warm-up steps, then cosine 1 -> 0."""
    total = max(int(total_steps), 1)
    warmup = int(round(total * warmup_fraction))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(params, lr: float, betas, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

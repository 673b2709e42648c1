"""Optimiser and per-step learning-rate schedule (docs/method.md sections 5 and 6).

``optim.schedule``: ``warmup_cosine`` (linear warm-up, then cosine decay to 0, stepped per
step; the paper's pretraining) or ``constant`` (the paper's finetuning). Both
LightningModules build their optimiser here, so the setting means the same in both stages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

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


def configure_optimization(params: Iterable[torch.nn.Parameter], lr: float,
                           optim: Mapping[str, Any], total_steps: int | None) -> Any:
    """AdamW with ``optim``'s betas and weight decay, plus its schedule, in the form
    Lightning's ``configure_optimizers`` returns."""
    opt = build_optimizer(list(params), lr, optim["betas"], optim["weight_decay"])
    if optim["schedule"] == "constant":
        return opt
    if optim["schedule"] != "warmup_cosine":
        raise ValueError(f"optim.schedule={optim['schedule']!r} is not one of "
                         "warmup_cosine, constant")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(int(total_steps or 1), optim["warmup_fraction"]))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

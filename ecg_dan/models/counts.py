"""Parameter counts of the finetuned network a config describes."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import OmegaConf

from ecg_dan.config import model_config
from ecg_dan.models import count_parameters
from ecg_dan.models.heads import DiscreteTimeHead, RiskHead
from ecg_dan.models.registry import build_model


def parameter_count(cfg: Any) -> float:
    """Parameters of the finetuned network (encoder + decoder + survival head) built from
    the run's ``model`` config; NaN for a run without a network (the Cox baselines)."""
    if OmegaConf.select(cfg, "task", default="finetune") != "finetune":
        return math.nan
    try:
        mc = model_config(cfg)
        net = build_model(mc)
    except (ValueError, TypeError, KeyError):
        return math.nan
    if OmegaConf.select(cfg, "finetune.objective", default="cox") == "logistic_hazard":
        head = DiscreteTimeHead(mc.latent_dim, int(cfg.finetune.n_time_bins))
    else:
        head = RiskHead(mc.latent_dim)
    return float(count_parameters(net.encoder) + count_parameters(net.decoder)
                 + count_parameters(head))

"""ECG-DAN network: backbone, attention branches, heads."""

from dataclasses import replace

from ecg_dan.config import ModelConfig
from ecg_dan.models.dropout import BatchwiseDropout
from ecg_dan.models.ecgdan import ECGDAN, ECGDANDecoder, ECGDANEncoder
from ecg_dan.models.heads import (
    ClassificationHead,
    DiscreteTimeHead,
    Projector,
    RiskHead,
    projector_sizes,
)
from ecg_dan.models.registry import build_model, model_names

__all__ = ["ECGDAN", "ECGDANDecoder", "ECGDANEncoder", "ModelConfig", "BatchwiseDropout",
           "ClassificationHead", "DiscreteTimeHead", "Projector", "RiskHead", "baseline_table",
           "count_parameters", "parameter_table", "projector_sizes"]


def count_parameters(module) -> int:
    """All parameters, trainable or not (the paper's table counts every parameter)."""
    return sum(p.numel() for p in module.parameters())


def parameter_table(cfg: ModelConfig) -> str:
    """Markdown table of parameter counts: the modules of docs/method.md's table for ``cfg``."""
    rows = [
        ("encoder", ECGDANEncoder(cfg)),
        ("decoder", ECGDANDecoder(cfg)),
        ("encoder without cross-lead attention",
         ECGDANEncoder(replace(cfg, cross_lead_attention=False))),
        ("encoder without temporal attention",
         ECGDANEncoder(replace(cfg, temporal_attention=False))),
        ("encoder without either", ECGDANEncoder(replace(cfg, cross_lead_attention=False,
                                                         temporal_attention=False))),
        ("ECG projector {}->{}->ReLU->{}".format(cfg.latent_dim, *projector_sizes(cfg.latent_dim)),
         Projector(cfg.latent_dim, cfg.latent_dim)),
        ("risk head", RiskHead(cfg.latent_dim)),
    ]
    lines = ["| module | parameters |", "|---|---:|"]
    lines += [f"| {name} | {count_parameters(m):,} |" for name, m in rows]
    return "\n".join(lines)


def baseline_table(cfg: ModelConfig) -> str:
    """Markdown table of the registered baselines' parameter counts (docs/method.md section
    7), each built from ``cfg`` with its own ``model.name``."""
    lines = ["| baseline | encoder | decoder | total |", "|---|---:|---:|---:|"]
    for name in model_names():
        if name == "ecg_dan":
            continue
        net = build_model(replace(cfg, name=name))
        lines.append(f"| {name} | {count_parameters(net.encoder):,} | "
                     f"{count_parameters(net.decoder):,} | {count_parameters(net):,} |")
    return "\n".join(lines)

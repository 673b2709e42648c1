"""Model registry: ``model.name`` in the config selects the backbone builder.

A backbone maps a (B, leads, samples) padded beat to ``{"z": (B, latent), "recon": (B,
leads, samples), ...attention maps}`` and exposes ``cfg``, ``encoder`` and ``decoder``; the
LightningModules, heads and jobs need nothing else, so a new model (e.g. a baseline) is one
file that registers itself plus one YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ecg_dan.config import ModelConfig
from ecg_dan.models.ecgdan import ECGDAN

__all__ = ["build_model", "model_names", "register_model"]

_REGISTRY: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[[ModelConfig], nn.Module]],
                                          Callable[[ModelConfig], nn.Module]]:
    def deco(builder: Callable[[ModelConfig], nn.Module]) -> Callable[[ModelConfig], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return deco


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def as_model_config(cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    return cfg if isinstance(cfg, ModelConfig) else ModelConfig(**dict(cfg))


def build_model(cfg: ModelConfig | Mapping[str, Any]) -> nn.Module:
    """The backbone named by ``cfg.name``, built from ``cfg``."""
    cfg = as_model_config(cfg)
    if cfg.name not in _REGISTRY:
        raise ValueError(f"model.name={cfg.name!r} is not a registered model; available: "
                         f"{', '.join(model_names())}")
    return _REGISTRY[cfg.name](cfg)


register_model("ecg_dan")(ECGDAN)

# The baselines (docs/method.md section 7) register themselves on import; importing them here
# makes every name available wherever build_model is.
from ecg_dan.models import resnet1d, vae  # noqa: E402, F401

"""Checks of a resolved config that ranges cannot express: every number finite, Trainer
options Lightning accepts, a model whose shapes fit together. Each returns the problem as
one sentence (None: fine); :func:`ecg_dan.config.validate` raises it as a ``ConfigError``
at load, before any data is read or any network built, instead of a traceback later.
Imports no torch or Lightning except to look up a rare strategy name."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ACCELERATORS", "PRECISIONS", "model_problem", "non_finite", "trainer_problem"]

#: ``trainer.precision`` values (Lightning's, plus ``auto``: ecg_dan/trainer.py).
PRECISIONS = ("auto", "transformer-engine", "transformer-engine-float16", "16-true",
              "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "64", "32", "16",
              "bf16")
#: ``trainer.accelerator`` values.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# common strategies, accepted without importing Lightning to look the name up
_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "deepspeed",
               "single_device")
_DEVICE_LIST = re.compile(r"\s*\d+\s*(,\s*\d+\s*)*,?\s*")


def non_finite(container: Any, prefix: str = "") -> str | None:
    """The first ``key=value`` whose value is a NaN or infinite float (no setting of this
    project means anything at infinity: ``inf`` is a typo or an overflow)."""
    if isinstance(container, Mapping):
        items = ((f"{prefix}{k}", v) for k, v in container.items())
    elif isinstance(container, (list, tuple)):
        items = ((f"{prefix[:-1]}[{i}]", v) for i, v in enumerate(container))
    else:
        return None
    for key, v in items:
        if isinstance(v, float) and not math.isfinite(v):
            return f"{key}={v}: must be a finite number"
        found = non_finite(v, f"{key}.") if isinstance(v, (Mapping, list, tuple)) else None
        if found:
            return found
    return None


def _strategy_names() -> list[str]:
    # deferred: Lightning (seconds to import), only for a strategy name not in _STRATEGIES
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def _devices_problem(devices: Any) -> str | None:
    if isinstance(devices, bool):
        return "a count, a list of GPU indices, or auto"
    if isinstance(devices, int):
        return None if devices == -1 or devices >= 1 else "a count >= 1 (or -1: all)"
    if isinstance(devices, str):
        d = devices.strip()
        if d == "auto" or d == "-1" or _DEVICE_LIST.fullmatch(d):
            return None if d not in ("0",) else "a count >= 1 (or -1: all)"
        return "a count, a list of GPU indices such as 0,1, or auto"
    if isinstance(devices, (list, tuple)):
        ok = devices and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                             for i in devices) and len(set(devices)) == len(devices)
        return None if ok else "a non-empty list of distinct GPU indices >= 0"
    return "a count, a list of GPU indices, or auto"


def trainer_problem(trainer: Mapping[str, Any]) -> str | None:
    """``precision``, ``accelerator``, ``strategy`` and ``devices`` as Lightning takes them."""
    precision = str(trainer.get("precision"))
    if precision not in PRECISIONS:
        return f"trainer.precision={precision!r}: expected one of {', '.join(PRECISIONS)}"
    accelerator = str(trainer.get("accelerator"))
    if accelerator not in ACCELERATORS:
        return (f"trainer.accelerator={accelerator!r}: expected one of "
                f"{', '.join(ACCELERATORS)}")
    strategy = str(trainer.get("strategy"))
    if strategy not in _STRATEGIES:
        names = _strategy_names()
        if strategy not in names:
            return f"trainer.strategy={strategy!r}: expected one of {', '.join(names)}"
    devices = trainer.get("devices")
    want = _devices_problem(devices)
    if want:
        return f"trainer.devices={devices!r}: expected {want}"
    return None


def model_problem(model: Mapping[str, Any], where: str = "model") -> str | None:
    """Sizes that build no network (``latent_dim`` 0, heads that do not divide the width,
    a beat length the downsampling does not divide), named as ``<where>.<key>``; the
    architecture's own rules (ecg_dan/models/ecgdan.py, attention.py)."""
    sizes = ("n_leads", "seq_len", "base_features", "latent_dim", "temporal_heads",
             "lead_heads", "mlp_ratio")
    for key in (*sizes, "n_down"):
        v = model.get(key)
        lo = 0 if key == "n_down" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            return f"{where}.{key}={v!r}: must be an integer >= {lo}"
    for key in ("attn_dropout", "kl_weight"):
        v = model.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0 or (key == "attn_dropout" and v >= 1):
            rule = "in [0, 1)" if key == "attn_dropout" else ">= 0"
            return f"{where}.{key}={v!r}: must be a number {rule}"
    if model["latent_dim"] % 2:
        return (f"{where}.latent_dim={model['latent_dim']}: must be even (z is an average- "
                "and a max-pooled half)")
    step = 2 ** model["n_down"]
    if model["seq_len"] % step:
        return (f"{where}.seq_len={model['seq_len']} is not divisible by 2**n_down={step} "
                f"({where}.n_down={model['n_down']})")
    mult = [1, 2, 4, 4, 4, 4] + [4] * max(0, model["n_down"] - 5)  # ModelConfig.widths
    feat = model["base_features"] * mult[model["n_down"]]
    tokens = model["seq_len"] // step
    if model.get("temporal_attention", True) and feat % model["temporal_heads"]:
        return (f"{where}.temporal_heads={model['temporal_heads']} does not divide the "
                f"temporal attention width {feat} (base_features x {mult[model['n_down']]})")
    if model.get("cross_lead_attention", True) and (feat * tokens) % model["lead_heads"]:
        return (f"{where}.lead_heads={model['lead_heads']} does not divide the cross-lead "
                f"attention width {feat * tokens}")
    return None

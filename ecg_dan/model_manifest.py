"""The shape of a model file's manifest and tensors (:mod:`ecg_dan.model_file`), checked
before anything is built from them. The content hash proves a file is intact, not who
wrote it: anyone can write a file whose hash matches, so every field the scorer reads is
checked for its type and range here, and a malformed one is refused as one sentence (the
model file's ``ModelFileError``) instead of failing later with a traceback."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch

from data_modules.choices import TIME_UNITS
from ecg_dan.config import ModelConfig
from ecg_dan.config_checks import model_problem

__all__ = ["manifest_problem"]

OBJECTIVES = ("cox", "logistic_hazard")
_MEMBER = re.compile(r"m(\d+)\.")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _vector(tensors: Mapping[str, torch.Tensor], name: str) -> str | None:
    """Why tensor ``name`` is not a non-empty finite 1-D float vector (None: it is)."""
    t = tensors.get(name)
    if t is None:
        return f"tensor {name} is missing"
    if t.ndim != 1 or t.numel() == 0 or not t.is_floating_point():
        return f"tensor {name} must be a non-empty 1-D float vector, has shape {tuple(t.shape)}"
    if not torch.isfinite(t).all():
        return f"tensor {name} holds NaN or infinite values"
    return None


def _run_problem(run: Any) -> str | None:
    if not isinstance(run, Mapping):
        return f"'run' must be a table, found {type(run).__name__}"
    if run.get("objective") not in OBJECTIVES:
        return f"run.objective {run.get('objective')!r}: expected one of {OBJECTIVES}"
    if run.get("time_unit") not in TIME_UNITS:
        return f"run.time_unit {run.get('time_unit')!r}: expected one of {TIME_UNITS}"
    top = run.get("top_fraction")
    if not _number(top) or not 0 < top < 1:
        return f"run.top_fraction {top!r}: expected a number in (0, 1)"
    h = run.get("horizons")
    if not isinstance(h, list) or not h or not all(_number(x) and x > 0 for x in h):
        return f"run.horizons {h!r}: expected a non-empty list of numbers > 0"
    for key in ("name", "cohort"):
        if not isinstance(run.get(key), str):
            return f"run.{key} {run.get(key)!r}: expected a string"
    return None


def _member_problem(i: int, info: Any, tensors: Mapping[str, torch.Tensor], objective: str
                    ) -> str | None:
    if not isinstance(info, Mapping):
        return f"members[{i}] must be a table, found {type(info).__name__}"
    for key in ("seed", "fold"):
        if not _integer(info.get(key)):
            return f"members[{i}].{key} {info.get(key)!r}: expected an integer"
    for key in ("offset", "slope"):
        if not _number(info.get(key)):
            return f"members[{i}].{key} {info.get(key)!r}: expected a finite number"
    names = ["baseline_times", "baseline_cumhaz", "heldout_risk"]
    names += ["cuts"] if objective != "cox" else []
    for name in names:
        problem = _vector(tensors, f"m{i}.{name}")
        if problem:
            return problem
    times, cumhaz = tensors[f"m{i}.baseline_times"], tensors[f"m{i}.baseline_cumhaz"]
    if times.shape != cumhaz.shape:
        return (f"tensors m{i}.baseline_times and m{i}.baseline_cumhaz differ in length "
                f"({times.numel()} vs {cumhaz.numel()})")
    if (times.diff() < 0).any() or (cumhaz < 0).any() or (cumhaz.diff() < 0).any():
        return (f"members[{i}]: baseline times and cumulative hazards must be "
                "non-decreasing and >= 0")
    return None


def manifest_problem(manifest: Any, tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first field of a model file that the scorer cannot use, as a sentence; None when
    every field has its type and range and the members match the tensors."""
    if not isinstance(manifest, Mapping):
        return f"the manifest must be a table, found {type(manifest).__name__}"
    for key, kind in (("run", Mapping), ("config", Mapping), ("model_config", Mapping),
                      ("preprocessing", Mapping), ("members", list),
                      ("reference", Mapping)):
        if not isinstance(manifest.get(key), kind):
            what = "absent" if key not in manifest else type(manifest[key]).__name__
            return (f"manifest field '{key}' must be a "
                    f"{'list' if kind is list else 'table'}, found {what}")
    problem = _run_problem(manifest["run"])
    if problem:
        return problem
    config = manifest["config"]
    for key in ("finetune", "optim"):
        if not isinstance(config.get(key), Mapping):
            return f"config.{key} must be a table"
    known = {f.name for f in fields(ModelConfig)}
    if known <= set(manifest["model_config"]):  # else: model_file names the keys it lacks
        problem = model_problem(manifest["model_config"], "model_config")
        if problem:
            return problem
    members = manifest["members"]
    in_tensors = {int(m.group(1)) for k in tensors if (m := _MEMBER.match(k))}
    if not members or in_tensors != set(range(len(members))):
        return (f"'members' lists {len(members)} fold model(s), the tensors hold "
                f"{len(in_tensors)}")
    objective = manifest["run"]["objective"]
    for i, info in enumerate(members):
        problem = _member_problem(i, info, tensors, objective)
        if problem:
            return problem
    threshold = manifest["reference"].get("high_risk_threshold")
    if not _number(threshold):
        return f"reference.high_risk_threshold {threshold!r}: expected a finite number"
    return _vector(tensors, "reference_risk")

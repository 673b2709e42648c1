"""Nested results flattened: ``{"a/b": number}`` for W&B summaries, ``{row label:
number}`` for the encoder-evaluation tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def flat_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    """Nested results -> ``{"a/b/c": number}`` (non-numbers and non-finite numbers dropped)."""
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(flat_numbers(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(d, (bool, np.bool_)):
        out[prefix] = float(d)
    elif isinstance(d, (int, float, np.integer, np.floating)) and np.isfinite(d):
        out[prefix] = float(d)
    return out


def flatten_results(result: Mapping[str, Any]) -> dict[str, float]:
    """Result dict of this module -> ``{row label: number}`` for a table."""
    kind = result.get("kind")
    if kind == "linear_probe":
        rows = {"linear probe macro-AUROC": result["macro_auroc"]}
        rows.update({f"linear probe AUROC {c}": v["auroc"] for c, v in result["per_class"].items()})
        return rows
    if kind == "retrieval":
        rows = {f"ECG→text recall@{k}": v for k, v in result["recall"].items()}
        rows["ECG→text median rank"] = result["median_rank"]
        rows["distinct texts"] = result["n_distinct_texts"]
        return rows
    if kind == "zero_shot":
        rows = {"zero-shot macro-AUROC": result["macro_auroc"]}
        rows.update({f"zero-shot AUROC {c}": v["auroc"] for c, v in result["per_class"].items()})
        rows["zero-shot top-1 hit"] = result["top1_hit"]
        return rows
    if kind is None and all(isinstance(v, (int, float, np.number)) for v in result.values()):
        return {str(k): v for k, v in result.items()}
    raise ValueError(f"cannot tabulate result of kind {kind!r}")


def flatten_run(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping) and "kind" in value:
        return flatten_results(value)
    if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values()):
        merged: dict[str, float] = {}
        for v in value.values():
            merged.update(flatten_run(v))
        return merged
    if isinstance(value, Mapping):
        return flatten_results(value)
    if isinstance(value, (list, tuple)):
        merged = {}
        for v in value:
            merged.update(flatten_run(v))
        return merged
    raise ValueError(f"cannot tabulate {type(value).__name__}")

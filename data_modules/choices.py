"""Allowed values and defaults of data settings (``Literal`` types): the builders check against them
and the config schema (``ecg_dan/config.py``) declares its fields with them, so the two
cannot drift apart. Kept free of heavy imports so the CLI starts fast."""

from __future__ import annotations

from typing import Literal, get_args

TimeUnit = Literal["months", "days"]  # months = days / 30 + 1 (the paper's conversion)
Cohort = Literal["hyp", "mi", "all"]
TIME_UNITS: tuple[str, ...] = get_args(TimeUnit)
COHORTS: tuple[str, ...] = get_args(Cohort)
# Largest beat arrays held in memory per cache, MiB (data.in_memory_max_mb; above it a
# dataset reads records from the file).
IN_MEMORY_MAX_MB = 4096

"""SaMi-Trop (Zenodo 4905618): CODE-15%'s layout with one ``exams.hdf5`` whose ``tracings`` rows
follow ``exams.csv`` (no ``exam_id`` dataset) and no ``patient_id`` (one exam per patient);
the outcome is all-cause death (``death``, ``timey``). Read by :mod:`data_modules.sources.code15`
(units, padding, leads, skips: its docstring); an external-validation cohort for a CODE-15%
model (``ecg-dan predict --model RUN samitrop.h5`` reports the C-index)."""

from __future__ import annotations

import os

from data_modules.cache import WHOLE, BuildSummary, Shard
from data_modules.signal.median_beat import MAX_ABS_MV
from data_modules.sources.code15 import MV_PER_UNIT, build_code15_cache


def build_samitrop_cache(root: str | os.PathLike, out: str | os.PathLike,
                         time_unit: str = "months", workers: int = 2, progress: bool = True,
                         shard: Shard = WHOLE, mv_per_unit: float = MV_PER_UNIT,
                         max_abs_mv: float = MAX_ABS_MV) -> BuildSummary:
    """The cohort cache of a SaMi-Trop folder (``exams.csv`` + ``exams.hdf5``) at ``out``."""
    return build_code15_cache(root, out, time_unit=time_unit, workers=workers,
                              progress=progress, shard=shard, source="samitrop",
                              mv_per_unit=mv_per_unit, max_abs_mv=max_abs_mv)

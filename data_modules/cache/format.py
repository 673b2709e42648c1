"""What a cache file is: its kinds, schema version, required and finite datasets, and the
canonical build config that decides whether a cache can be reused (docs/data_formats.md)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import h5py

from data_modules.errors import DataError

SCHEMA_VERSION = 1
KINDS = ("ptbxl", "ukb", "cohort", "corpus")
# Kinds a survival run can finetune on and predict/evaluate against (one layout: eid, time,
# event, median, age, sex; UK Biobank adds its cohort flags and device measurements).
SURVIVAL_KINDS = ("ukb", "cohort")
STR_DTYPE = h5py.string_dtype()


# Kinds pretraining reads: PTB-XL (SCP labels) and unlabelled report corpora (MIMIC-IV-ECG).
PRETRAIN_KINDS = ("ptbxl", "corpus")


KIND_NAMES = {"ptbxl": "PTB-XL", "ukb": "UK Biobank", "cohort": "survival cohort",
              "corpus": "pretraining corpus"}
# The id column that names a row in messages, per kind.
ID_DATASET = {"ptbxl": "ecg_id", "ukb": "eid", "cohort": "eid", "corpus": "record_id"}
# Root attributes that count something over the rows: ``ecg-dan cache merge`` sums them over
# the parts (every other root attribute of a kind must be equal in all parts).
COUNT_ATTRS = ("n_records", "ptbxl_plus_rescaled_uV")
# Datasets that must hold only finite values (checked when a cache is opened).
FINITE_DATASETS: dict[str, tuple[str, ...]] = {
    "ptbxl": ("median", "median_clean"),
    "ukb": ("median", "time"),
    "cohort": ("median", "time"),
    "corpus": ("median", "median_clean"),
}


class CacheError(DataError):
    """A cache file that cannot be used (missing, incomplete, wrong kind, schema, layout or
    non-finite values). A :class:`DataError` (hence a ``ValueError``)."""


# Datasets every reader relies on (docs/data_formats.md), checked when a cache is opened.
REQUIRED_DATASETS: dict[str, tuple[str, ...]] = {
    "ptbxl": ("median", "median_clean", "strat_fold", "superclass", "ecg_id"),
    "ukb": ("median", "eid", "time", "event", "cohort_hyp", "cohort_mi"),
    # CODE-15%, SaMi-Trop, a user's own table (``ecg-dan cache code15|samitrop|cohort``)
    "cohort": ("median", "eid", "time", "event", "age", "sex"),
    # a pretraining corpus of ECGs with report text and no labels (``ecg-dan cache mimic``):
    # record_id (MIMIC: study_id), patient_id (subject_id), fold 1..10 per patient, report
    "corpus": ("median", "median_clean", "record_id", "patient_id", "fold", "report"),
}


def file_digest(path: str | os.PathLike, algorithm: str = "sha1") -> str:
    """Hex digest of a file's content, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha1_file(path: str | os.PathLike) -> str:
    """Content hash of a source table, stored in build configs so an edited input is rebuilt."""
    return file_digest(path, "sha1")


def config_json(build_config: Mapping[str, Any]) -> str:
    """Canonical JSON of a build config (sorted keys) so equal configs compare equal."""
    return json.dumps(dict(build_config), sort_keys=True, default=str)

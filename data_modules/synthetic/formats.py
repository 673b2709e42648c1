"""The synthetic twins ``ecg-dan synth --format NAME`` writes, one writer per source format.

Each writer takes ``(out_dir, n, seed, events, setting, **kw)`` and returns a dict of the
paths it wrote (printed by the CLI). A new source registers its twin here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_modules.synthetic import make_synthetic
from data_modules.synthetic.code15_format import code15_format, samitrop_format
from data_modules.synthetic.cohort_format import write_cohort
from data_modules.synthetic.mimic_format import write_mimic
from data_modules.synthetic.muse_format import write_muse
from data_modules.synthetic.settings import twin_setting


def _ptbxl_ukb(out: Path, n: int, seed: int, events: str, setting: str,
               n_ukb: int | None = None) -> dict[str, Any]:
    return make_synthetic(out, n=n, seed=seed, events=events, n_ukb=n_ukb, setting=setting)


def _mimic(out: Path, n: int, seed: int, events: str, setting: str) -> dict[str, Any]:
    root, _ = write_mimic(Path(out) / "mimic", n=n, seed=seed, setting=twin_setting(setting))
    return {"mimic": root}


# name -> writer; "ptbxl+ukb" is the default (PTB-XL + UK Biobank CardioSoft XML); "mimic":
# MIMIC-IV-ECG (``n`` studies; ``events`` unused: a pretraining corpus has no outcomes);
# "muse": a folder of GE MUSE XML files; "cohort": a user's own cohort (mixed ECG files +
# cohort.csv)
FORMATS: dict[str, Callable[..., dict[str, Any]]] = {
    "ptbxl+ukb": _ptbxl_ukb,
    "code15": code15_format,  # CODE-15%: exams.csv + exams_part*.hdf5
    "samitrop": samitrop_format,  # SaMi-Trop: exams.csv + exams.hdf5
    "mimic": _mimic,
    "muse": write_muse,
    "cohort": write_cohort,
}

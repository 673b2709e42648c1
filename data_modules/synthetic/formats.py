"""The synthetic twins ``ecg-dan synth --format NAME`` writes, one writer per source format.

Each writer takes ``(out_dir, n, seed, events, setting, **kw)`` and returns a dict of the
paths it wrote (printed by the CLI). A new source registers its twin here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_modules.synthetic import make_synthetic
from data_modules.synthetic.cohort_format import write_cohort
from data_modules.synthetic.muse_format import write_muse


def _ptbxl_ukb(out: Path, n: int, seed: int, events: str, setting: str,
               n_ukb: int | None = None) -> dict[str, Any]:
    return make_synthetic(out, n=n, seed=seed, events=events, n_ukb=n_ukb, setting=setting)


# name -> writer; "ptbxl+ukb" is the default (PTB-XL + UK Biobank CardioSoft XML); "muse": a
# folder of GE MUSE XML files; "cohort": a user's own cohort (mixed ECG files + cohort.csv)
FORMATS: dict[str, Callable[..., dict[str, Any]]] = {
    "ptbxl+ukb": _ptbxl_ukb, "muse": write_muse, "cohort": write_cohort}

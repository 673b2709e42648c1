"""Bounded cost for every input: declared sizes are checked against these limits before a
file is parsed, its samples read or a model built, so one hostile or corrupt file costs
milliseconds instead of gigabytes or minutes (docs/data_formats.md, "Limits").

A 12-lead ECG has 8-15 signals, 10 s to a few minutes of samples and is kilobytes to a few
MB; the defaults are far above that and far below what hurts. Each limit can be changed
for one run with its environment variable (``ECG_DAN_MAX_<NAME>``, e.g.
``ECG_DAN_MAX_XML_MB=64``); workers inherit it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from data_modules.errors import DataError, RecordSkip

__all__ = ["LIMITS", "Limit", "LimitExceeded", "check_file_size", "limit"]


@dataclass(frozen=True)
class Limit:
    """One limit: its default, unit and what it bounds (the env var is derived)."""

    default: float
    unit: str
    what: str
    scale: int = 1  # the unit in the counted quantity (bytes per MiB, ...)

    def env(self, name: str) -> str:
        return f"ECG_DAN_MAX_{name}"


LIMITS: dict[str, Limit] = {
    "WFDB_HEADER_KB": Limit(64, "KiB", "size of a WFDB header (.hea)", 1024),
    "WFDB_SIGNALS": Limit(24, "signals", "signals declared by one WFDB record"),
    "WFDB_SAMPLES": Limit(1_000_000, "samples", "samples per signal declared by one WFDB "
                                                "record (1000 s at 1 kHz)"),
    "WFDB_DAT_MB": Limit(128, "MiB", "size of a WFDB record's signal files (.dat)", 2**20),
    "XML_MB": Limit(16, "MiB", "size of one CardioSoft / MUSE XML file", 2**20),
    "MODEL_MB": Limit(2048, "MiB", "size of a model file given to predict", 2**20),
    "FILE_SECONDS": Limit(120, "s", "time to read one input file in a worker (predict and "
                                    "cache builds)"),
}


class LimitExceeded(RecordSkip):
    """An input beyond a limit of :data:`LIMITS`, refused before it was read (a skip for a
    batch, an error naming the file and the variable to raise for a single input)."""


def limit(name: str) -> float:
    """The limit ``name`` in its unit: ``ECG_DAN_MAX_<name>`` when set, else the default."""
    lim = LIMITS[name]
    raw = os.environ.get(lim.env(name), "").strip()
    if not raw:
        return float(lim.default)
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise DataError(f"{lim.env(name)}={raw!r}: expected a positive number of {lim.unit} "
                        f"({lim.what}; default {lim.default:g})")
    return v


def over(name: str, value: float, where: str) -> LimitExceeded | None:
    """The refusal of ``value`` (in the counted quantity: bytes for a size) for ``name``,
    naming ``where``; None when within the limit."""
    lim = LIMITS[name]
    cap = limit(name)
    if value <= cap * lim.scale:
        return None
    shown = f"{value / lim.scale:.1f}" if lim.scale > 1 else _num(value)
    return LimitExceeded(f"over limit: {where}: {shown} {lim.unit}, over the limit of "
                         f"{_num(cap)} {lim.unit} for the {lim.what} ({lim.env(name)} "
                         "raises it)")


def _num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:g}"


def check_file_size(path: str | os.PathLike, name: str, where: str | None = None) -> int:
    """The size of ``path`` in bytes; :class:`LimitExceeded` when over the limit ``name``
    (checked with ``stat``, before anything is read). A missing file is left to the reader."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return 0
    err = over(name, size, where or str(path))
    if err is not None:
        raise err
    return size

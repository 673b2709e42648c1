"""Where a command that writes files given by ``--out`` may write: never over an existing file
without ``--overwrite``, never two of its outputs onto one path, and (``predict``) never into a
run directory, whose files only the run's own jobs write. Checked before any work starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ecg_dan.config import ConfigError
from ecg_dan.run_dir import RunDir

__all__ = ["OutputError", "check_outputs", "enclosing_run"]


class OutputError(ConfigError):
    """An output path that would overwrite a file or write into a run directory."""


def enclosing_run(path: str | os.PathLike) -> Path | None:
    """The ecg-dan run directory ``path`` lies in (itself or a folder above), or None."""
    p = Path(os.path.abspath(path))
    for folder in (p, *p.parents):
        if folder.is_dir() and RunDir(folder).is_run():
            return folder
    return None


def check_outputs(outputs: Mapping[str, Path], overwrite: bool = False,
                  outside_runs: bool = False) -> None:
    """Refuse, naming the path, outputs (``what -> path``) that coincide, that exist (unless
    ``overwrite``) or, with ``outside_runs``, that lie inside a run directory."""
    seen: dict[Path, str] = {}
    for what, path in outputs.items():
        key = Path(os.path.abspath(path))
        if key in seen:
            raise OutputError(f"{path}: would be both the {seen[key]} and the {what}; give "
                              "--out another name")
        seen[key] = what
        if outside_runs and (run := enclosing_run(key)) is not None:
            raise OutputError(f"{path}: inside the run directory {run}, whose files only its "
                              "own jobs write; give --out a path outside it")
        if key.exists() and not overwrite:
            raise OutputError(f"{path} exists (the {what}); pass --overwrite to replace it")

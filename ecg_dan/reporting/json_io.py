"""JSON as every result file of the project writes it (numpy numbers as plain numbers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from data_modules.atomic import atomic_write_text

__all__ = ["json_default", "write_json"]


def json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default))

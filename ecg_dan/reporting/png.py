"""One way every figure of the project is written: a PNG, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from data_modules.atomic import atomic_path


def save_png(fig: Any, out_png: str | os.PathLike) -> Path:
    """A matplotlib figure written atomically as a PNG (every figure of the project)."""
    out = Path(out_png)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out

"""Shared fixtures: real PTB-XL sample location, quiet W&B, deterministic seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_DEFAULT_PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl-500"


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    """Real PTB-XL records (ECG_DAN_PTBXL_DIR, or ../shared/data/ptbxl-500 beside the checkout)."""
    path = Path(os.environ.get("ECG_DAN_PTBXL_DIR", _DEFAULT_PTBXL))
    if not (path / "ptbxl_database.csv").is_file():
        pytest.skip(f"real PTB-XL sample not found at {path} (set ECG_DAN_PTBXL_DIR)")
    return path

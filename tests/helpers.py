"""Helpers shared by test modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"


def run_check_script(name: str, timeout: int = 120) -> str:
    """Run ``tests/scripts/<name>`` (multi-process checks cannot run inside pytest: DDP would
    re-launch pytest), require exit 0 and return its stdout."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / name)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout

"""Helpers shared by test modules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"


def run_check_script(name: str, timeout: int = 120) -> str:
    """Run ``tests/scripts/<name>`` (multi-process checks cannot run inside pytest: DDP would
    re-launch pytest), require exit 0 and return its stdout."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / name)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout


@dataclass(frozen=True)
class DDPChecks:
    """The output of one run of ``tests/scripts/ddp_all.py`` (every DDP check script's checks
    in one 2-process world, see there)."""

    stdout: str
    stderr: str
    returncode: int

    def passed(self, name: str) -> str:
        """Rank 0's lines of check script ``name`` (``ddp_cox`` ...); fails the calling test,
        with the run's output, unless that check passed."""
        head, end = f"== {name}\n", f"{name}: all checks passed\n"
        ok = head in self.stdout and end in self.stdout.split(head, 1)[1]
        assert ok, (f"{name} did not pass (exit {self.returncode})\nstdout:\n{self.stdout}\n"
                    f"stderr:\n{self.stderr[-4000:]}")
        return self.stdout.split(head, 1)[1].split(end, 1)[0] + end


def run_ddp_checks(timeout: int = 600) -> DDPChecks:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "ddp_all.py")], capture_output=True,
                          text=True, timeout=timeout)
    return DDPChecks(proc.stdout, proc.stderr, proc.returncode)

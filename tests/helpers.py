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


def free_port() -> int:
    """A TCP port free on localhost now (for a rendezvous a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun_nodes(args: list[str], nnodes: int = 2, env: dict | None = None,
                       timeout: int = 300) -> list[str]:
    """``python -m ecg_dan ARGS`` as ``nnodes`` nodes of one process each: one
    ``torchrun --nnodes N --node-rank R`` per node, all on this machine (localhost
    rendezvous, gloo). Requires every node to exit 0 within ``timeout`` seconds (all are
    killed otherwise) and returns each node's output."""
    import os

    port = free_port()
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", **(env or {})}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
         "--nproc-per-node", "1", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "ecg_dan", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for rank in range(nnodes)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {rank} exited {p.returncode}:\n{out[-4000:]}"
    return outs


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

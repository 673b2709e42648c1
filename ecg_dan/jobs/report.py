"""Job: ``ecg-dan report``, one self-contained HTML file of a run or a matrix
(:mod:`ecg_dan.reporting.html_report`), written atomically and, where the run's config
enables W&B, logged there as an HTML panel beside the job's figures and tables."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from data_modules.atomic import atomic_write_text
from ecg_dan.jobs.common import log_wandb_summary
from ecg_dan.log import get_logger
from ecg_dan.reporting.html_report import build_report, default_out

log = get_logger(__name__)


def run_report(target: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of ``target`` (a run or matrix directory) to ``out`` (default:
    ``target/report.html``); returns its path."""
    report = build_report(target)
    out = Path(out) if out is not None else default_out(target)
    atomic_write_text(out, report.html)
    log.info(f"report ({report.kind}): {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if report.cfg is not None:
        cfg = report.cfg.copy()
        OmegaConf.update(cfg, "run_dir", str(Path(target)))
        log_wandb_summary(cfg, "report", {}, html=out)
    return out

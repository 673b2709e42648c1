"""Job: the embedded default, synthetic data -> short pretraining -> finetuning -> results."""

from __future__ import annotations

from typing import Any

from ecg_dan.config import load_config
from ecg_dan.jobs.finetune import run_finetune
from ecg_dan.jobs.pretrain import run_pretrain
from ecg_dan.log import get_logger

log = get_logger(__name__)


def run_demo(overrides: list[str] | None = None) -> dict[str, Any]:
    overrides = list(overrides or [])
    pre = load_config("demo_pretrain", overrides)
    out = run_pretrain(pre)
    fin = load_config("demo_finetune", [f"finetune.ckpt={out['checkpoint']}", *overrides])
    run_dir = run_finetune(fin)
    log.info(f"\ndemo finished: pretraining {pre.run_dir}, finetuning {run_dir}")
    return {"pretrain": out, "finetune": run_dir}

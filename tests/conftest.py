"""Shared fixtures: real PTB-XL sample location, quiet W&B, deterministic seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecg_dan.log import get_logger

get_logger()  # the ecg_dan/data_modules loggers print to (captured) stdout, as under the CLI

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


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """The ``+tiny`` synthetic twin and its caches, built once for the whole session."""
    from ecg_dan.config import load_config
    from ecg_dan.jobs.data import ptbxl_cache, ukb_cache

    root = tmp_path_factory.mktemp("tiny-data")
    cfg = load_config("demo_finetune", ["+tiny", f"data.root={root}"])
    ptbxl_cache(cfg)
    ukb_cache(cfg)
    return root


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tiny_data_root) -> Path:
    """A one-epoch pretraining checkpoint on the tiny twin (session-wide)."""
    from ecg_dan.config import load_config
    from ecg_dan.jobs.pretrain import run_pretrain

    run = tmp_path_factory.mktemp("tiny-pre")
    out = run_pretrain(load_config("demo_pretrain", [
        "+tiny", f"data.root={tiny_data_root}", f"run_dir={run}",
        "trainer.limit_val_batches=2", "pretrain.evaluate=true"]))
    assert (run / "pretrain_eval.json").is_file()  # the job's own evaluation step ran
    return Path(out["checkpoint"])


def _tiny_finetune(tmp_path_factory, data_root: Path, name: str, *extra: str) -> Path:
    from ecg_dan.config import load_config
    from ecg_dan.jobs.finetune import run_finetune

    run = tmp_path_factory.mktemp(name) / "run"
    return run_finetune(load_config("demo_finetune", [
        "+tiny", f"data.root={data_root}", f"run_dir={run}", "finetune.scratch=true",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", *extra]))


@pytest.fixture(scope="session")
def tiny_cox_run(tmp_path_factory, tiny_data_root) -> Path:
    """A finished Cox finetuning run from scratch on the tiny twin (one step per fold, two
    folds, no bootstrap), session-wide: tests read it (``explain`` adds its own folder);
    copy it before changing anything in it."""
    return _tiny_finetune(tmp_path_factory, tiny_data_root, "tiny-cox", "finetune.n_boot=0")


@pytest.fixture(scope="session")
def tiny_lh_run(tmp_path_factory, tiny_data_root) -> Path:
    """A finished logistic-hazard (6 time bins) run from scratch on the tiny twin, as
    ``tiny_cox_run``."""
    return _tiny_finetune(tmp_path_factory, tiny_data_root, "tiny-lh",
                          "finetune.objective=logistic_hazard", "finetune.n_time_bins=6")


@pytest.fixture(scope="session")
def ddp_checks():
    """Every 2-process DDP check script, run once in one world (tests/scripts/ddp_all.py):
    multi-process checks cannot run inside pytest (DDP would re-launch pytest), and one
    subprocess pays the interpreter and torch imports once instead of once per script."""
    from tests.helpers import run_ddp_checks

    return run_ddp_checks()

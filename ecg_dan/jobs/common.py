"""Run-directory helpers shared by the jobs: seeding, config consistency, W&B summaries."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from data_modules.cache.fingerprint import cache_fingerprint, fingerprint_changes
from ecg_dan.config import (
    ConfigError,
    ExperimentConfig,
    config_diff,
    load_saved_config,
    result_config,
    saved_container,
)
from ecg_dan.log import get_logger, is_rank_zero
from ecg_dan.reporting.flatten import flat_numbers
from ecg_dan.run_dir import RunDir
from ecg_dan.trainer import wandb_mode

log = get_logger(__name__)


def seed(cfg: DictConfig, value: int | None = None) -> None:
    L.seed_everything(int(cfg.seed if value is None else value), workers=True, verbose=False)


def prepare_run_dir(cfg: DictConfig, ignore: tuple[str, ...] = ()) -> Path:
    """Create the run directory, or check that an existing one was made by the same config.

    The run records the hash of its result-relevant config (``run.json``). A re-run with the
    same config resumes; with another config it stops naming the differing keys, unless
    ``resume=restart``, which moves the old directory aside (nothing is deleted). ``ignore``
    lists further keys that may change between runs (e.g. pretraining's ``max_epochs``, to
    train longer from ``last.ckpt``).
    """
    rd = RunDir(cfg.run_dir)
    run_dir = rd.path
    new = _strip(result_config(cfg), ignore)
    # Under DDP every rank runs the job (started later by Lightning's launcher, or at once by
    # torchrun/srun): all check, so that all stop on a changed config, but rank 0 alone moves
    # and writes the run's files (another rank could move aside the run rank 0 just began).
    lead = is_rank_zero()
    rd.check_owned()  # a folder that is not a run is neither written into nor moved aside
    if cfg.resume == "restart" and rd.is_run():
        if lead:
            aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.move(str(run_dir), aside)
            log.info(f"resume=restart: previous run moved to {aside}")
    elif (recorded := rd.read_record()) is not None:
        old = _strip(recorded, ignore)
        diff = _real_diff(old, new)
        if diff:
            raise ConfigError(
                f"{run_dir} holds results of another configuration (differing keys: "
                f"{', '.join(diff)}). Use a new run name (name=... or run_dir=...) or "
                "resume=restart to move the old run aside and start over.")
    elif rd.has_outputs():
        if rd.has_config():  # a run from before run.json existed: compare its saved config
            try:
                old = _strip(result_config(load_saved_config(rd.config_path)), ignore)
            except ConfigError:
                old = {}
            diff = _real_diff(old, new)
            if diff:
                raise ConfigError(f"{run_dir} holds results of another configuration "
                                  f"(differing keys: {', '.join(diff)}). Use a new run name "
                                  "or resume=restart.")
    if lead:
        rd.write_record(cfg)  # first: it marks the folder as a run (RunDir.is_run)
        rd.save_config(cfg)
    return run_dir


def check_data(run_dir: str | Path, caches: Mapping[str, Path]) -> None:
    """Record the fingerprint of each cache the run trains and scores on (``data.json``), or,
    when the run has recorded them, refuse data that changed since, as a changed config is
    refused: a cache rebuilt from edited sources would otherwise be scored by, or mixed
    with, folds trained on the old data."""
    rd = RunDir(run_dir)
    new = {name: cache_fingerprint(path) for name, path in caches.items()}
    old = rd.read_data() or {}
    changed = [f"{name} cache {new[name]['path']}: {'; '.join(diff)}"
               for name in new if name in old
               and (diff := fingerprint_changes(old[name], new[name]))]
    if changed:
        raise ConfigError(
            f"{rd.path} holds results of other data: {' | '.join(changed)} changed since the "
            f"run recorded them ({rd.data_path.name}). Use a new run name (name=... or "
            "run_dir=...) or resume=restart to move the old run aside and start over.")
    if is_rank_zero() and any(name not in old for name in new):
        rd.write_data({**old, **new})


_ABSENT = object()


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _ABSENT
        d = d[part]
    return d


def _real_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differing keys, except keys the old record lacks that now hold their schema default
    (a field added by a newer version changes nothing for runs made before it)."""
    schema = OmegaConf.structured(ExperimentConfig)
    return [k for k in config_diff(old, new)
            if not (_get(old, k) is _ABSENT
                    and _get(new, k) == OmegaConf.select(schema, k, throw_on_missing=False))]


def _strip(c: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    c = json.loads(json.dumps(c, default=str))
    for key in keys:
        node, *rest = key.split(".")
        if rest:
            c.get(node, {}).pop(rest[0], None)
        else:
            c.pop(node, None)
    return c


def log_wandb_summary(cfg: DictConfig, key: str, results: dict[str, Any],
                      table: pd.DataFrame | None = None, image: Path | None = None,
                      images: Sequence[Path] = (),
                      tables: Mapping[str, pd.DataFrame] | None = None,
                      html: Path | None = None) -> None:
    """Results into W&B (offline unless an API key is set): into the training run when one
    is still open, otherwise into a new run of the experiment's group. Each image is logged
    under ``key/<file stem>`` (e.g. ``finetune/kaplan_meier``, ``compare/forest_plot``), each
    of ``tables`` under ``key/<name>`` (e.g. ``finetune/calibration``), an HTML page
    (``ecg-dan report``) under ``key/<file stem>`` as a W&B HTML panel."""
    if not cfg.logging.wandb or wandb_mode() == "disabled":
        return
    import wandb

    run, own = wandb.run, wandb.run is None
    if own:
        run = wandb.init(project=cfg.logging.project, entity=cfg.logging.entity,
                         group=cfg.logging.group, tags=list(cfg.logging.tags),
                         name=f"{cfg.name}-{key}", dir=str(cfg.run_dir), mode=wandb_mode(),
                         config=saved_container(cfg))
    try:
        run.summary.update({f"{key}/{k}": v for k, v in flat_numbers(results).items()})
        if table is not None:
            run.log({f"{key}/table": wandb.Table(dataframe=table.astype(str))})
        for name, t in (tables or {}).items():
            run.log({f"{key}/{name}": wandb.Table(dataframe=t.astype(str))})
        for img in ([image] if image is not None else []) + list(images):
            if img.is_file():
                run.log({f"{key}/{img.stem}": wandb.Image(str(img))})
        if html is not None and html.is_file():
            run.log({f"{key}/{html.stem}": wandb.Html(str(html), inject=False)})
    finally:
        if own:
            run.finish()


def finish_wandb() -> None:
    """Close the W&B run a WandbLogger opened, so the next fold or stage gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()

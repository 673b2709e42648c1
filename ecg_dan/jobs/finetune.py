"""Job: survival finetuning under the paper's protocol (docs/method.md section 6).

Stratified K-fold x seeds; inside each training fold a stratified validation split selects
the checkpoint by validation C-index; the held-out fold is scored exactly once. Each fold's
out-of-fold predictions are written with the hash of the config that produced them, so a
re-run resumes finished folds only when the config is the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf

from data_modules.loading.ukb_datamodule import UKBDataModule
from data_modules.protocol.splits import Split
from ecg_dan.checkpoints import finetune_module_from_checkpoint, load_pretrained_backbone
from ecg_dan.config import ConfigError, saved_container
from ecg_dan.jobs.common import finish_wandb, seed
from ecg_dan.jobs.cox_baseline import run_cox_baseline
from ecg_dan.jobs.protocol import FoldFitter, FoldResult, run_cross_validation
from ecg_dan.lit.finetune import SurvivalFinetuneModule
from ecg_dan.log import get_logger
from ecg_dan.losses.objectives import baseline_hazards, fit_cuts
from ecg_dan.models.registry import build_model
from ecg_dan.reporting.json_io import write_json
from ecg_dan.run_dir import FoldFiles, RunDir
from ecg_dan.trainer import build_trainer, maybe_compile, resume_path

log = get_logger(__name__)


def pretrained_checkpoint(cfg: DictConfig) -> str | None:
    """The pretraining checkpoint to start from, or None for ``finetune.scratch=true``."""
    f = cfg.finetune
    if f.scratch:
        return None
    if f.ckpt:
        if not Path(f.ckpt).is_file():
            raise ConfigError(f"finetune.ckpt={f.ckpt}: no such checkpoint")
        return str(f.ckpt)
    found = sorted(Path("runs").glob("*/checkpoints/best-*.ckpt"))
    hint = ("\n  found: " + "\n  found: ".join(map(str, found[-5:]))) if found else ""
    raise ConfigError("finetuning needs a pretrained checkpoint: set finetune.ckpt=PATH "
                      "(make finetune CKPT=PATH) or train from scratch with "
                      f"finetune.scratch=true (make finetune SCRATCH=1){hint}")


def build_finetune_module(cfg: DictConfig, pretrained: str | None,
                          time_grid: dict[str, list[float]] | None = None):
    """Backbone from the registry, pretrained weights loaded, wrapped for survival
    (``time_grid``: the logistic-hazard objective's cuts and starting hazards, from the
    training fold by :func:`fold_time_grid`)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    net = build_model(container["model"])
    if pretrained:
        load_pretrained_backbone(net, pretrained, pretrain=container["pretrain"])
    return SurvivalFinetuneModule(net, finetune=container["finetune"], optim=container["optim"],
                                  config=saved_container(cfg), **(time_grid or {}))


def fold_time_grid(cfg: DictConfig, dm) -> dict[str, list[float]] | None:
    """Logistic hazard: cut points and per-interval hazards (the head's starting bias) from
    the fold's training rows only (never its validation or held-out rows); None for Cox."""
    if cfg.finetune.objective != "logistic_hazard":
        return None
    train = dm.labels("train")
    cuts = fit_cuts(train["time"], train["event"], int(cfg.finetune.n_time_bins))
    return {"cuts": cuts,
            "init_hazards": baseline_hazards(cuts, train["time"], train["event"])}


def fraction_epochs(cfg: DictConfig) -> int:
    """Epochs of a run on ``finetune.train_fraction`` of each training fold:
    ``trainer.max_epochs / train_fraction`` (rounded up), so every fraction sees the same
    number of training samples and a small fraction is not also an under-trained one."""
    return math.ceil(int(cfg.trainer.max_epochs) / float(cfg.finetune.train_fraction) - 1e-9)


class NetworkFitter(FoldFitter):
    """The network of the config, finetuned per fold: checkpoint selection by the inner
    validation C-index, the held-out fold scored once by the selected checkpoint."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.pretrained = pretrained_checkpoint(cfg)
        self.cache: Path | None = None

    def prepare(self, run: RunDir, cache: Path, splits: list[Split]) -> None:
        self.cache = cache

    def fit_fold(self, split: Split, fold: FoldFiles) -> FoldResult:
        cfg, f = self.cfg, self.cfg.finetune
        seed(cfg, split.seed)
        fold_dir = fold.dir
        dm = UKBDataModule(self.cache, f.cohort, split, batch_size=f.batch_size,
                           num_workers=cfg.data.num_workers, seed=split.seed,
                           pin_memory=cfg.data.pin_memory,
                           max_bytes=cfg.data.in_memory_max_mb * 2**20)
        module = build_finetune_module(cfg, self.pretrained, time_grid=fold_time_grid(cfg, dm))
        fold_cfg = cfg.copy()
        fold_cfg.logging.group = cfg.logging.group or cfg.name
        fold_cfg.name = f"{cfg.name}-{fold.name}"
        fold_cfg.trainer.max_epochs = fraction_epochs(cfg)
        maybe_compile(module, cfg)
        trainer = build_trainer(fold_cfg, fold_dir)
        if f.lr_find and resume_path(cfg, fold_dir) is None:
            _find_lr(trainer, module, dm, f, fold)
        trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, fold_dir))
        best = trainer.checkpoint_callback.best_model_path
        if not best:
            raise RuntimeError(f"[{fold.name}] no checkpoint was selected by "
                               f"{cfg.checkpoint.monitor}: validation never ran (e.g. "
                               "trainer.max_steps ended training inside the first epoch)")
        scored = finetune_module_from_checkpoint(best)
        test = _predict(trainer, scored, dm.predict_dataloader(), split, best)
        # Training-fold risks (train + validation rows) for the Breslow baseline of the IBS.
        train = _predict(trainer, scored, dm.fit_rows_dataloader(), split, best)
        surv_cols = [c for c in test.columns if c.startswith("surv_")]
        if surv_cols:  # logistic hazard: the curves go to a sidecar, the CSV keeps the scalar
            train = train.drop(columns=surv_cols)
        return FoldResult(test, train, checkpoint=str(best),
                          cuts=scored.objective.cuts if surv_cols else None,
                          write=trainer.is_global_zero)

    def end_fold(self) -> None:
        finish_wandb()


def run_finetune(cfg: DictConfig) -> Path:
    """The paper's protocol (:func:`ecg_dan.jobs.protocol.run_cross_validation`) with the
    network; writes out-of-fold predictions, then the results.

    ``task=cox_baseline`` runs :func:`ecg_dan.jobs.cox_baseline.run_cox_baseline` instead
    (same protocol and outputs, no network)."""
    if cfg.task == "cox_baseline":  # the non-network baselines share the protocol
        return run_cox_baseline(cfg)
    if cfg.task != "finetune":
        raise ConfigError(f"experiment has task={cfg.task}; `ecg-dan finetune` needs "
                          "task=finetune or task=cox_baseline")
    return run_cross_validation(cfg, NetworkFitter(cfg))


def _find_lr(trainer: L.Trainer, module, dm, f, fold: FoldFiles) -> None:
    """Lightning's LR finder (the authors' choice; finetune.lr_find=true)."""
    finder = Tuner(trainer).lr_find(module, datamodule=dm, min_lr=1e-7, max_lr=1e-2,
                                    num_training=f.lr_find_steps, update_attr=False,
                                    # per-batch Cox losses are noisy: no early stop
                                    early_stop_threshold=None)
    n = len(finder.results["lr"]) if finder is not None else 0
    # Lightning skips the first 10 points by default; a short search keeps its later 80%
    lr = finder.suggestion(skip_begin=min(10, max(1, n // 5)), skip_end=1) if n > 3 else None
    if lr is None:
        raise RuntimeError(f"[{fold.name}] the LR finder found no learning rate ({n} steps "
                           "run); set finetune.lr_find=false and a fixed finetune.lr, or raise "
                           "finetune.lr_find_steps")
    module.lr = lr
    write_json(fold.lr_find, {"suggestion": lr, "lr": finder.results["lr"],
                              "loss": finder.results["loss"]})
    log.info(f"[{fold.name}] LR finder picked {module.lr:.3g}")


def _predict(trainer: L.Trainer, module, loader, split, ckpt: str) -> pd.DataFrame:
    """Scores of one loader; under DDP every rank's shard is gathered (the distributed
    sampler pads shards with repeats, which are dropped by participant id)."""
    preds = trainer.predict(module, dataloaders=loader, return_predictions=True)
    df = pd.DataFrame({k: torch.cat([p[k] for p in preds]).cpu().numpy()
                       for k in ("eid", "risk", "time", "event")})
    if "surv" in preds[0]:  # (n, K) survival at the cuts -> surv_0..surv_{K-1}
        surv = torch.cat([p["surv"] for p in preds]).float().cpu().numpy()
        df = pd.concat([df, pd.DataFrame(surv, columns=[f"surv_{k}" for k in
                                                        range(surv.shape[1])])], axis=1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shards: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, df)
        df = pd.concat(shards, ignore_index=True).drop_duplicates("eid", keep="first")
        df = df.sort_values("eid", kind="stable").reset_index(drop=True)
    df.insert(1, "seed", split.seed)
    df.insert(2, "fold", split.fold)
    df["checkpoint"] = str(ckpt)
    return df

"""Lightning Trainer from config: one YAML runs on a laptop CPU and on a multi-GPU node.

Devices > 1 selects DDP, with synchronised batch norm (:class:`EcgDanSyncBatchNorm`);
precision ``auto`` is bf16-mixed on GPU and 32-true on CPU; a CSV log is always written;
W&B logs offline unless ``WANDB_API_KEY`` is set (and not at all under
``WANDB_MODE=disabled``, which the tests set).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from omegaconf import DictConfig, OmegaConf
from torch import nn

from data_modules.atomic import atomic_write_text
from ecg_dan.checkpoints import SafeCheckpointIO, read_checkpoint
from ecg_dan.config import saved_container
from ecg_dan.log import is_rank_zero
from ecg_dan.models.batchnorm import convert_sync_batchnorm, revert_sync_batchnorm
from ecg_dan.run_dir import RunDir

# The DataModules and the LightningModules both finish raw batches after the transfer (the
# DataModule's hook for any LightningModule, the module's for loaders given to
# trainer.predict directly); finish_batch is idempotent, so Lightning's choice of the
# DataModule's hook is right and its warning about it is noise. Set once, at import.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in both")


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                                 and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def resolve_devices(devices):
    """``trainer.devices`` as Lightning takes it; a count given as a string (an environment
    variable through ``${oc.env:...}``, as the +torchrun and +slurm overlays do) is an int."""
    if OmegaConf.is_config(devices):
        devices = OmegaConf.to_object(devices)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        return int(devices)
    return devices


def resolve_strategy(strategy: str, devices, num_nodes: int) -> str:
    if strategy != "auto":
        return strategy
    devices = resolve_devices(devices)
    if isinstance(devices, str) and devices != "auto":
        devices = [d for d in devices.split(",") if d.strip()]
    n = len(devices) if isinstance(devices, (list, tuple)) else devices
    if n == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 1
    if n == -1:
        n = max(torch.cuda.device_count(), 1)
    return "ddp" if int(n) * num_nodes > 1 else "auto"


class EcgDanSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's ``sync_batchnorm`` plugin for ecg-dan models.

    Torch's ``convert_sync_batchnorm`` would swap the channels-last batch norms of the
    residual blocks for ``nn.SyncBatchNorm`` (slow for them, and GPU-only); this plugin
    switches on their own synchronised mode instead and turns the other batch norms (the
    heads' ``nn.BatchNorm1d``) into ecg-dan's CPU/GPU ``SyncBatchNorm``. Lightning applies it
    when fitting under DDP, after the LightningModule is built, and reverts it at teardown.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_sync_batchnorm(model)


def sync_batchnorm_kwargs(strategy) -> dict:
    """Trainer arguments that synchronise batch norm across DDP ranks ({} otherwise)."""
    from lightning.pytorch.strategies import DDPStrategy

    if (isinstance(strategy, str) and strategy.startswith("ddp")) or isinstance(
            strategy, DDPStrategy):
        return {"sync_batchnorm": True, "plugins": [EcgDanSyncBatchNorm()]}
    return {}


# A folder: every rank writes rank<global rank>.json there when a fit ends (RankReport).
RANK_REPORT_ENV = "ECG_DAN_RANK_REPORT"


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Checksum of a state dict (names, dtypes, shapes and bytes, in order): a module's
    ``state_dict()`` or a checkpoint's ``"state_dict"``."""
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RankReport(Callback):
    """``ECG_DAN_RANK_REPORT=DIR``: each rank writes ``DIR/rank<R>.json`` at the end of a fit:
    its place in the world, epoch and step, a checksum of its weights and the checkpoint files
    it wrote itself. A check of a multi-node setup (docs/multinode.md): every rank must report
    the same checksum, and only rank 0 any file."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        io = trainer.strategy.checkpoint_io
        report = {"global_rank": trainer.global_rank, "node_rank": trainer.node_rank,
                  "local_rank": trainer.local_rank, "world_size": trainer.world_size,
                  "num_nodes": trainer.num_nodes, "epoch": trainer.current_epoch,
                  "global_step": trainer.global_step,
                  "state_sha256": state_sha256(pl_module.state_dict()),
                  "checkpoints_written": list(getattr(io, "written", []))}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / f"rank{trainer.global_rank}.json",
                          json.dumps(report, indent=1))


def wandb_mode() -> str:
    """disabled (tests / explicit), online (API key present) or offline."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("disabled", "offline", "online"):
        return env
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    # Versioned folders: a resumed run adds csv/version_<n+1> instead of overwriting.
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv")]
    if cfg.logging.wandb and wandb_mode() != "disabled":
        wb = WandbLogger(project=cfg.logging.project, entity=cfg.logging.entity,
                         group=cfg.logging.group, tags=list(cfg.logging.tags), name=cfg.name,
                         save_dir=str(run_dir), offline=wandb_mode() == "offline",
                         config=saved_container(cfg))
        loggers.append(wb)
    return loggers


def build_trainer(cfg: DictConfig, run_dir: str | os.PathLike,
                  callbacks: list[Callback] | None = None, **overrides) -> L.Trainer:
    """Trainer for one run; writes the resolved config next to the run's outputs."""
    rd = RunDir(run_dir)
    run_dir = rd.path
    if is_rank_zero():  # one writer of the run's files (under DDP every rank builds this)
        rd.save_config(cfg)
    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(int(t.threads))
    ckpt_dir = str(rd.checkpoints_dir)
    best = ModelCheckpoint(dirpath=ckpt_dir, monitor=cfg.checkpoint.monitor,
                           mode=cfg.checkpoint.mode, save_last=False,
                           save_top_k=cfg.checkpoint.save_top_k,
                           filename="best-{epoch:03d}-{step}", auto_insert_metric_name=False)
    cbs: list[Callback] = [best]
    if cfg.checkpoint.save_last:
        # last.ckpt = the last completed epoch, whatever the monitored metric did (Lightning's
        # save_last follows the monitor's saves), so a re-run continues where training stopped.
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                   save_on_train_epoch_end=True, enable_version_counter=False))
    cbs.append(LearningRateMonitor(logging_interval="step"))
    if t.enable_progress_bar:
        cbs.append(RichProgressBar() if sys.stdout.isatty() else TQDMProgressBar())
    cbs += callbacks or []
    if os.environ.get(RANK_REPORT_ENV):
        cbs.append(RankReport(os.environ[RANK_REPORT_ENV]))
    kwargs = dict(
        accelerator=t.accelerator, devices=resolve_devices(t.devices),
        strategy=resolve_strategy(t.strategy, t.devices, t.num_nodes), num_nodes=t.num_nodes,
        precision=resolve_precision(t.precision, t.accelerator), max_epochs=t.max_epochs,
        max_steps=t.max_steps, deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val, log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        num_sanity_val_steps=t.num_sanity_val_steps, enable_progress_bar=t.enable_progress_bar,
        logger=build_loggers(cfg, run_dir), callbacks=cbs, default_root_dir=str(run_dir),
        enable_model_summary=False, plugins=[SafeCheckpointIO()],
    )
    kwargs.update(overrides)
    if "sync_batchnorm" not in overrides:
        # One objective whatever the world size: batch statistics over the global batch.
        for key, value in sync_batchnorm_kwargs(kwargs["strategy"]).items():
            kwargs[key] = (list(kwargs.get(key) or []) + value if key == "plugins"
                           else value)
    return L.Trainer(**kwargs)


def maybe_compile(module: nn.Module, cfg: DictConfig) -> nn.Module:
    """``trainer.compile``: compile the module's backbone in place (``nn.Module.compile``
    keeps parameter names, so checkpoints stay interchangeable). Returns ``module``."""
    if cfg.trainer.compile:
        module.backbone.compile()
    return module


def resume_path(cfg: DictConfig, run_dir: str | os.PathLike) -> str | None:
    """Checkpoint to resume from: ``resume=auto`` continues from ``last.ckpt`` if present
    (``never``/``restart``: start fresh; a path: that checkpoint). The file is checked here,
    so a truncated or refused checkpoint is an error naming it before training starts."""
    if cfg.resume in ("never", "restart"):
        return None
    if cfg.resume != "auto":
        read_checkpoint(cfg.resume)  # refuses a missing, corrupt or pickled file up front
        return cfg.resume
    last = RunDir(run_dir).last_checkpoint
    if not last.is_file():
        return None
    read_checkpoint(last)
    return str(last)

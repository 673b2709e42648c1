"""Reading and writing checkpoints safely (docs/architecture.md, README "Reliability").

- Every checkpoint this project reads from a user-given path is loaded with
  ``torch.load(weights_only=True)``: tensors and plain data only, so a crafted file cannot run
  code. A refused, truncated or foreign file is a :class:`CheckpointError` naming the file.
- Every checkpoint is written to a temporary file and renamed (:class:`SafeCheckpointIO`,
  the Trainer's checkpoint plugin), so a full disk or a kill never leaves a truncated one.
- LightningModules are rebuilt from a checkpoint's plain metadata: the backbone from the
  registry, then the module with the network passed in.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from data_modules.atomic import atomic_path
from data_modules.guarded import guarded_write
from ecg_dan.config import pretrain_objective
from ecg_dan.lit.finetune import SurvivalFinetuneModule
from ecg_dan.lit.pretrain import AlignmentPretrainModule
from ecg_dan.models.registry import build_model

# Fields that change no tensor shape: a checkpoint trained with other values still fits.
_SHAPE_FREE = {"attn_dropout", "batchwise_dropout", "kl_weight"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, refused, corrupt or of another kind."""


class CheckpointMismatchError(CheckpointError):
    """A pretraining checkpoint whose architecture or objective differs from the configured
    one."""


def _restart_hint(path: Path) -> str:
    if path.name == "last.ckpt":
        return (f"; to start this run over, delete {path} (or run with resume=never), or "
                "choose a new run name")
    return ""


def _unpickler_reason(e: Exception) -> str:
    """What the weights-only unpickler found (e.g. ``Unsupported global: GLOBAL print``),
    without torch's advice around it (which suggests loading the file unsafely)."""
    for line in str(e).splitlines():
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].split(" was not an allowed")[0]
            return f" ({reason.strip()})"
    return ""


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """A checkpoint dict, loaded weights-only; ``kind`` ("pretrain"/"finetune") is checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} was refused: it holds Python objects beyond tensors and plain data, and "
            f"ecg-dan loads checkpoints weights-only so that no file can run code"
            f"{_unpickler_reason(e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              f"{_restart_hint(path)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint (found a {type(ckpt).__name__})")
    if kind is not None:
        meta = ckpt.get("ecg_dan")
        found = meta.get("kind") if isinstance(meta, dict) else None
        if found != kind:
            what = {"pretrain": "a pretraining checkpoint (runs/<pretrain run>/checkpoints/)",
                    "finetune": "a finetuning checkpoint (runs/<finetune run>/seed*_fold*/"
                                "checkpoints/)"}[kind]
            got = (f"a {found} checkpoint" if found else
                   "a file without ecg-dan metadata (not an ecg-dan checkpoint)")
            raise CheckpointError(f"{path}: expected {what}, found {got}")
    return ckpt


def recorded_objective(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """A pretraining checkpoint's objective: its record, else (checkpoints written before the
    record) derived from the pretraining config it carries; None when it has neither."""
    if "objective" in meta:
        return dict(meta["objective"])
    pretrain = (meta.get("config") or {}).get("pretrain")
    return pretrain_objective(pretrain) if pretrain else None


def check_objective(path: Path, meta: Mapping[str, Any], pretrain: Mapping[str, Any]) -> None:
    """Refuse a checkpoint pretrained with another objective than the finetuning config's
    ``pretrain:`` section names, so that no run is labelled with a strategy it did not use
    (``ecg-dan finetune ablations/pretrain_cls finetune.ckpt=<a reconstruction checkpoint>``).
    A checkpoint without any record is refused too: what it was trained for is unknown."""
    want = pretrain_objective(pretrain)
    have = recorded_objective(meta)
    if have is None:
        raise CheckpointMismatchError(
            f"{path} does not record its pretraining objective, so it cannot be checked "
            f"against this config's ({_objective_text(want)}); checkpoints written by "
            "`ecg-dan pretrain` record it")
    if have != want:
        keys = ", ".join(f"pretrain.{k}" for k in sorted(set(have) | set(want))
                         if have.get(k) != want.get(k))
        raise CheckpointMismatchError(
            f"{path} was pretrained with another objective than this config names "
            f"(differing: {keys}): checkpoint {_objective_text(have)}; config "
            f"{_objective_text(want)}. Finetune it with the experiment of its strategy "
            "(finetune_<cohort> for the paper's, ablations/pretrain_* or ablations/text_* "
            "for the others) or with these pretrain.* keys set to the checkpoint's, or "
            "pretrain with this config's (make ablations does)")


def _objective_text(objective: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in objective.items())


def load_pretrained_backbone(backbone: nn.Module, ckpt_path: str | os.PathLike,
                             pretrain: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load encoder + decoder weights from a pretraining checkpoint, strictly.

    Refuses a checkpoint of another architecture with the differing config fields named,
    rather than loading whatever keys happen to match; with ``pretrain`` (the finetuning
    config's ``pretrain:`` section), also one of another objective (:func:`check_objective`).
    """
    path = Path(ckpt_path)
    meta = read_checkpoint(path, kind="pretrain")["ecg_dan"]
    if "encoder" not in meta:
        raise CheckpointMismatchError(f"{path} has no encoder weights")
    want = asdict(backbone.cfg)
    have = {"name": "ecg_dan", **meta.get("model_config", {})}
    diff = {k: (have.get(k), v) for k, v in want.items()
            if k not in _SHAPE_FREE and have.get(k) != v}
    if diff:
        detail = ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}"
                           for k, (a, b) in diff.items())
        raise CheckpointMismatchError(f"{path} was trained with another architecture: {detail}")
    if pretrain is not None:
        check_objective(path, meta, pretrain)
    try:
        backbone.encoder.load_state_dict(meta["encoder"], strict=True)
        backbone.decoder.load_state_dict(meta["decoder"], strict=True)
    except RuntimeError as e:
        raise CheckpointMismatchError(f"{path}: weights do not fit the configured model: "
                                      f"{e}") from None
    return meta


def _module_from(ckpt: dict[str, Any], path: Path, cls: type, kind: str):
    if "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} holds a backbone's weights only (`ecg-dan import-weights` writes such "
            f"files), not a whole {kind} module: it serves as finetune.ckpt")
    hp = dict(ckpt.get("hyper_parameters") or {})
    model_cfg = ckpt["ecg_dan"].get("model_config") or hp.pop("model", None)
    hp.pop("model", None)
    hp.pop("pretrained", None)
    if not model_cfg:
        raise CheckpointError(f"{path}: {kind} checkpoint without a model config")
    module = cls(build_model(model_cfg), **hp)
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model it describes: "
                              f"{str(e).splitlines()[0]}") from None
    return module.eval()


def pretrain_module_from_checkpoint(path: str | os.PathLike):
    path = Path(path)
    return _module_from(read_checkpoint(path, "pretrain"), path, AlignmentPretrainModule,
                        "pretraining")


def finetune_module_from_checkpoint(path: str | os.PathLike):
    path = Path(path)
    return _module_from(read_checkpoint(path, "finetune"), path, SurvivalFinetuneModule,
                        "finetuning")


class SafeCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint I/O: atomic writes, weights-only reads with clear errors.
    ``written`` lists the files this process wrote (under DDP only global rank 0 writes;
    :class:`ecg_dan.trainer.RankReport` reports it)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        with atomic_path(path) as tmp, guarded_write(tmp) as f:
            torch.save(checkpoint, f)  # a failed write: an OSError, not torch's RuntimeError
        self.written.append(str(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path)

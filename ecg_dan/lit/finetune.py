"""Survival finetuning (METHOD.md section 6): alpha * Cox + (1 - alpha) * reconstruction."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from data_modules.leads import PAD
from ecg_dan.losses.cox import cox_ph_loss
from ecg_dan.metrics.cindex import HarrellCIndex
from ecg_dan.models import ECGDAN, ModelConfig, RiskHead
from ecg_dan.schedules import build_optimizer

# Fields that change no tensor shape: a checkpoint trained with other values still fits.
_SHAPE_FREE = {"attn_dropout", "batchwise_dropout"}


class DivergenceError(FloatingPointError):
    """Training produced a non-finite risk or loss."""


class CheckpointMismatchError(ValueError):
    """A pretraining checkpoint whose architecture differs from the configured one."""


def load_pretrained_backbone(backbone: ECGDAN, ckpt_path: str | Path) -> dict[str, Any]:
    """Load encoder + decoder weights from a pretraining checkpoint, strictly.

    Refuses a checkpoint of another architecture with the differing config fields named,
    rather than loading whatever keys happen to match.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt.get("ecg_dan")
    if not meta or "encoder" not in meta:
        raise CheckpointMismatchError(f"{path} is not an ecg-dan pretraining checkpoint "
                                      "(no 'ecg_dan' section with encoder weights)")
    want = asdict(backbone.cfg)
    have = meta.get("model_config", {})
    diff = {k: (have.get(k), v) for k, v in want.items()
            if k not in _SHAPE_FREE and have.get(k) != v}
    if diff:
        detail = ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}"
                           for k, (a, b) in diff.items())
        raise CheckpointMismatchError(f"{path} was trained with another architecture: {detail}")
    try:
        backbone.encoder.load_state_dict(meta["encoder"], strict=True)
        backbone.decoder.load_state_dict(meta["decoder"], strict=True)
    except RuntimeError as e:
        raise CheckpointMismatchError(f"{path}: weights do not fit the configured model: "
                                      f"{e}") from None
    return meta


class SurvivalFinetuneModule(L.LightningModule):
    """Pretrained ECG-DAN (projectors dropped, nothing frozen) + risk head."""

    def __init__(self, model: dict[str, Any], finetune: dict[str, Any], optim: dict[str, Any],
                 pretrained: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = ModelConfig(**model)
        self.backbone = ECGDAN(self.model_cfg)
        self.risk_head = RiskHead(self.model_cfg.latent_dim)
        self.alpha = float(finetune["alpha"])
        self.ties = finetune["ties"]
        self.lr = float(finetune["lr"])  # attribute name the LR finder updates
        self.val_cindex = HarrellCIndex()
        if pretrained:
            load_pretrained_backbone(self.backbone, pretrained)

    def forward(self, x: Tensor, return_attention: bool = False) -> dict[str, Tensor]:
        out = self.backbone(x, return_attention=return_attention)
        out["log_risk"] = self.risk_head(out["z"]).squeeze(-1)
        return out

    def _step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        out = self(batch["x"])
        log_risk = out["log_risk"].float()
        if not torch.isfinite(log_risk).all():
            raise DivergenceError(
                f"non-finite risk at epoch {self.current_epoch}, step {self.global_step} "
                f"({stage}); training stopped. The last good checkpoint is kept in the run's "
                "checkpoints/ folder; lower finetune.lr or enable gradient clipping.")
        cox = cox_ph_loss(log_risk, batch["time"], batch["event"], ties=self.ties)
        target = batch.get("target", batch["x"][..., PAD:-PAD])
        recon = F.mse_loss(out["recon"][..., PAD:-PAD].float(), target.float())
        loss = self.alpha * cox + (1.0 - self.alpha) * recon
        if not torch.isfinite(loss):
            raise DivergenceError(f"non-finite loss at step {self.global_step} ({stage}): "
                                  f"cox={cox.item():.4g}, recon={recon.item():.4g}")
        n = batch["x"].shape[0]
        self.log_dict({f"{stage}/cox": cox.detach(), f"{stage}/recon_mse": recon.detach(),
                       f"{stage}/loss": loss.detach()}, on_step=stage == "train",
                      on_epoch=True, batch_size=n, sync_dist=stage != "train")
        return loss, log_risk

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self.log("train/events", batch["event"].sum(), on_step=True, on_epoch=False,
                 batch_size=batch["x"].shape[0])
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, log_risk = self._step(batch, "val")
        self.val_cindex.update(log_risk, batch["time"], batch["event"])

    def on_validation_epoch_end(self) -> None:
        self.log("val/cindex", self.val_cindex.compute().float(), prog_bar=True)
        self.val_cindex.reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"eid": batch["eid"], "risk": self(batch["x"])["log_risk"].float(),
                "time": batch["time"], "event": batch["event"]}

    def configure_optimizers(self):
        o = self.hparams.optim
        return build_optimizer(self.parameters(), self.lr, o["betas"], o["weight_decay"])

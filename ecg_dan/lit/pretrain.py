"""LLM-informed alignment pretraining on PTB-XL (METHOD.md section 5)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_modules.leads import PAD
from ecg_dan.losses.alignment import cosine_alignment_loss, infonce_loss
from ecg_dan.models import ECGDAN, ClassificationHead, ModelConfig, Projector
from ecg_dan.schedules import build_optimizer, warmup_cosine


class AlignmentPretrainModule(L.LightningModule):
    """Reconstruction (masked input -> cleaned beat) + ECG-text alignment (+ optional BCE)."""

    def __init__(self, model: dict[str, Any], text_dim: int | None, pretrain: dict[str, Any],
                 optim: dict[str, Any], text_model_id: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = ModelConfig(**model)
        self.backbone = ECGDAN(self.model_cfg)
        self.p = pretrain
        self.align = pretrain["alignment"] if pretrain["w_align"] > 0 else "none"
        if self.align != "none":
            if not text_dim:
                raise ValueError("alignment pretraining needs text embeddings (text_dim is None)")
            self.ecg_proj = Projector(self.model_cfg.latent_dim)
            self.text_proj = Projector(int(text_dim))
        if self.align == "infonce":
            log_t = torch.tensor(float(pretrain["temperature"])).log()
            self.log_temperature = nn.Parameter(log_t, requires_grad=pretrain["learn_temperature"])
        self.cls_head = (ClassificationHead(self.model_cfg.latent_dim)
                         if pretrain["w_cls"] > 0 else None)

    def forward(self, x: Tensor, return_attention: bool = False) -> dict[str, Tensor]:
        return self.backbone(x, return_attention=return_attention)

    def project(self, z: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        return self.ecg_proj(z), self.text_proj(text)

    def _losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.backbone(batch["x"])
        recon = out["recon"][..., PAD:-PAD]
        losses = {"recon_mse": F.mse_loss(recon.float(), batch["target"].float())}
        total = self.p["w_recon"] * losses["recon_mse"]
        if self.align != "none":
            e, t = self.project(out["z"], batch["text"])
            if self.align == "cosine":
                losses["align"] = cosine_alignment_loss(e.float(), t.float())
            else:
                losses["align"] = infonce_loss(e.float(), t.float(), self.log_temperature.exp())
            total = total + self.p["w_align"] * losses["align"]
        if self.cls_head is not None:
            logits = self.cls_head(out["z"])
            losses["cls_bce"] = F.binary_cross_entropy_with_logits(logits.float(),
                                                                   batch["superclass"].float())
            total = total + self.p["w_cls"] * losses["cls_bce"]
        losses["loss"] = total
        return losses

    def _log(self, stage: str, losses: dict[str, Tensor], batch_size: int) -> None:
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in losses.items()},
                      on_step=stage == "train", on_epoch=True, prog_bar=stage == "val",
                      batch_size=batch_size, sync_dist=stage != "train")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self._losses(batch)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(
                f"pretraining diverged at step {self.global_step}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                + "; the last good checkpoint is kept in the run's checkpoints/")
        self._log("train", losses, batch["x"].shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._log("val", self._losses(batch), batch["x"].shape[0])

    def configure_optimizers(self):
        o = self.hparams.optim
        opt = build_optimizer([p for p in self.parameters() if p.requires_grad], o["lr"],
                              o["betas"], o["weight_decay"])
        if o["schedule"] == "constant":
            return opt
        total = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, o["warmup_fraction"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What finetuning needs, readable without this class: config, weights, text model.
        checkpoint["ecg_dan"] = {
            "kind": "pretrain",
            "model_config": dict(self.hparams.model),
            "text_model": self.hparams.text_model_id,
            "config": self.hparams.config,
            "encoder": self.backbone.encoder.state_dict(),
            "decoder": self.backbone.decoder.state_dict(),
        }

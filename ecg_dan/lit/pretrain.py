"""LLM-informed alignment pretraining on PTB-XL and other corpora (docs/method.md section 5)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_modules.loading.transforms import finish_batch
from ecg_dan.config import pretrain_objective
from ecg_dan.losses.alignment import cosine_alignment_loss, infonce_loss
from ecg_dan.losses.reconstruction import reconstruction_mse
from ecg_dan.models import ClassificationHead, Projector
from ecg_dan.schedules import configure_optimization


def kl_weight(backbone: nn.Module) -> float:
    """``model.kl_weight`` of a backbone that returns a KL term (0 when it has none)."""
    return float(getattr(backbone.cfg, "kl_weight", 0.0))


def classification_bce(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Superclass BCE, averaged over the rows that have SCP labels: a batch of several
    corpora carries ``labelled`` (False for MIMIC-IV-ECG rows, whose labels are zero
    placeholders); a batch without labelled rows gives 0 (still part of the graph)."""
    y = batch["superclass"].float()
    labelled = batch.get("labelled")
    if labelled is None:  # a PTB-XL-only batch: every row is labelled
        return F.binary_cross_entropy_with_logits(logits.float(), y)
    w = labelled.to(logits.dtype)[:, None].expand_as(logits).float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), y, weight=w, reduction="sum")
    return bce / w.sum().clamp_min(1.0)


class FinishBatchOnDevice:
    """LightningModule mixin: raw loader batches are finished (z-score, lead mask, padding)
    after they reach the model's device, whatever loader fed them (``trainer.predict`` with
    explicit dataloaders does not call the DataModule's hook)."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return finish_batch(batch)


class AlignmentPretrainModule(FinishBatchOnDevice, L.LightningModule):
    """Reconstruction (masked input -> cleaned beat) + ECG-text alignment (+ optional BCE).

    ``net`` is the backbone (``ecg_dan.models.build_model``); the module adds the projectors,
    the optional classification head and the losses.
    """

    def __init__(self, net: nn.Module, pretrain: dict[str, Any], optim: dict[str, Any],
                 text_dim: int | None = None, text_model_id: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.backbone = net
        latent = net.cfg.latent_dim
        self.p = pretrain
        self.align = pretrain["alignment"] if pretrain["w_align"] > 0 else "none"
        if self.align != "none":
            if not text_dim:
                raise ValueError("alignment pretraining needs text embeddings (text_dim is None)")
            self.ecg_proj = Projector(latent, latent)  # sizes follow the latent (section 7)
            self.text_proj = Projector(int(text_dim), latent)
        if self.align == "infonce":
            log_t = torch.tensor(float(pretrain["temperature"])).log()
            self.log_temperature = nn.Parameter(log_t, requires_grad=pretrain["learn_temperature"])
        self.cls_head = ClassificationHead(latent) if pretrain["w_cls"] > 0 else None

    def forward(self, x: Tensor, return_attention: bool = False) -> dict[str, Tensor]:
        return self.backbone(x, return_attention=return_attention)

    def project(self, z: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        return self.ecg_proj(z), self.text_proj(text)

    def _losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.backbone(batch["x"])
        losses = {"recon_mse": reconstruction_mse(out["recon"], batch["target"])}
        total = self.p["w_recon"] * losses["recon_mse"]
        if "kl" in out:  # a VAE backbone (docs/method.md section 7)
            losses["kl"] = out["kl"]
            total = total + kl_weight(self.backbone) * out["kl"]
        if self.align != "none":
            e, t = self.project(out["z"], batch["text"])
            if self.align == "cosine":
                losses["align"] = cosine_alignment_loss(e.float(), t.float())
            else:
                losses["align"] = infonce_loss(e.float(), t.float(), self.log_temperature.exp())
            total = total + self.p["w_align"] * losses["align"]
        if self.cls_head is not None:
            losses["cls_bce"] = classification_bce(self.cls_head(out["z"]), batch)
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
        if self.align == "infonce" and self.p["learn_temperature"]:
            self.log("train/temperature", self.log_temperature.detach().exp(), on_step=True,
                     on_epoch=False, batch_size=batch["x"].shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._log("val", self._losses(batch), batch["x"].shape[0])

    def configure_optimizers(self):
        o = self.hparams.optim
        total = self.trainer.estimated_stepping_batches if o["schedule"] != "constant" else None
        return configure_optimization((p for p in self.parameters() if p.requires_grad),
                                      o["lr"], o, total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What finetuning needs, readable without this class: config, weights, text model.
        checkpoint["ecg_dan"] = {
            "kind": "pretrain",
            "model_config": asdict(self.backbone.cfg),
            # the strategy, checked by a finetuning run that starts from this checkpoint
            "objective": pretrain_objective(self.p),
            "text_model": self.hparams.text_model_id,
            "config": self.hparams.config,
            "encoder": self.backbone.encoder.state_dict(),
            "decoder": self.backbone.decoder.state_dict(),
        }

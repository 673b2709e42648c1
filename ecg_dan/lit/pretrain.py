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
from ecg_dan.losses.alignment import (
    cosine_alignment_loss,
    infonce_loss,
    projected_report_agreement,
)
from ecg_dan.losses.reconstruction import reconstruction_mse
from ecg_dan.models import ClassificationHead, Projector
from ecg_dan.models.dropout import BatchwiseDropout
from ecg_dan.schedules import configure_optimization

#: Training batches of the epoch whose inputs are kept to re-estimate the batch-norm
#: statistics before validation (at batch 128: ~2,000 beats, 60 MB of inputs).
PRECISE_BN_BATCHES = 16


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


@torch.no_grad()
def recompute_bn_statistics(modules: list[nn.Module], inputs: list[Tensor]) -> int:
    """Re-estimate every batch norm's running statistics in ``modules`` with their current
    weights ("precise BN"); returns the number of batch norms reset.

    The chain ``modules`` (the backbone, whose ``z`` feeds any head after it) runs on
    ``inputs`` with batch norms in training mode and dropout off, so the statistics are
    those of the network that is evaluated, averaged equally over the batches (momentum
    None); no random numbers are drawn (training continues on the same stream), and the
    modes and momenta are restored afterwards.

    Why: with momentum 0.1 the running statistics start at (0, 1) and trail the weights,
    while the decoder's activations at initialisation have a variance near 1e-7. Until the
    statistics catch up (~20 steps on 500 PTB-XL records) the eval-mode decoder is nearly
    flat and its affine-free InstanceNorm turns that into a reconstruction of ~0, which
    scores MSE ~1: better than any real reconstruction correlated below 0.5 with the
    target. A short run on a small corpus (5 steps an epoch) then validated a network it
    never trained, and checkpoint selection kept its first epoch.
    """
    members = [m for mod in modules for m in mod.modules()]
    bns = [m for m in members
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or not inputs:
        return 0
    modes = [m.training for m in members]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    for m in members:
        m.training = not isinstance(m, (nn.modules.dropout._DropoutNd, BatchwiseDropout))
    for x in inputs:
        for mod in modules:
            x = mod(x)
            if isinstance(x, dict):  # the backbone: its heads read z
                x = x["z"]
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    for m, mode in zip(members, modes):
        m.training = mode
    return len(bns)


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
        self._bn_inputs: list[Tensor] = []  # this epoch's last training inputs (precise BN)

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
        self._bn_inputs = [*self._bn_inputs[-(PRECISE_BN_BATCHES - 1):], batch["x"].detach()]
        if self.align == "infonce" and self.p["learn_temperature"]:
            self.log("train/temperature", self.log_temperature.detach().exp(), on_step=True,
                     on_epoch=False, batch_size=batch["x"].shape[0])
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        """Batch-norm statistics re-estimated with the current weights on the epoch's last
        training inputs (masked as trained; dropout off), so validation, the checkpoint and
        the encoder evaluation use the network that was trained
        (:func:`recompute_bn_statistics`). Without stored inputs (a resumed epoch) the
        running statistics are kept."""
        if self._bn_inputs:
            heads = [self.cls_head] if self.cls_head is not None else []
            recompute_bn_statistics([self.backbone, *heads], self._bn_inputs)
        self._bn_inputs = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._log("val", self._losses(batch), batch["x"].shape[0])
        if self.align != "none":  # collapse watch (docs/method.md section 5)
            agree = projected_report_agreement(batch["text"], self.text_proj(batch["text"]))
            if torch.isfinite(agree):
                self.log("val/report_agreement", agree, on_epoch=True,
                         batch_size=batch["x"].shape[0], sync_dist=True)

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

"""Survival finetuning (docs/method.md section 6): alpha * survival + (1 - alpha) *
reconstruction, the survival term being Cox (the paper) or the discrete-time logistic hazard
(``finetune.objective``, ecg_dan/losses/objectives.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from ecg_dan.lit.pretrain import FinishBatchOnDevice, kl_weight
from ecg_dan.losses.objectives import make_objective
from ecg_dan.losses.reconstruction import reconstruction_mse
from ecg_dan.metrics.cindex import HarrellCIndex
from ecg_dan.schedules import configure_optimization


class DivergenceError(FloatingPointError):
    """Training produced a non-finite risk or loss."""


class SurvivalFinetuneModule(FinishBatchOnDevice, L.LightningModule):
    """Backbone (pretrained weights already loaded by the caller, projectors dropped, nothing
    frozen) + the objective's head (``risk_head``: one log-risk for Cox, K hazard logits for
    the logistic hazard). ``cuts`` and ``init_hazards`` (logistic hazard only) are the
    training fold's time cut points and per-interval hazards (the head's starting point),
    plain lists kept in the checkpoint's hyper-parameters."""

    def __init__(self, net: nn.Module, finetune: dict[str, Any], optim: dict[str, Any],
                 config: dict[str, Any] | None = None,
                 cuts: list[float] | None = None,
                 init_hazards: list[float] | None = None) -> None:
        super().__init__()
        if cuts is not None:
            cuts = [float(c) for c in cuts]
        if init_hazards is not None:
            init_hazards = [float(h) for h in init_hazards]
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.backbone = net
        self.objective = make_objective(finetune.get("objective", "cox"),
                                        ties=finetune["ties"], cuts=cuts,
                                        init_hazards=init_hazards)
        self.risk_head = self.objective.head(net.cfg.latent_dim)
        self.alpha = float(finetune["alpha"])
        self.ties = finetune["ties"]
        self.lr = float(finetune["lr"])  # attribute name the LR finder updates
        self.val_cindex = HarrellCIndex()

    def forward(self, x: Tensor, return_attention: bool = False) -> dict[str, Tensor]:
        out = self.backbone(x, return_attention=return_attention)
        out["head"] = self.risk_head(out["z"])
        out["log_risk"] = self.objective.risk(out["head"])  # the scalar risk (Cox: log-risk)
        return out

    def _step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        out = self(batch["x"])
        log_risk = out["log_risk"].float()
        if not torch.isfinite(log_risk).all():
            raise DivergenceError(
                f"non-finite risk at epoch {self.current_epoch}, step {self.global_step} "
                f"({stage}); training stopped. The last good checkpoint is kept in the run's "
                "checkpoints/ folder; lower finetune.lr or enable gradient clipping.")
        surv = self.objective.loss(out["head"], batch)
        recon = reconstruction_mse(out["recon"], batch["target"])
        loss = self.alpha * surv + (1.0 - self.alpha) * recon
        name = self.objective.name
        logged = {f"{stage}/{name}": surv.detach(), f"{stage}/recon_mse": recon.detach()}
        if "kl" in out:  # a VAE backbone (docs/method.md section 7)
            loss = loss + kl_weight(self.backbone) * out["kl"]
            logged[f"{stage}/kl"] = out["kl"].detach()
        if not torch.isfinite(loss):
            raise DivergenceError(f"non-finite loss at step {self.global_step} ({stage}): "
                                  f"{name}={surv.item():.4g}, recon={recon.item():.4g}")
        n = batch["x"].shape[0]
        self.log_dict({**logged, f"{stage}/loss": loss.detach()}, on_step=stage == "train",
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
        out = self(batch["x"])
        pred = {"eid": batch["eid"], "risk": out["log_risk"].float(),
                "time": batch["time"], "event": batch["event"]}
        if self.objective.cuts is not None:
            pred["surv"] = self.objective.survival(out["head"])
        return pred

    def configure_optimizers(self):
        o = self.hparams.optim
        total = self.trainer.estimated_stepping_batches if o["schedule"] != "constant" else None
        return configure_optimization(self.parameters(), self.lr, o, total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ecg_dan"] = {"kind": "finetune", "model_config": asdict(self.backbone.cfg),
                                 "config": self.hparams.config}

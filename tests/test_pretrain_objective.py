"""A pretraining checkpoint records its objective; a finetuning run that names another is
refused (docs/method.md section 7: the pretraining-strategy ablations)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from omegaconf import OmegaConf

from ecg_dan.checkpoints import CheckpointMismatchError, load_pretrained_backbone
from ecg_dan.config import PretrainConfig, load_config, pretrain_objective
from ecg_dan.jobs.finetune import build_finetune_module
from ecg_dan.lit.pretrain import AlignmentPretrainModule
from ecg_dan.models import ECGDAN, ModelConfig

PAPER = asdict(PretrainConfig())
RECON_ONLY = {**PAPER, "w_align": 0.0}
CLS_ONLY = {**PAPER, "w_recon": 0.0, "w_align": 0.0, "w_cls": 1.0}


def _checkpoint(tmp_path, pretrain: dict | None, *, record: bool = True):
    """A pretraining checkpoint as `ecg-dan pretrain` writes it (``record=False``: as written
    before the objective was recorded, with only the run's config; ``pretrain=None``: no
    record of either kind)."""
    net = ECGDAN(ModelConfig())
    meta = {"kind": "pretrain", "model_config": asdict(net.cfg),
            "encoder": net.encoder.state_dict(), "decoder": net.decoder.state_dict(),
            "config": {"pretrain": pretrain} if pretrain else None}
    if record and pretrain:
        meta["objective"] = pretrain_objective(pretrain)
    path = tmp_path / "best.ckpt"
    torch.save({"ecg_dan": meta}, path)
    return path


def _finetune(experiment: str):
    return load_config(experiment, ["+tiny", "finetune.ckpt=unused"])


def test_the_pretraining_module_records_its_objective():
    module = AlignmentPretrainModule(ECGDAN(ModelConfig()), pretrain=CLS_ONLY,
                                     optim=OmegaConf.to_container(load_config("pretrain_short").optim))
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    assert ckpt["ecg_dan"]["objective"] == {"w_recon": 0.0, "w_cls": 1.0, "alignment": "none"}


def test_equal_objectives_compare_equal():
    assert pretrain_objective({**RECON_ONLY, "alignment": "none"}) == \
        pretrain_objective({**RECON_ONLY, "text_recipe": "report_raw"})
    assert pretrain_objective(PAPER) != pretrain_objective({**PAPER, "alignment": "infonce"})
    assert pretrain_objective(PAPER) != pretrain_objective({**PAPER, "text_recipe": "report_raw"})


def test_a_finetune_naming_another_strategy_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path, RECON_ONLY)
    cfg = _finetune("ablations/pretrain_cls")
    with pytest.raises(CheckpointMismatchError) as e:
        build_finetune_module(cfg, str(ckpt))
    msg = str(e.value)
    assert str(ckpt) in msg and "another objective" in msg
    assert "pretrain.w_cls, pretrain.w_recon" in msg
    assert "checkpoint w_recon=1.0, w_cls=0.0, alignment=none" in msg
    assert "config w_recon=0.0, w_cls=1.0, alignment=none" in msg
    # the paper's finetuning config names the paper's strategy: refused as well
    with pytest.raises(CheckpointMismatchError, match="pretrain.alignment"):
        build_finetune_module(_finetune("finetune_hyp"), str(ckpt))


@pytest.mark.parametrize("experiment, pretrain", [
    ("ablations/pretrain_cls", CLS_ONLY), ("ablations/pretrain_recon", RECON_ONLY),
    ("ablations/text_infonce", {**PAPER, "alignment": "infonce"}), ("finetune_hyp", PAPER)])
def test_a_finetune_naming_the_checkpoints_strategy_is_accepted(tmp_path, experiment,
                                                                pretrain):
    module = build_finetune_module(_finetune(experiment), str(_checkpoint(tmp_path, pretrain)))
    assert module.backbone.encoder is not None


def test_a_checkpoint_from_before_the_record_is_checked_by_its_saved_config(tmp_path):
    ckpt = _checkpoint(tmp_path, CLS_ONLY, record=False)
    build_finetune_module(_finetune("ablations/pretrain_cls"), str(ckpt))
    with pytest.raises(CheckpointMismatchError, match="another objective"):
        build_finetune_module(_finetune("ablations/pretrain_recon"), str(ckpt))


def test_a_checkpoint_without_any_record_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path, None)
    with pytest.raises(CheckpointMismatchError, match="does not record its pretraining objective"):
        build_finetune_module(_finetune("finetune_hyp"), str(ckpt))
    # loading weights alone (no finetuning config to check against) still works
    assert load_pretrained_backbone(ECGDAN(ModelConfig()), ckpt)["kind"] == "pretrain"

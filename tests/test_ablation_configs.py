"""`make ablations`: each matrix cell's pretraining and finetuning configs, resolved without
training (docs/method.md section 7, ecg_dan/jobs/matrix.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ecg_dan.config import EXPERIMENTS_DIR, load_config
from ecg_dan.jobs.matrix import PROPOSED, Matrix, _pretrain_overrides, matrix_cells

ABLATIONS = sorted(p.stem for p in (EXPERIMENTS_DIR / "ablations").glob("*.yaml"))


def _raw(name):
    return OmegaConf.load(EXPERIMENTS_DIR / "ablations" / f"{name}.yaml")


def test_pretraining_and_latent_ablations_are_shipped():
    assert {"scratch", "latent64", "pretrain_recon", "pretrain_cls", "pretrain_recon_cls",
            "pretrain_cls_text", "pretrain_report_raw", "text_infonce", "no_cross_lead",
            "no_temporal", "no_attention"} <= set(ABLATIONS)


@pytest.mark.parametrize("cohort, batch, top, name", [
    *[("mi", 128, 0.04, n) for n in ABLATIONS], ("hyp", 1024, 0.02, "latent64")])
def test_ablation_finetuning_uses_the_cohorts_paper_config(cohort, batch, top, name):
    ckpt = None if name == "scratch" else "pre.ckpt"
    cfg = Matrix(cohort, synthetic=False).finetune_config(name, f"ablations/{name}", ckpt)
    assert (cfg.finetune.cohort, cfg.finetune.batch_size, cfg.finetune.top_fraction) == (
        cohort, batch, top)
    for key, val in (_raw(name).get("model") or {}).items():
        assert cfg.model[key] == val, key
    assert cfg.name == f"matrix_{cohort}-{name}" and cfg.run_dir == f"runs/matrix_{cohort}/{name}"
    if name == "scratch":
        assert cfg.finetune.scratch and cfg.trainer.max_epochs == 400
    else:
        assert cfg.finetune.ckpt == "pre.ckpt" and cfg.trainer.max_epochs == 100


def test_standalone_ablation_experiment_is_hyp_and_equals_the_overlay():
    standalone = load_config("ablations/no_temporal")
    overlaid = load_config("finetune_hyp", ["+ablations/no_temporal"])
    assert standalone == overlaid
    assert load_config("finetune_mi", ["+ablations/no_temporal"]).finetune.batch_size == 128


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_pretraining_config_resolves(name):
    ov = _pretrain_overrides(_raw(name))
    cfg = Matrix("hyp", synthetic=True).pretrain_config(name, ov)
    for section in ("model", "pretrain"):
        for key, val in (_raw(name).get(section) or {}).items():
            assert cfg[section][key] == val, (name, section, key)
    want = "val/loss" if cfg.pretrain.w_recon == 0 else "val/recon_mse"
    assert cfg.checkpoint.monitor == want


@pytest.mark.parametrize("w_recon, w_align, w_cls", [(0, 0, 1), (0, 1, 1)],
                         ids=["classification", "classification_text"])
def test_pretraining_runs_without_reconstruction(w_recon, w_align, w_cls):
    from ecg_dan.lit.pretrain import AlignmentPretrainModule
    from ecg_dan.models import ModelConfig
    from ecg_dan.models.registry import build_model

    torch.manual_seed(0)
    batch = {"x": torch.randn(2, 12, 608), "target": torch.randn(2, 12, 608),
             "text": torch.randn(2, 8), "superclass": torch.tensor([[1.0, 0, 0, 1, 0]] * 2)}
    small = ModelConfig(latent_dim=64, cross_lead_attention=False, temporal_attention=False)
    cfg = load_config("pretrain_short", ["+tiny", f"pretrain.w_recon={w_recon}",
                                         f"pretrain.w_align={w_align}",
                                         f"pretrain.w_cls={w_cls}"])
    module = AlignmentPretrainModule(
        build_model(small), pretrain=OmegaConf.to_container(cfg.pretrain, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True), text_dim=8 if w_align else None)
    assert (module.align != "none") == bool(w_align)
    losses = module._losses(batch)
    assert "recon_mse" in losses and "cls_bce" in losses  # val/recon_mse is still logged
    assert ("align" in losses) == bool(w_align)
    losses["loss"].backward()
    grad = module.backbone.encoder.pool_avg.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_matrix_cells_cover_ablations_and_baselines_with_the_cohorts_settings():
    cells = matrix_cells()
    assert next(iter(cells)) == PROPOSED
    assert {"biomarker_cox", "clinical_cox", "ecgdan_clinical_cox", "resnet1d101_ae", "vae",
            "vae_no_kl", "ecgdan_logistic_hazard", "no_temporal", "scratch"} <= set(cells)
    m = Matrix("mi", synthetic=False, ptbxl_dir="/data/ptb-xl")
    for cell, experiment in cells.items():
        cfg = m.finetune_config(cell, experiment, None)
        assert cfg.finetune.cohort == "mi" and cfg.finetune.top_fraction == 0.04, cell
    combined = m.finetune_config("ecgdan_clinical_cox", cells["ecgdan_clinical_cox"], None)
    assert combined.baseline.ecgdan_run == "runs/matrix_mi/proposed"
    vae = m.pretrain_config("vae", _pretrain_overrides(
        OmegaConf.load(EXPERIMENTS_DIR / "baselines" / "vae.yaml")))
    assert vae.model.name == "vae" and vae.pretrain.w_align == 0

"""The reconstruction baselines of docs/method.md section 7 as registry models:
``resnet1d101_ae`` and ``vae`` (``model.kl_weight=0``: the VAE without the KL term).

Parameter counts: the authors' classes (github.com/cherise215/LLM-ECG-Dual-Attention,
multi_modal_heart/model), instantiated once outside this repo with fastai/timm/numba stubbed:
``ECGAE(encoder_type="resnet1d101", in_channels=12, ECG_length=608,
decoder_type="attention_decoder", embedding_dim=256, latent_code_dim=512, add_time=False,
encoder_mha=False, apply_method="", decoder_outdim=12)`` has encoder 1,804,672 and decoder
110,570 parameters; ``ECGMarcelVAE(num_leads=12, time_steps=608, z_dims=512)`` has encoder
1,558,024 and decoder 5,404,117. In that check the parameter and buffer shapes matched ours
in order, and with their weights copied in, ours gave the same z / mu / log-variance /
reconstruction (max abs difference 0).
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from ecg_dan.checkpoints import CheckpointMismatchError, load_pretrained_backbone
from ecg_dan.config import PretrainConfig, load_config
from ecg_dan.jobs.finetune import run_finetune
from ecg_dan.jobs.pretrain import run_pretrain
from ecg_dan.lit.pretrain import AlignmentPretrainModule
from ecg_dan.models import ModelConfig, count_parameters
from ecg_dan.models.registry import build_model, model_names

COUNTS = {  # name: (encoder, decoder), see the module docstring
    "resnet1d101_ae": (1_804_672, 110_570),
    "vae": (1_558_024, 5_404_117),
}


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 12, 608, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_baseline_is_registered_with_the_authors_parameter_counts(name):
    assert name in model_names()
    net = build_model({"name": name})
    enc, dec = COUNTS[name]
    assert (count_parameters(net.encoder), count_parameters(net.decoder)) == (enc, dec)
    assert count_parameters(net) == enc + dec
    assert net.cfg.name == name and net.cfg.latent_dim == 512


def test_ecg_dan_defaults_unchanged_by_the_new_field():
    cfg = ModelConfig()
    assert cfg.name == "ecg_dan" and cfg.kl_weight == 1e-4
    assert count_parameters(build_model(cfg)) == 1_274_536 + 110_570


def test_resnet1d101_ae_forward():
    net = build_model({"name": "resnet1d101_ae"}).eval()
    with torch.no_grad():
        out = net(_x())
    assert out["z"].shape == (2, 512) and out["recon"].shape == (2, 12, 608)
    assert "kl" not in out
    assert torch.isfinite(out["z"]).all() and torch.isfinite(out["recon"]).all()


def test_resnet1d101_ae_other_latent_size_adds_a_linear_map():
    net = build_model({"name": "resnet1d101_ae", "latent_dim": 64}).eval()
    with torch.no_grad():
        out = net(_x())
    assert out["z"].shape == (2, 64) and out["recon"].shape == (2, 12, 608)
    assert count_parameters(net.encoder) == 1_804_672 + 512 * 64 + 64


def test_vae_forward_kl_and_deterministic_eval():
    net = build_model({"name": "vae"})
    x = _x(4)
    out = net.train()(x)
    assert out["z"].shape == (4, 512) and out["recon"].shape == (4, 12, 608)
    assert out["kl"].dim() == 0 and torch.isfinite(out["kl"]) and out["kl"].item() >= 0
    assert torch.isfinite(out["recon"]).all()
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
        mu, logvar = net.encoder(x)
    assert torch.equal(a["z"], b["z"]) and torch.equal(a["recon"], b["recon"])
    assert torch.equal(a["z"], mu)  # z is the mean; the decoder gets mu in eval
    assert torch.equal(a["recon"], net.decoder(mu))
    expected = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    assert torch.allclose(a["kl"], expected)


def test_vae_samples_in_training_only():
    torch.manual_seed(0)
    net = build_model({"name": "vae"}).train()
    x = _x()
    a, b = net(x), net(x)
    assert torch.equal(a["z"], b["z"])  # z (mu) for the heads is never sampled
    assert not torch.equal(a["recon"], b["recon"])  # the decoder input is


@pytest.mark.parametrize("kl_weight", [1e-4, 0.0])
def test_pretraining_loss_adds_kl_weight_times_kl(kl_weight):
    net = build_model({"name": "vae", "kl_weight": kl_weight})
    module = AlignmentPretrainModule(net, pretrain={**asdict(PretrainConfig()), "w_align": 0.0},
                                     optim={}).eval()
    assert module.align == "none" and not hasattr(module, "ecg_proj")
    x = _x()
    with torch.no_grad():
        losses = module._losses({"x": x, "target": x})
    assert losses["kl"].item() > 0
    assert torch.allclose(losses["loss"], losses["recon_mse"] + kl_weight * losses["kl"])
    if kl_weight == 0:
        assert torch.equal(losses["loss"], losses["recon_mse"])


@pytest.mark.slow  # ~30 s on a shared 2-core CPU (one pretraining step, two finetuning folds)
def test_vae_pretrain_then_finetune_through_the_jobs(tmp_path, tiny_data_root):
    """Reconstruction-only pretraining of the VAE, then finetuning from its checkpoint."""
    one_step = ["+tiny", f"data.root={tiny_data_root}", "trainer.limit_train_batches=1",
                "trainer.limit_val_batches=1"]
    out = run_pretrain(load_config("pretrain_short", [
        *one_step, f"run_dir={tmp_path / 'pre'}", "model.name=vae", "pretrain.w_align=0",
        "pretrain.alignment=none"]))
    ckpt = torch.load(out["checkpoint"], map_location="cpu", weights_only=True)
    meta = ckpt["ecg_dan"]
    assert meta["model_config"]["name"] == "vae" and set(meta["decoder"])
    logged = (tmp_path / "pre/csv/version_0/metrics.csv").read_text().splitlines()[0]
    assert "train/kl_step" in logged and "val/kl" in logged
    net = build_model(meta["model_config"])
    load_pretrained_backbone(net, out["checkpoint"])  # strict encoder + decoder
    with pytest.raises(CheckpointMismatchError, match="model.name"):
        load_pretrained_backbone(build_model({"name": "ecg_dan"}), out["checkpoint"])
    run_dir = run_finetune(load_config("baselines/vae", [
        *one_step, f"run_dir={tmp_path / 'ft'}", f"finetune.ckpt={out['checkpoint']}"]))
    assert (run_dir / "results.md").is_file()
    logged = next((tmp_path / "ft").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train/kl_step" in logged and "val/kl" in logged

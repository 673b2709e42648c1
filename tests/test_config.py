"""Config merging, validation messages, and the Trainer factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ecg_dan import config as config_mod
from ecg_dan.config import ConfigError, load_config, model_config, save_config
from ecg_dan.trainer import build_trainer, resolve_precision, resolve_strategy


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["name=x", "trainer.max_epoch=3"])
    msg = str(e.value)
    assert "trainer.max_epoch" in msg and "max_epochs" in msg and "precision" in msg


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: x\nmodel:\n  latent_dims: 64\n")
    with pytest.raises(ConfigError, match=r"model\.latent_dims.*exp\.yaml.*latent_dim"):
        load_config(f)


def test_missing_required_value_is_named():
    with pytest.raises(ConfigError, match="missing required config value.*name"):
        load_config(None, [])


def test_bad_type_and_bad_choice():
    with pytest.raises(ConfigError, match="max_epochs"):
        load_config(None, ["name=x", "trainer.max_epochs=abc"])
    with pytest.raises(ConfigError, match="finetune.cohort='hf'"):
        load_config(None, ["name=x", "finetune.cohort=hf"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["name=x", "trainer.max_epochs"])


def test_experiment_extends_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod, "EXPERIMENTS_DIR", tmp_path)
    (tmp_path / "base.yaml").write_text("seed: 1\n")
    (tmp_path / "parent.yaml").write_text("name: parent\nmodel:\n  latent_dim: 64\n")
    (tmp_path / "child.yaml").write_text("extends: parent\nname: child\nseed: 5\n")
    cfg = load_config("child", ["trainer.max_epochs=7"])
    assert (cfg.name, cfg.seed, cfg.model.latent_dim, cfg.trainer.max_epochs) == \
        ("child", 5, 64, 7)
    assert cfg.run_dir == "runs/child"
    assert model_config(cfg).latent_dim == 64
    with pytest.raises(ConfigError, match="no experiment 'nope'.*child"):
        load_config("nope")


def test_all_shipped_experiments_load():
    shipped = sorted(config_mod.EXPERIMENTS_DIR.rglob("*.yaml"))
    assert shipped
    for path in shipped:
        load_config(path, [] if "name:" in path.read_text() else ["name=x"])


def test_save_config_roundtrip(tmp_path):
    cfg = load_config(None, ["name=x", "model.latent_dim=64"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = OmegaConf.load(path)
    assert again.model.latent_dim == 64 and again.run_dir == "runs/x"
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_precision_and_strategy_resolution():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    assert resolve_precision("16-mixed", "gpu") == "16-mixed"
    assert resolve_strategy("auto", 1, 1) == "auto"
    assert resolve_strategy("auto", 2, 1) == "ddp"
    assert resolve_strategy("auto", [0, 1], 1) == "ddp"
    assert resolve_strategy("auto", 1, 2) == "ddp"
    assert resolve_strategy("deepspeed", 4, 1) == "deepspeed"


def test_trainer_factory_writes_config_and_csv_logger(tmp_path):
    cfg = load_config(None, ["name=t", "trainer.gradient_clip_val=100",
                             "checkpoint.monitor=val/cindex", "checkpoint.mode=max"])
    trainer = build_trainer(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert trainer.gradient_clip_val == 100
    ckpt = trainer.checkpoint_callback
    assert ckpt.monitor == "val/cindex" and ckpt.mode == "max" and ckpt.save_last
    assert Path(ckpt.dirpath) == tmp_path / "run" / "checkpoints"
    names = [type(lg).__name__ for lg in trainer.loggers]
    assert names == ["CSVLogger"]  # WANDB_MODE=disabled in tests

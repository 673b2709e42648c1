"""Jobs: evaluate a pretrained encoder; results of a finetuning run from its saved predictions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from data_modules.cache import open_cache
from data_modules.loading.transforms import finish_batch
from ecg_dan.config import load_saved_config
from ecg_dan.jobs.common import log_wandb_summary, seed
from ecg_dan.jobs.data import embedding_cache_dir, ptbxl_cache, text_embeddings, text_encoder
from ecg_dan.log import get_logger
from ecg_dan.results import write_json

log = get_logger(__name__)


@torch.no_grad()
def _embed(encoder: torch.nn.Module, loader) -> np.ndarray:
    encoder.eval()
    return torch.cat([encoder(finish_batch(b)["x"]) for b in loader]).numpy()


def _unmasked_train(dm):
    from data_modules.loading.datasets import PTBXLDataset

    return PTBXLDataset(dm.cache_path, dm.train_indices, masker=None, seed=dm.seed,
                        store=dm.store)


def evaluate_pretrain(ckpt: str | os.PathLike, cfg: DictConfig | None = None,
                      datamodule=None, text_emb: np.ndarray | None = None,
                      overrides: list[str] | None = None) -> Path:
    """Linear probe (pretrained vs random init), retrieval and zero-shot on the test fold."""
    from data_modules.loading.datasets import raw_loader
    from data_modules.signal.leads import SUPERCLASSES
    from ecg_dan.checkpoints import pretrain_module_from_checkpoint
    from ecg_dan.evaluation.pretrain_eval import (
        compare_probes,
        linear_probe,
        retrieval_recall,
        superclass_text_embeddings,
        zero_shot_superclass,
    )
    from ecg_dan.jobs.pretrain import ptbxl_datamodule
    from ecg_dan.models.registry import build_model
    from ecg_dan.results import results_markdown

    ckpt = Path(ckpt)
    module = pretrain_module_from_checkpoint(ckpt)
    if cfg is None:
        cfg = load_saved_config(module.hparams.config, overrides, origin=f"{ckpt} (its config)")
    run_dir = ckpt.parent.parent
    cache = ptbxl_cache(cfg)
    if datamodule is None:
        use_text = module.align != "none"
        text_emb = text_embeddings(cfg, cache)[0] if use_text else None
        datamodule = ptbxl_datamodule(cfg, cache, text_emb, for_training=False)
    dm = datamodule
    loaders = {s: raw_loader(dm.make_dataset("val" if s == "val" else "test")
                             if s != "train" else _unmasked_train(dm), batch_size=256)
               for s in ("train", "val", "test")}
    idx = {"train": dm.train_indices, "val": dm.val_indices, "test": dm.test_indices}
    with open_cache(cache, "ptbxl") as f:
        labels = f["superclass"][...]
    y = {s: labels[idx[s]] for s in idx}
    seed(cfg)
    random_encoder = build_model(module.backbone.cfg).encoder
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
            encoder = text_encoder(cfg.pretrain.text_model, cfg.pretrain.text_revision)
            cls = superclass_text_embeddings(load_statements(), encoder,
                                             embedding_cache_dir(cfg))
            cls_proj = {c: module.text_proj(torch.from_numpy(v[None])).numpy()[0]
                        for c, v in cls.items()}
            results["zero_shot"] = zero_shot_superclass(e, cls_proj, y["test"],
                                                        class_names=list(SUPERCLASSES))
    out_json = write_json(run_dir / "pretrain_eval.json", results)
    md = f"# Pretrained encoder evaluation\n\ncheckpoint: `{ckpt}`\n"
    titles = {"linear_probe": "Linear probe, test AUROC (fold 10; C chosen on fold 9)",
              "retrieval": "ECG-to-text retrieval on the test fold",
              "zero_shot": "Zero-shot superclass detection on the test fold"}
    for key, title in titles.items():
        if key in results:
            md += f"\n## {title}\n\n{results_markdown(results[key])}\n"
    from data_modules.atomic import atomic_write_text

    atomic_write_text(run_dir / "pretrain_eval.md", md)
    log_wandb_summary(cfg, "pretrain_eval", {k: v for k, v in results.items()
                                             if k != "checkpoint"})
    log.info(md)
    return out_json


def prediction_files(run_dir: str | os.PathLike) -> list[Path]:
    """The held-out folds' prediction files of a finetuning run (``predictions/seed*_fold*.csv``
    without the ``_train`` ones), sorted; an error when there are none."""
    run_dir = Path(run_dir)
    files = sorted(p for p in (run_dir / "predictions").glob("seed*_fold*.csv")
                   if not p.stem.endswith("_train"))
    if not files:
        raise FileNotFoundError(f"{run_dir}/predictions has no seed*_fold*.csv: run finetuning "
                                "first")
    return files


def evaluate_finetune(run_dir: str | os.PathLike, cfg: DictConfig | None = None) -> Path:
    """Results table, Kaplan-Meier figure, calibration (absolute risk from each fold's
    Breslow baseline or discrete-time curves vs Kaplan-Meier, per risk decile and in the
    large, at the config's horizons) and W&B summary from the saved predictions."""
    from data_modules.atomic import atomic_write_text
    from ecg_dan.metrics.cindex import harrell_cindex
    from ecg_dan.results import (
        add_fold_column,
        calibration_markdown,
        calibration_plot,
        calibration_results,
        fold_antolini,
        fold_ibs,
        kaplan_meier_plot,
        load_survival_sidecar,
        oof_absolute_risk,
        results_table,
        summary_row,
        to_markdown,
    )

    run_dir = Path(run_dir)
    if cfg is None:
        cfg = load_saved_config(run_dir / "config.yaml")
    folds = {p: pd.read_csv(p) for p in prediction_files(run_dir)}
    oof = pd.concat(folds.values(), ignore_index=True)
    atomic_write_text(run_dir / "oof_predictions.csv", oof.to_csv(index=False))
    horizons = [h for h in cfg.finetune.horizons if h < oof.time.max()] or None
    table = results_table(oof, train_lookup="oof", horizons=horizons, n_boot=cfg.finetune.n_boot)
    ibs, antolini = {}, {}
    absolute = []  # held-out rows with predicted risk at the horizons, for calibration
    for p, test in folds.items():
        key = (int(test.seed[0]), int(test.fold[0]))
        train_csv = p.with_name(p.stem + "_train.csv")
        train = pd.read_csv(train_csv) if train_csv.is_file() else None
        # logistic hazard: the model's own curves; Cox: Breslow curves of the training fold
        sidecar = p.with_name(p.stem + "_surv.npz")
        curves = load_survival_sidecar(sidecar, test.eid) if sidecar.is_file() else None
        if train is not None:
            ibs[key] = fold_ibs(test, train, curves=curves)
        if train is not None or curves is not None:
            antolini[key] = fold_antolini(test, train, curves)
            if horizons:
                absolute.append(oof_absolute_risk(test, train, horizons, curves))
    if ibs:
        table = add_fold_column(table, "ibs", ibs)
    if antolini:
        table = add_fold_column(table, "antolini_c", antolini)
    md = to_markdown(table)
    extra: dict[str, Any] = {}
    cache = Path(json.loads((run_dir / "splits.json").read_text())["meta"]["cache"])
    if cache.is_file():
        with open_cache(cache, "ukb") as f:
            if "true_log_hazard" in f:
                eid = f["eid"][...]
                lh = pd.Series(f["true_log_hazard"][...], index=eid)
                sub = oof.drop_duplicates("eid")
                extra["oracle_cindex"] = harrell_cindex(sub.time.to_numpy(),
                                                        lh.loc[sub.eid].to_numpy(),
                                                        sub.event.to_numpy())
                md += (f"\n\nOracle C-index (true log-hazard of the synthetic cohort, same "
                       f"participants): {extra['oracle_cindex']:.4f}\n")
    unit = str(cfg.data.time_unit)
    if absolute and len(absolute) == len(folds):
        cal, large = calibration_results(pd.concat(absolute, ignore_index=True), horizons)
        atomic_write_text(run_dir / "calibration.csv", cal.to_csv(index=False))
        calibration_plot(cal, run_dir / "calibration.png", time_unit=unit,
                         title="Calibration by risk decile (out-of-fold)")
        extra["calibration_in_the_large"] = large
        md += ("\n\n## Calibration at the horizons (out-of-fold absolute risk vs Kaplan-Meier)"
               f"\n\n{calibration_markdown(large, unit)}\nPer risk decile: calibration.csv, "
               "calibration.png.\n")
    km = kaplan_meier_plot(oof, top_fraction=cfg.finetune.top_fraction,
                           out_png=run_dir / "kaplan_meier.png",
                           time_label=f"Time since ECG ({cfg.data.time_unit})")
    png = Path(km["path"])
    extra["km_logrank_p"] = km["p_value"]
    atomic_write_text(run_dir / "results.md", md)
    atomic_write_text(run_dir / "results.csv", table.to_csv(index=False))
    summary = {**summary_row(table), **extra}
    write_json(run_dir / "results.json", summary)
    log_wandb_summary(cfg, "finetune", summary, table=table, image=png)
    log.info(md)
    log.info(f"results: {run_dir / 'results.md'}; figure: {png}")
    return run_dir / "results.md"



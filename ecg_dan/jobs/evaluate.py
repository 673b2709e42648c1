"""Jobs: evaluate a pretrained encoder; results of a finetuning run from its saved predictions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from data_modules.atomic import atomic_write_text
from data_modules.cache import SURVIVAL_KINDS, open_cache
from data_modules.loading.corpora_datamodule import CorpusDataset
from data_modules.loading.datasets import PTBXLDataset, raw_loader
from data_modules.loading.ptbxl_datamodule import PTBXLDataModule
from data_modules.loading.transforms import finish_batch
from data_modules.protocol.splits import fold_name, ptbxl_split
from data_modules.signal.leads import SUPERCLASSES
from ecg_dan.checkpoints import pretrain_module_from_checkpoint
from ecg_dan.config import load_saved_config
from ecg_dan.evaluation.few_shot import few_shot_curve
from ecg_dan.evaluation.pretrain_eval import (
    compare_probes,
    linear_probe,
    retrieval_recall,
    superclass_text_embeddings,
    zero_shot_superclass,
)
from ecg_dan.jobs.common import log_wandb_summary, seed
from ecg_dan.jobs.data import (
    corpus_caches,
    corpus_text_embeddings,
    embedding_cache_dir,
    ptbxl_datamodule,
    text_encoder,
)
from ecg_dan.log import get_logger
from ecg_dan.metrics.cindex import harrell_cindex
from ecg_dan.metrics.decision import decision_curve
from ecg_dan.metrics.recalibration import CoxRecalibration
from ecg_dan.models.registry import build_model
from ecg_dan.reporting.absolute_models import FoldModelRows, fold_models
from ecg_dan.reporting.few_shot import few_shot_markdown, few_shot_plot, few_shot_table
from ecg_dan.reporting.figures import calibration_plot, decision_curve_plot, kaplan_meier_plot
from ecg_dan.reporting.fold_metrics import (
    absolute_risks,
    add_ibs_antolini,
    calibration_results,
)
from ecg_dan.reporting.json_io import write_json
from ecg_dan.reporting.markdown import finetune_markdown, results_markdown
from ecg_dan.reporting.risk_ranks import oof_ranked
from ecg_dan.reporting.tables import results_table, summary_row
from ecg_dan.run_dir import RunDir
from ecg_dan.text.recipes import load_statements

log = get_logger(__name__)


@torch.no_grad()
def _embed(encoder: torch.nn.Module, loader) -> np.ndarray:
    encoder.eval()
    return torch.cat([encoder(finish_batch(b)["x"]) for b in loader]).numpy()


def _unmasked_train(dm):
    return PTBXLDataset(dm.cache_path, dm.train_indices, masker=None, seed=dm.seed,
                        store=dm.store)


def evaluate_pretrain(ckpt: str | os.PathLike, cfg: DictConfig | None = None,
                      datamodule=None, texts: dict[str, np.ndarray] | None = None,
                      overrides: list[str] | None = None,
                      few_shot: list[int | str] | None = None, few_shot_draws: int = 10
                      ) -> Path:
    """Linear probe (pretrained vs random init), retrieval and zero-shot on PTB-XL's test
    fold; ECG-to-text retrieval on the test fold of each other corpus (no SCP labels there:
    no probe, no zero-shot). ``datamodule`` and ``texts`` (per corpus) are the training
    run's, reused when given. ``few_shot`` (labels per class, e.g. ``[5, 10, 20, "all"]``)
    adds the few-shot probe curve over ``few_shot_draws`` draws (``probe_few_shot.*``)."""
    ckpt = Path(ckpt)
    module = pretrain_module_from_checkpoint(ckpt)
    if cfg is None:
        cfg = load_saved_config(module.hparams.config, overrides, origin=f"{ckpt} (its config)")
    rd = RunDir.of_checkpoint(ckpt)
    rd.check_owned()  # its results go into the checkpoint's run, never into another folder
    caches = corpus_caches(cfg)
    use_text = module.align != "none"
    if texts is None and use_text:
        texts = {name: corpus_text_embeddings(cfg, name, path)[0]
                 for name, path in caches.items()}
    results: dict[str, Any] = {"checkpoint": str(ckpt)}
    titles: dict[str, str] = {}
    if "ptbxl" in caches:
        text_emb = None if texts is None else texts["ptbxl"]
        dm = datamodule if isinstance(datamodule, PTBXLDataModule) else \
            ptbxl_datamodule(cfg, caches["ptbxl"], text_emb, for_training=False)
        results |= _ptbxl_results(module, cfg, caches["ptbxl"], dm, text_emb,
                                  (rd, few_shot, few_shot_draws) if few_shot else None)
        titles |= {"linear_probe": "Linear probe, test AUROC (fold 10; C chosen on fold 9)",
                   "retrieval": "ECG-to-text retrieval on the test fold",
                   "zero_shot": "Zero-shot superclass detection on the test fold",
                   "few_shot_probe": "Few-shot linear probe (probe_few_shot.{md,csv,png})"}
    for name, path in caches.items():
        if name == "ptbxl" or not use_text or texts is None:
            continue
        results[f"retrieval_{name}"] = _corpus_retrieval(module, path, texts[name], cfg.seed)
        titles[f"retrieval_{name}"] = (f"ECG-to-text retrieval on {name}'s test fold "
                                       "(patient-level fold 10)")
    out_json = write_json(rd.pretrain_eval_json, results)
    md = f"# Pretrained encoder evaluation\n\ncheckpoint: `{ckpt}`\n"
    for key, title in titles.items():
        if key == "few_shot_probe" and key in results:
            md += f"\n## {title}\n\n{few_shot_markdown(results[key])}"
        elif key in results:
            md += f"\n## {title}\n\n{results_markdown(results[key])}\n"
    atomic_write_text(rd.pretrain_eval_md, md)
    log_wandb_summary(cfg, "pretrain_eval", {k: v for k, v in results.items()
                                             if k != "checkpoint"})
    log.info(md)
    return out_json


def _ptbxl_results(module, cfg: DictConfig, cache: Path, dm, text_emb: np.ndarray | None,
                   few_shot: tuple[RunDir, list[int | str], int] | None = None
                   ) -> dict[str, Any]:
    """Probes (pretrained vs random init), retrieval and zero-shot on PTB-XL's test fold;
    with ``few_shot`` = (run, sizes, draws) also the few-shot curve (:func:`_few_shot`)."""
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
    results: dict[str, Any] = {"linear_probe": compare_probes(probes["pretrained"],
                                                              probes["random init"])}
    if few_shot is not None:
        rd, sizes, draws = few_shot
        results["few_shot_probe"] = _few_shot(cfg, rd, feats, y, sizes, draws)
    if module.align != "none" and text_emb is not None:
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
    return results


def _few_shot(cfg: DictConfig, rd: RunDir, feats: dict[str, dict[str, np.ndarray]],
              y: dict[str, np.ndarray], sizes: list[int | str], draws: int) -> dict[str, Any]:
    """The few-shot probe curve (labelled subsets of the training folds, test fold 10):
    ``probe_few_shot.{json,csv,md,png}`` in the run directory and W&B; returns the curve."""
    curve = few_shot_curve({n: (f["train"], f["test"]) for n, f in feats.items()},
                           y["train"], y["test"], SUPERCLASSES, sizes=sizes, n_draws=draws,
                           seed=int(cfg.seed))
    table = few_shot_table(curve)
    write_json(rd.path / "probe_few_shot.json", curve)
    atomic_write_text(rd.path / "probe_few_shot.csv", table.to_csv(index=False))
    md = "# Few-shot linear probe: pretrained vs random encoder\n\n" + few_shot_markdown(curve)
    atomic_write_text(rd.path / "probe_few_shot.md", md)
    png = few_shot_plot(curve, rd.path / "probe_few_shot.png")
    summary = {f"{r['labels_per_class']}/{k}": v for r in curve["rows"]
               for k, v in r["estimate"].items()}
    log_wandb_summary(cfg, "probe_few_shot", summary, table=table, image=png)
    return curve


def _corpus_retrieval(module, cache: Path, text_emb: np.ndarray, data_seed: int
                      ) -> dict[str, Any]:
    """ECG-to-text retrieval on a corpus cache's test fold (fold 10)."""
    with open_cache(cache, "corpus") as f:
        rows = ptbxl_split(f["fold"][...])["test"]
    ds = CorpusDataset(cache, rows, seed=data_seed)
    with torch.no_grad():
        z = torch.from_numpy(_embed(module.backbone.encoder, raw_loader(ds, batch_size=256)))
        e = module.ecg_proj(z).numpy()
        t = module.text_proj(torch.from_numpy(text_emb[rows])).numpy()
    return retrieval_recall(e, t)


def evaluate_finetune(run_dir: str | os.PathLike, cfg: DictConfig | None = None) -> Path:
    """Results table, Kaplan-Meier figure, calibration (absolute risk from each fold model's
    out-of-fold recalibration or discrete-time curves vs Kaplan-Meier, per risk decile and
    in the large, at the config's horizons) and W&B summary from the saved predictions."""
    rd = RunDir(run_dir)
    if cfg is None:
        cfg = rd.load_config()
    folds = fold_models(rd)
    # risk_cal: the risk on a scale shared by the fold models; risk_rank: its normal score
    # within the fold model's held-out risks, what ranks and groups people across folds
    oof = oof_ranked(folds)
    atomic_write_text(rd.oof_csv, oof.to_csv(index=False))
    horizons = [h for h in cfg.finetune.horizons if h < oof.time.max()] or None
    # the pooled C and the risk groups do not mix fold models' scales
    ranked = oof.assign(risk=oof.risk_rank)
    table = results_table(ranked, train_lookup="oof", horizons=horizons,
                          n_boot=cfg.finetune.n_boot)
    table = add_ibs_antolini(table, folds)
    extra: dict[str, Any] = {}
    oracle = _oracle_cindex(rd, oof)
    if oracle is not None:
        extra["oracle_cindex"] = oracle
    unit = str(cfg.data.time_unit)
    large = None
    tables: dict[str, pd.DataFrame] = {}
    images: list[Path] = []
    if horizons and all(f.model is not None for f in folds):
        per = absolute_risks(folds, horizons)
        cal, large, curves = calibration_results(per, horizons)
        atomic_write_text(rd.calibration_csv, cal.to_csv(index=False))
        calibration_plot(cal, rd.calibration_png, time_unit=unit, curves=curves,
                         title="Calibration out of fold: risk deciles and smoothed curve")
        extra["calibration"] = large
        extra["recalibration"] = _recalibration_summary(folds)
        dca = pd.concat([decision_curve(per[f"risk@{h:g}"], per.time, per.event, h)
                         .assign(horizon=float(h)) for h in horizons], ignore_index=True)
        dca = dca[["horizon", *[c for c in dca.columns if c != "horizon"]]]
        atomic_write_text(rd.decision_curve_csv, dca.to_csv(index=False))
        decision_curve_plot(dca, rd.decision_curve_png, time_unit=unit,
                            title="Decision curves (out-of-fold absolute risk)")
        tables["calibration"], tables["decision_curve"] = cal, dca
        images += [rd.calibration_png, rd.decision_curve_png]
    md = finetune_markdown(table, unit, oracle_cindex=oracle, calibration=large)
    km = kaplan_meier_plot(ranked, top_fraction=cfg.finetune.top_fraction,
                           out_png=rd.kaplan_meier_png,
                           time_label=f"Time since ECG ({cfg.data.time_unit})")
    png = Path(km["path"])
    extra["km_logrank_p"] = km["p_value"]
    atomic_write_text(rd.results_md, md)
    atomic_write_text(rd.results_csv, table.to_csv(index=False))
    summary = {**summary_row(table), **extra}
    write_json(rd.results_json, summary)
    log_wandb_summary(cfg, "finetune", summary, table=table, image=png, tables=tables,
                      images=images)
    log.info(md)
    log.info(f"results: {rd.results_md}; figures: {', '.join(map(str, [png, *images]))}")
    return rd.results_md


def _recalibration_summary(folds: list[FoldModelRows]) -> dict[str, dict[str, Any]] | None:
    """Each Cox fold model's recalibration (offset, slope, rows and events it was fitted on)."""
    out = {}
    for f in folds:
        m = f.model
        if isinstance(m, CoxRecalibration):
            out[fold_name(*f.key)] = {
                "offset": m.offset, "slope": m.slope, "slope_fitted": m.slope_fitted,
                "n": m.n, "events": m.events}
    return out or None


def _oracle_cindex(rd: RunDir, oof: pd.DataFrame) -> float | None:
    """Harrell's C of the true log-hazard on the same participants, for a synthetic cohort
    whose cache records it (None otherwise)."""
    cache = rd.splits_cache()
    if cache is None or not cache.is_file():
        return None
    with open_cache(cache, SURVIVAL_KINDS) as f:
        if "true_log_hazard" not in f:
            return None
        lh = pd.Series(f["true_log_hazard"][...], index=f["eid"][...])
    sub = oof.drop_duplicates("eid")
    return harrell_cindex(sub.time.to_numpy(), lh.loc[sub.eid].to_numpy(), sub.event.to_numpy())

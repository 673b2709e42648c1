"""Job: LLM-informed alignment pretraining on PTB-XL (and other corpora, pretrain.corpora),
then the encoder evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ecg_dan.config import ConfigError, saved_container
from ecg_dan.jobs.common import check_data, finish_wandb, prepare_run_dir, seed
from ecg_dan.jobs.data import corpus_caches, corpus_text_embeddings, pretrain_datamodule
from ecg_dan.jobs.evaluate import evaluate_pretrain
from ecg_dan.lit.pretrain import AlignmentPretrainModule
from ecg_dan.log import get_logger
from ecg_dan.models.registry import build_model
from ecg_dan.run_dir import RunDir
from ecg_dan.trainer import build_trainer, maybe_compile, resume_path

log = get_logger(__name__)

# Training longer from last.ckpt is a resume, not a different run.
RESUMABLE_KEYS = ("trainer.max_epochs", "trainer.max_steps")


def shuffled_reports(cfg: DictConfig, texts: dict[str, np.ndarray] | None
                     ) -> dict[str, np.ndarray] | None:
    """The text embeddings training aligns to: the records' own, or with
    ``pretrain.shuffle_reports`` each corpus's rows in a fixed random order seeded by
    ``seed`` (the negative control of docs/method.md section 7)."""
    if texts is None or not cfg.pretrain.shuffle_reports:
        return texts
    out = {}
    for i, (name, emb) in enumerate(texts.items()):
        perm = np.random.default_rng([int(cfg.seed), i]).permutation(len(emb))
        out[name] = emb[perm]
        moved = int((perm != np.arange(len(perm))).sum())
        log.info(f"{name}: reports shuffled across records ({moved} of {len(perm)} records "
                 "aligned to another record's report)")
    return out


#: Mean cosine between different reports' projections above which the alignment collapsed.
COLLAPSED_AGREEMENT = 0.99


def warn_collapse(agreement) -> bool:
    """Say so when the last validation found every report projected to one direction (the
    alignment term then teaches nothing; ``val/report_agreement``). True when collapsed."""
    if agreement is None or not float(agreement) > COLLAPSED_AGREEMENT:
        return False
    log.warning(f"the text alignment has collapsed: different reports' projections agree "
                f"(mean cosine {float(agreement):.4f} > {COLLAPSED_AGREEMENT}), so the "
                "alignment term teaches the encoder nothing about the reports; the cosine "
                "loss has no negatives to prevent it (pretrain.alignment=infonce has; "
                "docs/method.md section 5)")
    return True


def run_pretrain(cfg: DictConfig) -> dict[str, Path]:
    """Alignment pretraining; then the encoder evaluation. Returns checkpoint and results."""
    if cfg.task != "pretrain":
        raise ConfigError(f"experiment has task={cfg.task}; `ecg-dan pretrain` needs "
                          "task=pretrain")
    run_dir = prepare_run_dir(cfg, ignore=RESUMABLE_KEYS)
    seed(cfg)
    caches = corpus_caches(cfg)
    check_data(run_dir, caches)
    use_text = cfg.pretrain.alignment != "none" and cfg.pretrain.w_align > 0
    texts, text_id = None, None
    if use_text:
        texts = {}
        for name, path in caches.items():
            texts[name], text_id = corpus_text_embeddings(cfg, name, path)
    dm = pretrain_datamodule(cfg, caches, shuffled_reports(cfg, texts))
    emb = None if texts is None else next(iter(texts.values()))
    for name, path in caches.items():
        log.info(f"{name} cache {path}")
    log.info(f"pretraining rows ({', '.join(caches)}): train {dm.n_train}, val {dm.n_val}, "
             f"test {dm.n_test}")
    container = OmegaConf.to_container(cfg, resolve=True)
    module = AlignmentPretrainModule(
        build_model(container["model"]), pretrain=container["pretrain"],
        optim=container["optim"], text_dim=None if emb is None else emb.shape[1],
        text_model_id=text_id, config=saved_container(cfg))
    maybe_compile(module, cfg)
    trainer = build_trainer(cfg, run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, run_dir))
    best = trainer.checkpoint_callback.best_model_path or str(RunDir(run_dir).last_checkpoint)
    warn_collapse(trainer.callback_metrics.get("val/report_agreement"))
    out: dict[str, Path] = {"checkpoint": Path(best)}
    if trainer.is_global_zero and cfg.pretrain.evaluate:
        out["results"] = evaluate_pretrain(best, cfg=cfg, datamodule=dm, texts=texts)
        log.info(f"checkpoint: {best}\nresults: {out['results']}")
    finish_wandb()
    return out



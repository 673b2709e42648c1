"""Job: what a finetuned network attends to (docs/method.md section 8), ``ecg-dan explain``.

Every participant is scored by the fold model that held it out (one per seed: the run's
held-out predictions name the participants, its splits prove that model never trained on
them, the fold's sidecar names the checkpoint), with the inputs of prediction time (the
cache's median beat, z-scored and padded by :func:`data_modules.loading.transforms.finish_batch`).
The recomputed log-risk must equal the saved one, so a rebuilt cache or a replaced
checkpoint is caught.

Per participant the maps are averaged over seeds (each seed's held-out model), as the
risk groups average the rank score (``reporting.risk_ranks``, ``reporting.oof.
mean_risk_groups``: the Kaplan-Meier figure's top ``finetune.top_fraction``). The gradient
maps cost one backward pass per token (12 x 19 per batch), so they are computed for at most
``max_gradient_subjects`` participants of each
group (a seeded random sample; all when the group is smaller).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from data_modules.atomic import atomic_path, atomic_write_text
from data_modules.errors import DataError
from data_modules.loading.datasets import UKBDataset
from data_modules.loading.transforms import finish_batch, unpad_beat
from data_modules.signal.leads import LEADS, PAD
from ecg_dan.checkpoints import finetune_module_from_checkpoint
from ecg_dan.config import ConfigError, config_hash
from ecg_dan.interpretation.figures import (
    cross_lead_figure,
    km_with_maps_figure,
    latent_figure,
    temporal_beat_figure,
)
from ecg_dan.interpretation.maps import (
    group_mean_std,
    has_temporal_gradients,
    pca_2d,
    rescale01,
)
from ecg_dan.interpretation.single import attention_of, explain_ecg
from ecg_dan.jobs.common import log_wandb_summary
from ecg_dan.jobs.data import ukb_cache
from ecg_dan.log import get_logger
from ecg_dan.reporting.absolute_models import fold_models
from ecg_dan.reporting.figures import kaplan_meier_plot
from ecg_dan.reporting.json_io import write_json
from ecg_dan.reporting.oof import mean_risk_groups
from ecg_dan.reporting.risk_ranks import oof_ranked
from ecg_dan.run_dir import RunDir

log = get_logger(__name__)

BATCH = 64
RISK_TOL = 1e-3  # recomputed vs saved log-risk (float32, fused vs explicit attention)


def held_out_assignment(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (participant, seed): ``eid, seed, fold, row`` (cache row), ``risk, time,
    event`` (as saved) and ``checkpoint``, the model of the fold that held it out.

    Checked against ``splits.json``: the fold's saved participants are its test part and
    none is in its training or validation part; each participant once per seed."""
    rd = RunDir(run_dir)
    want = config_hash(rd.load_config())
    split_file = rd.splits_path
    splits = {(s.seed, s.fold): s for s in rd.load_splits()}
    parts = []
    for ff in rd.scored_folds():
        p = ff.csv
        df = ff.read_test()
        for col in ("eid", "seed", "fold", "risk", "time", "event"):
            if col not in df.columns:
                raise DataError(f"{p}: no column {col!r}")
        seed, fold = int(df.seed.iloc[0]), int(df.fold.iloc[0])
        split = splits.get((seed, fold))
        if split is None or split.test_eid is None:
            raise DataError(f"{p}: {split_file} has no test participants for seed {seed} "
                            f"fold {fold}")
        row_of = dict(zip(split.test_eid.tolist(), split.test_idx.tolist()))
        eids = df.eid.to_numpy(np.int64)
        unknown = [e for e in eids if e not in row_of]
        if unknown:
            raise DataError(f"{p}: participant {unknown[0]} is not in the held-out part of "
                            f"seed {seed} fold {fold} in {split_file}")
        trained = np.intersect1d(eids, np.concatenate(
            [a for a in (split.train_eid, split.val_eid) if a is not None]))
        if trained.size:
            raise DataError(f"{p}: participant {int(trained[0])} was in the training fold of "
                            f"seed {seed} fold {fold}")
        out = df[["eid", "seed", "fold", "risk", "time", "event"]].copy()
        out["row"] = [row_of[e] for e in eids]
        out["checkpoint"] = str(ff.checkpoint(want))
        parts.append(out)
    assign = pd.concat(parts, ignore_index=True)
    dup = assign.duplicated(["eid", "seed"])
    if dup.any():
        r = assign[dup].iloc[0]
        raise DataError(f"{rd.predictions_dir}: participant {int(r.eid)} is held out twice "
                        f"for seed {int(r.seed)}")
    return assign


def _cache(rd: RunDir, cfg: DictConfig) -> Path:
    cache = rd.splits_cache()
    if cache is not None and cache.is_file():
        return cache
    return ukb_cache(cfg)


def _score_fold(module: torch.nn.Module, ds: UKBDataset, saved: pd.DataFrame
                ) -> dict[str, np.ndarray]:
    """Attention maps (no gradient maps), z and log-risk of one model's held-out
    participants (``saved`` in dataset order), checked against their saved log-risks."""
    if not np.array_equal(ds.eid[ds.indices], saved.eid.to_numpy()):
        raise DataError(f"{ds.path}: the cache rows do not hold the run's participants; "
                        "was the cache rebuilt?")
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(ds), BATCH):
        x = finish_batch(ds.__getitems__(range(start, min(start + BATCH, len(ds)))))["x"]
        maps = attention_of(module, x, gradients=False)
        maps["beat"] = unpad_beat(x.numpy(), PAD)
        for k, v in maps.items():
            out.setdefault(k, []).append(v)
    res = {k: np.concatenate(v) for k, v in out.items()}
    if "risk" in res:
        bad = ~np.isclose(res["risk"], saved.risk.to_numpy(), rtol=RISK_TOL, atol=RISK_TOL)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{saved.checkpoint.iloc[0]}: participant {int(saved.eid.iloc[i])}"
                            f" scores {res['risk'][i]:.6g}, the run saved "
                            f"{saved.risk.iloc[i]:.6g}; the cache or checkpoint changed")
    return res


def _per_eid_mean(frames: list[tuple[np.ndarray, np.ndarray]], eids: np.ndarray) -> np.ndarray:
    """Average over seeds: ``frames`` are (eids, values) of each model; result in ``eids``
    order."""
    total: dict[int, np.ndarray] = {}
    count: dict[int, int] = {}
    for ids, vals in frames:
        for e, v in zip(ids.tolist(), vals):
            total[e] = total.get(e, 0) + v.astype(np.float64)
            count[e] = count.get(e, 0) + 1
    return np.stack([total[e] / count[e] for e in eids.tolist()])


def _sample(eids: np.ndarray, cap: int, seed: int) -> np.ndarray:
    if len(eids) <= cap:
        return np.sort(eids)
    return np.sort(np.random.default_rng(seed).choice(eids, cap, replace=False))


def run_explain(run_dir: str | os.PathLike, eids: Sequence[int] = (),
                max_gradient_subjects: int = 32, seed: int = 0) -> Path:
    """Figures, ``maps.npz`` and ``explain.md`` in ``run_dir/explain/``; returns that folder.

    ``eids``: participants to draw one by one (default: the highest-risk one), each with its
    first seed's held-out model."""
    from tqdm.auto import tqdm

    rd = RunDir(run_dir)
    run_dir = rd.path
    cfg = rd.load_config()
    if cfg.task == "cox_baseline":
        raise ConfigError(f"{run_dir} is a Cox baseline run (task=cox_baseline): it has no "
                          "network and no attention to explain")
    if cfg.task != "finetune":
        raise ConfigError(f"{run_dir} has task={cfg.task}; `ecg-dan explain` needs a "
                          "finetuning run")
    if max_gradient_subjects < 1:
        raise ValueError(f"max_gradient_subjects must be >= 1, got {max_gradient_subjects}")
    out_dir = rd.explain_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    assign = held_out_assignment(run_dir)
    cache = _cache(rd, cfg)
    top = float(cfg.finetune.top_fraction)
    # people are grouped across fold models by their rank within their fold model's
    # held-out risks (ecg_dan.reporting.risk_ranks), as the run's Kaplan-Meier figure
    ranks = oof_ranked(fold_models(rd))[["eid", "seed", "risk_rank"]]
    grouped = assign.merge(ranks, on=["eid", "seed"], how="left", validate="1:1")
    grouped = grouped.assign(risk=grouped.risk_rank)
    groups, threshold = mean_risk_groups(grouped, top)
    if groups.high.all() or not groups.high.any():
        raise DataError(f"{rd.predictions_dir}: the top {100 * top:g}% risk threshold "
                        f"({threshold:.6g}) leaves an empty group (all risks tied?)")
    all_eids = groups.index.to_numpy(np.int64)
    high_eids = all_eids[groups.high.to_numpy()]
    low_eids = all_eids[~groups.high.to_numpy()]
    grad_eids = np.concatenate([_sample(high_eids, max_gradient_subjects, seed),
                                _sample(low_eids, max_gradient_subjects, seed + 1)])
    seeds = sorted(assign.seed.unique().tolist())
    want = [int(e) for e in eids] or [int(groups.risk.idxmax())]
    missing = [e for e in want if e not in groups.index]
    if missing:
        raise DataError(f"participant {missing[0]} is not in the predictions of {run_dir}")

    cross, tokw, temporal, beats, latent = [], [], [], [], []
    singles: list[dict[str, Any]] = []
    models = sorted(assign.groupby(["seed", "fold"]), key=lambda kv: kv[0])
    for (s, f), part in tqdm(models, desc="explain: fold models", unit="model"):
        part = part.sort_values("row", kind="stable")
        module = finetune_module_from_checkpoint(part.checkpoint.iloc[0])
        ds = UKBDataset(cache, part.row.to_numpy(), max_bytes=cfg.data.in_memory_max_mb * 2**20)
        maps = _score_fold(module, ds, part)
        ids = part.eid.to_numpy(np.int64)
        if "cross_lead" in maps:
            cross.append((ids, maps["cross_lead"]))
        if "token_weights" in maps:
            tokw.append((ids, maps["token_weights"]))
        beats.append((ids, maps["beat"]))
        if s == seeds[0]:
            proj, share = pca_2d(maps["z"])
            latent.append({"proj": proj, "share": share, "risk": part.risk.to_numpy(),
                           "event": part.event.to_numpy(), "fold": int(f),
                           "label": f"seed {s} fold {f} model: {len(ids)} held-out"})
        sel = np.isin(ids, grad_eids)
        if sel.any() and "token_weights" in maps:
            gmaps = attention_of(module, torch.stack([ds[i]["x"] for i in np.flatnonzero(sel)]))
            if "temporal_map" in gmaps:
                temporal.append((ids[sel], gmaps["temporal_map"]))
        if s == seeds[0] and "cross_lead" in maps and has_temporal_gradients(module):
            for e in want:
                if e in set(ids.tolist()):
                    x = ds[int(np.flatnonzero(ids == e)[0])]["x"].numpy()
                    r = explain_ecg(module, x, out_dir / f"ecg_{e}.png",
                                    title=f"eid {e} (seed {s} fold {f} model, held out)")
                    singles.append({"eid": e, "seed": int(s), "fold": int(f),
                                    "risk": r["risk"], "path": r["path"]})
    name = f"{cfg.name} ({cfg.finetune.cohort})"
    figures: list[tuple[Path, str]] = []
    arrays: dict[str, np.ndarray] = {"eid": all_eids, "risk": groups.risk.to_numpy(),
                                     "high": groups.high.to_numpy(), "threshold": threshold}
    hi, lo = groups.high.to_numpy(), ~groups.high.to_numpy()
    km = kaplan_meier_plot(grouped, top_fraction=top, out_png=out_dir / "kaplan_meier.png",
                           time_label=f"Time since ECG ({cfg.data.time_unit})",
                           title=f"{name}: top {100 * top:g}% vs rest")
    figures.append((km["path"], "Kaplan-Meier curves of the high-risk group vs the rest "
                                "(log-rank test)."))
    notes = []
    if cross:
        cl = _per_eid_mean(cross, all_eids)
        h, low = group_mean_std(cl, hi), group_mean_std(cl, lo)
        arrays.update(cross_lead=cl, cross_lead_high_mean=h[0], cross_lead_high_std=h[1],
                      cross_lead_low_mean=low[0], cross_lead_low_std=low[1])
        figures.append((cross_lead_figure(h, low, int(hi.sum()), int(lo.sum()),
                                          out_dir / "cross_lead.png",
                                          title=f"{name}: cross-lead attention"),
                        "Cross-lead attention (head-averaged 12 x 12, rows = query leads): "
                        "mean and std of the high- and low-risk groups, difference of means."))
        figures.append((km_with_maps_figure(km["path"], h[0], low[0],
                                            out_dir / "km_and_cross_lead.png",
                                            title=name),
                        "The Kaplan-Meier figure beside the groups' mean cross-lead maps."))
        d = h[0] - low[0]
        i, j = np.unravel_index(np.abs(d).argmax(), d.shape)
        notes.append(f"largest difference of mean cross-lead attention: query {LEADS[i]} -> "
                     f"key {LEADS[j]}, {d[i, j]:+.4f} (high {h[0][i, j]:.4f}, low "
                     f"{low[0][i, j]:.4f})")
    else:
        notes.append("no cross-lead attention in this model: no cross-lead figures")
    if tokw:
        arrays["token_weights"] = _per_eid_mean(tokw, all_eids)
    if temporal:
        ids = np.sort(np.concatenate([t[0] for t in temporal]))
        ids = np.unique(ids)
        tm = _per_eid_mean(temporal, ids)
        beat = _per_eid_mean(beats, ids)
        arrays.update(temporal_eid=ids, temporal_map=tm)
        for label, members, fname in (("high", np.isin(ids, high_eids), "temporal_high_risk"),
                                      ("low", np.isin(ids, low_eids), "temporal_low_risk")):
            colour = rescale01(tm[members].mean(axis=0))
            arrays[f"temporal_{label}"] = colour
            path = temporal_beat_figure(
                beat[members].mean(axis=0), colour, out_dir / f"{fname}.png",
                title=f"{name}: {label}-risk group, mean beat coloured by mean temporal "
                      f"attention (n={int(members.sum())})")
            figures.append((path, f"Temporal attention of the {label}-risk group: mean of "
                                  f"{int(members.sum())} participants' per-lead maps "
                                  "(rescaled to [0, 1]) on their mean z-scored beat."))
    else:
        notes.append("no temporal attention in this model: no temporal figures")
    figures.append((latent_figure(latent, out_dir / "latent_pca.png",
                                  title=f"{name}: z of held-out participants (PCA)"),
                    f"PCA of the latent z, one panel per fold model of seed {seeds[0]} (each "
                    "model its own latent space, its held-out participants only), coloured by "
                    "log-risk (top) and by event (bottom)."))
    for sg in singles:
        figures.append((sg["path"], f"Participant {sg['eid']}: beat coloured by its temporal "
                                    f"attention and its cross-lead map (seed {sg['seed']} fold "
                                    f"{sg['fold']} model, log-risk {sg['risk']:.4f})."))
    with atomic_path(out_dir / "maps.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    summary = {"n": len(all_eids), "top_fraction": top, "threshold": threshold,
               "n_high": km["n_high"], "n_low": km["n_low"], "events_high": km["events_high"],
               "events_low": km["events_low"], "logrank_p": km["p_value"],
               "n_models": len(models), "seeds": seeds,
               "gradient_subjects": {"high": int(np.isin(grad_eids, high_eids).sum()),
                                     "low": int(np.isin(grad_eids, low_eids).sum())}}
    write_json(out_dir / "explain.json", summary)
    atomic_write_text(out_dir / "explain.md", _markdown(run_dir, cfg, summary, figures, notes,
                                                        assign))
    log_wandb_summary(cfg, "explain", summary, images=[p for p, _ in figures])
    log.info(f"explain: {len(figures)} figures in {out_dir}")
    return out_dir


def _markdown(run_dir: Path, cfg: DictConfig, s: dict[str, Any],
              figures: list[tuple[Path, str]], notes: list[str], assign: pd.DataFrame) -> str:
    per_model = (assign.groupby(["seed", "fold"]).agg(n=("eid", "size"),
                                                     checkpoint=("checkpoint", "first"))
                 .reset_index())
    lines = [
        f"# What the network attends to: `{run_dir.name}`", "",
        f"Cohort `{cfg.finetune.cohort}`, {s['n']} participants, {s['n_models']} fold models "
        f"(seeds {', '.join(map(str, s['seeds']))}); every participant is scored only by the "
        "fold model that held it out, and its maps are averaged over seeds (docs/method.md "
        "section 8).", "",
        f"- high risk: mean log-risk over seeds >= {s['threshold']:.4f}, the "
        f"{100 * (1 - s['top_fraction']):g}th percentile (top {100 * s['top_fraction']:g}%, "
        f"`finetune.top_fraction`): n = {s['n_high']} ({s['events_high']} events); low risk: "
        f"n = {s['n_low']} ({s['events_low']} events); log-rank p = {s['logrank_p']:.3g}"
        + (f"; tied risks at the threshold all join the high group "
           f"({100 * s['n_high'] / s['n']:.1f}% of participants)"
           if s["n_high"] > s["top_fraction"] * s["n"] * 1.05 + 1 else ""),
        f"- temporal (gradient) maps: {s['gradient_subjects']['high']} high-risk and "
        f"{s['gradient_subjects']['low']} low-risk participants (all, or a seeded random "
        "sample of `--max-gradient-subjects` per group); Gaussian sigma 4 samples, central "
        "600 samples, each lead rescaled to [0, 1]",
        *[f"- {n}" for n in notes], "", "## Figures", "",
        *[f"- `{p.name}`: {text}" for p, text in figures], "", "## Fold models", "",
        "| seed | fold | held out | checkpoint |", "|---|---|---|---|",
        *[f"| {int(r.seed)} | {int(r.fold)} | {int(r.n)} | `{r.checkpoint}` |"
          for r in per_model.itertuples()], "",
        "Arrays behind the figures: `maps.npz`; numbers: `explain.json`.", ""]
    return "\n".join(lines)

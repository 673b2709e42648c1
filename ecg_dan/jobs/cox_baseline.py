"""Job: the paper's non-network Cox baselines in the finetuning protocol (docs/method.md
section 7), selected by ``baseline.features``:

* ``biomarkers``: the 15 ECG biomarkers (:mod:`data_modules.signal.biomarkers`), no age or sex;
* ``clinical``: age and sex;
* ``ecgdan_clinical``: a finished ECG-DAN finetuning run's risk combined with age and sex.

Same splits file, seeds, folds and inner validation split as ECG-DAN, the same
``predictions/seed*_fold*.csv`` (+ ``_train.csv`` with the training-fold rows and the
``.json`` sidecar with the config hash) and the same results code
(:func:`ecg_dan.jobs.evaluate.evaluate_finetune`); ``risk`` is the log partial hazard.

Model: lifelines ``CoxPHFitter(penalizer=p, l1_ratio=0)``, i.e. an L2-penalised Cox model.
lifelines is well kept, already a dependency (the C-index reference), fits the penalised
partial likelihood with Newton-Raphson, standardises the covariates internally (so the
penalty acts on standardised coefficients) and keeps the Breslow baseline hazard.

Penalty (``biomarkers``, ``clinical``): the authors searched log10 penalty in [-2, 5] with 50
particle-swarm evaluations; here a log-spaced grid of ``baseline.n_penalties`` (15) values
over [``log10_penalty_min``, ``log10_penalty_max``] = [-2, 5] is fitted on the training rows
and scored by Harrell's C-index on the inner-validation rows; the best wins (ties: the
smaller penalty: a very large penalty shrinks every coefficient towards 0 without changing
the ranking, so the C-index plateaus, and the least-shrunk model of the plateau keeps risks
away from 0 and from float round-off ties); the model is then refitted on the training rows
with that penalty (as ECG-DAN's checkpoint is trained on the training rows only). Columns that are
constant on the training rows (e.g. a missing indicator that is never 1) are dropped.

``encoder`` (a survival linear probe, docs/method.md section 7): the frozen encoder's z of
every participant (eval mode, all leads), from the pretraining checkpoint ``finetune.ckpt``
or, with ``finetune.scratch=true``, from a randomly initialised encoder (seeded by the
split's seed: the control of a random-encoder probe). z is standardised and reduced to its
first ``baseline.probe_components`` principal components, both fitted on the training rows
(lifelines' Newton steps on 512 columns take ~8 s per fit, 32 components 0.2 s), then the
same penalty search as above. Linear in z throughout.

``ecgdan_clinical`` never uses the held-out fold: the ECG-DAN run's
``predictions/seed*_fold*_train.csv`` holds its risks of the training-fold rows; the Cox on
(risk, age, sex) is fitted on the split's inner-validation rows only (the ECG-DAN model was
not trained on them; its risks on its own training rows would be over-fitted), with the fixed
penalty ``baseline.combine_penalizer``, and applied to the held-out fold's ECG-DAN risk + age
+ sex. The splits are copied from the ECG-DAN run, so they are identical.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from data_modules.atomic import atomic_write_text
from data_modules.cache import SURVIVAL_KINDS, open_cache
from data_modules.loading.datasets import UKBDataset
from data_modules.loading.transforms import finish_batch
from data_modules.protocol.splits import Split
from data_modules.signal.biomarkers import (
    FEATURES,
    apply_preprocessing,
    biomarker_table,
    fit_preprocessing,
)
from ecg_dan.checkpoints import load_pretrained_backbone
from ecg_dan.config import ConfigError
from ecg_dan.jobs.protocol import FoldFitter, FoldResult, run_cross_validation
from ecg_dan.log import get_logger
from ecg_dan.metrics.cindex import harrell_cindex
from ecg_dan.models.registry import build_model
from ecg_dan.run_dir import FINISHED_RUN_FILES, FoldFiles, RunDir

log = get_logger(__name__)

CLINICAL = ("age", "sex")


def penalty_grid(cfg: DictConfig) -> np.ndarray:
    b = cfg.baseline
    if b.log10_penalty_min > b.log10_penalty_max:
        raise ConfigError(f"baseline.log10_penalty_min={b.log10_penalty_min} is above "
                          f"baseline.log10_penalty_max={b.log10_penalty_max}")
    return 10.0 ** np.linspace(b.log10_penalty_min, b.log10_penalty_max, int(b.n_penalties))


def cohort_table(cache: Path, rows: np.ndarray, with_biomarkers: bool) -> pd.DataFrame:
    """eid, time, event, age, sex (+ the biomarkers) of the given cache rows (index = row)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    with open_cache(cache, SURVIVAL_KINDS) as f:
        t = pd.DataFrame({k: f[k][...][rows] for k in ("eid", "time", "event", "age", "sex")},
                         index=rows)
        if with_biomarkers:
            if "measurements" not in f:
                raise ConfigError(f"{cache}: baseline.features=biomarkers needs the UK Biobank "
                                  "device measurements; this "
                                  f"{f.attrs['kind']} cache has none (use "
                                  "baseline.features=clinical)")
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in f["measurements"].attrs["measurement_names"]]
            meas = pd.DataFrame(f["measurements"][...][rows], columns=names, index=rows)
            parts = []
            for lo in range(0, rows.size, 2048):  # medians in chunks: bounded memory
                r = rows[lo:lo + 2048]
                parts.append(biomarker_table(meas.loc[r], t.loc[r, "sex"].to_numpy(),
                                             f["median"][r]))
            t = pd.concat([t, pd.concat(parts)], axis=1)
    t["time"] = t["time"].astype(float)
    t["event"] = t["event"].astype(int)
    return t


def _design(table: pd.DataFrame, cols: list[str], train_rows: np.ndarray
            ) -> tuple[pd.DataFrame, list[str], dict]:
    """Preprocessed covariates of every row (fitted on ``train_rows``) and the kept columns."""
    prep = fit_preprocessing(table.loc[train_rows, cols])
    x = apply_preprocessing(table[cols], prep)
    kept = [c for c in cols if x.loc[train_rows, c].std() > 0]
    return x[kept], kept, prep


def fit_cox(x: pd.DataFrame, time: np.ndarray, event: np.ndarray, penalizer: float):
    """lifelines' L2-penalised Cox (l1_ratio=0) on the covariates ``x``."""
    from lifelines import CoxPHFitter

    df = x.copy()
    df["_time"], df["_event"] = np.asarray(time, float), np.asarray(event, int)
    cph = CoxPHFitter(penalizer=float(penalizer), l1_ratio=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds
        cph.fit(df, duration_col="_time", event_col="_event")
    return cph


def log_partial_hazard(cph, x: pd.DataFrame) -> np.ndarray:
    return np.asarray(cph.predict_log_partial_hazard(x), dtype=float).ravel()


def _cindex(time, risk, event) -> float:
    return float(harrell_cindex(time, risk, event))


def _pred_frame(table: pd.DataFrame, rows: np.ndarray, risk: np.ndarray, split
                ) -> pd.DataFrame:
    t = table.loc[rows]
    df = pd.DataFrame({"eid": t["eid"].to_numpy(np.int64), "seed": split.seed,
                       "fold": split.fold, "risk": np.asarray(risk, np.float64),
                       "time": t["time"].to_numpy(np.float32),
                       "event": t["event"].to_numpy(np.float32)})
    return df.sort_values("eid", kind="stable").reset_index(drop=True)


def _ecgdan_run(cfg: DictConfig) -> RunDir:
    run = cfg.baseline.ecgdan_run
    if not run:
        raise ConfigError("baseline.features=ecgdan_clinical needs baseline.ecgdan_run=DIR, a "
                          f"finished ECG-DAN finetuning run (with {FINISHED_RUN_FILES})")
    run = RunDir(run)
    if not run.has_splits() or not run.has_predictions():
        raise ConfigError(f"baseline.ecgdan_run={run} lacks {FINISHED_RUN_FILES}: finish "
                          "the ECG-DAN finetuning run first")
    return run


def _ecgdan_risks(ecgdan: RunDir, split: Split) -> tuple[pd.Series, pd.Series]:
    """The ECG-DAN run's risks by eid: (training-fold rows, held-out fold) of one split."""
    fold = ecgdan.fold(split.seed, split.fold)
    for p in (fold.csv, fold.train_csv):
        if not p.is_file():
            raise ConfigError(f"{p} is missing: the ECG-DAN run has not finished {fold.name}")
    test, train = fold.read_test(), fold.read_train()
    return train.set_index("eid")["risk"], test.set_index("eid")["risk"]


class CoxFitter(FoldFitter):
    """The configured Cox baseline per split (see the module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.grid = penalty_grid(cfg)
        self.features = str(cfg.baseline.features)
        self.ecgdan = _ecgdan_run(cfg) if self.features == "ecgdan_clinical" else None
        self.table = pd.DataFrame()
        self.cols: list[str] = []
        self.cache: Path | None = None
        self.run: RunDir | None = None

    def splits(self, cfg: DictConfig, run: RunDir, cache: Path) -> list[Split]:
        if self.ecgdan is not None:  # the ECG-DAN run's own splits
            return run.adopt_splits(self.ecgdan)
        return super().splits(cfg, run, cache)

    def prepare(self, run: RunDir, cache: Path, splits: list[Split]) -> None:
        self.run, self.cache = run, cache
        rows = np.unique(np.concatenate([np.concatenate([s.train_idx, s.val_idx, s.test_idx])
                                         for s in splits]))
        self.table = cohort_table(cache, rows, with_biomarkers=self.features == "biomarkers")
        if self.features == "biomarkers":
            self.cols = [c for c in self.table.columns
                         if c in FEATURES or c.endswith("_missing")]
            atomic_write_text(run.biomarkers_csv,
                              self.table[["eid", *self.cols]].to_csv(index=False))
        elif self.features == "encoder":
            self.z_by_seed: dict[int, pd.DataFrame] = {}
        else:
            self.cols = list(CLINICAL)

    def _encoder_design(self, split: Split) -> tuple[pd.DataFrame, list[str]]:
        """The cohort table with the principal components of z (fitted on the training
        rows) as columns ``pc0..``: one encoder per run (pretrained) or per seed (random)."""
        key = int(split.seed) if self.cfg.finetune.scratch else -1
        if key not in self.z_by_seed:
            z = encoder_features(self.cfg, self.cache, self.table.index.to_numpy(),
                                 None if key < 0 else key)
            self.z_by_seed[key] = pd.DataFrame(z, index=self.table.index)
        z = self.z_by_seed[key].to_numpy()
        pcs = probe_components(z, self.table.index.get_indexer(split.train_idx),
                               int(self.cfg.baseline.probe_components))
        cols = [f"pc{i}" for i in range(pcs.shape[1])]
        return pd.concat([self.table, pd.DataFrame(pcs, index=self.table.index,
                                                   columns=cols)], axis=1), cols

    def fit_fold(self, split: Split, fold: FoldFiles) -> FoldResult:
        table = self.table
        for part in ("train", "val", "test"):
            eids = getattr(split, f"{part}_eid")
            idx = getattr(split, f"{part}_idx")
            if eids is not None and not np.array_equal(table.loc[idx, "eid"].to_numpy(), eids):
                raise ConfigError(f"{self.run.splits_path} ({fold.name}, {part}) does not "
                                  f"match the participants of {self.cache}: rebuild with the "
                                  "same data or use a new run directory")
        if self.ecgdan is not None:
            preds, meta = _fit_ecgdan_clinical(self.cfg, self.ecgdan, table, split)
        elif self.features == "encoder":
            design, cols = self._encoder_design(split)
            preds, meta = _fit_tuned(design, cols, split, self.grid)
            meta.pop("coefficients")  # of principal components: nothing to read
            meta["encoder"] = (f"random (seed {split.seed})" if self.cfg.finetune.scratch
                               else str(self.cfg.finetune.ckpt))
        else:
            preds, meta = _fit_tuned(table, self.cols, split, self.grid)
        test, train = preds
        checkpoint = str(fold.meta)  # no network: the sidecar itself records the fit
        test["checkpoint"] = train["checkpoint"] = checkpoint
        return FoldResult(test, train, checkpoint=checkpoint,
                          meta={"features": self.features, **meta},
                          label=f"Cox ({self.features}, penalizer {meta['penalizer']:.3g}): ")


def encoder_features(cfg: DictConfig, cache: Path, rows: np.ndarray, seed: int | None
                     ) -> np.ndarray:
    """z (n, latent_dim) of the cache ``rows`` from the frozen encoder of ``cfg.model``:
    the pretraining checkpoint ``finetune.ckpt`` when ``seed`` is None, else a random
    initialisation drawn with ``seed``. Eval mode, every lead, no gradients."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if seed is None:
        if not cfg.finetune.ckpt:
            raise ConfigError("baseline.features=encoder needs finetune.ckpt=PATH (a "
                              "pretraining checkpoint) or finetune.scratch=true (a random "
                              "encoder)")
        net = build_model(container["model"])
        load_pretrained_backbone(net, str(cfg.finetune.ckpt), pretrain=container["pretrain"])
    else:
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            net = build_model(container["model"])
    net.eval()
    ds = UKBDataset(cache, np.sort(rows), max_bytes=cfg.data.in_memory_max_mb * 2**20)
    out = []
    with torch.inference_mode():
        for lo in range(0, len(ds), 256):
            x = finish_batch(ds.__getitems__(range(lo, min(lo + 256, len(ds)))))["x"]
            out.append(net(x)["z"].float().numpy())
    z = np.concatenate(out).astype(np.float64)
    if not np.isfinite(z).all():
        raise ConfigError(f"the encoder gives non-finite z on {cache}")
    return z


def probe_components(z: np.ndarray, train_pos: np.ndarray, k: int) -> np.ndarray:
    """z standardised and projected on its first ``k`` principal components, both fitted on
    the rows ``train_pos`` (positions in ``z``); ``k`` is capped by the training rows."""
    zt = z[train_pos]
    mu, sd = zt.mean(0), zt.std(0)
    sd[sd == 0] = 1.0
    zs = (z - mu) / sd
    _, _, vt = np.linalg.svd(zs[train_pos], full_matrices=False)
    k = max(1, min(k, len(train_pos) - 1, vt.shape[0]))
    return zs @ vt[:k].T


def run_cox_baseline(cfg: DictConfig) -> Path:
    """Fit the configured Cox baseline per split (the protocol of
    :func:`ecg_dan.jobs.protocol.run_cross_validation`); write predictions, then the
    results."""
    if cfg.task != "cox_baseline":
        raise ConfigError(f"experiment has task={cfg.task}; the Cox baseline needs "
                          "task=cox_baseline")
    return run_cross_validation(cfg, CoxFitter(cfg))


def _fit_tuned(table: pd.DataFrame, cols: list[str], split, grid: np.ndarray):
    """Penalty by validation C-index over ``grid``, refit on the training rows."""
    tr, va, te = split.train_idx, split.val_idx, split.test_idx
    x, kept, prep = _design(table, cols, tr)
    time, event = table["time"], table["event"]
    scores = []
    for p in grid:
        if va.size == 0:
            break
        cph = fit_cox(x.loc[tr], time.loc[tr], event.loc[tr], p)
        scores.append(_cindex(time.loc[va], log_partial_hazard(cph, x.loc[va]), event.loc[va]))
    if scores:
        best = max(range(len(grid)), key=lambda i: (round(scores[i], 12), -i))
    else:  # no validation split (finetune.val_fraction is > 0 by schema): largest penalty
        best = len(grid) - 1
    penalizer = float(grid[best])
    cph = fit_cox(x.loc[tr], time.loc[tr], event.loc[tr], penalizer)
    fit_rows = np.sort(np.concatenate([tr, va]))
    test = _pred_frame(table, te, log_partial_hazard(cph, x.loc[te]), split)
    train = _pred_frame(table, fit_rows, log_partial_hazard(cph, x.loc[fit_rows]), split)
    meta = {"penalizer": penalizer, "log10_penalizer": float(np.log10(penalizer)),
            "penalty_grid": [float(v) for v in grid],
            "val_cindex": [float(v) for v in scores],
            "best_val_cindex": float(scores[best]) if scores else None,
            "columns": kept, "dropped_constant": [c for c in cols if c not in kept],
            "coefficients": {k: float(v) for k, v in cph.params_.items()},
            "preprocessing": prep,
            "fit_rows": "train", "n_train": int(tr.size), "n_val": int(va.size)}
    return (test, train), meta


def _fit_ecgdan_clinical(cfg: DictConfig, ecgdan: RunDir, table: pd.DataFrame, split):
    """Cox on (ECG-DAN risk, age, sex) fitted on the inner-validation rows only."""
    train_risk, test_risk = _ecgdan_risks(ecgdan, split)
    tab = table.copy()
    tr, va, te = split.train_idx, split.val_idx, split.test_idx
    for what, idx, src in (("training", tr, train_risk), ("inner-validation", va, train_risk),
                           ("held-out", te, test_risk)):
        missing = sorted(set(tab.loc[idx, "eid"]) - set(src.index))
        if missing:
            raise ConfigError(f"{cfg.baseline.ecgdan_run}: {split.name}: "
                              f"no ECG-DAN risk for "
                              f"{len(missing)} {what} participants (e.g. {missing[:5]})")
    fit_rows = np.sort(np.concatenate([tr, va]))
    tab["ecgdan_risk"] = np.nan
    tab.loc[fit_rows, "ecgdan_risk"] = train_risk.reindex(tab.loc[fit_rows, "eid"]).to_numpy()
    tab.loc[te, "ecgdan_risk"] = test_risk.reindex(tab.loc[te, "eid"]).to_numpy()
    cols = ["ecgdan_risk", *CLINICAL]
    x = tab[cols].astype(float)
    kept = [c for c in cols if x.loc[va, c].std() > 0]
    pen = float(cfg.baseline.combine_penalizer)
    cph = fit_cox(x.loc[va, kept], tab.loc[va, "time"], tab.loc[va, "event"], pen)
    test = _pred_frame(tab, te, log_partial_hazard(cph, x.loc[te, kept]), split)
    train = _pred_frame(tab, fit_rows, log_partial_hazard(cph, x.loc[fit_rows, kept]), split)
    meta = {"penalizer": pen, "log10_penalizer": float(np.log10(pen)) if pen > 0 else None,
            "columns": kept, "coefficients": {k: float(v) for k, v in cph.params_.items()},
            "fit_rows": "val", "n_val": int(va.size),
            "ecgdan_run": str(cfg.baseline.ecgdan_run)}
    return (test, train), meta

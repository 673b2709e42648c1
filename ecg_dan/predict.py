"""Scoring new ECGs with a finetuning run's ensemble (the Python API of ``ecg-dan predict``).

``load_model(path)`` takes a model file (``ecg-dan export``, :mod:`ecg_dan.model_file`) or a
run directory (exported in memory, so both go through the same checks and give the same
model id) and returns an :class:`EnsembleModel`:

- ``risk(beats)``: the ensemble's risk, the mean over the fold models (folds x seeds) of
  each one's risk on the scale the fold models share (a Cox model's calibrated log hazard
  ratio ``slope (eta - offset)``, see :mod:`ecg_dan.model_file`); ``member_risks`` gives each
  fold model's raw log-risk, as its run wrote it;
- ``score(beats, horizons, members)``: that risk and its spread (population std over the
  fold models), its percentile within the run's out-of-fold scores (each fold model's risk
  as the normal score of its rank among that fold model's held-out risks, averaged:
  :mod:`ecg_dan.reporting.risk_ranks`), the absolute risk of the event by each horizon (in
  the run's time unit, the run's own horizons by default) averaged over the fold models,
  and the high-risk flag (the run's top-``finetune.top_fraction`` threshold: 2% HYP, 4% MI);
- ``members``: the fold models themselves (``SurvivalFinetuneModule`` in eval mode, e.g. for
  attention maps and input gradients).

Who scores whom. A new person is scored by every fold model; their absolute risk and
log-risk are the mean over all of them, their percentile and flag come from the same kind
of score as the run's out-of-fold reference (one fold model per seed; every such choice,
:mod:`ecg_dan.reporting.risk_ranks`): ``percentile`` the mean over the choices,
``high_risk_share`` the fraction of choices that put them in the top group, ``high_risk``
a share of at least one half. A participant of the run's own cohort was trained on by some
fold models; given the run directory (which knows the splits) and the run's own cache,
``predict`` scores each of them with the fold models that held them out only
(``members_for``), exactly as the run's out-of-fold predictions, so their risks, flags and
calibration are the run's.

``beats`` are (B, 12, 600) median beats in mV at 500 Hz with R at sample 240 (what
:func:`data_modules.sources.files.load_beat` returns); :meth:`EnsembleModel.prepare` applies the
training normalisation (per-lead z-score, zero padding to 608).

Absolute risk: ``1 - exp(-H0_m(t) exp(slope_m (eta_m - offset_m)))`` with the out-of-fold
recalibration of fold model m (:mod:`ecg_dan.metrics.recalibration`; a logistic-hazard
fold model's eta is its scalar risk). Past a fold model's follow-up (its last baseline
time) the risk is not estimable and is NaN.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from data_modules.loading.transforms import finish_batch
from data_modules.signal.leads import BEAT_LEN, N_LEADS
from ecg_dan.lit.finetune import SurvivalFinetuneModule
from ecg_dan.log import get_logger
from ecg_dan.model_file import (
    ModelContents,
    ModelFileError,
    model_bytes,
    read_model,
    read_model_bytes,
)
from ecg_dan.models.registry import build_model
from ecg_dan.reporting.risk_ranks import normal_score
from ecg_dan.run_dir import RunDir

log = get_logger(__name__)

__all__ = ["MAX_CHOICES", "EnsembleModel", "FoldModel", "fold_head", "load_model"]

#: Most choices of one fold model per seed enumerated for a new person's percentile and flag
#: (2 folds x 5 seeds: 32; beyond the cap, that many drawn with a fixed seed).
MAX_CHOICES = 1024


@dataclass
class FoldModel:
    """One member of the ensemble: the fold model of (seed, fold) and what gives it
    absolute risk (a recalibrated baseline, or the cuts of a discrete-time head)."""

    seed: int
    fold: int
    module: Any  # ecg_dan.lit.finetune.SurvivalFinetuneModule, eval mode
    offset: float = 0.0  # shared-scale risk = slope * (log-risk - offset)
    slope: float = 1.0
    heldout: NDArray | None = None  # its held-out rows' risks as its run wrote them, sorted
    baseline_times: NDArray | None = None
    baseline_cumhaz: NDArray | None = None
    cuts: NDArray | None = None

    @property
    def max_time(self) -> float:
        return float(self.baseline_times[-1])


def _fold_module(manifest: dict[str, Any], cuts: NDArray | None) -> SurvivalFinetuneModule:
    """A fold model as the manifest describes it (weights not loaded)."""
    cfg = manifest["config"]
    return SurvivalFinetuneModule(build_model(manifest["model_config"]), finetune=cfg["finetune"],
                                  optim=cfg["optim"], config=None,
                                  cuts=None if cuts is None else cuts.tolist())


def fold_head(module: Any, x: torch.Tensor) -> torch.Tensor:
    """A fold model's risk-head output for prepared beats: its encoder and head only (the
    module's forward also decodes the beat, which a score does not need; a VAE backbone's z
    is its encoder's mean, as in its forward). The ONNX export traces the same function."""
    z = module.backbone.encoder(x)
    return module.risk_head(z[0] if isinstance(z, tuple) else z)


def _build_members(contents: ModelContents, modules: bool = True) -> list[FoldModel]:
    """The fold models of a model file; without ``modules`` (an ONNX file, whose graph
    holds the weights) their calibration and reference only."""
    m = contents.manifest
    members = []
    for i, info in enumerate(m["members"]):
        cuts_t = contents.tensors.get(f"m{i}.cuts")
        cuts = None if cuts_t is None else cuts_t.numpy().astype(np.float64)
        if not modules:
            members.append(_fold_model(contents, i, None, cuts))
            continue
        # the shapes the manifest's config makes, on the meta device (nothing allocated), are
        # compared with the tensors present before a real module is built: a manifest that
        # declares a huge model costs nothing (its hash is an integrity check, not a limit)
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in _fold_module(m, cuts).state_dict().items()}
        state = contents.member_state(i)
        have = {k: tuple(v.shape) for k, v in state.items()}
        diff = [f"{k}: file {have.get(k, 'absent')} vs this code {want.get(k, 'absent')}"
                for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        if diff:
            raise ModelFileError(f"{contents.source} describes another architecture (fold "
                                 f"model seed {info['seed']} fold {info['fold']}): "
                                 f"{'; '.join(diff[:5])}"
                                 f"{f' and {len(diff) - 5} more' if len(diff) > 5 else ''}")
        module = _fold_module(m, cuts)
        module.load_state_dict(state, strict=True)
        module.eval()
        members.append(_fold_model(contents, i, module, cuts))
    return members


def _fold_model(contents: ModelContents, i: int, module: Any, cuts: NDArray | None
                ) -> FoldModel:
    info = contents.manifest["members"][i]
    member = FoldModel(int(info["seed"]), int(info["fold"]), module,
                       offset=float(info["offset"]), slope=float(info["slope"]), cuts=cuts,
                       heldout=contents.tensors[f"m{i}.heldout_risk"].numpy())
    member.baseline_times = contents.tensors[f"m{i}.baseline_times"].numpy()
    member.baseline_cumhaz = contents.tensors[f"m{i}.baseline_cumhaz"].numpy()
    return member


class EnsembleModel:
    """The fold models of one finetuning run, their baselines and reference risks."""

    def __init__(self, contents: ModelContents, runner: Any = None) -> None:
        """``runner``: the fold models' graph in ONNX Runtime
        (:class:`ecg_dan.onnx_model.OnnxRunner`) for an ONNX file; None: the PyTorch
        modules built from the file's weights."""
        m = contents.manifest
        self.manifest = m
        self.model_id = contents.model_id
        self.source = contents.source
        self.time_unit = str(m["run"]["time_unit"])
        self.horizons = [float(h) for h in m["run"]["horizons"]]
        self.objective = str(m["run"]["objective"])
        self.top_fraction = float(m["run"]["top_fraction"])
        ref = m["reference"]
        self.reference = contents.tensors["reference_risk"].numpy().astype(np.float64)
        self.threshold = float(ref["high_risk_threshold"])
        self.runner = runner
        self.members = _build_members(contents, modules=runner is None)
        # set by load_model for a run directory: who held out whom, in the run's own cache
        self.held_out: list[set[str]] | None = None
        self.cohort_cache: Path | None = None

    def __repr__(self) -> str:
        return (f"EnsembleModel({self.source!r}, id={self.model_id}, "
                f"{len(self.members)} fold models, {self.objective})")

    @staticmethod
    def prepare(beats: ArrayLike) -> torch.Tensor:
        """(B, 12, 600) mV median beats -> the network input (B, 12, 608) float32, by the
        training batches' own rule (:func:`data_modules.loading.transforms.finish_batch`)."""
        x = np.asarray(beats, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.shape[1:] != (N_LEADS, BEAT_LEN):
            raise ValueError(f"beats must have shape (B, {N_LEADS}, {BEAT_LEN}), got {x.shape}")
        return finish_batch({"median": torch.from_numpy(x)})["x"]

    @torch.inference_mode()
    def member_outputs(self, beats: ArrayLike, curves: bool = True
                       ) -> tuple[NDArray, list[NDArray] | None]:
        """Each fold model's log-risk (M, B) and, for discrete-time heads with ``curves``,
        survival at the cuts (M arrays (B, K)), by the encoder and the head only
        (:func:`fold_head`). An ONNX file's graph gives the log-risks only (no curves)."""
        x = self.prepare(beats)
        if self.runner is not None:
            return self.runner(x), None
        risks, survs = [], []
        for m in self.members:
            head = fold_head(m.module, x)
            risks.append(m.module.objective.risk(head).double().numpy())
            if curves and m.cuts is not None:
                survs.append(m.module.objective.survival(head).double().numpy())
        return np.stack(risks), (survs or None)

    def member_risks(self, beats: ArrayLike) -> NDArray:
        """Raw log-risk of every fold model (as its run's predictions), shape (M, B)."""
        return self.member_outputs(beats, curves=False)[0]

    def shared(self, member_risks: NDArray) -> NDArray:
        """Fold models' risks on their shared scale, (M, B)."""
        off = np.array([m.offset for m in self.members])[:, None]
        slope = np.array([m.slope for m in self.members])[:, None]
        return slope * (member_risks - off)

    def risk(self, beats: ArrayLike) -> NDArray:
        """Ensemble risk of new people (mean over the fold models of the shared-scale risk)."""
        return self.shared(self.member_risks(beats)).mean(axis=0)

    def members_for(self, ids: Sequence[str], source: str | os.PathLike) -> NDArray:
        """(B, M) bool: the fold models that score each row. Rows of the run's own cache
        whose participant a fold model held out: those fold models only (out of fold);
        everyone else: all of them."""
        mask = np.ones((len(ids), len(self.members)), dtype=bool)
        if self.held_out is None or self.cohort_cache is None:
            return mask
        if Path(source).resolve() != self.cohort_cache:
            return mask
        for i, pid in enumerate(ids):
            held = np.array([str(pid) in h for h in self.held_out])
            if held.any():
                mask[i] = held
        return mask

    def ranks(self, member_risks: NDArray) -> NDArray:
        """Each fold model's risk as the normal score of its rank within the fold model's own
        held-out risks (:mod:`ecg_dan.reporting.risk_ranks`), (M, B)."""
        return np.stack([normal_score(m.heldout, member_risks[i])
                         for i, m in enumerate(self.members)])

    def percentile(self, score: ArrayLike) -> NDArray:
        """Percentage of the reference (out-of-fold) scores at or below ``score``."""
        r = np.asarray(score, dtype=np.float64)
        return 100.0 * np.searchsorted(self.reference, r, side="right") / self.reference.size

    def choices(self) -> NDArray:
        """Every way of taking one fold model per seed (C, S) as member indices (at most
        :data:`MAX_CHOICES`, drawn with a fixed seed beyond): each gives a score of the
        out-of-fold reference's kind."""
        seeds = sorted({m.seed for m in self.members})
        per = [[i for i, m in enumerate(self.members) if m.seed == s] for s in seeds]
        total = int(np.prod([len(p) for p in per]))
        if total <= MAX_CHOICES:
            return np.array(list(itertools.product(*per)), dtype=np.int64).reshape(total, -1)
        rng = np.random.default_rng(0)
        return np.stack([rng.choice(p, MAX_CHOICES) for p in per], axis=1)

    def absolute_risk(self, member_risks: NDArray, horizons: Sequence[float],
                      members: NDArray | None = None) -> NDArray:
        """Risk of the event by each horizon (the run's time unit), mean over the fold models
        scoring each row (``members`` (B, M), default all), (B, H); NaN past a fold model's
        follow-up."""
        t = np.asarray(horizons, dtype=np.float64)
        n = member_risks.shape[1]
        w = np.ones((n, len(self.members)), dtype=bool) if members is None else members
        lp = self.shared(member_risks)
        out = np.zeros((n, t.size))
        for i, m in enumerate(self.members):
            idx = np.searchsorted(m.baseline_times, t, side="right") - 1
            h0 = np.where(idx >= 0, m.baseline_cumhaz[np.clip(idx, 0, None)], 0.0)
            risk = 1.0 - np.exp(-np.outer(np.exp(lp[i]), h0))
            risk[:, t > m.max_time] = np.nan
            out += np.where(w[:, i:i + 1] > 0, risk, 0.0)
        return out / w.sum(axis=1, keepdims=True)

    def score(self, beats: ArrayLike, horizons: Sequence[float] | None = None,
              members: NDArray | None = None) -> dict[str, NDArray]:
        """Everything ``ecg-dan predict`` reports for a batch of beats (see the module
        docstring): ``log_risk``, ``log_risk_std``, ``n_models``, ``out_of_fold``,
        ``percentile``, ``high_risk_share``, ``risk`` (B, H), ``high_risk`` and ``finite``
        (False where a scoring fold model's output is NaN or infinite: that row's
        percentile, share and risks are NaN, its flag False). ``members`` (B, M): which
        fold models score each row (:meth:`members_for`; default all)."""
        member = self.member_risks(beats)
        lp = self.shared(member)
        w = np.ones(lp.shape[::-1], dtype=bool) if members is None else members
        k = w.sum(axis=1)
        mean = (lp.T * w).sum(axis=1) / k
        std = np.sqrt((((lp.T - mean[:, None]) ** 2) * w).sum(axis=1) / k)
        oof = k < len(self.members)
        z = self.ranks(member)  # (M, B)
        by_choice = z[self.choices()].mean(axis=1)  # (C, B): one fold model per seed
        pct = self.percentile(by_choice).mean(axis=0)
        share = (by_choice >= self.threshold).mean(axis=0)
        if oof.any():  # out of fold: the held-out fold models, one per seed, are the choice
            own = (z.T * w).sum(axis=1) / k
            pct = np.where(oof, self.percentile(own), pct)
            share = np.where(oof, (own >= self.threshold).astype(float), share)
        # a NaN or infinite output of a fold model that scores the row (broken weights, an
        # input that overflows) is no score: never a percentile of 100 or a flag
        finite = np.isfinite(np.where(w, member.T, 0.0)).all(axis=1) & np.isfinite(mean)
        pct = np.where(finite, pct, np.nan)
        share = np.where(finite, share, np.nan)
        risk = self.absolute_risk(member, self.horizons if horizons is None else horizons, w)
        return {"log_risk": mean, "log_risk_std": std, "n_models": k, "out_of_fold": oof,
                "percentile": pct, "high_risk_share": share,
                "risk": np.where(finite[:, None], risk, np.nan),
                "high_risk": finite & (share >= 0.5), "finite": finite}

    def past_follow_up(self, horizons: Sequence[float]) -> list[float]:
        """Horizons beyond some fold model's follow-up (their absolute risk is NaN)."""
        limit = min(m.max_time for m in self.members)
        return [float(h) for h in horizons if h > limit]


def _held_out(run_dir: Path, contents: ModelContents) -> tuple[list[set[str]], Path | None]:
    """Per fold model of the file, the participants it held out; and the run's cache."""
    rd = RunDir(run_dir)
    out = []
    for info in contents.manifest["members"]:
        test = rd.fold(info["seed"], info["fold"]).read_test()
        out.append(set(test.eid.astype(str)))
    cache = rd.splits_cache()
    return out, (None if cache is None else cache.resolve())


def load_model(path: str | os.PathLike) -> EnsembleModel:
    """A model file, or a finetuning run directory (exported in memory), ready to score; a
    run directory also scores its own cohort's participants out of fold (module docstring).
    A ``*.onnx`` file (``ecg-dan export --format onnx``) runs in ONNX Runtime on torch's
    number of threads, with the same post-processing."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        # deferred: onnx and onnxruntime, only for ONNX files
        from ecg_dan.onnx_model import OnnxRunner, read_onnx

        checked = read_onnx(p)
        return EnsembleModel(checked.contents, OnnxRunner(checked, torch.get_num_threads()))
    if p.is_dir():
        contents = read_model_bytes(model_bytes(p), str(p))
        model = EnsembleModel(contents)
        model.held_out, model.cohort_cache = _held_out(p, contents)
        return model
    return EnsembleModel(read_model(p))

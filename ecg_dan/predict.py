"""Scoring new ECGs with a finetuning run's ensemble (the Python API of ``ecg-dan predict``).

``load_model(path)`` takes a model file (``ecg-dan export``, :mod:`ecg_dan.model_file`) or a
run directory (exported in memory, so both go through the same checks and give the same
model id) and returns an :class:`EnsembleModel`:

- ``risk(beats)``: the log-risk, mean over the fold models (folds x seeds) of each one's
  centred log-risk (minus the mean log-risk of its own training rows: a Cox log-risk is
  only defined up to a constant that differs between fold models, see
  :mod:`ecg_dan.model_file`); ``member_risks`` gives each fold model's raw log-risk, as
  its run wrote it;
- ``score(beats, horizons)``: log-risk mean and spread (population std over the fold
  models), percentile within the run's out-of-fold risks (the share of the reference at or
  below it, scipy's ``percentileofscore(kind="weak")``), absolute risk of the event by each
  horizon in years, averaged over the fold models, and the high-risk flag (log-risk at or
  above the run's top-``finetune.top_fraction`` threshold: 2% HYP, 4% MI);
- ``members``: the fold models themselves (``SurvivalFinetuneModule`` in eval mode, e.g. for
  attention maps and input gradients).

``beats`` are (B, 12, 600) median beats in mV at 500 Hz with R at sample 240 (what
:func:`data_modules.sources.files.load_beat` returns); :meth:`EnsembleModel.prepare` applies the
training normalisation (per-lead z-score, zero padding to 608).

Absolute risk: Cox fold models, ``1 - exp(-H0_m(t) exp(eta_m))`` with ``H0_m`` the Breslow
baseline of fold model m's own training rows; logistic-hazard fold models, ``1 - S_m(t)``
from their discrete head (step function over the cuts). ``t`` is the horizon in the run's
time unit (``data.time_unit``: months = days / 30 + 1, the paper's conversion, with a year
of 365.25 days). Past a fold model's follow-up (its last training time or cut) the risk is
not estimable and is NaN. ``recalibrate=True`` (Cox) multiplies every ``H0_m`` by the run's
out-of-fold observed / expected number of events (calibration in the large over the whole
follow-up, stored by the export).
"""

from __future__ import annotations

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
from data_modules.sources.ukb import days_to_time
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

log = get_logger(__name__)

__all__ = ["EnsembleModel", "FoldModel", "horizon_time", "load_model"]

DAYS_PER_YEAR = 365.25


def horizon_time(years: ArrayLike, time_unit: str) -> NDArray:
    """Horizons in years -> the run's time unit (the cache's conversion of days)."""
    return days_to_time(np.asarray(years, dtype=np.float64) * DAYS_PER_YEAR, time_unit)


@dataclass
class FoldModel:
    """One member of the ensemble: the fold model of (seed, fold) and what gives it
    absolute risk (a Breslow baseline, or the cuts of a discrete-time head)."""

    seed: int
    fold: int
    module: Any  # ecg_dan.lit.finetune.SurvivalFinetuneModule, eval mode
    offset: float = 0.0  # subtracted from the log-risk before averaging over fold models
    breslow_times: NDArray | None = None
    breslow_cumhaz: NDArray | None = None
    cuts: NDArray | None = None

    @property
    def max_time(self) -> float:
        return float(self.breslow_times[-1] if self.cuts is None else self.cuts[-1])


def _build_members(contents: ModelContents) -> list[FoldModel]:
    m = contents.manifest
    cfg = m["config"]
    members = []
    for i, info in enumerate(m["members"]):
        cuts_t = contents.tensors.get(f"m{i}.cuts")
        cuts = None if cuts_t is None else cuts_t.numpy().astype(np.float64)
        module = SurvivalFinetuneModule(build_model(m["model_config"]), finetune=cfg["finetune"],
                                        optim=cfg["optim"], config=None,
                                        cuts=None if cuts is None else cuts.tolist())
        state = contents.member_state(i)
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state.items()}
        diff = [f"{k}: file {have.get(k, 'absent')} vs this code {want.get(k, 'absent')}"
                for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        if diff:
            raise ModelFileError(f"{contents.source} describes another architecture (fold "
                                 f"model seed {info['seed']} fold {info['fold']}): "
                                 f"{'; '.join(diff[:5])}"
                                 f"{f' and {len(diff) - 5} more' if len(diff) > 5 else ''}")
        module.load_state_dict(state, strict=True)
        module.eval()
        member = FoldModel(int(info["seed"]), int(info["fold"]), module,
                           offset=float(info["offset"]), cuts=cuts)
        if cuts is None:
            member.breslow_times = contents.tensors[f"m{i}.breslow_times"].numpy()
            member.breslow_cumhaz = contents.tensors[f"m{i}.breslow_cumhaz"].numpy()
        members.append(member)
    return members


class EnsembleModel:
    """The fold models of one finetuning run, their baselines and reference risks."""

    def __init__(self, contents: ModelContents, recalibrate: bool = False) -> None:
        m = contents.manifest
        self.manifest = m
        self.model_id = contents.model_id
        self.source = contents.source
        self.time_unit = str(m["run"]["time_unit"])
        self.objective = str(m["run"]["objective"])
        self.top_fraction = float(m["run"]["top_fraction"])
        self.threshold = float(m["reference"]["high_risk_threshold"])
        self.reference = contents.tensors["reference_risk"].numpy().astype(np.float64)
        self.members = _build_members(contents)
        self.recalibration = 1.0
        if recalibrate:
            cal = m.get("calibration")
            if not cal:
                raise ModelFileError(f"{contents.source}: recalibration scales a Cox model's "
                                     "Breslow baselines; this model has none "
                                     f"(objective {self.objective})")
            self.recalibration = float(cal["oe_ratio"])

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
    def member_outputs(self, beats: ArrayLike) -> tuple[NDArray, list[NDArray] | None]:
        """Each fold model's log-risk (M, B) and, for discrete-time heads, survival at the
        cuts (M arrays (B, K)). Runs the encoder and the head only: the module's forward
        also decodes the beat, which a score does not need (the risk is the same; a VAE
        backbone's z is its encoder's mean, as in its forward)."""
        x = self.prepare(beats)
        risks, survs = [], []
        for m in self.members:
            z = m.module.backbone.encoder(x)
            head = m.module.risk_head(z[0] if isinstance(z, tuple) else z)
            risks.append(m.module.objective.risk(head).double().numpy())
            if m.cuts is not None:
                survs.append(m.module.objective.survival(head).double().numpy())
        return np.stack(risks), (survs or None)

    def member_risks(self, beats: ArrayLike) -> NDArray:
        """Raw log-risk of every fold model (as its run's predictions), shape (M, B)."""
        return self.member_outputs(beats)[0]

    def centred(self, member_risks: NDArray) -> NDArray:
        """Fold models' log-risks minus their offsets, (M, B): comparable across them."""
        return member_risks - np.array([m.offset for m in self.members])[:, None]

    def risk(self, beats: ArrayLike) -> NDArray:
        """Ensemble log-risk (mean over the fold models of the centred log-risk), (B,)."""
        return self.centred(self.member_risks(beats)).mean(axis=0)

    def percentile(self, risk: ArrayLike) -> NDArray:
        """Percentage of the reference (out-of-fold) risks at or below ``risk``."""
        r = np.asarray(risk, dtype=np.float64)
        return 100.0 * np.searchsorted(self.reference, r, side="right") / self.reference.size

    def absolute_risk(self, member_risks: NDArray, years: Sequence[float],
                      survs: list[NDArray] | None = None) -> NDArray:
        """Risk of the event by each horizon (years), mean over fold models, (B, H); NaN
        past a fold model's follow-up."""
        t = horizon_time(years, self.time_unit)
        out = np.zeros((member_risks.shape[1], t.size))
        for i, m in enumerate(self.members):
            if m.cuts is None:
                idx = np.searchsorted(m.breslow_times, t, side="right") - 1
                h0 = np.where(idx >= 0, m.breslow_cumhaz[np.clip(idx, 0, None)], 0.0)
                h0 = h0 * self.recalibration
                risk = 1.0 - np.exp(-np.outer(np.exp(member_risks[i]), h0))
            else:
                assert survs is not None  # every fold model of a run has the same head
                idx = np.clip(np.searchsorted(m.cuts, t, side="right") - 1, 0, None)
                risk = 1.0 - survs[i][:, idx]
            risk[:, t > m.max_time] = np.nan
            out += risk
        return out / len(self.members)

    def score(self, beats: ArrayLike, years: Sequence[float] = (1, 3, 5)) -> dict[str, NDArray]:
        """Everything ``ecg-dan predict`` reports for a batch of beats (see the module
        docstring): ``log_risk``, ``log_risk_std``, ``percentile``, ``risk`` (B, H),
        ``high_risk``."""
        member, survs = self.member_outputs(beats)
        centred = self.centred(member)
        mean = centred.mean(axis=0)
        return {"log_risk": mean, "log_risk_std": centred.std(axis=0),
                "percentile": self.percentile(mean),
                "risk": self.absolute_risk(member, years, survs),
                "high_risk": mean >= self.threshold}

    def past_follow_up(self, years: Sequence[float]) -> list[float]:
        """Horizons beyond some fold model's follow-up (their absolute risk is NaN)."""
        t = horizon_time(years, self.time_unit)
        limit = min(m.max_time for m in self.members)
        return [float(y) for y, ti in zip(years, t) if ti > limit]


def load_model(path: str | os.PathLike, recalibrate: bool = False) -> EnsembleModel:
    """A model file, or a finetuning run directory (exported in memory), ready to score.
    ``recalibrate`` (Cox only): every Breslow baseline hazard times the run's out-of-fold
    observed / expected events, so the absolute risks match the cohort's event count."""
    p = Path(path)
    if p.is_dir():
        contents = read_model_bytes(model_bytes(p), str(p))
    else:
        contents = read_model(p)
    return EnsembleModel(contents, recalibrate)

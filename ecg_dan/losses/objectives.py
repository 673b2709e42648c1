"""The survival objectives of finetuning behind one interface (``finetune.objective``).

``cox`` (the paper): one log-risk per ECG, Cox partial likelihood (Efron/Breslow ties).
Survival curves need a Breslow baseline fitted on the training fold
(:func:`ecg_dan.metrics.survival.breslow_baseline`), so :attr:`SurvivalObjective.cuts` is None.

``logistic_hazard`` (Kvamme & Borgan 2019, pycox's ``LogisticHazard``): time is cut into K
points ``cuts`` (fitted on the training fold by :func:`fit_cuts`, pycox's
``LabTransDiscreteTime``); the head gives K hazard logits ``phi``; the loss is
``pycox.models.loss.nll_logistic_hazard`` (mean over samples); the survival curve at the cuts
is ``S_k = prod_{j<=k} (1 - sigmoid(phi_j))`` (pycox's ``predict_surv``); the scalar risk
(validation C-index, the ``risk`` column of the predictions) is minus the restricted mean
survival time over the grid divided by its span,
``-sum_k S_k (c_{k+1} - c_k) / (c_{K-1} - c_0)``, in [-1, 0]: higher = earlier event.

Every objective offers ``head(latent_dim)``, ``loss(out, batch)``, ``risk(out)`` -> (B,) and
``survival(out)`` -> (B, K) where ``out`` is the head's output.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ecg_dan.losses.cox import cox_ph_loss
from ecg_dan.models.heads import DiscreteTimeHead, RiskHead

Objective = Literal["cox", "logistic_hazard"]

__all__ = ["CoxObjective", "LogisticHazardObjective", "Objective", "baseline_hazards", "fit_cuts",
           "make_objective"]


def fit_cuts(time: ArrayLike, event: ArrayLike, n_bins: int) -> list[float]:
    """K equidistant cut points 0 = c_0 < ... < c_{K-1} = max training time, by pycox's
    ``LabTransDiscreteTime(n_bins, scheme="equidistant")`` fitted on the training rows only.

    Equidistant rather than KM-quantile cuts: the count is always exactly ``n_bins`` (the
    quantile scheme drops duplicate cuts, which would change the head's width from fold to
    fold), and with the few events of a heart-failure cohort the quantile cuts would crowd the
    last months of follow-up. Returned as a plain list (checkpoint hyper-parameters must stay
    weights-only readable).
    """
    from pycox.preprocessing.label_transforms import LabTransDiscreteTime

    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.float64)
    if n_bins < 2:
        raise ValueError(f"n_time_bins must be >= 2, got {n_bins}")
    if t.size == 0 or not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError("fit_cuts needs finite, strictly positive training times")
    lab = LabTransDiscreteTime(n_bins, scheme="equidistant").fit(t, e)
    return [float(c) for c in lab.cuts]


def baseline_hazards(cuts: ArrayLike, time: ArrayLike, event: ArrayLike,
                     floor: float = 1e-4) -> list[float]:
    """The training rows' discrete hazard per interval (events / at risk after pycox's
    discretisation), clipped to [floor, 1 - floor].

    The logistic-hazard head starts from these (``logit`` as the output bias): a head
    initialised at zero logits predicts a 50% hazard in every interval, so a short
    finetuning ends with curves far below the observed survival (the synthetic matrix
    measured S(0) = 0.35 and an IBS of 0.69 before this); starting at the Kaplan-Meier
    hazards, training only has to learn how each ECG moves them.
    """
    lab = LogisticHazardObjective(cuts)._lab
    idx, ev = lab.transform(np.asarray(time, np.float64), np.asarray(event, np.float64))
    k = len(lab.cuts)
    at_risk = np.bincount(idx, minlength=k)[::-1].cumsum()[::-1]
    events = np.bincount(idx, weights=ev, minlength=k)
    h = np.divide(events, at_risk, out=np.zeros(k), where=at_risk > 0)
    return [float(v) for v in np.clip(h, floor, 1 - floor)]


class CoxObjective:
    """The paper's objective: log-risk head + Cox partial likelihood."""

    name = "cox"
    cuts: list[float] | None = None

    def __init__(self, ties: str = "efron") -> None:
        self.ties = ties

    def head(self, latent_dim: int) -> nn.Module:
        return RiskHead(latent_dim)

    def risk(self, out: Tensor) -> Tensor:
        return out.squeeze(-1)

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return cox_ph_loss(self.risk(out).float(), batch["time"], batch["event"],
                           ties=self.ties)

    def survival(self, out: Tensor) -> Tensor:
        raise NotImplementedError("a Cox head gives relative risks only: survival curves need "
                                  "the training fold's Breslow baseline "
                                  "(ecg_dan.metrics.survival.breslow_baseline)")


class LogisticHazardObjective:
    """Discrete-time logistic hazard over fixed cut points (see the module docstring)."""

    name = "logistic_hazard"

    def __init__(self, cuts: ArrayLike, init_hazards: ArrayLike | None = None) -> None:
        from pycox.preprocessing.label_transforms import LabTransDiscreteTime

        c = np.asarray(cuts, dtype=np.float64)
        if c.ndim != 1 or c.size < 2 or not (np.diff(c) > 0).all():
            raise ValueError(f"cuts must be >= 2 strictly increasing times, got {cuts!r}")
        self.cuts = [float(v) for v in c]
        self.init_hazards = None
        if init_hazards is not None:
            h = np.asarray(init_hazards, dtype=np.float64)
            if h.shape != c.shape or not ((h > 0) & (h < 1)).all():
                raise ValueError(f"init_hazards must be {c.size} values in (0, 1), got "
                                 f"{init_hazards!r}")
            self.init_hazards = [float(v) for v in h]
        self._lab = LabTransDiscreteTime(c)
        self._widths = torch.as_tensor(np.diff(c) / (c[-1] - c[0]), dtype=torch.float32)

    @property
    def n_bins(self) -> int:
        return len(self.cuts)

    def head(self, latent_dim: int) -> nn.Module:
        head = DiscreteTimeHead(latent_dim, self.n_bins)
        if self.init_hazards is not None:  # start at the training fold's hazards
            with torch.no_grad():
                head[-1].bias.copy_(torch.logit(torch.tensor(self.init_hazards)))
        return head

    def discretize(self, time: Tensor, event: Tensor) -> tuple[Tensor, Tensor]:
        """pycox's index transform: events to the right cut, censorings to the left one,
        times past the last cut censored there."""
        idx, ev = self._lab.transform(time.detach().cpu().double().numpy(),
                                      event.detach().cpu().double().numpy())
        return (torch.as_tensor(idx, device=time.device),
                torch.as_tensor(ev, dtype=torch.float32, device=time.device))

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        from pycox.models.loss import nll_logistic_hazard

        idx, ev = self.discretize(batch["time"], batch["event"])
        return nll_logistic_hazard(out.float(), idx, ev)

    def survival(self, out: Tensor) -> Tensor:
        # log(1 - sigmoid(phi)) = logsigmoid(-phi): no cancellation for large hazards
        return torch.exp(torch.cumsum(nn.functional.logsigmoid(-out.float()), dim=-1))

    def risk(self, out: Tensor) -> Tensor:
        s = self.survival(out)
        w = self._widths.to(s.device)
        return -(s[..., :-1] * w).sum(-1)


def make_objective(name: str, *, ties: str = "efron", cuts: ArrayLike | None = None,
                   init_hazards: ArrayLike | None = None):
    if name == "cox":
        return CoxObjective(ties)
    if name == "logistic_hazard":
        if cuts is None:
            raise ValueError("the logistic_hazard objective needs the time cuts of the training "
                             "fold (ecg_dan.losses.objectives.fit_cuts)")
        return LogisticHazardObjective(cuts, init_hazards)
    raise ValueError(f"unknown survival objective {name!r}; expected 'cox' or "
                     "'logistic_hazard'")

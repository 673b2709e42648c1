"""Power of a paired C-index comparison: how many events would show a given difference.

A paired bootstrap CI that contains 0 says "not shown", which may mean "no effect" or "too
few events to see one". The bootstrap replicates of the difference already measure its
standard error at the observed number of events; scaled to another number of events, that
SE gives the events at which a true difference ``delta`` would be detected, and the power at
the events we have. The reader of a label-efficiency table can then tell the two apart.

Assumptions (normal approximation):

* the estimated difference ``d`` is normal around the true difference with standard error
  ``se``; the test rejects "no difference" at the two-sided level ``alpha`` when
  ``|d| > z_{1-alpha/2} * se`` (the Wald form of the paired bootstrap CI excluding 0);
* ``se`` is the standard deviation of the bootstrap replicates (participants resampled
  within their held-out folds, stratified by event; :func:`paired_bootstrap_diff`), and
  ``se**2`` is proportional to ``1/events`` when the cohort grows at the same event rate,
  the same follow-up and the same case mix (a C-index is a U-statistic of the
  event-bearing pairs; with a fixed event rate its variance falls as 1/n and so as
  1/events);
* the true difference does not change with the cohort's size: the calculation scales the
  *evaluation* (the held-out participants, whose events every fold contributes once), not
  the training set; a model trained on more participants may itself differ more or less.

Events needed for power ``1 - beta``: ``E * se**2 * (z_{1-alpha/2} + z_{1-beta})**2 /
delta**2`` (the opposite tail, below 1e-5 at 80% power, is ignored); power at ``E'`` events:
``Phi(delta/se' - z) + Phi(-delta/se' - z)`` with ``se' = se * sqrt(E/E')``.
Tested against simulated cohorts with a known difference (tests/test_power.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

__all__ = ["POWER_DELTAS", "PowerLine", "events_for_power", "power_at", "power_columns",
           "power_line"]

#: The differences in C a reader asks about: small, moderate, large for a risk model.
POWER_DELTAS: tuple[float, ...] = (0.01, 0.02, 0.05)


def _check(se: float, events: float, delta: float, alpha: float) -> None:
    if not (se > 0 and math.isfinite(se)):
        raise ValueError(f"standard error must be positive and finite, got {se}")
    if not events > 0:
        raise ValueError(f"events must be positive, got {events}")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def events_for_power(se: float, events: float, delta: float, alpha: float = 0.05,
                     power: float = 0.8) -> float:
    """Events at which a true difference ``delta`` is detected with ``power`` at the two-sided
    level ``alpha``, given the standard error ``se`` observed with ``events`` events (module
    docstring)."""
    _check(se, events, delta, alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return float(events * (se * z / delta) ** 2)


def power_at(se: float, events: float, delta: float, at_events: float | None = None,
             alpha: float = 0.05) -> float:
    """Power to detect a true difference ``delta`` at ``at_events`` events (default: the
    observed ``events``), given the standard error ``se`` observed with ``events`` events."""
    _check(se, events, delta, alpha)
    se_at = se * math.sqrt(events / (events if at_events is None else at_events))
    z = norm.ppf(1 - alpha / 2)
    return float(norm.cdf(delta / se_at - z) + norm.cdf(-delta / se_at - z))


@dataclass(frozen=True)
class PowerLine:
    """The power line of one paired difference: its bootstrap SE at the observed events,
    the events needed for each ``delta`` (``events_needed``) and the power at the observed
    events (``power_observed``), both in the order of ``deltas``."""

    se: float
    events: float
    deltas: tuple[float, ...]
    events_needed: tuple[float, ...]
    power_observed: tuple[float, ...]
    alpha: float = 0.05
    power: float = 0.8

    def columns(self) -> dict[str, float]:
        """Flat ``{name: value}`` for a table row (:func:`power_columns` names)."""
        out = {"diff_se": self.se}
        for d, n, p in zip(self.deltas, self.events_needed, self.power_observed):
            out[f"events_for_{d:g}"] = n
            out[f"power_{d:g}"] = p
        return out


def power_columns(deltas: Sequence[float] = POWER_DELTAS) -> list[str]:
    """The column names :meth:`PowerLine.columns` writes for ``deltas``."""
    return ["diff_se", *[f"{k}_{d:g}" for d in deltas for k in ("events_for", "power")]]


def power_line(replicates: ArrayLike, events: float, deltas: Sequence[float] = POWER_DELTAS,
               alpha: float = 0.05, power: float = 0.8) -> PowerLine:
    """:class:`PowerLine` from the bootstrap replicates of a paired difference
    (``BootstrapCI.replicates``) observed with ``events`` events; the SE is their standard
    deviation (ddof 1). Raises ValueError with fewer than two replicates or none varying."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.shape[0] < 2:
        raise ValueError(f"power needs at least 2 bootstrap replicates, got {reps.shape[0]}")
    se = float(np.std(reps, ddof=1))
    return PowerLine(se, float(events), tuple(float(d) for d in deltas),
                     tuple(events_for_power(se, events, d, alpha, power) for d in deltas),
                     tuple(power_at(se, events, d, alpha=alpha) for d in deltas),
                     alpha, power)

"""Percentile bootstrap confidence intervals for survival metrics.

With ~30 events (UKB-MI) a C-index has a wide sampling distribution; a CI says how much of a
difference between models is noise. Rows are resampled jointly (risk, time and event of a
participant stay together), optionally within strata (e.g. by event so each resample keeps the
cohort's event count), and resamples on which the metric is undefined (no events, no
comparable pair) are skipped and counted rather than crashing or biasing the CI with NaNs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecg_dan.metrics.cindex import UndefinedMetricError

__all__ = ["BootstrapCI", "bootstrap_ci", "bootstrap_cis"]

log = logging.getLogger(__name__)

#: Exceptions meaning "metric undefined on this resample" (lifelines raises ZeroDivisionError).
UNDEFINED_ERRORS: tuple[type[BaseException], ...] = (UndefinedMetricError, ZeroDivisionError)


class BootstrapCI(tuple):
    """``(estimate, low, high)``; unpacks as a 3-tuple and also carries ``n_boot``,
    ``n_skipped`` (undefined resamples) and ``replicates`` (the valid bootstrap values)."""

    estimate: float
    low: float
    high: float
    n_boot: int
    n_skipped: int
    replicates: NDArray

    def __new__(
        cls,
        estimate: float,
        low: float,
        high: float,
        n_boot: int,
        n_skipped: int,
        replicates: NDArray,
    ) -> BootstrapCI:
        obj = super().__new__(cls, (estimate, low, high))
        obj.estimate, obj.low, obj.high = estimate, low, high
        obj.n_boot, obj.n_skipped, obj.replicates = n_boot, n_skipped, replicates
        return obj

    def __repr__(self) -> str:
        return (
            f"BootstrapCI(estimate={self.estimate:.4f}, low={self.low:.4f}, high={self.high:.4f}, "
            f"n_boot={self.n_boot}, n_skipped={self.n_skipped})"
        )


def _resample_indices(
    rng: np.random.Generator, n: int, n_boot: int, stratify: NDArray | None
) -> NDArray[np.int64]:
    """(n_boot, n) row indices drawn with replacement, within strata if given."""
    if stratify is None:
        return rng.integers(0, n, size=(n_boot, n))
    out = np.empty((n_boot, n), dtype=np.int64)
    _, labels = np.unique(stratify, return_inverse=True)
    col = 0
    for s in range(labels.max() + 1):
        members = np.flatnonzero(labels.ravel() == s)
        draw = rng.integers(0, members.shape[0], size=(n_boot, members.shape[0]))
        out[:, col : col + members.shape[0]] = members[draw]
        col += members.shape[0]
    return out


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: ArrayLike | None = None,
    undefined: tuple[type[BaseException], ...] = UNDEFINED_ERRORS,
) -> BootstrapCI:
    """Percentile bootstrap ``(estimate, low, high)`` of ``metric_fn(*arrays)``.

    Args:
        metric_fn: called as ``metric_fn(*resampled_arrays)``; returns a float.
        arrays: same first-axis length; rows are resampled jointly.
        n_boot: number of resamples.
        alpha: two-sided level; the CI is the ``alpha/2`` and ``1 - alpha/2`` percentiles.
        seed: seed of the numpy Generator (same seed -> same CI).
        stratify: optional labels (length n); rows are resampled within each label, keeping
            each stratum's size (``stratify=event`` keeps the number of events fixed).
        undefined: exceptions that mark a resample as undefined; such resamples (and non-finite
            values) are skipped, counted in ``n_skipped`` and logged.

    Returns:
        :class:`BootstrapCI`; ``estimate`` is the metric on the original data (not the bootstrap
        mean).
    """
    return bootstrap_cis(lambda *a: {"value": metric_fn(*a)}, *arrays, n_boot=n_boot,
                         alpha=alpha, seed=seed, stratify=stratify, undefined=undefined)["value"]


def bootstrap_cis(
    metric_fn: Callable[..., Mapping[str, float]],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: ArrayLike | None = None,
    undefined: tuple[type[BaseException], ...] = UNDEFINED_ERRORS,
) -> dict[str, BootstrapCI]:
    """:func:`bootstrap_ci` of several metrics computed together (``metric_fn`` returns
    ``{name: value}``, the same names each call) on the same resamples: ``{name:
    BootstrapCI}``. A resample raising one of ``undefined`` is skipped for every metric; a
    non-finite value only for its own."""
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    data: list[Any] = [np.asarray(a) for a in arrays]
    n = data[0].shape[0]
    if any(a.shape[0] != n for a in data):
        raise ValueError(f"arrays have different lengths: {[a.shape[0] for a in data]}")
    strata = None
    if stratify is not None:
        strata = np.asarray(stratify)
        if strata.shape[0] != n:
            raise ValueError(f"stratify has length {strata.shape[0]}, expected {n}")

    estimate = {k: float(v) for k, v in metric_fn(*data).items()}
    rng = np.random.default_rng(seed)
    idx = _resample_indices(rng, n, n_boot, strata)
    values = {k: np.full(n_boot, np.nan) for k in estimate}
    for b in range(n_boot):
        try:
            got = metric_fn(*(a[idx[b]] for a in data))
        except undefined:
            continue
        for k in estimate:
            values[k][b] = float(got[k])
    out = {}
    for k, vals in values.items():
        valid = vals[np.isfinite(vals)]
        n_skipped = n_boot - valid.shape[0]
        if n_skipped:
            log.warning("bootstrap_ci: %d of %d resamples undefined and skipped", n_skipped,
                        n_boot)
        if valid.shape[0] == 0:
            raise UndefinedMetricError(f"metric undefined on all {n_boot} bootstrap resamples")
        low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out[k] = BootstrapCI(estimate[k], float(low), float(high), n_boot, n_skipped, valid)
    return out

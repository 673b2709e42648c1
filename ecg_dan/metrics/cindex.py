"""Harrell's C-index in O(n log n) with lifelines' exact conventions, plus a DDP-aware metric.

``harrell_cindex(time, risk, event) == lifelines.utils.concordance_index(time, -risk, event)``:

* a pair (i, j) is comparable when i had an event and either ``t_i < t_j``, or ``t_i == t_j``
  and j is censored (an event at t precedes a censoring at t); two events at the same time
  are not comparable;
* it is concordant when ``risk_i > risk_j``; exactly equal risks count 1/2.

The paper's metric is lifelines' (``concordance_index(time, -risk, event)``); this version is
pure numpy, avoids lifelines' Python-level tree walk, and is vectorised over samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from data_modules.protocol.survival_arrays import check_survival

__all__ = [
    "HarrellCIndex",
    "UndefinedMetricError",
    "concordance_counts",
    "harrell_cindex",
    "weighted_concordance",
]


class UndefinedMetricError(ValueError):
    """The metric is undefined for this sample (e.g. no events, so no comparable pair)."""


def _weighted_inversions(v: NDArray[np.int64], w: NDArray) -> float | int:
    """sum_j sum_{i<j} w_i [v_i > v_j] for non-negative integer v, in O(n log max(v)).

    Binary-trie counting from the most significant bit: at bit b, elements sharing the higher
    bits form a group; an earlier element with bit 1 beats a later one with bit 0. The array is
    kept ordered by (group, original position) with a stable O(n) partition per bit, so no sort
    is needed inside the loop. Integer weights give an exact integer result.
    """
    n = v.shape[0]
    if n < 2:
        return 0
    n_bits = max(int(v.max()).bit_length(), 1)
    vv = v.copy()
    ww = w.copy()
    total = 0
    idx = np.arange(n)
    for b in range(n_bits - 1, -1, -1):
        bit = (vv >> b) & 1
        prefix = vv >> (b + 1)
        new_group = np.empty(n, dtype=bool)
        new_group[0] = True
        np.not_equal(prefix[1:], prefix[:-1], out=new_group[1:])
        gid = np.cumsum(new_group) - 1
        gstart = np.flatnonzero(new_group)
        start_of = gstart[gid]
        # weighted count of bit-1 elements earlier in the same group
        w1 = ww * bit
        cum_w1 = np.cumsum(w1) - w1
        ones_before = cum_w1 - cum_w1[start_of]
        total += ones_before[bit == 0].sum().item()
        # stable partition of each group by this bit (zeros first) for the next level
        cum1 = np.cumsum(bit) - bit
        n_ones_before = cum1 - cum1[start_of]
        zeros_in_group = np.add.reduceat(1 - bit, gstart)
        new_pos = np.where(
            bit == 0,
            idx - n_ones_before,  # start + (position in group - ones before)
            start_of + zeros_in_group[gid] + n_ones_before,
        )
        nv = np.empty_like(vv)
        nw = np.empty_like(ww)
        nv[new_pos] = vv
        nw[new_pos] = ww
        vv, ww = nv, nw
    return total


def _ordering_keys(
    time: NDArray, risk: NDArray, event: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Integer keys: ``key`` orders by time with a censoring at t after the events at t, so
    "(i, j) comparable" is exactly "i is an event and key_i < key_j"; ``v`` is the dense risk rank
    (exactly equal risks share a rank)."""
    _, t_rank = np.unique(time, return_inverse=True)
    key = 2 * t_rank.astype(np.int64).ravel() + (~event).astype(np.int64)
    _, v = np.unique(risk, return_inverse=True)
    return key, v.astype(np.int64).ravel()


def weighted_concordance(
    key: NDArray[np.int64], v: NDArray[np.int64], w: NDArray
) -> tuple[float | int, float | int, float | int]:
    """Weighted (concordant, tied, comparable) sums over pairs i -> j with key_i < key_j.

    ``w_i`` weights the earlier member of each pair (1 for events / 0 for censored gives Harrell's
    counts; squared IPCW gives Uno's). A pair is concordant when ``v_i > v_j`` and tied when
    ``v_i == v_j``. O(n log n).
    """
    n = key.shape[0]
    has = w != 0
    ki, vi, wi = key[has], v[has], w[has]
    comparable = (wi * (n - np.searchsorted(np.sort(key), ki, side="right"))).sum().item()
    big = int(key.max()) + 1 if n else 1
    comb = np.sort(v * big + key)
    n_tied = np.searchsorted(comb, (vi + 1) * big, side="left") - np.searchsorted(
        comb, vi * big + ki, side="right"
    )
    tied = (wi * n_tied).sum().item()
    # Sorting equal keys by ascending risk: an earlier element with an equal key never has a
    # larger v, so only strictly earlier keys are counted as concordant.
    order = np.lexsort((v, key))
    concordant = _weighted_inversions(v[order], w[order])
    return concordant, tied, comparable


def concordance_counts(time: ArrayLike, risk: ArrayLike, event: ArrayLike) -> tuple[int, int, int]:
    """(concordant, tied_risk, comparable) pair counts with lifelines' conventions.

    Inputs are checked by :func:`data_modules.protocol.survival_arrays.check_survival` (equal
    lengths, finite time and risk, 0/1 events); an empty sample has no pairs: ``(0, 0, 0)``.
    """
    t, e, r = check_survival(time, event, risk, allow_empty=True)
    if t.shape[0] == 0 or not e.any():
        return 0, 0, 0
    key, v = _ordering_keys(t, r, e)
    c, tied, comp = weighted_concordance(key, v, e.astype(np.int64))
    return int(c), int(tied), int(comp)


def harrell_cindex(time: ArrayLike, risk: ArrayLike, event: ArrayLike) -> float:
    """Harrell's C-index; higher ``risk`` means an earlier event.

    Equals ``lifelines.utils.concordance_index(time, -risk, event)`` (the paper's metric) but runs
    in O(n log n) with numpy only. Raises :class:`UndefinedMetricError` when there is no
    comparable pair (e.g. no events).
    """
    concordant, tied, comparable = concordance_counts(time, risk, event)
    if comparable == 0:
        raise UndefinedMetricError("C-index undefined: no comparable pairs (are there events?)")
    return (concordant + tied / 2) / comparable


class HarrellCIndex(Metric):
    """Harrell's C-index over an epoch, synchronised across DDP ranks.

    Risk, time and event are accumulated as ``cat`` states, so under DDP the metric is computed on
    the union of all ranks' samples (the C-index is not decomposable into per-batch values).
    ``update(risk, time, event)`` takes higher risk = earlier event.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    risk: list[torch.Tensor]
    time: list[torch.Tensor]
    event: list[torch.Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("risk", default=[], dist_reduce_fx="cat")
        self.add_state("time", default=[], dist_reduce_fx="cat")
        self.add_state("event", default=[], dist_reduce_fx="cat")

    def update(self, risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> None:
        risk = risk.detach().reshape(-1)
        time = time.detach().reshape(-1)
        event = event.detach().reshape(-1)
        if not (risk.shape == time.shape == event.shape):
            raise ValueError(
                f"risk, time, event sizes differ: {risk.numel()}, {time.numel()}, {event.numel()}"
            )
        # float64 so that ties in time/risk are preserved exactly as given
        self.risk.append(risk.to(torch.float64))
        self.time.append(time.to(torch.float64))
        self.event.append(event.to(torch.float64))

    def compute(self) -> torch.Tensor:
        risk = dim_zero_cat(self.risk).cpu().numpy()
        time = dim_zero_cat(self.time).cpu().numpy()
        event = dim_zero_cat(self.event).cpu().numpy()
        return torch.tensor(harrell_cindex(time, risk, event), dtype=torch.float64)

"""Cox proportional-hazards negative partial log-likelihood (Breslow / Efron ties), DDP-aware.

The risk set of an event is every sample still at risk at its time, so a per-rank loss under DDP
would silently use smaller risk sets than the single-process loss. With ``gather=True`` the
shards are gathered (with gradients) and every rank evaluates the loss on the global batch.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from data_modules.protocol.survival_arrays import check_survival
from ecg_dan.config import Ties
from ecg_dan.distributed import all_gather_with_grad, is_distributed

__all__ = ["cox_ph_loss"]


def _as_1d(x: Tensor, name: str) -> Tensor:
    """Accept (n,) or (n, 1); anything else is a shape error, not something to broadcast."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) or (n, 1), got {tuple(x.shape)}")
    return x


def _validate_values(log_risk: Tensor, time: Tensor, event: Tensor) -> None:
    """Value checks. Run on the gathered tensors so every rank raises together (no hang).

    A training step pays one on-device reduction (one sync); only when it fails are the
    tensors copied to the host, where the shared validator names what is wrong.
    """
    ok = (torch.isfinite(log_risk).all() & torch.isfinite(time).all() & (time > 0).all()
          & ((event == 0) | (event == 1)).all())
    if not bool(ok):
        def host(x: Tensor) -> Tensor:
            return x.detach().to(device="cpu", dtype=torch.float64)

        check_survival(host(time), host(event), host(log_risk), where="cox_ph_loss",
                       positive_time=True, allow_empty=True)


def _neg_partial_log_likelihood(
    log_risk: Tensor, time: Tensor, event: Tensor, ties: Ties
) -> Tensor:
    """Sorted, vectorised Cox NLL / n_events: O(n log n) for the sort, O(n) afterwards."""
    ev = event.to(torch.bool)
    n_events = ev.sum()
    if int(n_events) == 0:
        # Undefined likelihood: return a zero that is still attached to the graph.
        return log_risk.sum() * 0.0

    order = torch.argsort(time)
    t = time[order]
    eta = log_risk[order]
    e = ev[order]

    # Unique times (ascending) and, for each, the first sorted index where it occurs.
    _, group, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    # log sum_{j: t_j >= t_k} exp(eta_j) for each unique time, via a reverse log-cum-sum-exp.
    log_risk_set = torch.logcumsumexp(eta.flip(0), dim=0).flip(0)[first]

    eta_e = eta[e]
    g_e = group[e]
    log_s = log_risk_set[g_e]
    if ties == "breslow":
        log_denom = log_s
    elif ties == "efron":
        k = counts.shape[0]
        # T_k / S_k with T_k = sum_{events i at t_k} exp(eta_i): each term exp(eta_i - log S_k)
        # is <= 1 (i is in its own risk set), so nothing overflows, and an underflow to 0 is
        # harmless (no log of the tie sum is taken).
        ratio = torch.zeros(k, dtype=eta.dtype, device=eta.device)
        ratio = ratio.index_add(0, g_e, torch.exp(eta_e - log_s))[g_e]
        d = torch.zeros(k, dtype=eta.dtype, device=eta.device)
        d = d.index_add(0, g_e, torch.ones_like(eta_e))[g_e]
        # Rank l = 0..d_k-1 of each event inside its tie group.
        e_long = e.long()
        before = torch.cumsum(e_long, 0) - e_long
        rank = (before[e] - before[first][g_e]).to(eta.dtype)
        # log(S_k - (l/d_k) T_k) = log S_k + log1p(-(l/d_k) T_k/S_k), and (l/d_k) T_k/S_k < 1.
        log_denom = log_s + torch.log1p(-(rank / d) * ratio)
    else:
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    return (log_denom - eta_e).sum() / n_events.to(eta.dtype)


def cox_ph_loss(
    log_risk: Tensor,
    time: Tensor,
    event: Tensor,
    ties: Ties = "efron",
    gather: bool = True,
) -> Tensor:
    """Cox negative partial log-likelihood, summed over events and divided by the event count.

    Args:
        log_risk: predicted log relative hazard, shape (n,) or (n, 1); higher = earlier event.
        time: event/censoring times, finite and strictly positive, shape (n,) or (n, 1).
        event: 1/True for an observed event, 0/False for censoring.
        ties: ``"efron"`` (default) or ``"breslow"`` (the authors' loss; identical without ties).
        gather: under torch.distributed, gather all ranks' samples (with gradients, see
            :func:`ecg_dan.distributed.all_gather_with_grad`) so the loss equals the
            single-process loss on the concatenated global batch. No-op when not distributed.

    Returns:
        A scalar tensor. A batch without events gives ``0 * log_risk.sum()`` (finite and attached
        to the graph); it is decided on the gathered batch, so all ranks agree and run the same
        collectives.

    Raises:
        ValueError: shape mismatch, non-finite ``log_risk``, non-finite or non-positive
            ``time``, ``event`` outside {0, 1}, unknown ``ties`` (value checks by
            :func:`data_modules.protocol.survival_arrays.check_survival`, on the gathered batch).
    """
    if ties not in get_args(Ties):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    log_risk = _as_1d(log_risk, "log_risk")
    time = _as_1d(time, "time")
    event = _as_1d(event, "event")
    if not (log_risk.shape[0] == time.shape[0] == event.shape[0]):
        raise ValueError(
            "log_risk, time and event must have the same length, got "
            f"{log_risk.shape[0]}, {time.shape[0]}, {event.shape[0]}"
        )
    if not log_risk.is_floating_point():
        raise ValueError(f"log_risk must be floating point, got {log_risk.dtype}")
    if log_risk.dtype in (torch.float16, torch.bfloat16):
        # half precision under autocast: the log-sum-exp over risk sets needs float32
        log_risk = log_risk.float()
    time = time.to(log_risk.device)
    event = event.to(log_risk.device)
    if gather and is_distributed():
        log_risk = all_gather_with_grad(log_risk)
        time = all_gather_with_grad(time)
        event = all_gather_with_grad(event)
    _validate_values(log_risk, time, event)
    return _neg_partial_log_likelihood(log_risk, time, event, ties)

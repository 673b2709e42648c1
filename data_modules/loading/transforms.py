"""Input transforms of docs/method.md section 1: z-score, padding, whole-lead masking.

Split in two on purpose. The loader only gathers raw beats by index and draws the
kept-lead masks (cheap, random, on the host: per sample for PTB-XL pretraining, per batch
for UKB finetuning); :func:`finish_batch` then z-scores, masks and pads the whole batch in
torch on the device the model runs on (the LightningModules and DataModules call it in
``on_after_batch_transfer``). Randomness never touches the global numpy state: every
process (main or worker) derives its own generator from ``(seed, torch worker seed)`` so
that runs are reproducible given the global torch seed, the DataModule seed and the worker
id. ``zscore_leads``/``pad_beat`` also accept numpy arrays (biomarkers, tests).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import get_worker_info

from data_modules.signal.leads import (
    LEAD_SUBSET_PROBS,
    LEAD_SUBSETS,
    LEADS,
    N_LEADS,
    PAD,
    lead_index,
)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# A lead whose std is below this fraction of |mean| (plus a tiny absolute floor) is treated
# as constant: float32 rounding alone cannot produce a larger spread, so dividing by it
# would only amplify rounding noise (and 0/0 would give NaN).
_REL_CONST_TOL = 1e-6
_ABS_CONST_TOL = 1e-12


# --------------------------------------------------------------------------- z-score
def zscore_leads(x: ArrayT) -> ArrayT:
    """Per-record, per-lead z-score over the last (time) axis of ``x`` (..., 12, T).

    Statistics ignore non-finite samples; those samples become 0 afterwards (= the lead's
    mean). A constant or all-zero/all-NaN lead becomes all zeros, never NaN. Population
    std (ddof=0). Returns float32 of the same type (numpy or torch) and shape.
    """
    if isinstance(x, torch.Tensor):
        return _zscore_torch(x)
    a = np.asarray(x, dtype=np.float64)
    if np.isfinite(a).all():  # fast path (the usual case): no masking arithmetic
        mean = a.mean(axis=-1, keepdims=True)
        dev = a - mean
        std = np.sqrt(np.einsum("...t,...t->...", dev, dev)[..., None] / a.shape[-1])
        ok = std > _REL_CONST_TOL * np.abs(mean) + _ABS_CONST_TOL
        dev *= np.where(ok, 1.0 / np.where(ok, std, 1.0), 0.0)
        return dev.astype(np.float32)
    finite = np.isfinite(a)
    n = np.maximum(finite.sum(axis=-1, keepdims=True), 1)
    mean = np.where(finite, a, 0.0).sum(axis=-1, keepdims=True) / n
    dev = np.where(finite, a - mean, 0.0)
    std = np.sqrt((dev * dev).sum(axis=-1, keepdims=True) / n)
    ok = std > _REL_CONST_TOL * np.abs(mean) + _ABS_CONST_TOL
    out = np.where(ok, dev / np.where(ok, std, 1.0), 0.0)
    return out.astype(np.float32)


def _zscore_torch(x: torch.Tensor, keep: torch.Tensor | None = None, pad: int = 0
                  ) -> torch.Tensor:
    """Torch z-score (float64 arithmetic, float32 out) with optional lead masking and padding
    fused in: leads where ``keep`` (..., 12) is False become 0, and the result is written
    into a zero-padded (..., T + 2 * pad) tensor, so a batch costs a few passes."""
    a = x.to(torch.float64)
    if a.device.type == "cpu" and bool(torch.isfinite(a).all()):  # the usual case on the host
        var, mean = torch.var_mean(a, dim=-1, correction=0, keepdim=True)
    else:  # non-finite samples: ignored by the statistics, 0 afterwards (no host sync on GPU)
        finite = torch.isfinite(a)
        n = finite.sum(dim=-1, keepdim=True).clamp_min(1)
        mean = torch.where(finite, a, 0.0).sum(dim=-1, keepdim=True) / n
        a = torch.where(finite, a, mean)  # deviation 0
        var = (a - mean).square().sum(dim=-1, keepdim=True) / n
    std = var.sqrt()
    ok = std > _REL_CONST_TOL * mean.abs() + _ABS_CONST_TOL
    scale = torch.where(ok, 1.0 / torch.where(ok, std, 1.0), 0.0)
    if keep is not None:
        scale = scale * keep.unsqueeze(-1).to(scale.dtype)
    z = torch.addcmul(-mean * scale, a, scale)  # (a - mean) / std, 0 where dropped/constant
    if not pad:
        return z.to(torch.float32)
    out = torch.zeros(*z.shape[:-1], z.shape[-1] + 2 * pad, dtype=torch.float32, device=z.device)
    out[..., pad:pad + z.shape[-1]] = z
    return out


# --------------------------------------------------------------------------- padding
def pad_beat(x: ArrayT, pad: int = PAD) -> ArrayT:
    """Zero-pad the time axis symmetrically (600 -> 608 with the default ``pad=4``)."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if isinstance(x, torch.Tensor):
        return F.pad(x, (pad, pad))
    out = np.zeros(x.shape[:-1] + (x.shape[-1] + 2 * pad,), dtype=x.dtype)
    out[..., pad : pad + x.shape[-1]] = x
    return out


def unpad_beat(x: ArrayT, pad: int = PAD) -> ArrayT:
    """Inverse of :func:`pad_beat`: losses are computed on the unpadded 600 samples."""
    if pad < 0 or 2 * pad > x.shape[-1]:
        raise ValueError(f"cannot remove {pad} samples each side from length {x.shape[-1]}")
    return x[..., pad : x.shape[-1] - pad]


# --------------------------------------------------------------------------- RNG helpers
def _process_seed() -> tuple[int, int]:
    """(torch seed of this process or worker, rank): what a per-process generator mixes in."""
    info = get_worker_info()
    torch_seed = info.seed if info is not None else torch.initial_seed()
    rank = 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
    return int(torch_seed) % (2**64), rank


def _process_key() -> tuple[int, int | None]:
    info = get_worker_info()
    return os.getpid(), (info.id if info is not None else None)


def process_rng(seed: int = 0) -> np.random.Generator:
    """A numpy Generator for the calling process/worker, from ``seed`` and the torch seed.

    In a DataLoader worker the torch seed is ``base_seed + worker_id`` (base_seed comes from
    the loader's generator or the global torch RNG), so workers differ and a re-run with
    the same seeds repeats exactly.
    """
    torch_seed, rank = _process_seed()
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (2**64), torch_seed, rank]))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and the global numpy state of a worker.

    Our transforms use their own generators; this only protects third-party code that
    draws from the global state (otherwise every forked worker would repeat the parent's).
    """
    import random

    seed = torch.initial_seed() % (2**32)
    random.seed(seed)
    np.random.seed(seed)


class ProcessLocalRNG:
    """Lazily created, per-process numpy Generator that is dropped when pickled or forked.

    Without this, a generator created in the main process would be copied into every
    worker and all workers would draw the same masks.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None
        self._key: tuple[int, int | None] | None = None

    def get(self) -> np.random.Generator:
        key = _process_key()
        if self._rng is None or self._key != key:
            self._rng = process_rng(self.seed)
            self._key = key
        return self._rng

    def __getstate__(self) -> dict[str, Any]:
        return {"seed": self.seed, "_rng": None, "_key": None}


# --------------------------------------------------------------------------- lead masking
def subset_masks(subsets: Sequence[Sequence[str]] = LEAD_SUBSETS) -> np.ndarray:
    """Boolean (K, 12) array, True where a lead is kept in subset k."""
    masks = np.zeros((len(subsets), N_LEADS), dtype=bool)
    for k, subset in enumerate(subsets):
        for name in subset:
            masks[k, lead_index(name)] = True
    return masks


class LeadMasker:
    """Whole-lead masking: keep one of the paper's lead subsets, zero the other leads.

    ``sample_mask`` always draws one of the subsets with ``probs`` (all 12 leads: p=0.5).
    Per-sample mode (pretraining, :meth:`sample_mask_per_sample`): the draw is applied only
    with probability ``p_apply`` (0.5), so a sample keeps all leads with p=0.75 overall.
    Per-batch masking (finetuning) is :class:`BatchLeadMask`, which draws one subset for the
    whole batch with :meth:`sample_mask` (``p_apply`` is not used there).
    """

    def __init__(
        self,
        subsets: Sequence[Sequence[str]] = LEAD_SUBSETS,
        probs: Sequence[float] = LEAD_SUBSET_PROBS,
        p_apply: float = 0.5,
    ) -> None:
        if len(subsets) != len(probs):
            raise ValueError(f"{len(subsets)} subsets but {len(probs)} probabilities")
        p = np.asarray(probs, dtype=np.float64)
        if np.any(p < 0) or not np.isclose(p.sum(), 1.0):
            raise ValueError(f"subset probabilities must be >= 0 and sum to 1, got {list(probs)}")
        if not 0.0 <= p_apply <= 1.0:
            raise ValueError(f"p_apply must be in [0, 1], got {p_apply}")
        self.masks = subset_masks(subsets)
        self.probs = p / p.sum()
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0
        self.p_apply = float(p_apply)

    @property
    def n_subsets(self) -> int:
        return len(self.probs)

    def sample_index(self, rng: np.random.Generator | torch.Generator) -> int:
        """Index of one subset drawn with ``probs`` (numpy Generator or torch Generator)."""
        if isinstance(rng, torch.Generator):
            u = float(torch.rand((), generator=rng, dtype=torch.float64))
        else:
            u = float(rng.random())
        return int(min(np.searchsorted(self._cdf, u, side="right"), self.n_subsets - 1))

    def sample_mask(self, rng: np.random.Generator | torch.Generator) -> np.ndarray:
        """Boolean (12,) kept-lead mask of one subset drawn with ``probs``."""
        return self.masks[self.sample_index(rng)].copy()

    def sample_mask_per_sample(self, rng: np.random.Generator) -> np.ndarray:
        """Per-sample draw: a subset with probability ``p_apply``, else all 12 leads."""
        if rng.random() < self.p_apply:
            return self.sample_mask(rng)
        return np.ones(N_LEADS, dtype=bool)


def describe_mask(mask: np.ndarray | torch.Tensor) -> tuple[str, ...]:
    """Lead names kept by a mask (for logs and error messages)."""
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    return tuple(name for name, keep in zip(LEADS, m) if keep)


class BatchLeadMask:
    """Per-batch lead-mask draws for survival finetuning: one subset for the whole batch.

    :meth:`draw` returns the (B, 12) kept-lead mask (identical rows) that
    :func:`finish_batch` applies; the finetuning reconstruction target is then the masked
    input (docs/method.md section 1). The draw happens where the batch is gathered (the
    train dataset's ``__getitems__``), so a loader's batches are reproducible with or
    without a Trainer.

    The torch generator is created lazily per process from ``(seed, worker torch seed)``.
    With the DataModule's seeded loader generator every DDP rank's worker k gets the same
    seed, and batch i goes to worker i % num_workers on every rank, so all ranks draw the
    same subset for the same global batch.
    """

    def __init__(self, masker: LeadMasker | None = None, seed: int = 0) -> None:
        self.masker = masker if masker is not None else LeadMasker()
        self.seed = int(seed)
        self._gen: torch.Generator | None = None
        self._key: tuple[int, int | None] | None = None

    def generator(self) -> torch.Generator:
        key = _process_key()
        if self._gen is None or self._key != key:
            torch_seed, _ = _process_seed()  # not the rank: ranks should share the subset
            state = np.random.SeedSequence([self.seed % (2**64), torch_seed]).generate_state(1)
            self._gen = torch.Generator().manual_seed(int(state[0]))
            self._key = key
        return self._gen

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_gen"] = None
        state["_key"] = None
        return state

    def draw(self, batch_size: int) -> torch.Tensor:
        """(batch_size, 12) bool: one subset drawn with the masker's probabilities."""
        mask = torch.from_numpy(self.masker.sample_mask(self.generator()))
        return mask[None, :].expand(batch_size, -1).clone()


# --------------------------------------------------------------------------- batch finishing
def is_raw_batch(batch: Any) -> bool:
    """True for a loader batch that :func:`finish_batch` has not processed yet."""
    return isinstance(batch, dict) and "median" in batch


def finish_batch(batch: dict[str, torch.Tensor], pad: int = PAD) -> dict[str, torch.Tensor]:
    """Raw loader batch -> what the model sees, vectorised on the batch's device.

    In: ``median`` (B, 12, 600) raw beats, optional ``median_clean`` (B, 12, 600) and
    ``lead_mask`` (B, 12) bool (default: all leads), any other keys (passed through).
    Out: ``x`` (B, 12, 608) = z-scored median with the dropped leads zeroed, padded;
    ``target`` (B, 12, 600) = the z-scored ``median_clean`` (unmasked; pretraining) when
    given, else the masked, unpadded ``x`` (finetuning); ``lead_mask``. A batch without
    ``median`` is returned unchanged, so calling it twice is harmless.
    """
    if not is_raw_batch(batch):
        return batch
    out = dict(batch)
    raw = out.pop("median")
    mask = out.get("lead_mask")
    if mask is None:
        mask = torch.ones(raw.shape[0], N_LEADS, dtype=torch.bool, device=raw.device)
    out["x"] = _zscore_torch(raw, keep=mask, pad=pad)
    clean = out.pop("median_clean", None)
    out["target"] = unpad_beat(out["x"], pad) if clean is None else _zscore_torch(clean)
    out["lead_mask"] = mask.to(torch.bool)
    return out

"""Event-stratified batches for the Cox loss (docs/method.md section 6).

With 1.4% events (UKB-HYP) random batches often hold no event and the per-batch Cox
partial likelihood is undefined, so every batch is built to hold the cohort's event ratio.

Construction of one epoch (deterministic given ``seed`` and ``epoch``): shuffle the event
and the non-event indices separately, place the events at evenly spaced slots
``floor((k * N + o) / E)`` (offset o drawn per epoch) of an N-long sequence and fill the other
slots with non-events, then cut the sequence into consecutive batches. Any window of L
consecutive slots then holds floor or ceil of ``L * E / N`` events.

DDP: ``batch_size`` is the GLOBAL batch size. Every rank builds the same global batches
and takes the strided share ``batch[rank::num_replicas]``; the Cox loss gathers across
ranks, so the global batch has the single-process composition, and every rank gets the
same number of batches (no hang).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

from data_modules.errors import DataError
from data_modules.protocol.survival_arrays import check_events


def _dist_world() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return None


class _EpochSampler(Sampler[int]):
    """The ``.sampler`` of :class:`EventStratifiedBatchSampler`: this rank's indices in order.

    Lightning calls ``set_epoch`` on ``loader.sampler`` and ``loader.batch_sampler.sampler``
    but not on the batch sampler itself, so without this proxy every epoch would repeat
    the same batches under a Trainer.
    """

    def __init__(self, owner: EventStratifiedBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for batch in self.owner:
            yield from batch

    def __len__(self) -> int:
        return sum(len(b[self.owner.rank :: self.owner.num_replicas])
                   for b in self.owner.global_batches())


class EventStratifiedBatchSampler(BatchSampler):
    """Batches of indices into ``event`` that each hold the cohort's event ratio.

    Args:
        event: 0/1 per sample (positions of this array are the yielded indices).
        batch_size: global batch size (split across DDP ranks).
        seed: shuffling seed; must be the same on every rank.
        drop_last: True: ``N // batch_size`` batches of exactly ``batch_size`` (the tail of
            the epoch's shuffled sequence is dropped, different samples each epoch).
            False: ``ceil(N / batch_size)`` batches of near-equal size (differ by <= 1,
            each <= ``batch_size``), so there is no tiny remainder batch and every sample
            is used exactly once per epoch.
        num_replicas, rank: DDP world size and rank; default: from ``sampler`` when it is a
            ``DistributedSampler``, else from an initialised ``torch.distributed``, else 1/0.
        sampler: ignored except for ``num_replicas``/``rank``. Exists so Lightning can
            re-instantiate this class with its ``DistributedSampler`` under DDP (it
            injects a ``sampler`` argument into custom batch samplers). The attribute
            ``self.sampler`` is a different object: an index view whose ``set_epoch``
            forwards here, because that is where Lightning calls ``set_epoch``.

    Raises ``ValueError`` when there are no events; warns when ``batch_size`` is too small
    for at least one event per batch on average.
    """

    def __init__(
        self,
        event: Sequence[int] | np.ndarray,
        batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        # BatchSampler.__init__ is not called: this class has no underlying index sampler.
        e = check_events(event, "EventStratifiedBatchSampler")  # the shared validator
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.event = e
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.n = int(e.shape[0])
        self.event_idx = np.flatnonzero(e).astype(np.int64)
        self.nonevent_idx = np.flatnonzero(~e).astype(np.int64)
        self.n_events = int(self.event_idx.shape[0])
        if self.n_events == 0:
            raise DataError(
                f"no events among {self.n} samples: event-stratified batches (and the Cox "
                "loss) need at least one event"
            )
        self.num_replicas, self.rank = self._resolve_world(num_replicas, rank, sampler)
        self.sampler = _EpochSampler(self)  # what Lightning's set_epoch hook reaches

        if self.drop_last:
            n_batches = self.n // self.batch_size
            if n_batches == 0:
                raise ValueError(
                    f"{self.n} samples < batch_size={self.batch_size} with drop_last=True: "
                    "no batches"
                )
            self.batch_sizes = np.full(n_batches, self.batch_size, dtype=np.int64)
        else:
            n_batches = max(1, math.ceil(self.n / self.batch_size))
            base, extra = divmod(self.n, n_batches)
            self.batch_sizes = np.full(n_batches, base, dtype=np.int64)
            self.batch_sizes[:extra] += 1
        smallest = int(self.batch_sizes.min())
        if smallest < self.num_replicas:
            raise ValueError(
                f"global batches of {smallest} samples cannot be shared by {self.num_replicas} "
                f"ranks (batch_size={self.batch_size}, {self.n} samples); use a larger batch_size"
            )
        self.expected_events = smallest * self.n_events / self.n
        if self.expected_events < 1.0:
            warnings.warn(
                f"batch_size={self.batch_size} with {self.n_events} events in {self.n} samples "
                f"gives {self.expected_events:.2f} events per batch: some batches will hold no "
                "event (the Cox loss is 0 for them); raise batch_size for >= 1 event per batch",
                UserWarning,
                stacklevel=2,
            )

    @staticmethod
    def _resolve_world(
        num_replicas: int | None, rank: int | None, sampler: Sampler | None
    ) -> tuple[int, int]:
        sources: list[tuple[int, int]] = []
        if sampler is not None and hasattr(sampler, "num_replicas") and hasattr(sampler, "rank"):
            sources.append((int(sampler.num_replicas), int(sampler.rank)))
        world = _dist_world()
        if world is not None:
            sources.append(world)
        if num_replicas is None or rank is None:
            fallback = sources[0] if sources else (1, 0)
            num_replicas = fallback[0] if num_replicas is None else num_replicas
            rank = fallback[1] if rank is None else rank
        elif sampler is not None and sources and sources[0] != (num_replicas, rank):
            raise ValueError(
                f"num_replicas/rank {num_replicas}/{rank} disagree with the injected "
                f"distributed sampler's {sources[0][0]}/{sources[0][1]}"
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas={num_replicas}")
        return int(num_replicas), int(rank)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch``; Lightning reaches it through ``self.sampler.set_epoch``."""
        self.epoch = int(epoch)

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All ranks' global batches of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed % (2**63), epoch])
        ev = rng.permutation(self.event_idx)
        ne = rng.permutation(self.nonevent_idx)
        offset = int(rng.integers(0, self.n))  # exact integer form of floor((k + u) * N / E)
        slots = (np.arange(self.n_events, dtype=np.int64) * self.n + offset) // self.n_events
        is_event = np.zeros(self.n, dtype=bool)
        is_event[slots] = True
        order = np.empty(self.n, dtype=np.int64)
        order[is_event] = ev
        order[~is_event] = ne
        ends = np.cumsum(self.batch_sizes)
        starts = ends - self.batch_sizes
        return [order[s:t] for s, t in zip(starts, ends)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank :: self.num_replicas].tolist()

    def __len__(self) -> int:
        return int(self.batch_sizes.shape[0])

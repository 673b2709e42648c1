"""Differentiable collectives for losses that need the global batch (Cox, CLIP/InfoNCE).

A Cox partial likelihood computed per rank only sees risk sets within the local shard, and an
InfoNCE loss only sees local negatives. Gathering the shards (with gradients) makes the loss
over the global batch equal to the single-process loss on the concatenated samples.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_with_grad", "get_rank", "get_world_size", "is_distributed"]


def is_distributed() -> bool:
    """True when a torch.distributed process group is up (and more than one rank exists)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    """World size, 1 when not distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    """Global rank, 0 when not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    """All ranks' dim-0 sizes, so shards of different lengths can be padded and trimmed."""
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: pad, all_gather, trim, concatenate. Backward: sum the gradients of every rank's
    copy of the global tensor and return this rank's slice."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        rank = dist.get_rank()
        sizes = _gather_sizes(t.shape[0], t.device)
        max_n = max(sizes)
        padded = t.contiguous()
        if t.shape[0] < max_n:
            pad = t.new_zeros((max_n - t.shape[0], *t.shape[1:]))
            padded = torch.cat([padded, pad], dim=0)
        buckets = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(buckets, padded)
        ctx.sizes = sizes
        ctx.rank = rank
        return torch.cat([b[:n] for b, n in zip(buckets, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        # Every rank evaluates the loss on the same global tensor, so the gradient with respect
        # to this rank's samples is the sum over ranks of their gradients for this slice.
        grad = grad_out.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def all_gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` along dim 0 across all ranks, keeping the autograd graph.

    Shards may have different lengths (their sizes are gathered first; shards are padded to the
    longest and trimmed). The result is identical on every rank, ordered by rank.

    Gradient convention (same as ``torch.distributed.nn.functional.all_gather``): the gradient
    returned to a rank's own slice is the **sum** over ranks of the gradient of each rank's copy.
    When every rank computes the same global loss L, a rank's local gradient is therefore
    ``world_size * dL/d(slice)``; DDP then *averages* parameter gradients over ranks, which yields
    exactly the single-process full-batch gradient ``dL/dtheta``.

    Identity (no copy, no collective) when torch.distributed is not initialised or the world size
    is 1. Boolean tensors are sent as uint8 (gloo/NCCL lack bool all_gather) and never carry grad.
    Every rank must call this the same number of times (it is a collective).
    """
    if not is_distributed():
        return t
    if t.dtype == torch.bool:
        return _AllGatherWithGrad.apply(t.to(torch.uint8)).to(torch.bool)
    return _AllGatherWithGrad.apply(t)

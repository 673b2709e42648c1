"""Heads on the 512-d embedding (docs/method.md sections 4-5)."""

from __future__ import annotations

from torch import nn

from ecg_dan.models.dropout import BatchwiseDropout


class RiskHead(nn.Sequential):
    """BN -> batch-wise dropout 0.25 -> 512->3 -> ReLU -> BN(3) -> 3->1: the log-risk."""

    def __init__(self, latent_dim: int = 512, hidden: int = 3, dropout: float = 0.25) -> None:
        super().__init__(nn.BatchNorm1d(latent_dim), BatchwiseDropout(dropout),
                         nn.Linear(latent_dim, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                         nn.Linear(hidden, 1))


class DiscreteTimeHead(nn.Sequential):
    """The risk head's structure with ``n_bins`` outputs: BN -> batch-wise dropout 0.25 ->
    512->32 -> ReLU -> BN(32) -> 32->n_bins, the logits of the discrete hazards
    (logistic-hazard objective). The hidden width is 32, not 3: a 3-wide bottleneck would
    force the K hazard curves into a rank-3 family; 32 keeps the head small (~17k
    parameters at K=20) without that constraint."""

    def __init__(self, latent_dim: int = 512, n_bins: int = 20, hidden: int = 32,
                 dropout: float = 0.25) -> None:
        if n_bins < 2:
            raise ValueError(f"a discrete-time head needs at least 2 time bins, got {n_bins}")
        super().__init__(nn.BatchNorm1d(latent_dim), BatchwiseDropout(dropout),
                         nn.Linear(latent_dim, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                         nn.Linear(hidden, n_bins))


class ClassificationHead(nn.Sequential):
    """PTB-XL superclass head (optional pretraining term)."""

    def __init__(self, latent_dim: int = 512, n_classes: int = 5) -> None:
        super().__init__(nn.BatchNorm1d(latent_dim), nn.Dropout(0.25), nn.Linear(latent_dim, 128),
                         nn.ReLU(), nn.BatchNorm1d(128), nn.Dropout(0.5), nn.Linear(128, n_classes))


class Projector(nn.Sequential):
    """in -> hidden -> ReLU -> out: the alignment projectors p_ecg and p_text.

    Sizes follow the latent size as in the authors' code (docs/method.md section 7): with
    latent 512 both projectors are in -> 256 -> 128; with any other latent size d they are
    in -> d/2 -> d/2 (latent 64: 64 -> 32 -> 32 and d_text -> 32 -> 32).
    """

    def __init__(self, in_dim: int, latent_dim: int = 512, hidden: int | None = None,
                 out_dim: int | None = None) -> None:
        h, o = projector_sizes(latent_dim)
        super().__init__(nn.Linear(in_dim, hidden or h), nn.ReLU(),
                         nn.Linear(hidden or h, out_dim or o))


def projector_sizes(latent_dim: int) -> tuple[int, int]:
    """(hidden, out) of both alignment projectors for an encoder of this latent size."""
    if latent_dim == 512:
        return 256, 128
    if latent_dim < 2:
        raise ValueError(f"latent_dim must be >= 2 for the projectors, got {latent_dim}")
    return latent_dim // 2, latent_dim // 2

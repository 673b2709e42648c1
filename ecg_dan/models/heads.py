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
    """in -> 256 -> ReLU -> 128: the alignment projectors p_ecg and p_text."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

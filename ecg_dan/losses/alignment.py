"""ECG-text alignment losses (docs/method.md section 5).

``cosine``: mean(1 - cos) between paired projections, the released code's loss (no
negatives). ``infonce``: symmetric CLIP loss; under DDP the embeddings of every rank are
gathered with gradients so the negatives span the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ecg_dan.distributed import all_gather_with_grad, get_rank


def cosine_alignment_loss(ecg: Tensor, text: Tensor) -> Tensor:
    """mean(1 - cos(ecg_i, text_i)) over the batch."""
    return (1.0 - F.cosine_similarity(ecg, text, dim=-1)).mean()


def projected_report_agreement(text: Tensor, projected: Tensor,
                               same: float = 0.999) -> Tensor:
    """Mean cosine similarity between the projections of *different* reports in a batch
    (raw embeddings' cosine below ``same``); NaN when the batch holds one report.

    Near 1 means the alignment has collapsed: the text projector sends every report to one
    direction, which the cosine loss (no negatives) allows, and the ECG projector follows;
    the loss then falls to ~0 while aligning teaches the encoder nothing about the report.
    """
    raw = F.normalize(text.float(), dim=-1)
    proj = F.normalize(projected.float(), dim=-1)
    different = (raw @ raw.T) < same
    if not bool(different.any()):
        return torch.tensor(float("nan"), device=text.device)
    return (proj @ proj.T)[different].mean()


def infonce_loss(ecg: Tensor, text: Tensor, temperature: Tensor | float,
                 gather: bool = True) -> Tensor:
    """Symmetric InfoNCE over the (global) batch; row i's positive is column i.

    Under DDP each rank scores its own rows against all ranks' columns; the mean over
    ranks (DDP's gradient averaging) then equals the single-process loss on the global batch
    when every rank holds the same number of samples.
    """
    ecg = F.normalize(ecg, dim=-1)
    text = F.normalize(text, dim=-1)
    n_local = ecg.shape[0]
    if gather:
        all_ecg, all_text = all_gather_with_grad(ecg), all_gather_with_grad(text)
    else:
        all_ecg, all_text = ecg, text
    offset = get_rank() * n_local if gather and all_ecg.shape[0] != n_local else 0
    labels = torch.arange(n_local, device=ecg.device) + offset
    logits_e2t = ecg @ all_text.T / temperature
    logits_t2e = text @ all_ecg.T / temperature
    return 0.5 * (F.cross_entropy(logits_e2t, labels) + F.cross_entropy(logits_t2e, labels))

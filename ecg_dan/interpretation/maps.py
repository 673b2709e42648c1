"""Attention maps of ECG-DAN as the paper reads them (docs/method.md section 8).

Pure array functions (numpy / torch, no files, no plotting), so each rule is testable:

- cross-lead: the head-averaged (12 x 12) map of each subject; group mean and std;
- temporal: the query-averaged (T x T) map gives one weight per token; each token is
  projected onto the input samples of its own lead through the positive input gradient of
  its pre-attention feature; the token-weighted sum is Gaussian-smoothed (sigma 4),
  cropped to the central 600 samples and rescaled to [0, 1];
- the latent space: a 2-D PCA projection of z.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d
from torch import nn

from data_modules.signal.leads import BEAT_LEN

SIGMA = 4.0  # samples; the paper's Gaussian smoothing of the gradient map


def group_mean_std(maps: NDArray, members: NDArray) -> tuple[NDArray, NDArray]:
    """Mean and population std (ddof 0) over the subjects ``members`` (bool or indices) of
    per-subject maps (n, ...); an empty group is an error, not NaNs."""
    sel = np.asarray(maps)[members]
    if sel.shape[0] == 0:
        raise ValueError("empty group: no subject to average")
    return sel.mean(axis=0), sel.std(axis=0)


def token_weights(temporal: NDArray | torch.Tensor) -> NDArray:
    """One weight per token: the query-average of each lead's (T x T) map (rows = queries,
    each summing to 1), so the weights of a lead sum to 1. (B, L, T, T) -> (B, L, T)."""
    a = temporal.detach().cpu().numpy() if isinstance(temporal, torch.Tensor) else temporal
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"temporal maps must be (B, leads, T, T), got {a.shape}")
    return a.mean(axis=2)


def token_input_gradients(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          chunk: int = 256) -> NDArray:
    """Positive input gradient of every token's pre-attention feature, on its own lead.

    ``features`` maps the (B, leads, S) input to h (B, C, leads, T) (ECGDANEncoder.features);
    the token (l, t) of a subject is h[b, :, l, t] and its feature is the sum over the C
    channels. Returns relu(d feature / d x[b, l, :]) as (B, leads, T, S).

    Each subject is replicated once per lead (replica l carries lead l's tokens), so one
    backward pass per token position t gives all leads' gradients at once: T passes over
    batches of about ``chunk`` replicas. Exact, because subjects do not interact in eval
    mode (no batch statistics).
    """
    B, L, S = x.shape
    out: NDArray | None = None
    step = max(1, chunk // L)
    for b0 in range(0, B, step):
        xb = x[b0:b0 + step].detach()
        n = xb.shape[0]
        rep = xb.repeat_interleave(L, dim=0).requires_grad_(True)  # (n*L, L, S)
        with torch.enable_grad():
            h = features(rep)
            if h.dim() != 4 or h.shape[0] != n * L or h.shape[2] != L:
                raise ValueError(f"features must be (B, C, leads, T) for input "
                                 f"{tuple(rep.shape)}, got {tuple(h.shape)}")
            T = h.shape[-1]
            # replica l of subject b keeps only lead l's tokens: (n, L, T)
            tok = torch.diagonal(h.sum(dim=1).view(n, L, L, T), dim1=1, dim2=2).transpose(1, 2)
            if out is None:
                out = np.empty((B, L, T, S), dtype=np.float32)
            for t in range(T):
                (g,) = torch.autograd.grad(tok[:, :, t].sum(), rep, retain_graph=t < T - 1)
                own = torch.diagonal(g.view(n, L, L, S), dim1=1, dim2=2)  # (n, S, L)
                out[b0:b0 + n, :, t] = own.permute(0, 2, 1).clamp_min(0).cpu().numpy()
    if out is None:
        raise ValueError("no input to differentiate")
    return out


def rescale01(m: NDArray) -> NDArray:
    """Min-max rescale along the last axis to [0, 1]; a constant row becomes zeros."""
    m = np.asarray(m, dtype=np.float64)
    lo = m.min(axis=-1, keepdims=True)
    span = m.max(axis=-1, keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def center_crop(m: NDArray, length: int = BEAT_LEN) -> NDArray:
    """The central ``length`` samples of the last axis (608 padded -> the 600-sample beat)."""
    n = m.shape[-1]
    if length > n:
        raise ValueError(f"cannot crop {length} samples from {n}")
    start = (n - length) // 2
    return m[..., start:start + length]


def temporal_sample_map(weights: NDArray, grads: NDArray, sigma: float = SIGMA,
                        length: int = BEAT_LEN) -> NDArray:
    """Per-lead attention on the samples: sum_t weight[l, t] * grad[l, t, :], Gaussian-
    smoothed (``sigma`` samples, reflecting edges), cropped to the central ``length``
    samples and rescaled to [0, 1] per lead. (B, L, T) x (B, L, T, S) -> (B, L, length).

    Smoothing is linear, so smoothing the weighted sum equals the weighted sum of the
    smoothed per-token gradients."""
    w = np.asarray(weights, dtype=np.float64)
    g = np.asarray(grads, dtype=np.float64)
    if g.shape[:3] != w.shape:
        raise ValueError(f"weights {w.shape} do not match gradients {g.shape}")
    m = np.einsum("blt,blts->bls", w, g)
    if sigma > 0:
        m = gaussian_filter1d(m, sigma, axis=-1, mode="reflect")
    return rescale01(center_crop(m, length))


def pca_2d(z: NDArray) -> tuple[NDArray, NDArray]:
    """(n, 2) projection of centred z on its two leading principal axes and their share of
    the variance; axes signed so each has a positive largest-magnitude loading."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 rows of (n, d) latents, got {z.shape}")
    c = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    vt = vt[:2]
    sign = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
    vt = vt * sign[:, None]
    var = s**2
    share = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    proj = c @ vt.T
    if proj.shape[1] < 2:  # d == 1: a flat second axis
        proj = np.column_stack([proj, np.zeros(len(proj))])
        share = np.append(share, 0.0)
    return proj, share


def encoder_of(net: nn.Module) -> nn.Module:
    """The encoder of a backbone or of a finetuning module wrapping one."""
    backbone = getattr(net, "backbone", net)
    enc = getattr(backbone, "encoder", None)
    if enc is None:
        raise ValueError(f"{type(net).__name__} has no encoder")
    return enc


@torch.no_grad()
def forward_maps(net: nn.Module, x: torch.Tensor) -> dict[str, NDArray]:
    """One eval forward of a backbone or finetuning module: ``z`` (B, latent), ``cross_lead``
    (B, L, L) and ``temporal`` (B, L, T, T) where the model has them, and ``risk`` (B,)
    when ``net`` has a survival head (its log-risk: the risk column of the predictions)."""
    out = net(x, return_attention=True)
    res = {k: out[k].float().cpu().numpy() for k in ("z", "cross_lead", "temporal") if k in out}
    if "log_risk" in out:
        res["risk"] = out["log_risk"].float().cpu().numpy()
    return res


def has_temporal_gradients(net: nn.Module) -> bool:
    """Whether the model has lead-wise temporal attention and a pre-attention feature map."""
    enc = encoder_of(net)
    return getattr(enc, "temporal", None) is not None and hasattr(enc, "features")

"""Figures of the attention maps and the latent space (docs/method.md section 8).

Agg canvases, no pyplot state; every PNG written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from numpy.typing import NDArray

from data_modules.signal.leads import FS, LEADS
from ecg_dan.reporting.png import save_png

ATTN_CMAP = "viridis"
DIFF_CMAP = "RdBu_r"
BEAT_CMAP = "inferno"


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def lead_heatmap(ax: Axes, m: NDArray, title: str, cmap: str = ATTN_CMAP,
                 vmin: float | None = None, vmax: float | None = None) -> None:
    """A (12 x 12) map with lead names: rows are the attending (query) leads."""
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
    n = m.shape[0]
    names = list(LEADS[:n])
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("attended lead (key)", fontsize=7)
    ax.set_ylabel("query lead", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)


def _diff_limit(d: NDArray) -> float:
    return float(np.abs(d).max()) or 1e-12


def cross_lead_figure(high: tuple[NDArray, NDArray], low: tuple[NDArray, NDArray],
                      n_high: int, n_low: int, out_png: str | os.PathLike,
                      title: str = "") -> Path:
    """Mean and std of the high- and low-risk groups' maps and the difference of means."""
    fig = _figure(12, 7.5)
    axes = fig.subplots(2, 3)
    vmax = float(max(high[0].max(), low[0].max()))
    lead_heatmap(axes[0, 0], high[0], f"high risk: mean (n={n_high})", vmin=0, vmax=vmax)
    lead_heatmap(axes[0, 1], low[0], f"low risk: mean (n={n_low})", vmin=0, vmax=vmax)
    diff = high[0] - low[0]
    lim = _diff_limit(diff)
    lead_heatmap(axes[0, 2], diff, "difference of means (high - low)", DIFF_CMAP, -lim, lim)
    smax = float(max(high[1].max(), low[1].max())) or 1e-12
    lead_heatmap(axes[1, 0], high[1], "high risk: std", vmin=0, vmax=smax)
    lead_heatmap(axes[1, 1], low[1], "low risk: std", vmin=0, vmax=smax)
    axes[1, 2].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out_png)


def coloured_beat(ax: Axes, beat: NDArray, colour: NDArray, lead: str) -> LineCollection:
    """One lead's beat (z-scored) as a line coloured by its [0, 1] attention."""
    t = np.arange(beat.shape[-1]) / FS * 1000.0
    pts = np.column_stack([t, beat]).reshape(-1, 1, 2)
    seg = np.concatenate([pts[:-1], pts[1:]], axis=1)
    lc = LineCollection(seg, cmap=BEAT_CMAP, norm=None, linewidths=1.6)
    lc.set_array(0.5 * (colour[:-1] + colour[1:]))
    lc.set_clim(0.0, 1.0)
    ax.add_collection(lc)
    pad = 0.1 * (float(beat.max() - beat.min()) or 1.0)
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(float(beat.min()) - pad, float(beat.max()) + pad)
    ax.set_title(lead, fontsize=8, loc="left")
    ax.tick_params(labelsize=6)
    return lc


def temporal_beat_figure(beat: NDArray, colour: NDArray, out_png: str | os.PathLike,
                         title: str = "", cross_lead: NDArray | None = None) -> Path:
    """The 12-lead beat coloured by the per-lead temporal attention; with ``cross_lead``
    also that subject's cross-lead map beside it (the single-ECG figure)."""
    n = beat.shape[0]
    single = cross_lead is not None
    fig = _figure(16 if single else 11, 8)
    ratios = [1, 1, 0.04] + ([0.15, 1.0] if single else [])
    grid = fig.add_gridspec(6, len(ratios), width_ratios=ratios, hspace=0.75, wspace=0.25,
                            left=0.05, right=0.95, top=0.9, bottom=0.07)
    lc = None
    for i in range(n):
        ax = fig.add_subplot(grid[i % 6, i // 6])
        lc = coloured_beat(ax, beat[i], colour[i], LEADS[i])
        if i % 6 == 5:
            ax.set_xlabel("ms", fontsize=7)
    if lc is not None:
        fig.colorbar(lc, cax=fig.add_subplot(grid[1:5, 2]), label="temporal attention (0-1)")
    if single:
        lead_heatmap(fig.add_subplot(grid[1:5, 4]), cross_lead, "cross-lead attention")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, out_png)


def latent_figure(panels: Sequence[dict], out_png: str | os.PathLike, title: str = "") -> Path:
    """PCA of z, one column per fold model (each its own latent space): coloured by the
    log-risk (top row) and by the event (bottom row). Panel dict: ``proj`` (n, 2),
    ``share`` (2,), ``risk`` (n,), ``event`` (n,), ``label``."""
    k = len(panels)
    fig = _figure(4.2 * k + 1, 7.5)
    axes = np.asarray(fig.subplots(2, k, squeeze=False))
    for j, p in enumerate(panels):
        proj, share = p["proj"], p["share"]
        ax = axes[0, j]
        sc = ax.scatter(proj[:, 0], proj[:, 1], c=p["risk"], cmap="coolwarm", s=9)
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04, label="log-risk")
        ax.set_title(p["label"], fontsize=8)
        ax = axes[1, j]
        ev = np.asarray(p["event"]).astype(bool)
        ax.scatter(proj[~ev, 0], proj[~ev, 1], s=9, c="tab:blue", alpha=0.5,
                   label=f"no event (n={int((~ev).sum())})")
        ax.scatter(proj[ev, 0], proj[ev, 1], s=14, c="tab:red",
                   label=f"event (n={int(ev.sum())})")
        ax.legend(fontsize=7, frameon=False)
        for ax in axes[:, j]:
            ax.set_xlabel(f"PC1 ({100 * share[0]:.1f}%)", fontsize=7)
            ax.set_ylabel(f"PC2 ({100 * share[1]:.1f}%)", fontsize=7)
            ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out_png)


def km_with_maps_figure(km_png: str | os.PathLike, high_mean: NDArray, low_mean: NDArray,
                        out_png: str | os.PathLike, title: str = "") -> Path:
    """The Kaplan-Meier figure beside the groups' mean cross-lead maps and their difference."""
    from matplotlib.image import imread

    fig = _figure(19, 4.8)
    grid = fig.add_gridspec(1, 4, width_ratios=[1.5, 1, 1, 1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(imread(str(km_png)))
    ax.axis("off")
    vmax = float(max(high_mean.max(), low_mean.max()))
    lead_heatmap(fig.add_subplot(grid[0, 1]), high_mean, "high risk: mean", vmin=0, vmax=vmax)
    lead_heatmap(fig.add_subplot(grid[0, 2]), low_mean, "low risk: mean", vmin=0, vmax=vmax)
    diff = high_mean - low_mean
    lim = _diff_limit(diff)
    lead_heatmap(fig.add_subplot(grid[0, 3]), diff, "high - low", DIFF_CMAP, -lim, lim)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out_png)

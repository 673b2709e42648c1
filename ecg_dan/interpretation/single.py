"""Attention of one ECG: the per-ECG figure of ``ecg-dan explain`` and of ``predict``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from data_modules.loading.transforms import finish_batch, unpad_beat
from data_modules.signal.leads import BEAT_LEN, N_LEADS, PAD, PADDED_LEN
from ecg_dan.interpretation.figures import temporal_beat_figure
from ecg_dan.interpretation.maps import (
    SIGMA,
    encoder_of,
    forward_maps,
    has_temporal_gradients,
    temporal_sample_map,
    token_input_gradients,
    token_weights,
)


def model_input(beat: NDArray) -> NDArray:
    """The network input of a median beat, as the datasets make it: (12, 600) z-scored per
    lead (idempotent on a beat that already is) and zero-padded to (12, 608). A (12, 608)
    beat is taken as already padded."""
    b = np.asarray(beat, dtype=np.float32)
    if b.ndim != 2 or b.shape[0] != N_LEADS or b.shape[1] not in (BEAT_LEN, PADDED_LEN):
        raise ValueError(f"a median beat must be ({N_LEADS}, {BEAT_LEN}) or ({N_LEADS}, "
                         f"{PADDED_LEN}), got {b.shape}")
    if b.shape[1] == PADDED_LEN:
        b = unpad_beat(b, PAD)
    if not np.isfinite(b).all():
        raise ValueError("the median beat has non-finite samples")
    return finish_batch({"median": torch.from_numpy(b)[None]})["x"][0].numpy()


def attention_of(net: nn.Module, x: torch.Tensor, gradients: bool = True,
                 sigma: float = SIGMA) -> dict[str, NDArray]:
    """Maps of a batch of padded inputs (B, 12, 608), ``net`` put in eval mode: ``z``,
    ``risk`` (with a survival head), ``cross_lead`` (B, 12, 12), ``token_weights``
    (B, 12, T) and, with ``gradients``, ``temporal_map`` (B, 12, 600) -- each where the
    model has that attention branch."""
    net.eval()
    out = forward_maps(net, x)
    if "temporal" in out:
        out["token_weights"] = token_weights(out.pop("temporal"))
        if gradients and has_temporal_gradients(net):
            grads = token_input_gradients(encoder_of(net).features, x)
            out["temporal_map"] = temporal_sample_map(out["token_weights"], grads, sigma)
    return out


def explain_ecg(net: nn.Module, beat: NDArray, out_png: str | os.PathLike | None = None,
                title: str = "", sigma: float = SIGMA) -> dict[str, Any]:
    """Cross-lead and temporal attention of one median beat, and its figure.

    ``net``: an ECG-DAN backbone or a finetuning module (then ``risk`` is its log-risk);
    ``beat``: the (12, 600) median beat (z-scored here as at training) or the padded
    (12, 608) model input. Returns ``cross_lead`` (12, 12), ``token_weights`` (12, T),
    ``temporal_map`` (12, 600) in [0, 1], ``beat`` (12, 600, the z-scored beat drawn),
    ``risk`` (float or None) and ``path`` (the PNG, when ``out_png`` is given). A model
    without both attention branches (an ablation or a baseline) is refused.
    """
    x = torch.from_numpy(model_input(beat))[None]
    maps = attention_of(net, x, gradients=True, sigma=sigma)
    missing = [k for k in ("cross_lead", "temporal_map") if k not in maps]
    if missing:
        name = getattr(getattr(getattr(net, "backbone", net), "cfg", None), "name", "?")
        raise ValueError(f"model {name!r} has no {' and no '.join(missing)} attention to "
                         "explain (an ablation without that branch, or a baseline)")
    res: dict[str, Any] = {
        "cross_lead": maps["cross_lead"][0], "token_weights": maps["token_weights"][0],
        "temporal_map": maps["temporal_map"][0], "beat": unpad_beat(x[0].numpy(), PAD),
        "risk": float(maps["risk"][0]) if "risk" in maps else None, "path": None}
    if out_png is not None:
        head = title or "ECG"
        if res["risk"] is not None:
            head += f" | log-risk {res['risk']:.3f}"
        res["path"] = Path(temporal_beat_figure(res["beat"], res["temporal_map"], out_png,
                                                title=head, cross_lead=res["cross_lead"]))
    return res

"""Parameter names of the authors' ``ECGAttentionAE`` (cherise215/LLM-ECG-Dual-Attention,
``multi_modal_heart/model/ecg_net_attention.py``) for ours, so that their released weights
load into ECG-DAN and ours into their code (``tests/reference/make_authors_fixtures.py``).

One rule per key, :func:`authors_keys`, used in both directions. Their twelve per-lead
temporal attention modules are one stacked ``(leads, ...)`` tensor each here; every other
tensor maps one to one, under another name.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

PARTS = ("encoder", "decoder")

# our stacked (leads, ...) temporal tensor -> their per-lead key
_TEMPORAL = {
    "ln1_weight": "time_norm_1.{i}.weight", "ln1_bias": "time_norm_1.{i}.bias",
    "in_proj_weight": "time_mha.{i}.in_proj_weight",
    "in_proj_bias": "time_mha.{i}.in_proj_bias",
    "out_proj_weight": "time_mha.{i}.out_proj.weight",
    "out_proj_bias": "time_mha.{i}.out_proj.bias",
    "ln2_weight": "mlp_norm_1.{i}.weight", "ln2_bias": "mlp_norm_1.{i}.bias",
    "fc1_weight": "time_mlp.{i}.fc1.weight", "fc1_bias": "time_mlp.{i}.fc1.bias",
    "fc2_weight": "time_mlp.{i}.fc2.weight", "fc2_bias": "time_mlp.{i}.fc2.bias",
}
_ENCODER_PREFIX = {
    "cross_lead.norm1.": "attention.norm2.",  # their cross-lead pre-norm
    "unused_lead_norm.": "attention.norm2.",  # built (unused) without cross-lead
    "cross_lead.attn.": "attention.lead_mha.",
    "cross_lead.norm2.": "attention.lead_norm_1.",
    "cross_lead.mlp.0.": "attention.lead_mlp.fc1.",
    "cross_lead.mlp.3.": "attention.lead_mlp.fc2.",
    "pool_avg.": "attention.attention_pool_1.1.",
    "pool_max.": "attention.attention_pool_2.1.",
    "input_conv.": "input_conv.",
}
_DECODER_PREFIX = {"linear.": "linear.", "final.0.": "final_conv.0."}
# residual blocks: their sequential is ``encoder`` / ``decoder``, their skip path idfunc_*
_BLOCK_RENAME = (("up_proj.", "idfunc_1."), ("up.", "idfunc_0."), ("skip.", "idfunc_1."))


def authors_keys(key: str, part: str, n_leads: int = 12) -> list[str]:
    """Their key(s) for our ``key`` of the ``part`` ("encoder"/"decoder") state dict: one,
    or ``n_leads`` (lead order) for a stacked temporal tensor. KeyError for an unknown key."""
    if part == "encoder" and key.startswith("temporal."):
        pattern = "attention." + _TEMPORAL[key.split(".", 1)[1]]
        return [pattern.format(i=i) for i in range(n_leads)]
    if key.startswith("blocks."):
        _, idx, rest = key.split(".", 2)
        for ours, theirs in _BLOCK_RENAME:
            if rest.startswith(ours):
                rest = theirs + rest[len(ours):]
                break
        return [f"{part}.{idx}.{rest}"]
    for ours, theirs in (_ENCODER_PREFIX if part == "encoder" else _DECODER_PREFIX).items():
        if key.startswith(ours):
            return [theirs + key[len(ours):]]
    raise KeyError(f"no authors' name for our {part} key {key}")


def to_authors(ours: Mapping[str, Tensor], part: str, n_leads: int = 12) -> dict[str, Tensor]:
    """Our encoder or decoder state dict -> theirs (``ECGAttentionAE.<part>``)."""
    out: dict[str, Tensor] = {}
    for key, t in ours.items():
        names = authors_keys(key, part, n_leads)
        for i, name in enumerate(names):
            out[name] = (t[i] if len(names) > 1 else t).clone()
    return out


def from_authors(template: Mapping[str, Tensor], theirs: Mapping[str, Tensor], part: str,
                 n_leads: int = 12) -> dict[str, Tensor]:
    """Their ``part`` state dict -> ours, for the keys of ``template`` (our module's state
    dict, which says which keys and shapes are wanted). KeyError naming what is missing or
    left over; ValueError naming a tensor of another shape."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing = []
    for key, want in template.items():
        names = authors_keys(key, part, n_leads)
        if any(n not in theirs for n in names):
            missing += [n for n in names if n not in theirs]
            continue
        used.update(names)
        t = torch.stack([theirs[n] for n in names]) if len(names) > 1 else theirs[names[0]]
        if t.shape != want.shape:
            raise ValueError(f"{part}.{names[0]}: shape {tuple(t.shape)}, but this model "
                             f"needs {tuple(want.shape)} for {key}")
        out[key] = t.to(want.dtype).clone()
    extra = sorted(set(theirs) - used)
    if missing or extra:
        raise KeyError(f"{part} weights do not fit: missing {missing[:4]}"
                       f"{' ...' if len(missing) > 4 else ''}, unexpected {extra[:4]}"
                       f"{' ...' if len(extra) > 4 else ''}")
    return out

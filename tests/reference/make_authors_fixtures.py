"""Regenerate the authors'-code fixtures of the encoder variants (tests/reference/authors_z_*.json).

    PYTHONPATH=. python tests/reference/make_authors_fixtures.py --authors-repo /tmp/authors

``--authors-repo`` is a checkout of https://github.com/cherise215/LLM-ECG-Dual-Attention
(only ``multi_modal_heart/model/`` is needed), e.g.::

    git --git-dir=<fetched git dir> worktree add /tmp/authors HEAD
    # or, file by file: git --git-dir=<dir> show HEAD:multi_modal_heart/model/<f>.py > ...

Their code is imported from that path at run time; nothing of it is copied into this
repository. ``fastai`` (imported by their ``basic_conv1d.py`` but not used by the attention
model) is stubbed when it is not installed.

For each variant (full, no cross-lead, no temporal, neither; docs/method.md section 2) the
script builds THEIR ``ECGAttentionAE`` exactly as their ``tasks/pretrain.py`` does
(``z_dims=512, linear_out=512, downsample_factor=5, base_feature_dim=4, if_VAE=False,
use_attention_pool=False, no_linear_in_E=True`` and ``no_lead_attention`` /
``no_time_attention``) and OUR ``ECGDANEncoder`` (``torch.manual_seed(seed)`` then
construct), copies our weights into theirs through ``our_to_authors`` (the stacked per-lead
temporal weights split into their twelve modules), runs both in eval mode in float64 on a
seeded (2, 12, 608) input, checks that z agrees, and writes the fixture: the seeds, a
checksum of our initial weights and THEIR z (float64). tests/test_ablation_fixtures.py
rebuilds our encoder from the seed and compares its z with their stored z.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import sys
import types
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
BATCH, INPUT_SEED = 2, 1234

# name -> (our ModelConfig fields, their constructor flags, our init seed)
VARIANTS: dict[str, tuple[dict, dict, int]] = {
    "full": ({}, {}, 11),
    "no_cross_lead": ({"cross_lead_attention": False}, {"no_lead_attention": True}, 12),
    "no_temporal": ({"temporal_attention": False}, {"no_time_attention": True}, 13),
    "no_attention": ({"cross_lead_attention": False, "temporal_attention": False},
                     {"no_lead_attention": True, "no_time_attention": True}, 14),
}


def fixture_path(variant: str) -> Path:
    return HERE / f"authors_z_{variant}.json"


def build_ours(variant: str, seed: int | None = None):
    """Our encoder of ``variant``, initialised deterministically from its seed."""
    from ecg_dan.models import ECGDANEncoder, ModelConfig

    fields, _, default_seed = VARIANTS[variant]
    torch.manual_seed(default_seed if seed is None else seed)
    return ECGDANEncoder(replace(ModelConfig(), **fields))


def weights_sha256(module: torch.nn.Module) -> str:
    """Checksum of a state dict as built (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def fixed_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(INPUT_SEED)
    return torch.randn(BATCH, 12, 608, generator=g, dtype=torch.float64)


def encode_z(z: np.ndarray) -> dict:
    z = np.ascontiguousarray(z, dtype="<f8")
    return {"shape": list(z.shape), "dtype": "float64-le",
            "base64": base64.b64encode(z.tobytes()).decode()}


def decode_z(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["base64"]), dtype="<f8").reshape(d["shape"])


def our_to_authors(ours: dict[str, torch.Tensor], n_leads: int = 12) -> dict[str, torch.Tensor]:
    """Our encoder state dict -> theirs (``ECGAttentionAE.encoder``)."""
    out: dict[str, torch.Tensor] = {}
    temporal = {  # our stacked (leads, ...) tensor -> their per-lead module key
        "ln1_weight": "time_norm_1.{i}.weight", "ln1_bias": "time_norm_1.{i}.bias",
        "in_proj_weight": "time_mha.{i}.in_proj_weight",
        "in_proj_bias": "time_mha.{i}.in_proj_bias",
        "out_proj_weight": "time_mha.{i}.out_proj.weight",
        "out_proj_bias": "time_mha.{i}.out_proj.bias",
        "ln2_weight": "mlp_norm_1.{i}.weight", "ln2_bias": "mlp_norm_1.{i}.bias",
        "fc1_weight": "time_mlp.{i}.fc1.weight", "fc1_bias": "time_mlp.{i}.fc1.bias",
        "fc2_weight": "time_mlp.{i}.fc2.weight", "fc2_bias": "time_mlp.{i}.fc2.bias",
    }
    prefix = {
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
    for key, t in ours.items():
        if key.startswith("temporal."):
            pattern = "attention." + temporal[key.split(".", 1)[1]]
            for i in range(n_leads):
                out[pattern.format(i=i)] = t[i].clone()
            continue
        if key.startswith("blocks."):
            _, idx, rest = key.split(".", 2)
            rest = rest.replace("skip.", "idfunc_1.")
            out[f"encoder.{idx}.{rest}"] = t.clone()
            continue
        for ours_p, theirs_p in prefix.items():
            if key.startswith(ours_p):
                out[theirs_p + key[len(ours_p):]] = t.clone()
                break
        else:
            raise KeyError(f"no mapping for our key {key}")
    return out


def _import_authors(repo: Path):
    if importlib.util.find_spec("fastai") is None:  # imported by basic_conv1d, not used here
        import typing
        fastai = types.ModuleType("fastai")
        layers = types.ModuleType("fastai.layers")
        core = types.ModuleType("fastai.core")
        for name in ("Optional", "Collection"):  # used in their annotations
            setattr(core, name, getattr(typing, name))
        core.Floats = float
        fastai.layers, fastai.core = layers, core
        sys.modules.update({"fastai": fastai, "fastai.layers": layers, "fastai.core": core})
    sys.path.insert(0, str(repo))
    from multi_modal_heart.model.ecg_net_attention import ECGAttentionAE
    return ECGAttentionAE


def make(repo: Path, authors_commit: str | None, check: bool = True) -> None:
    ECGAttentionAE = _import_authors(repo)
    x = fixed_input()
    for variant, (fields, flags, seed) in VARIANTS.items():
        ours = build_ours(variant)
        checksum = weights_sha256(ours)
        theirs = ECGAttentionAE(num_leads=12, time_steps=608, z_dims=512, linear_out=512,
                                downsample_factor=5, base_feature_dim=4, if_VAE=False,
                                use_attention_pool=False, no_linear_in_E=True, **flags)
        enc = theirs.encoder
        n_ours = sum(p.numel() for p in ours.parameters())
        n_theirs = sum(p.numel() for p in enc.parameters())
        assert n_ours == n_theirs, (variant, n_ours, n_theirs)
        mapped = our_to_authors(ours.state_dict())
        enc.load_state_dict(mapped, strict=True)  # every key of theirs, nothing extra
        ours, enc = ours.double().eval(), enc.double().eval()
        with torch.no_grad():
            z_theirs = enc(x).numpy()
            z_ours = ours(x).numpy()
        err = float(np.abs(z_theirs - z_ours).max())
        print(f"{variant}: params {n_ours:,}, max |z_ours - z_theirs| = {err:.3g}")
        if check and err > 1e-10:
            raise SystemExit(f"{variant}: our z differs from the authors' by {err:.3g}")
        fixture = {
            "variant": variant,
            "model_config": {k: v for k, v in asdict(ours.cfg).items() if k in fields},
            "authors_flags": flags,
            "authors_commit": authors_commit,
            "torch_version": torch.__version__,
            "seed": seed,
            "input_seed": INPUT_SEED,
            "input_shape": [BATCH, 12, 608],
            "weights_sha256": checksum,
            "z_authors": encode_z(z_theirs),
            "note": "z of the authors' ECGAttentionAE encoder (float64, eval) loaded with "
                    "our initial weights; written by tests/reference/make_authors_fixtures.py",
        }
        fixture_path(variant).write_text(json.dumps(fixture, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--authors-repo", type=Path, required=True,
                   help="checkout of cherise215/LLM-ECG-Dual-Attention")
    p.add_argument("--authors-commit", default=None,
                   help="commit of that checkout, recorded in the fixtures")
    p.add_argument("--no-check", action="store_true",
                   help="write the fixtures even if our z differs from theirs")
    args = p.parse_args(argv)
    make(args.authors_repo.resolve(), args.authors_commit, check=not args.no_check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
    """Our encoder state dict -> theirs (``ECGAttentionAE.encoder``), by the package's rule
    (ecg_dan/models/authors_keys.py, which ``ecg-dan import-weights authors`` inverts)."""
    from ecg_dan.models.authors_keys import to_authors

    return to_authors(ours, "encoder", n_leads)


def check_trained_like(ECGAttentionAE, variant: str) -> float:
    """The mapping beyond initial weights (where every norm is 1 and every bias 0, so two
    swapped norms would pass): encoder and decoder with every float tensor of the state
    perturbed, loaded into theirs by name, must give their z and reconstruction. Returns
    the largest difference."""
    from ecg_dan.models import ECGDAN, ModelConfig
    from ecg_dan.models.authors_keys import to_authors

    fields, flags, seed = VARIANTS[variant]
    torch.manual_seed(seed)
    ours = ECGDAN(replace(ModelConfig(), **fields))
    with torch.no_grad():
        for t in ours.state_dict().values():  # references: perturbed in place
            if t.dtype.is_floating_point:
                t.add_(0.05 * torch.rand_like(t))
    theirs = ECGAttentionAE(num_leads=12, time_steps=608, z_dims=512, linear_out=512,
                            downsample_factor=5, base_feature_dim=4, if_VAE=False,
                            use_attention_pool=False, no_linear_in_E=True, **flags)
    for part in ("encoder", "decoder"):
        getattr(theirs, part).load_state_dict(
            to_authors(getattr(ours, part).state_dict(), part), strict=True)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = fixed_input()
    with torch.no_grad():
        z_o, z_t = ours.encoder(x), theirs.encoder(x)
        errs = [float((z_o - z_t).abs().max() / z_t.abs().max()),
                float((ours.decoder(z_o) - theirs.decoder(z_t)).abs().max())]
    return max(errs)


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
        trained = check_trained_like(ECGAttentionAE, variant)
        print(f"{variant}: params {n_ours:,}, max |z_ours - z_theirs| = {err:.3g}; "
              f"perturbed weights, encoder + decoder: {trained:.3g}")
        if check and (err > 1e-10 or trained > 1e-10):
            raise SystemExit(f"{variant}: ours differs from the authors' by "
                             f"{max(err, trained):.3g}")
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

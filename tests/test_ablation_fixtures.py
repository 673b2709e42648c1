"""Encoder variants against the authors' code: z on stored fixtures (docs/method.md section 2).

tests/reference/authors_z_<variant>.json hold the z that the authors' ``ECGAttentionAE``
encoder (full, no cross-lead, no temporal, neither) computed in float64 from OUR seeded
initial weights, mapped onto theirs; tests/reference/make_authors_fixtures.py made them from
a checkout of their repository (not part of this one). Here our encoder is rebuilt from the
same seed and must give the same z.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import make_authors_fixtures as fx  # noqa: E402

REGENERATE = ("regenerate the fixtures: PYTHONPATH=. python "
              "tests/reference/make_authors_fixtures.py --authors-repo <checkout of "
              "cherise215/LLM-ECG-Dual-Attention>")


@pytest.mark.parametrize("variant", list(fx.VARIANTS))
def test_encoder_variant_matches_authors_z(variant):
    fixture = json.loads(fx.fixture_path(variant).read_text())
    ours = fx.build_ours(variant, fixture["seed"])
    assert fx.weights_sha256(ours) == fixture["weights_sha256"], (
        f"{variant}: the seeded initial weights changed (initialisation, parameter layout or "
        f"torch's RNG; fixtures made with torch {fixture['torch_version']}), so the stored z "
        f"no longer applies; {REGENERATE}")
    assert fixture["input_seed"] == fx.INPUT_SEED
    x = fx.fixed_input()
    z_ref = fx.decode_z(fixture["z_authors"])
    with torch.no_grad():
        z = ours.double().eval()(x).numpy()
    assert z.shape == z_ref.shape
    err = float(np.abs(z - z_ref).max())
    assert err < 1e-10, f"{variant}: max |z - z_authors| = {err:.3g}"

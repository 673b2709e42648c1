"""Alignment losses: values against direct formulas, DDP equivalence, schedule shape."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ecg_dan.losses.alignment import cosine_alignment_loss, infonce_loss
from ecg_dan.schedules import warmup_cosine


def test_cosine_loss_is_mean_one_minus_cos():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    expected = ((1 - 1) + (1 - (-1)) + (1 - 1 / math.sqrt(2))) / 3
    assert math.isclose(cosine_alignment_loss(e, t).item(), expected, rel_tol=1e-6)


def test_infonce_matches_an_explicit_clip_loss():
    torch.manual_seed(0)
    e, t = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    en, tn = F.normalize(e, dim=1), F.normalize(t, dim=1)
    sim = en @ tn.T / 0.1
    loss_e = -torch.log_softmax(sim, dim=1).diagonal().mean()
    loss_t = -torch.log_softmax(sim.T, dim=1).diagonal().mean()
    got = infonce_loss(e, t, 0.1, gather=False)
    assert torch.allclose(got, 0.5 * (loss_e + loss_t))
    # perfectly aligned pairs with a low temperature approach zero loss
    assert infonce_loss(e, e.clone(), 0.01, gather=False) < 1e-3


def test_infonce_under_ddp_equals_single_process_global_batch(ddp_checks):
    assert "ddp_infonce: all checks passed" in ddp_checks.passed("ddp_infonce")


def test_warmup_cosine_schedule():
    f = warmup_cosine(100, 0.2)
    assert f(0) == 1 / 20 and f(19) == 1.0
    assert math.isclose(f(20), 1.0) and math.isclose(f(60), 0.5, abs_tol=1e-9)
    assert f(99) < 0.01 and f(150) == 0.0
    assert all(f(i) >= f(i + 1) for i in range(20, 99))


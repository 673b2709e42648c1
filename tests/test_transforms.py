"""z-score, padding and lead masking (docs/method.md section 1)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from data_modules.loading.transforms import (
    BatchLeadMask,
    LeadMasker,
    ProcessLocalRNG,
    describe_mask,
    finish_batch,
    pad_beat,
    unpad_beat,
    zscore_leads,
)
from data_modules.signal.leads import LEAD_SUBSET_PROBS, LEADS, PAD, PADDED_LEN


def _beats(n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 600)) * rng.uniform(0.01, 3, size=(n, 12, 1))
    return (x + rng.uniform(-5, 5, size=(n, 12, 1))).astype(np.float32)


# --------------------------------------------------------------------------- z-score
def test_zscore_mean_zero_std_one_per_lead() -> None:
    z = zscore_leads(_beats())
    assert z.dtype == np.float32 and z.shape == (3, 12, 600)
    np.testing.assert_allclose(z.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=-1), 1.0, atol=1e-5)


def test_zscore_is_per_record_and_per_lead() -> None:
    x = _beats(2)
    z = zscore_leads(x)
    # z-scoring one record alone gives the same result: no statistics shared across rows
    np.testing.assert_allclose(zscore_leads(x[1]), z[1], atol=1e-6)
    # rescaling/offsetting one lead changes nothing
    y = x.copy()
    y[0, 3] = y[0, 3] * 7.5 - 2.0
    np.testing.assert_allclose(zscore_leads(y), z, atol=1e-4)


def test_zscore_nan_becomes_zero_and_stats_ignore_nan() -> None:
    x = _beats(1)[0]
    x[2, 100:150] = np.nan
    x[5, :] = np.nan  # an all-NaN lead
    z = zscore_leads(x)
    assert np.isfinite(z).all()
    assert (z[2, 100:150] == 0).all()
    assert (z[5] == 0).all()
    finite = np.r_[z[2, :100], z[2, 150:]]
    assert abs(finite.mean()) < 1e-5 and abs(finite.std() - 1) < 1e-5


def test_zscore_zero_and_constant_leads_stay_zero() -> None:
    x = _beats(1)[0]
    x[0] = 0.0
    x[7] = 0.3  # constant, not exactly representable: rounding must not be amplified
    x[11] = 1234.5
    with np.errstate(all="raise"):  # no 0/0 anywhere
        z = zscore_leads(x)
    assert (z[[0, 7, 11]] == 0).all()
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[1].std(), 1.0, atol=1e-5)


def test_zscore_does_not_amplify_float32_rounding() -> None:
    x = _beats(1)[0]
    x[4] = 0.3
    x[4, 17] = np.nextafter(np.float32(0.3), np.float32(1.0))  # one ulp: no real signal
    z = zscore_leads(x)
    assert (z[4] == 0).all()
    np.testing.assert_allclose(z[3].std(), 1.0, atol=1e-5)


def test_zscore_torch_matches_numpy() -> None:
    x = _beats(2)
    x[0, 4] = 0
    x[1, 2, :10] = np.nan
    zt = zscore_leads(torch.from_numpy(x))
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float32
    np.testing.assert_allclose(zt.numpy(), zscore_leads(x), atol=1e-6)


# --------------------------------------------------------------------------- padding
def test_pad_is_symmetric_and_unpad_inverts() -> None:
    x = zscore_leads(_beats(2))
    p = pad_beat(x)
    assert p.shape == (2, 12, PADDED_LEN) and PADDED_LEN == 608 and PAD == 4
    assert (p[..., :4] == 0).all() and (p[..., -4:] == 0).all()
    np.testing.assert_array_equal(p[..., 4:-4], x)
    np.testing.assert_array_equal(unpad_beat(p), x)
    pt = pad_beat(torch.from_numpy(x))
    np.testing.assert_array_equal(pt.numpy(), p)
    np.testing.assert_array_equal(unpad_beat(pt).numpy(), x)
    with pytest.raises(ValueError):
        unpad_beat(np.zeros((12, 6)), pad=4)


# --------------------------------------------------------------------------- lead masks
def test_subset_masks_match_the_paper() -> None:
    m = LeadMasker().masks
    expected = [
        {"I", "II"},
        {"I", "II", "V2"},
        {"I", "II", "III", "V2"},
        {"I", "II", "III", "aVR", "aVL", "aVF"},
        {"I", "II", "V1", "V2", "V3", "V4", "V5", "V6"},
        set(LEADS),
    ]
    assert [set(describe_mask(row)) for row in m] == expected


def test_sample_mask_frequencies_match_probabilities() -> None:
    masker = LeadMasker()
    rng = np.random.default_rng(123)
    n = 20000
    counts = np.bincount([masker.sample_index(rng) for _ in range(n)], minlength=6)
    assert chisquare(counts, np.asarray(LEAD_SUBSET_PROBS) * n).pvalue > 1e-3
    mask = masker.sample_mask(rng)
    assert mask.dtype == bool and mask.shape == (12,)


def test_sample_mask_with_torch_generator() -> None:
    masker = LeadMasker()
    g = torch.Generator().manual_seed(5)
    n = 5000
    counts = np.bincount([masker.sample_index(g) for _ in range(n)], minlength=6)
    assert chisquare(counts, np.asarray(LEAD_SUBSET_PROBS) * n).pvalue > 1e-3


def test_per_sample_mode_applies_with_probability_half() -> None:
    masker = LeadMasker(p_apply=0.5)
    rng = np.random.default_rng(7)
    n = 20000
    masks = np.stack([masker.sample_mask_per_sample(rng) for _ in range(n)])
    all_kept = masks.all(axis=1).mean()
    assert abs(all_kept - 0.75) < 0.015  # 0.5 (not applied) + 0.5 * 0.5 (all-12 subset)
    only_i_ii = (masks.sum(axis=1) == 2).mean()
    assert abs(only_i_ii - 0.05) < 0.008
    never = LeadMasker(p_apply=0.0)
    assert all(never.sample_mask_per_sample(rng).all() for _ in range(200))


def test_finish_batch_matches_numpy_per_sample_transforms() -> None:
    """The batched torch path against the numpy per-record transforms, mask by mask."""
    raw = _beats(4)
    raw[1, 3, 10] = np.nan  # statistics ignore it, it becomes 0
    clean = raw * 0.5 + 1.0
    mask = np.ones((4, 12), dtype=bool)
    mask[0, 2:] = False  # {I, II}
    mask[2, 6:] = False  # limb leads
    out = finish_batch({"median": torch.from_numpy(raw), "lead_mask": torch.from_numpy(mask),
                        "median_clean": torch.from_numpy(clean), "time": torch.arange(4.0)})
    assert set(out) == {"x", "target", "lead_mask", "time"}
    want_x = pad_beat(zscore_leads(raw) * mask[:, :, None])
    np.testing.assert_allclose(out["x"].numpy(), want_x, rtol=0, atol=1e-6)
    assert (out["x"][0, 2:] == 0).all() and (out["x"][2, 6:] == 0).all()
    np.testing.assert_allclose(out["target"].numpy(), zscore_leads(clean), rtol=0, atol=1e-6)
    assert out["x"].dtype == out["target"].dtype == torch.float32
    assert out["lead_mask"].dtype == torch.bool
    assert finish_batch(out) is out  # already finished: unchanged


def test_finish_batch_finetuning_target_is_masked_input() -> None:
    raw = torch.from_numpy(_beats(3))
    out = finish_batch({"median": raw})  # no mask: all leads kept
    assert out["lead_mask"].all() and out["lead_mask"].shape == (3, 12)
    torch.testing.assert_close(out["target"], out["x"][..., PAD:-PAD], rtol=0, atol=0)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[:, :6] = True
    out = finish_batch({"median": raw, "lead_mask": mask})
    assert (out["target"][:, 6:] == 0).all()
    torch.testing.assert_close(out["target"], out["x"][..., PAD:-PAD], rtol=0, atol=0)


def test_masker_rejects_bad_probabilities() -> None:
    with pytest.raises(ValueError):
        LeadMasker(probs=(0.5, 0.5, 0.5, 0, 0, 0))
    with pytest.raises(ValueError):
        LeadMasker(probs=(1.0,))


def test_batch_mask_shared_across_batch() -> None:
    bm = BatchLeadMask(LeadMasker(probs=(0, 0, 0, 1, 0, 0)), seed=1)  # six limb leads
    mask = bm.draw(6)
    assert mask.shape == (6, 12) and mask.dtype == torch.bool
    assert (mask == mask[0]).all()
    assert mask[0].tolist() == [True] * 6 + [False] * 6


def test_batch_mask_draws_vary_and_follow_probabilities() -> None:
    bm = BatchLeadMask(seed=3)
    kept = [int(bm.draw(2)[0].sum()) for _ in range(2000)]
    counts = {k: kept.count(k) for k in (2, 3, 4, 6, 8, 12)}
    assert abs(counts[12] / 2000 - 0.5) < 0.04  # per-batch mode: all 12 with p = 0.5
    assert all(counts[k] > 100 for k in (2, 3, 4, 6, 8))


def test_batch_mask_reproducible_and_fresh_after_pickle() -> None:
    a, b = BatchLeadMask(seed=11), BatchLeadMask(seed=11)
    seq_a = [a.draw(2)[0].tolist() for _ in range(30)]
    seq_b = [b.draw(2)[0].tolist() for _ in range(30)]
    assert seq_a == seq_b
    c = BatchLeadMask(seed=12)
    assert [c.draw(2)[0].tolist() for _ in range(30)] != seq_a
    # a pickled copy (what a DataLoader worker gets) does not inherit the drawn state
    a2 = pickle.loads(pickle.dumps(a))
    assert a2._gen is None
    assert [a2.draw(2)[0].tolist() for _ in range(30)] == seq_a


def test_process_local_rng_is_dropped_on_pickle() -> None:
    r = ProcessLocalRNG(seed=5)
    first = r.get().random()
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._rng is None
    assert r2.get().random() == first  # same process + seed -> same stream from the start

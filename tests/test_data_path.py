"""The in-memory, batch-gathered data path against the per-record (streaming) path and
against a replay of the per-record numpy transforms it replaced (docs/method.md section 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from data_modules.loading.ptbxl_datamodule import PTBXLDataModule
from data_modules.loading.transforms import (
    BatchLeadMask,
    LeadMasker,
    finish_batch,
    pad_beat,
    process_rng,
    zscore_leads,
)
from data_modules.loading.ukb_datamodule import UKBDataModule, make_ukb_splits
from data_modules.signal.leads import LEAD_SUBSET_PROBS, PAD
from tests.test_datamodules import write_ptbxl_cache, write_ukb_cache

N = 160


@pytest.fixture(scope="module")
def ptbxl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ptbxl_cache(tmp_path_factory.mktemp("ptbxl") / "ptbxl.h5", n=N)


@pytest.fixture(scope="module")
def ukb(tmp_path_factory: pytest.TempPathFactory):
    path = write_ukb_cache(tmp_path_factory.mktemp("ukb") / "ukb.h5")
    return path, make_ukb_splits(path, "hyp", seeds=(42,))[0]


def _epochs(dm, n: int = 1, finish: bool = True) -> list[dict[str, torch.Tensor]]:
    loader = dm.train_dataloader()
    out = []
    for epoch in range(n):
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        out += [finish_batch(b) if finish else b for b in loader]
    return out


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)  # bit-identical


def test_memory_and_streaming_paths_yield_identical_batches(ptbxl_cache: Path, ukb) -> None:
    runs = {}
    for max_bytes in (None, 0):
        torch.manual_seed(5)
        dm = PTBXLDataModule(ptbxl_cache, batch_size=16, seed=3, max_bytes=max_bytes)
        assert dm.store.in_memory == (max_bytes is None)
        runs[max_bytes] = _epochs(dm)
        if max_bytes is None:  # the whole epoch after the one-time load: no file reads
            reads = dm.store.file_reads
            _epochs(dm)
            assert reads == 2 and dm.store.file_reads == reads
        else:  # streaming: one read per record and beat array
            assert dm.store.file_reads == 2 * dm.n_train
    _assert_same_batches(runs[None], runs[0])
    path, split = ukb
    runs = {}
    for max_bytes in (None, 0):
        torch.manual_seed(5)
        runs[max_bytes] = _epochs(UKBDataModule(path, "hyp", split, batch_size=32,
                                                max_bytes=max_bytes), 2)
    _assert_same_batches(runs[None], runs[0])


def test_size_limit_chooses_the_mode(ptbxl_cache: Path) -> None:
    dm = PTBXLDataModule(ptbxl_cache, max_bytes=0)
    assert dm.store.nbytes == 2 * N * 12 * 600 * 4
    assert PTBXLDataModule(ptbxl_cache, max_bytes=dm.store.nbytes).store.in_memory
    assert not PTBXLDataModule(ptbxl_cache, max_bytes=dm.store.nbytes - 1).store.in_memory


def test_ptbxl_batches_equal_the_per_record_transforms(ptbxl_cache: Path) -> None:
    """Replay of the per-record path (numpy z-score and padding, one mask draw per sample
    from the process generator, in loader order): same rows, same masks, same values."""
    import h5py

    torch.manual_seed(11)
    dm = PTBXLDataModule(ptbxl_cache, batch_size=16, seed=9, mask_prob=0.5)
    batches = _epochs(dm)
    with h5py.File(ptbxl_cache) as f:
        median, clean = f["median"][...], f["median_clean"][...]
    torch.manual_seed(11)
    rng, masker = process_rng(9), LeadMasker(p_apply=0.5)
    g = torch.Generator().manual_seed(9)
    torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's base seed draw
    order = torch.randperm(dm.n_train, generator=g).numpy()
    rows = dm.train_indices[order][: len(batches) * 16]
    masks = np.stack([masker.sample_mask_per_sample(rng) for _ in rows])
    got_rows = torch.cat([b["index"] for b in batches]).numpy()
    np.testing.assert_array_equal(got_rows, rows)
    np.testing.assert_array_equal(torch.cat([b["lead_mask"] for b in batches]).numpy(), masks)
    x = pad_beat(zscore_leads(median[rows]) * masks[:, :, None])
    np.testing.assert_allclose(torch.cat([b["x"] for b in batches]).numpy(), x, atol=1e-6,
                               rtol=0)
    np.testing.assert_allclose(torch.cat([b["target"] for b in batches]).numpy(),
                               zscore_leads(clean[rows]), atol=1e-6, rtol=0)
    assert (~masks.all(axis=1)).sum() > 10


def test_ukb_batches_equal_the_per_batch_replay(ukb) -> None:
    path, split = ukb
    torch.manual_seed(2)
    dm = UKBDataModule(path, "hyp", split, batch_size=32, seed=42)
    batches = _epochs(dm)
    torch.manual_seed(2)
    replay = BatchLeadMask(LeadMasker(), seed=42)
    for b in batches:
        n = b["x"].shape[0]
        torch.testing.assert_close(b["lead_mask"], replay.draw(n), rtol=0, atol=0)
        torch.testing.assert_close(b["target"], b["x"][..., PAD:-PAD], rtol=0, atol=0)


def _chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    return float(chisquare(counts, counts.sum() * probs / probs.sum()).pvalue)


def test_mask_statistics_match_the_method(ptbxl_cache: Path, ukb) -> None:
    """Per-lead masking rate and the number of kept leads, against docs/method.md: per
    sample (p_apply 0.5, then the six subsets) and per batch (the six subsets)."""
    torch.manual_seed(0)
    dm = PTBXLDataModule(ptbxl_cache, batch_size=16, seed=1)
    masks = torch.cat([b["lead_mask"] for b in _epochs(dm, 25, False)]).numpy()  # 3,200
    subsets = LeadMasker().masks
    p = np.asarray(LEAD_SUBSET_PROBS)
    sizes = [2, 3, 4, 6, 8, 12]
    want = 0.5 * p.copy()
    want[-1] += 0.5
    counts = np.array([(masks.sum(1) == k).sum() for k in sizes])
    assert counts.sum() == len(masks) and _chi2(counts, want) > 1e-3
    kept_rate = 0.5 + 0.5 * (p[:, None] * subsets).sum(0)  # per lead
    se = np.sqrt(kept_rate * (1 - kept_rate) / len(masks))
    assert (np.abs(masks.mean(0) - kept_rate) < 4 * se + 1e-12).all()
    path, split = ukb
    ukb_dm = UKBDataModule(path, "hyp", split, batch_size=8)
    bm = [b["lead_mask"] for b in _epochs(ukb_dm, 60, False)]
    assert all((m == m[0]).all() for m in bm)
    per_batch = np.stack([m[0].numpy() for m in bm])
    counts = np.array([(per_batch.sum(1) == k).sum() for k in sizes])
    assert counts.sum() == len(per_batch) and _chi2(counts, p) > 1e-3


def test_ddp_ranks_take_shards_without_rereading(ddp_checks) -> None:
    assert "ddp_data: all checks passed" in ddp_checks.passed("ddp_data")

"""PTB-XL / UKB splits and the event-stratified batch sampler (docs/method.md sections 5, 6)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from data_modules.loading.samplers import EventStratifiedBatchSampler
from data_modules.protocol.splits import (
    PAPER_SEEDS,
    load_splits,
    load_splits_meta,
    ptbxl_split,
    save_splits,
    survival_cv_splits,
)


def _events(n: int, n_events: int, seed: int = 0) -> np.ndarray:
    e = np.zeros(n, dtype=np.int8)
    e[np.random.default_rng(seed).choice(n, n_events, replace=False)] = 1
    return e


# --------------------------------------------------------------------------- PTB-XL
def test_ptbxl_split_folds() -> None:
    folds = np.array([1, 9, 10, 8, 2, 10, 9, 5, 3, 4])
    s = ptbxl_split(folds)
    assert s["train"].tolist() == [0, 3, 4, 7, 8, 9]
    assert s["val"].tolist() == [1, 6]
    assert s["test"].tolist() == [2, 5]
    validated = np.array([1, 1, 0, 0, 1, 1, 0, 1, 1, 1], dtype=bool)
    v = ptbxl_split(folds, validated, validated_only=True)
    assert v["train"].tolist() == [0, 4, 7, 8, 9] and v["val"].tolist() == [1]
    assert v["test"].tolist() == [5]
    assert ptbxl_split(folds, validated)["train"].tolist() == s["train"].tolist()
    with pytest.raises(ValueError, match="validated_by_human"):
        ptbxl_split(folds, validated_only=True)
    with pytest.raises(ValueError, match="1..10"):
        ptbxl_split([1, 11])


# --------------------------------------------------------------------------- UKB CV
def test_survival_cv_splits_partition_stratify_and_match_sklearn() -> None:
    n, n_ev = 800, 33  # UKB-MI size
    event = _events(n, n_ev)
    splits = survival_cv_splits(event)
    assert [(s.seed, s.fold) for s in splits] == [(sd, f) for sd in PAPER_SEEDS for f in (0, 1)]
    for seed in PAPER_SEEDS:
        folds = [s for s in splits if s.seed == seed]
        tests = np.concatenate([s.test_idx for s in folds])
        assert sorted(tests.tolist()) == list(range(n))  # each held out exactly once per seed
        expected = next(StratifiedKFold(2, shuffle=True, random_state=seed).split(event, event))
        np.testing.assert_array_equal(folds[0].test_idx, np.sort(expected[1]))
        for s in folds:
            parts = [set(s.train_idx.tolist()), set(s.val_idx.tolist()), set(s.test_idx.tolist())]
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
            assert len(parts[0] | parts[1] | parts[2]) == n
            assert abs(int(event[s.test_idx].sum()) - n_ev / 2) <= 1  # stratified
            n_trainfold = len(s.train_idx) + len(s.val_idx)
            assert abs(len(s.val_idx) - 0.2 * n_trainfold) <= 1
            ev_fold = int(event[s.train_idx].sum() + event[s.val_idx].sum())
            assert abs(int(event[s.val_idx].sum()) - 0.2 * ev_fold) <= 1
    # different seeds give different partitions
    assert not np.array_equal(splits[0].test_idx, splits[2].test_idx)


def test_survival_cv_splits_deterministic_and_map_rows_and_eids(tmp_path: Path) -> None:
    event = _events(300, 20, seed=4)
    rows = np.arange(300) * 3 + 1
    eids = rows * 10
    a = survival_cv_splits(event, seeds=(42, 2021), rows=rows, eids=eids)
    b = survival_cv_splits(event, seeds=(42, 2021), rows=rows, eids=eids)
    assert a == b
    plain = survival_cv_splits(event, seeds=(42, 2021))
    for s, p in zip(a, plain):
        np.testing.assert_array_equal(s.test_idx, rows[p.test_idx])
        np.testing.assert_array_equal(s.val_eid, eids[p.val_idx])
        assert p.test_eid is None
    path = save_splits(a, tmp_path / "run" / "splits.json", meta={"cohort": "mi"})
    loaded = load_splits(path)
    assert loaded == a and loaded[1].test_idx.dtype == np.int64
    assert load_splits_meta(path) == {"cohort": "mi"}
    assert load_splits(save_splits(plain, tmp_path / "plain.json")) == plain
    assert loaded != plain


def test_survival_cv_splits_errors() -> None:
    with pytest.raises(ValueError, match="no events"):
        survival_cv_splits(np.zeros(50, dtype=int))
    with pytest.raises(ValueError, match="1 events for 2 folds"):
        survival_cv_splits(_events(50, 1))
    with pytest.raises(ValueError, match=r"seed 42 fold \d: the training fold has 1 event"):
        survival_cv_splits(_events(50, 2), seeds=(42,))
    # event checks: the shared validator's words
    # (data_modules.protocol.survival_arrays.check_survival)
    with pytest.raises(ValueError, match=r"^survival_cv_splits: event must hold only 0/1, "
                                         r"found \[2.0\]"):
        survival_cv_splits(np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"event must hold only 0/1, found \[nan\]"):
        survival_cv_splits(np.array([0.0, 1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"event must be 1-dimensional, got shape \(2, 2\)"):
        survival_cv_splits(np.array([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="no events"):  # an empty cohort: no events, not a crash
        survival_cv_splits(np.array([], dtype=int))
    # bool and (n, 1) events are the same cohort as 0/1 integers
    ev = _events(60, 8, seed=2)
    plain = survival_cv_splits(ev, seeds=(42,))
    assert survival_cv_splits(ev.astype(bool)[:, None], seeds=(42,)) == plain
    # without an inner validation split two events are enough
    s = survival_cv_splits(_events(50, 2), seeds=(42,), val_fraction=0.0)
    assert all(len(x.val_idx) == 0 and x.test_idx.size + x.train_idx.size == 50 for x in s)


# --------------------------------------------------------------------------- sampler
def _check_epoch(sampler: EventStratifiedBatchSampler, event: np.ndarray) -> list[list[int]]:
    batches = list(sampler)
    n, n_ev = len(event), int(event.sum())
    assert len(batches) == len(sampler)
    for b in batches:
        assert abs(int(event[b].sum()) - len(b) * n_ev / n) <= 1
    return batches


@pytest.mark.parametrize(("n", "n_ev", "bs"), [(1000, 14, 128), (800, 33, 128), (203, 11, 40),
                                               (50, 50, 8), (97, 96, 10)])
def test_sampler_every_index_once_and_ratio(n: int, n_ev: int, bs: int) -> None:
    event = _events(n, n_ev)
    s = EventStratifiedBatchSampler(event, bs, seed=1)
    batches = _check_epoch(s, event)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert max(len(b) for b in batches) <= bs and len(s) == -(-n // bs)
    assert max(len(b) for b in batches) - min(len(b) for b in batches) <= 1


def test_sampler_drop_last() -> None:
    event = _events(1000, 40)
    s = EventStratifiedBatchSampler(event, 128, seed=3, drop_last=True)
    batches = _check_epoch(s, event)
    assert len(s) == 7 and all(len(b) == 128 for b in batches)
    assert len({i for b in batches for i in b}) == 7 * 128
    with pytest.raises(ValueError, match="no batches"):
        EventStratifiedBatchSampler(event[:100], 128, drop_last=True)


def test_sampler_epochs_differ_and_are_deterministic() -> None:
    event = _events(500, 20)
    s = EventStratifiedBatchSampler(event, 64, seed=9)
    e0 = list(s)
    assert list(s) == e0  # same epoch -> same batches
    s.set_epoch(1)
    e1 = _check_epoch(s, event)
    assert e1 != e0
    s.sampler.set_epoch(0)  # the proxy Lightning calls reaches the batch sampler
    assert s.epoch == 0 and list(s) == e0
    assert list(s.sampler) == [i for b in e0 for i in b] and len(s.sampler) == 500
    other = EventStratifiedBatchSampler(event, 64, seed=9)
    other.set_epoch(1)
    assert list(other) == e1
    assert list(EventStratifiedBatchSampler(event, 64, seed=10)) != e0


def test_sampler_two_replicas_share_global_batches() -> None:
    event = _events(203, 11)
    single = EventStratifiedBatchSampler(event, 40, seed=5, num_replicas=1, rank=0)
    ranks = [EventStratifiedBatchSampler(event, 40, seed=5, num_replicas=2, rank=r)
             for r in (0, 1)]
    for epoch in (0, 3):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        glob = list(single)
        per_rank = [list(s) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(glob) == len(ranks[0])
        for i, g in enumerate(glob):
            a, b = set(per_rank[0][i]), set(per_rank[1][i])
            assert not a & b and a | b == set(g)
            assert abs(len(a) - len(b)) <= 1
    with pytest.raises(ValueError, match="invalid rank"):
        EventStratifiedBatchSampler(event, 40, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="cannot be shared"):
        EventStratifiedBatchSampler(event[:4], 2, num_replicas=4, rank=0)


def test_sampler_reads_world_from_injected_distributed_sampler() -> None:
    from torch.utils.data import DistributedSampler

    event = _events(100, 10)
    ds = DistributedSampler(range(100), num_replicas=4, rank=3)
    s = EventStratifiedBatchSampler(event, 32, sampler=ds)
    assert (s.num_replicas, s.rank) == (4, 3)
    with pytest.raises(ValueError, match="disagree"):
        EventStratifiedBatchSampler(event, 32, num_replicas=2, rank=0, sampler=ds)


def test_sampler_errors_and_warnings() -> None:
    with pytest.raises(ValueError, match="no events"):
        EventStratifiedBatchSampler(np.zeros(100, dtype=int), 10)
    with pytest.raises(ValueError, match=r"^EventStratifiedBatchSampler: event must hold only 0/1, "
                                         r"found \[2.0\]"):
        EventStratifiedBatchSampler(np.array([0, 2, 1]), 2)
    with pytest.raises(ValueError, match=r"event must hold only 0/1, found \[nan\]"):
        EventStratifiedBatchSampler(np.array([0.0, np.nan, 1.0]), 2)
    with pytest.raises(ValueError, match=r"event must be 1-dimensional, got shape \(2, 2\)"):
        EventStratifiedBatchSampler(np.array([[0, 1], [1, 0]]), 2)
    with pytest.raises(ValueError, match="no events among 0 samples"):
        EventStratifiedBatchSampler(np.array([], dtype=int), 2)
    ev = _events(100, 10)
    s = EventStratifiedBatchSampler(ev.astype(bool)[:, None], 20, seed=1)
    assert s.event.dtype == bool and s.event_idx.tolist() == np.flatnonzero(ev).tolist()
    assert list(s) == list(EventStratifiedBatchSampler(ev, 20, seed=1))
    with pytest.warns(UserWarning, match="events per batch"):
        EventStratifiedBatchSampler(_events(1000, 14), 64)  # 0.9 events per batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EventStratifiedBatchSampler(_events(1000, 14), 128)


def test_sampler_under_real_ddp_processes(ddp_checks) -> None:
    """Two gloo ranks on CPU in a subprocess (DDP inside pytest would re-run pytest)."""
    assert "OK: 2 ranks" in ddp_checks.passed("ddp_sampler")

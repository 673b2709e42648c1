"""ecg_dan.jobs.protocol: one cross-validation protocol for every fold fitter. A fake fitter
shows that the protocol owns the splits, the fold write (read back by RunDir) and resuming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_modules.protocol.splits import Split
from ecg_dan.config import ConfigError, config_hash, load_config
from ecg_dan.jobs import protocol
from ecg_dan.jobs.protocol import FoldFitter, FoldResult, run_cross_validation
from ecg_dan.run_dir import FoldFiles, RunDir

N = 12


def _splits() -> list[Split]:
    out = []
    for seed in (1, 2):
        order = np.random.default_rng(seed).permutation(N)
        for fold in (0, 1):
            test = np.sort(order[fold::2])
            rest = np.sort(order[1 - fold::2])
            out.append(Split(seed, fold, rest[2:], rest[:2], test, rest[2:] + 100,
                             rest[:2] + 100, test + 100))
    return out


class FakeFitter(FoldFitter):
    """Risk = row index; records what it was asked to fit."""

    def __init__(self) -> None:
        self.fitted: list[tuple[int, int]] = []
        self.ended = 0

    def splits(self, cfg, run, cache):
        if run.has_splits():
            return run.load_splits()
        run.save_splits(_splits(), meta={"cache": str(cache)})
        return _splits()

    def fit_fold(self, split: Split, fold: FoldFiles) -> FoldResult:
        self.fitted.append((split.seed, split.fold))

        def frame(rows):
            return pd.DataFrame({"eid": rows + 100, "seed": split.seed, "fold": split.fold,
                                 "risk": rows / 10, "time": rows + 1.0,
                                 "event": (rows % 3 == 0).astype(float),
                                 "checkpoint": str(fold.dir / "fake")})

        return FoldResult(frame(split.test_idx),
                          frame(np.sort(np.concatenate([split.train_idx, split.val_idx]))),
                          checkpoint=str(fold.dir / "fake"), meta={"fitter": "fake"},
                          label="fake: ")

    def end_fold(self) -> None:
        self.ended += 1


@pytest.fixture
def setup(tmp_path, monkeypatch):
    evaluated = []
    monkeypatch.setattr(protocol, "ukb_cache", lambda cfg: tmp_path / "ukb.h5")
    monkeypatch.setattr(protocol, "check_data", lambda run_dir, caches: None)  # no cache
    monkeypatch.setattr(protocol, "evaluate_finetune",
                        lambda run_dir, cfg: evaluated.append(run_dir))
    cfg = load_config("demo_finetune", [f"run_dir={tmp_path / 'run'}", "logging.wandb=false"])
    return cfg, evaluated


def test_the_protocol_writes_every_fold_as_run_dir_reads_it(setup):
    cfg, evaluated = setup
    fitter = FakeFitter()
    out = run_cross_validation(cfg, fitter)
    rd = RunDir(out)
    assert fitter.fitted == [(1, 0), (1, 1), (2, 0), (2, 1)] and fitter.ended == 4
    assert evaluated == [out] and rd.load_splits() == _splits()
    assert rd.load_config().name == cfg.name and rd.read_record() is not None
    folds = rd.scored_folds()
    assert [(f.seed, f.fold) for f in folds] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for f, split in zip(folds, _splits()):
        test = f.read_test()
        np.testing.assert_array_equal(test.eid, split.test_idx + 100)
        np.testing.assert_allclose(test.risk, split.test_idx / 10)
        assert len(f.read_train()) == split.train_idx.size + split.val_idx.size
        assert f.read_meta() == {"config_hash": config_hash(cfg),
                                 "checkpoint": f"{f.name}/fake",  # relative to the run
                                 "n": len(test), "events": int(test.event.sum()),
                                 "fitter": "fake"}
    # every participant held out exactly once per seed
    oof = pd.concat([f.read_test() for f in folds])
    assert not oof.duplicated(["seed", "eid"]).any() and len(oof) == 2 * N


def test_resume_fits_only_the_unfinished_folds(setup):
    cfg, _ = setup
    out = run_cross_validation(cfg, FakeFitter())
    again = FakeFitter()
    run_cross_validation(cfg, again)
    assert again.fitted == [] and again.ended == 0
    fold = RunDir(out).fold(2, 0)
    fold.csv.unlink()  # written last: without it the fold is unfinished
    before = fold.read_train()
    third = FakeFitter()
    run_cross_validation(cfg, third)
    assert third.fitted == [(2, 0)]
    pd.testing.assert_frame_equal(fold.read_train(), before)
    meta = fold.meta.read_text().replace(config_hash(cfg), "another")
    fold.meta.write_text(meta)
    with pytest.raises(ConfigError, match="another configuration"):
        run_cross_validation(cfg, FakeFitter())


def test_the_default_splits_are_read_back_when_saved(setup, monkeypatch):
    cfg, _ = setup
    rd = RunDir(cfg.run_dir)
    rd.save_splits(_splits(), meta={})

    def no_new_splits(*a, **k):
        raise AssertionError("splits drawn again")

    monkeypatch.setattr(protocol, "make_ukb_splits", no_new_splits)
    assert FoldFitter.splits(FakeFitter(), cfg, rd, rd.path / "ukb.h5") == _splits()

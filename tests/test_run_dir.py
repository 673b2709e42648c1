"""ecg_dan.run_dir: the run directory's layout read back as written, clear refusals, and the
checkpoint that scored a fold found through its sidecar (with the config hash)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from data_modules.protocol.splits import Split
from ecg_dan.config import ConfigError, config_hash, load_config
from ecg_dan.run_dir import RunDir, RunDirError


def _split(seed: int, fold: int) -> Split:
    ar = np.arange
    return Split(seed, fold, ar(0, 6), ar(6, 8), ar(8, 12), ar(100, 106), ar(106, 108),
                 ar(108, 112))


def _fold_frames(n_bins: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    test = pd.DataFrame({"eid": [111, 108, 110, 109], "seed": 42, "fold": 1,
                         "risk": rng.normal(size=4), "time": [3.0, 5.0, 1.0, 7.0],
                         "event": [1.0, 0.0, 1.0, 0.0], "checkpoint": "c.ckpt"})
    for k in range(n_bins):
        test[f"surv_{k}"] = 1.0 - 0.1 * (k + 1) * np.arange(1, 5) / 4
    train = test.drop(columns=[f"surv_{k}" for k in range(n_bins)]).assign(eid=[1, 2, 3, 4])
    return test, train


def test_layout_round_trip(tmp_path):
    rd = RunDir(tmp_path / "run")
    cfg = load_config("demo_finetune", [f"run_dir={rd.path}"])
    rd.save_config(cfg)
    rd.write_record(cfg)
    assert rd.has_config() and config_hash(rd.load_config()) == config_hash(cfg)
    assert rd.read_record() is not None and not rd.has_outputs()

    splits = [_split(42, 0), _split(42, 1)]
    rd.save_splits(splits, meta={"cache": str(tmp_path / "ukb.h5"), "cohort": "hyp"})
    assert rd.load_splits() == splits and rd.splits_cache() == tmp_path / "ukb.h5"

    test, train = _fold_frames(n_bins=3)
    fold = rd.fold(42, 1)
    fold.write(test, train, {"config_hash": "abc", "checkpoint": str(rd.path / "c.ckpt"),
                             "n": 4}, cuts=[1.0, 2.0, 4.0])  # recorded relative to the run
    assert rd.has_outputs() and [f.name for f in rd.scored_folds()] == ["seed42_fold1"]
    back = fold.read_test()
    assert list(back.columns) == ["eid", "seed", "fold", "risk", "time", "event", "checkpoint"]
    pd.testing.assert_frame_equal(back, test[back.columns])
    pd.testing.assert_frame_equal(fold.read_train(), train)
    assert fold.read_meta() == {"config_hash": "abc", "checkpoint": "c.ckpt", "n": 4}
    order = [109, 111, 108, 110]  # curves come back in the order asked for
    surv, cuts = fold.read_curves(order)
    np.testing.assert_allclose(cuts, [1.0, 2.0, 4.0])
    want = test.set_index("eid").loc[order, ["surv_0", "surv_1", "surv_2"]].to_numpy()
    np.testing.assert_allclose(surv, want)
    with pytest.raises(ValueError, match="stale sidecar"):
        fold.read_curves([999])
    assert rd.fold(42, 0).read_curves([1]) is None and rd.fold(42, 0).read_train() is None

    assert fold.is_done("abc") and not rd.fold(42, 0).is_done("abc")
    with pytest.raises(ConfigError, match="another configuration"):
        fold.is_done("other")


def test_a_folder_that_is_not_a_run_is_refused_naming_the_file(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(RunDirError, match="no config.yaml"):
        rd.load_config()
    with pytest.raises(RunDirError, match="splits.json"):
        rd.load_splits()
    with pytest.raises(RunDirError, match=r"predictions has no seed\*_fold\*\.csv"):
        rd.scored_folds()
    with pytest.raises(RunDirError, match=r"seed1_fold0\.json: missing"):
        rd.fold(1, 0).read_meta()
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "seedX_fold0.csv").write_text("eid\n")
    with pytest.raises(RunDirError, match="seedX_fold0.csv: not a fold's predictions"):
        rd.scored_folds()


def test_the_fold_checkpoint_is_the_runs_own_as_its_sidecar_records(tmp_path):
    rd = RunDir(tmp_path / "run")
    fold = rd.fold(7, 1)
    test, train = _fold_frames()
    ckpt = fold.checkpoints_dir / "best-001-10.ckpt"  # where training wrote it
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    fold.write(test, train, {"config_hash": "h1", "checkpoint": str(ckpt)})
    meta = fold.read_meta()  # relative to the run, with its hash; the CSV column too
    assert meta["checkpoint"] == "seed7_fold1/checkpoints/best-001-10.ckpt"
    assert len(meta["checkpoint_sha256"]) == 64
    assert set(fold.read_test().checkpoint) == {meta["checkpoint"]}
    assert fold.checkpoint("h1") == ckpt and fold.checkpoint() == ckpt
    with pytest.raises(RunDirError, match="another configuration.*h2"):
        fold.checkpoint("h2")
    # a copied run reads its own checkpoint; a replaced checkpoint is refused
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(rd.path, copy.path)
    ckpt.write_bytes(b"changed")
    assert copy.fold(7, 1).checkpoint("h1") == copy.fold(7, 1).checkpoints_dir / ckpt.name
    with pytest.raises(RunDirError, match="SHA-256 differs.*replaced"):
        fold.checkpoint("h1")
    # a checkpoint outside the run is refused, when written and when read
    outside = tmp_path / "elsewhere.ckpt"
    outside.write_bytes(b"x")
    with pytest.raises(RunDirError, match="outside the run directory"):
        fold.write(test, train, {"config_hash": "h1", "checkpoint": str(outside)})
    for bad in ("../elsewhere.ckpt", str(outside), "seed7_fold1/../../elsewhere.ckpt"):
        fold.meta.write_text(json.dumps({"config_hash": "h1", "checkpoint": bad}))
        with pytest.raises(RunDirError, match=r"seed7_fold1\.json: field 'checkpoint'"):
            fold.checkpoint("h1")


def test_an_old_absolute_checkpoint_path_is_followed_only_into_the_run(tmp_path):
    """Runs written before paths were relative: the absolute path of the fold's checkpoint
    in the original run resolves to the copy's own file; one inside the run is followed."""
    rd = RunDir(tmp_path / "run")
    fold = rd.fold(7, 1)
    fold.write(*_fold_frames(), {"config_hash": "h1", "checkpoint": str(rd.path / "c.ckpt")})
    own = fold.checkpoints_dir / "best.ckpt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"x")
    original = tmp_path / "original" / "seed7_fold1" / "checkpoints" / "best.ckpt"
    for recorded, want in ((own, own), (original, own)):
        fold.meta.write_text(json.dumps({"config_hash": "h1", "checkpoint": str(recorded)}))
        assert fold.checkpoint("h1") == want
    own.unlink()
    with pytest.raises(RunDirError, match=r"best\.ckpt of seed7_fold1\.csv not found"):
        fold.checkpoint("h1")

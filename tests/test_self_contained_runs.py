"""A run directory is self-contained and owned (issue 21, section 1), through the CLI: a copied
run exports its own checkpoints (a path escaping the run is refused naming file and field),
a folder that is not a run is never written into nor moved aside, a run trained on data that
changed since refuses to resume naming what changed, and export/predict never overwrite an
output without --overwrite nor write into a run directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from data_modules.cache.fingerprint import cache_fingerprint, fingerprint_changes
from data_modules.sources.ukb import build_ukb_cache
from ecg_dan.cli import main as cli
from ecg_dan.config import load_config
from ecg_dan.jobs.common import prepare_run_dir
from ecg_dan.jobs.data import synthetic_dir
from ecg_dan.model_file import read_model
from ecg_dan.run_dir import RunDir, RunDirError

TINY_FINETUNE = ["+tiny", "finetune.scratch=true", "trainer.limit_train_batches=1",
                 "trainer.limit_val_batches=1", "finetune.n_boot=0"]  # tests/conftest.py's


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err  # (a cache build's progress bar may come first)
    last = err.strip().splitlines()[-1]
    assert last.startswith("ecg-dan: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in last, last
    return last


def test_a_copied_run_exports_its_own_checkpoints(tiny_cox_run, tmp_path, capsys):
    orig, copy = tmp_path / "ft1", tmp_path / "ftc"
    shutil.copytree(tiny_cox_run, orig, symlinks=True)
    shutil.copytree(orig, copy, symlinks=True)  # cp -a runs/ft1 runs/ftc
    model = tmp_path / "copy.safetensors"
    assert cli(["export", str(copy), "--out", str(model)]) == 0
    before = read_model(model).model_id
    meta = sorted(copy.glob("predictions/seed*_fold?.json"))[0]
    recorded = json.loads(meta.read_text())["checkpoint"]
    assert not Path(recorded).is_absolute() and ".." not in Path(recorded).parts

    (orig / recorded).write_bytes(b"other weights")  # the original's checkpoint changes
    capsys.readouterr()
    assert cli(["export", str(copy), "--out", str(model)]) == 2  # exists: refused
    _one_line_error(capsys, str(model), "exists", "--overwrite")
    assert cli(["export", str(copy), "--out", str(model), "--overwrite"]) == 0
    assert read_model(model).model_id == before
    assert cli(["export", str(orig), "--out", str(tmp_path / "orig.safetensors")]) == 2
    _one_line_error(capsys, recorded.rsplit("/", 1)[-1], "SHA-256 differs")

    # a recorded path that leaves the run is refused, by export and by predict --model RUN_DIR
    meta.write_text(json.dumps({**json.loads(meta.read_text()),
                                "checkpoint": f"../ft1/{recorded}"}))
    assert cli(["export", str(copy), "--out", str(tmp_path / "x.safetensors")]) == 2
    _one_line_error(capsys, meta.name, "field 'checkpoint'", "escapes the run directory")
    assert cli(["predict", "--model", str(copy), str(tmp_path), "--out",
                str(tmp_path / "p.csv")]) == 2
    _one_line_error(capsys, meta.name, "field 'checkpoint'")


def test_predict_and_export_refuse_existing_outputs_before_anything_runs(tiny_cox_run,
                                                                         tmp_path, capsys):
    absent = str(tmp_path / "absent.safetensors")  # never read: the outputs are checked first
    out = tmp_path / "p.csv"
    for name in ("p.csv", "p.json", "p_skipped.csv"):
        (tmp_path / name).write_text("mine")
        assert cli(["predict", "--model", absent, str(tmp_path), "--out", str(out)]) == 2
        _one_line_error(capsys, name, "exists", "--overwrite")
        assert (tmp_path / name).read_text() == "mine"
        (tmp_path / name).unlink()
    # --out p.json: the CSV and the JSON would be one file, even with --overwrite
    assert cli(["predict", "--model", absent, str(tmp_path), "--out",
                str(tmp_path / "p.json"), "--overwrite"]) == 2
    _one_line_error(capsys, "p.json", "both the CSV of the scores and the JSON")
    # never into a run directory, not even with --overwrite
    for inside in (tiny_cox_run / "results.json", tiny_cox_run / "sub" / "p.csv"):
        assert cli(["predict", "--model", absent, str(tmp_path), "--out", str(inside),
                    "--overwrite"]) == 2
        _one_line_error(capsys, "inside the run directory", str(tiny_cox_run))
    assert not (tiny_cox_run / "sub").exists()
    (tmp_path / "m.safetensors").write_text("mine")
    assert cli(["export", str(tiny_cox_run), "--out", str(tmp_path / "m.safetensors")]) == 2
    _one_line_error(capsys, "m.safetensors exists")
    assert (tmp_path / "m.safetensors").read_text() == "mine"


def test_a_folder_that_is_not_a_run_is_refused_and_never_moved(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my results")
    (mine / "run.json").write_text('{"my": "own file"}')  # not an ecg-dan record
    assert not RunDir(mine).is_run()
    for resume in ("auto", "restart"):
        with pytest.raises(RunDirError, match=f"run_dir={mine} is a folder that is neither "
                                              "empty nor an ecg-dan run"):
            prepare_run_dir(load_config("demo_finetune", [f"run_dir={mine}",
                                                          f"resume={resume}"]))
    assert cli(["finetune", "demo_finetune", f"run_dir={mine}", *TINY_FINETUNE]) == 2
    _one_line_error(capsys, str(mine), "neither empty nor an ecg-dan run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing moved aside
    assert (mine / "results.csv").read_text() == "my results"
    (mine / "run.json").unlink()
    (mine / "results.csv").unlink()
    (mine / ".DS_Store").write_text("")  # hidden entries (temporary files) do not count

    cfg = load_config("demo_finetune", [f"run_dir={mine}"])
    prepare_run_dir(cfg)  # an empty folder becomes a run: run.json marks it
    assert RunDir(mine).is_run() and RunDir(mine).read_record() is not None
    prepare_run_dir(cfg)  # a run is resumed
    old = tmp_path / "old"  # a run from before run.json: config.yaml beside its outputs
    old.mkdir()
    shutil.copy(mine / "config.yaml", old)
    assert not RunDir(old).is_run()
    (old / "predictions").mkdir()
    assert RunDir(old).is_run()
    cfg.resume = "restart"
    prepare_run_dir(cfg)  # a real run is moved aside
    assert len(list(tmp_path.glob("mine.old-*"))) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        prepare_run_dir(load_config("demo_finetune", [f"run_dir={tmp_path / 'file'}"]))


def test_an_edited_outcomes_table_is_refused_naming_what_changed(tiny_cox_run, tiny_data_root,
                                                                 tmp_path, capsys):
    """The run's command again, after its outcomes CSV was edited in place (events flipped):
    the cache is rebuilt and the run refuses to resume, naming the datasets and the file."""
    run, root = tmp_path / "run", tmp_path / "data"
    shutil.copytree(tiny_cox_run, run, symlinks=True)
    recorded = RunDir(run).read_data()["cohort"]
    cfg = load_config("demo_finetune", [*TINY_FINETUNE, f"data.root={tiny_data_root}"])
    twin = synthetic_dir(cfg).name
    shutil.copytree(tiny_data_root / twin / "ukb", root / twin / "ukb")
    # (data.root is not a result key: the same command on a copy of the data)
    argv = ["finetune", "demo_finetune", *TINY_FINETUNE, f"data.root={root}", f"run_dir={run}"]
    outcomes = root / twin / "ukb" / "outcomes.csv"
    table = pd.read_csv(outcomes)
    flip = table.index[:20]
    table.loc[flip, "event"] = 1 - table.loc[flip, "event"]
    table.to_csv(outcomes, index=False)
    capsys.readouterr()
    assert cli(argv) == 2
    _one_line_error(capsys, f"{run} holds results of other data", "datasets ", "event",
                    f"edited source(s): {outcomes}", "resume=restart")
    assert RunDir(run).read_data()["cohort"] == recorded  # the record is kept
    # the same data fingerprints the same, wherever its cache is and however often rebuilt
    assert fingerprint_changes(recorded, cache_fingerprint(recorded["path"])) == []
    rebuilt = tmp_path / "rebuilt.h5"
    build_ukb_cache(Path(recorded["build_config"]["xml_dir"]),
                    Path(recorded["build_config"]["outcomes"]), rebuilt, time_unit="months",
                    strips=False, workers=1)
    assert fingerprint_changes(recorded, cache_fingerprint(rebuilt)) == []

"""Values that cannot be true are refused, and user errors are one line (issue 21, sections
3 and 4): config values and Trainer options at load, YAML and interpolation errors,
impossible outcome times, WFDB headers, PTB-XL metadata, model-file manifests, non-finite
model outputs, edited fold predictions, checkpoint writes. Each limit is tried just under
(accepted) and just over (refused)."""

from __future__ import annotations

import errno
import json
import re
import resource
import shutil
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data_modules.errors import RecordSkip
from data_modules.protocol.survival_arrays import MAX_FOLLOW_UP_DAYS, beyond_follow_up
from data_modules.sources.code15 import _outcome_problem
from data_modules.sources.cohort_table import read_cohort_table
from data_modules.sources.wfdb_record import read_wfdb_12lead
from ecg_dan.checkpoints import CheckpointError, SafeCheckpointIO, read_checkpoint
from ecg_dan.cli import _error_text
from ecg_dan.cli import main as cli
from ecg_dan.config import (
    YAML_MAX_NODES,
    load_config,
    load_saved_config,
    saved_container,
    to_yaml,
)
from ecg_dan.model_file import ModelFileError, model_bytes, read_model_bytes
from ecg_dan.run_dir import RunDir, RunDirError

RECORD = "records500/00000/00001_hr"  # a real PTB-XL record of the sample


def _one_line(capsys, kind: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ecg-dan: {kind}: "), err
    return err[0]


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, words", [
    ("optim.lr=inf", "optim.lr=inf: must be a finite number"),
    ("finetune.horizons=[12,inf]", "finetune.horizons[1]=inf"),
    ("trainer.precision=bogus", "trainer.precision='bogus': expected one of"),
    ("trainer.accelerator=bogus", "trainer.accelerator='bogus'"),
    ("trainer.strategy=bogus", "trainer.strategy='bogus': expected one of auto, ddp"),
    ("trainer.devices=-3", "trainer.devices=-3"),
    ("trainer.devices=0", "trainer.devices=0"),
    ("model.latent_dim=0", "model.latent_dim=0: must be an integer >= 1"),
    ("model.latent_dim=7", "must be even"),
    ("model.base_features=0", "model.base_features=0"),
    ("model.temporal_heads=0", "model.temporal_heads=0"),
    ("model.temporal_heads=3", "does not divide the temporal attention width 16"),
    ("model.n_down=6", "not divisible by 2**n_down=64"),
    ("name=${nope}", "cannot resolve an interpolation: Interpolation key 'nope' not found"),
    ("name=${bogus:x}", "Unsupported interpolation type bogus"),
    ("name=${oc.env:ECG_DAN_UNSET_VARIABLE}", "ECG_DAN_UNSET_VARIABLE"),
    ("name=${", "command-line override 'name=${'"),
])
def test_impossible_config_values_are_one_line_errors_at_load(override, words, capsys):
    assert cli(["pretrain", "demo_pretrain", "+tiny", override]) == 2  # before any import
    assert words in _one_line(capsys, "config error")


def test_valid_values_next_to_the_limits_load():
    load_config("demo_pretrain", [
        "+tiny", "trainer.precision=bf16-mixed", "trainer.accelerator=cuda",
        "trainer.strategy=ddp_find_unused_parameters_true", "trainer.devices=[0,1]",
        "model.latent_dim=2", "model.temporal_heads=16", "model.n_down=4", "optim.lr=1e300"])
    load_config("demo_pretrain", ["+tiny", "trainer.devices='0,1'", "trainer.precision=32"])
    load_config("demo_pretrain", ["+slurm", "trainer.devices=-1"])


def test_trainer_choices_are_lightnings():
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    from ecg_dan.config_checks import ACCELERATORS, PRECISIONS

    lightning = {str(v) for a in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(a)}
    assert set(PRECISIONS) - {"auto"} <= lightning
    assert set(AcceleratorRegistry.available_accelerators()) <= set(ACCELERATORS)


def _aliases(tmp_path: Path, width: int, depth: int) -> Path:
    """A YAML whose aliases expand to about width**depth values."""
    lines = ["extends: demo_pretrain", "a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]"
              for i in range(1, depth)]
    (path := tmp_path / "aliases.yaml").write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("text, words", [
    ("extends: demo_pretrain\nname: !!python/object/apply:os.system ['true']\n",
     "line 2: not a valid config YAML: could not determine a constructor for the tag"),
    ("extends: demo_pretrain\na: &a [1, *a]\n", "aliases expand to more than"),
    ("- 1\n- 2\n", "holds key: value pairs at the top, found a list"),
    ("name: a\nname: b\n", "found duplicate key name"),
    ("name: [unclosed\n", "not a valid config YAML"),
])
def test_yaml_tags_aliases_and_syntax_are_one_line_errors(tmp_path, text, words, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli(["pretrain", str(path)]) == 2
    line = _one_line(capsys, "config error")
    assert str(path) in line and words in line


def test_yaml_alias_expansion_limit_just_under_and_over(tmp_path, capsys):
    (under := tmp_path / "under.yaml").write_text(
        "extends: demo_pretrain\nname: &n run\nlogging:\n  group: *n\n  project: *n\n")
    assert load_config(under).logging.project == "run"  # aliases as such are fine
    over = _aliases(tmp_path, 9, 10)  # 9**10: a "billion laughs"
    assert YAML_MAX_NODES < 9 ** 10
    assert cli(["pretrain", str(over)]) == 2
    assert f"aliases expand to more than {YAML_MAX_NODES}" in _one_line(capsys, "config error")


def test_environment_values_stay_unresolved_in_written_configs(monkeypatch, tmp_path):
    monkeypatch.setenv("ECG_DAN_TEST_SECRET", "hunter2")
    cfg = load_config("demo_pretrain", ["+tiny", "logging.project=${oc.env:ECG_DAN_TEST_SECRET}",
                                        "logging.group=${logging.project}-g",
                                        "logging.tags=[a,'${oc.env:ECG_DAN_TEST_SECRET}']"])
    assert cfg.logging.project == "hunter2"  # the run itself sees the value
    text = to_yaml(cfg)  # config.yaml
    assert "hunter2" not in text and "${oc.env:ECG_DAN_TEST_SECRET}" in text
    saved = saved_container(cfg)  # W&B, checkpoints, model files
    assert "hunter2" not in json.dumps(saved)
    assert saved["optim"]["lr"] == cfg.optim.lr and saved["name"] == cfg.name
    (tmp_path / "config.yaml").write_text(text)
    again = load_saved_config(tmp_path / "config.yaml")  # read back: resolved again
    assert again.logging.group == "hunter2-g" and list(again.logging.tags) == ["a", "hunter2"]


# --------------------------------------------------------------------------- outcome times
def test_follow_up_limit_just_under_and_over():
    assert MAX_FOLLOW_UP_DAYS == 150 * 365.25
    assert beyond_follow_up([MAX_FOLLOW_UP_DAYS - 1, MAX_FOLLOW_UP_DAYS + 1]).tolist() == [
        False, True]
    assert beyond_follow_up([MAX_FOLLOW_UP_DAYS / 30 + 0.9, MAX_FOLLOW_UP_DAYS / 30 + 1.1],
                            "months").tolist() == [False, True]
    row = types.SimpleNamespace(exam_id=7, death=0.0, timey_raw="1e30", timey=1e30)
    assert "timey 1e+30 years is beyond 150 years" in _outcome_problem(row)
    assert _outcome_problem(types.SimpleNamespace(exam_id=7, death=1.0, timey_raw="149",
                                                  timey=149.0)) is None


def test_cohort_table_refuses_impossible_times_with_the_id(ptbxl_dir, tmp_path):
    rows = [dict(id=i, ecg_file=f"{RECORD}.hea", time_days=t, event=0, age=50, sex="M")
            for i, t in ((1, "1e30"), (2, "54787"))]
    rows[1]["ecg_file"] = "records500/00000/00002_hr.hea"
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    kept, skipped, _, warned, _ = read_cohort_table(tmp_path / "t.csv", ptbxl_dir)
    assert [p.id for p in kept] == [2] and [w[0] for w in warned] == ["2"]  # 149.99 years
    assert skipped == [("1", "bad time: t.csv row 2 (id 1): time '1e30' days is beyond 150 "
                             "years and cannot be true")]


# --------------------------------------------------------------------------- WFDB headers
def _record(ptbxl_dir: Path, tmp_path: Path, fs: str | None = None, gain: str | None = None
            ) -> Path:
    src = ptbxl_dir / RECORD
    shutil.copy(src.with_suffix(".dat"), tmp_path / "00001_hr.dat")
    lines = src.with_suffix(".hea").read_text().splitlines()
    if fs is not None:
        first = lines[0].split()
        lines[0] = " ".join(first[:2] + [fs] + first[3:])
    if gain is not None:
        lines[1] = lines[1].replace("1000.0(0)", f"{gain}(0)", 1)
    (tmp_path / "00001_hr.hea").write_text("\n".join(lines) + "\n")
    return tmp_path / "00001_hr"


@pytest.mark.parametrize("fs, gain, reason", [
    ("-500", None, "header sampling rate '-500' must be a number > 0"),
    ("0", None, "header sampling rate '0' must be a number > 0"),
    ("abc", None, "header sampling rate 'abc' is not a number"),
    ("nan", None, "must be a number > 0"),
    (None, "-1000.0", "header negative gain (an inverted ECG) for lead(s) I"),
    (None, "0", "header gain 0 (scale unknown) for lead(s) I"),
])
def test_impossible_wfdb_headers_are_skips_with_the_reason(ptbxl_dir, tmp_path, fs, gain,
                                                           reason):
    with pytest.raises(RecordSkip) as e:
        read_wfdb_12lead(_record(ptbxl_dir, tmp_path, fs, gain), "rec")
    assert e.value.reason.startswith("unreadable WFDB record rec: ") and reason in e.value.reason


@pytest.mark.parametrize("fs, gain", [("500", None), ("500/1000(0)", None), ("0.5", None),
                                      (None, "0.001")])
def test_wfdb_headers_next_to_the_limits_are_read(ptbxl_dir, tmp_path, fs, gain):
    x, rate = read_wfdb_12lead(_record(ptbxl_dir, tmp_path, fs, gain), "rec")
    assert x.shape[0] == 12 and rate == float((fs or "500").split("/")[0])


# --------------------------------------------------------------------------- PTB-XL metadata
def _ptbxl(ptbxl_dir: Path, root: Path, col: str, value: str) -> Path:
    root.mkdir()
    df = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").head(4)
    df[col] = df[col].astype(object)
    df.loc[2, col] = value
    df.to_csv(root / "ptbxl_database.csv", index=False)
    return root


@pytest.mark.parametrize("col, value, words", [
    ("sex", "X", "field sex: 'X' is not an integer in 0..1"),
    ("age", "old", "field age: 'old' is not a finite number >= 0"),
    ("age", "-5", "field age"),
    ("scp_codes", "{'NORM': 'x'}", "field scp_codes: bad entry 'NORM'"),
])
def test_bad_ptbxl_metadata_is_one_line_through_cache_and_pretrain(ptbxl_dir, tmp_path, col,
                                                                   value, words, capsys):
    root = _ptbxl(ptbxl_dir, tmp_path / "ptbxl", col, value)
    assert cli(["cache", "ptbxl", "--root", str(root), "--out", str(tmp_path / "p.h5")]) == 2
    assert words in _one_line(capsys, "data error")
    if col == "sex":  # the same reader under pretraining
        assert cli(["pretrain", "demo_pretrain", "+tiny", "data.source=real",
                    f"data.ptbxl_dir={root}", f"data.root={tmp_path / 'data'}",
                    f"run_dir={tmp_path / 'run'}"]) == 2
        assert words in _one_line(capsys, "data error")


# --------------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def model_data(tiny_cox_run) -> bytes:
    return model_bytes(tiny_cox_run)


def _edited(data: bytes, edit=None, edit_tensors=None) -> bytes:
    """A model file with its manifest / tensors edited and the content hash redone: only the
    check under test can refuse it (the hash authenticates nobody)."""
    from safetensors.torch import load, save

    from ecg_dan.model_file import _content_digest

    tensors = load(data)
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n])["__metadata__"]
    manifest = json.loads(meta["manifest"])
    if edit:
        edit(manifest)
    if edit_tensors:
        edit_tensors(tensors)
    manifest["content_sha256"] = _content_digest(tensors, manifest)
    meta["manifest"] = json.dumps(manifest)
    return save(tensors, metadata=meta)


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.pop("members"), "manifest field 'members' must be a list, found absent"),
    (lambda m: m.pop("reference"), "manifest field 'reference' must be a table"),
    (lambda m: m.update(members="x"), "'members' must be a list, found str"),
    (lambda m: m["members"][0].pop("offset"), "members[0].offset None: expected a finite"),
    (lambda m: m["members"][0].update(offset="abc"), "members[0].offset 'abc'"),
    (lambda m: m["members"][0].update(slope=float("nan")), "members[0].slope nan"),
    (lambda m: m["members"][0].update(seed="x"), "members[0].seed 'x': expected an integer"),
    (lambda m: m.update(members=m["members"][:1]), "lists 1 fold model(s), the tensors hold 2"),
    (lambda m: m.update(members=m["members"] * 2), "lists 4 fold model(s), the tensors hold 2"),
    (lambda m: m["model_config"].update(latent_dim=-4), "model_config.latent_dim=-4"),
    (lambda m: m["model_config"].update(latent_dim="512"), "model_config.latent_dim='512'"),
    (lambda m: m["run"].update(horizons="12"), "run.horizons '12'"),
    (lambda m: m["run"].update(horizons=[-1.0]), "run.horizons [-1.0]"),
    (lambda m: m["run"].update(top_fraction="x"), "run.top_fraction 'x'"),
    (lambda m: m["run"].update(time_unit="weeks"), "run.time_unit 'weeks'"),
    (lambda m: m["reference"].update(high_risk_threshold=None), "high_risk_threshold None"),
    (lambda m: m.update(config=[1]), "manifest field 'config' must be a table, found list"),
])
def test_malformed_manifest_fields_are_refused_naming_them(model_data, edit, words):
    with pytest.raises(ModelFileError, match=r"m.safetensors: malformed model file: .*"
                                             + re.escape(words)):
        read_model_bytes(_edited(model_data, edit), "m.safetensors")


def test_malformed_model_file_and_nan_outputs_through_predict(model_data, ptbxl_dir, tmp_path,
                                                              capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_edited(model_data, lambda m: m["members"][0].update(offset="abc")))
    ecg = ptbxl_dir / f"{RECORD}.hea"
    assert cli(["predict", "--model", str(bad), str(ecg), "--out", str(tmp_path / "b.csv")]) == 2
    assert "members[0].offset 'abc'" in _one_line(capsys, "model file error")

    def nan_head(tensors):  # weights that give NaN risks: integrity says nothing about sense
        for k in tensors:
            if k.startswith("m0.state.risk_head") and k.endswith("weight"):
                tensors[k] = torch.full_like(tensors[k], float("nan"))

    nan = tmp_path / "nan.safetensors"
    nan.write_bytes(_edited(model_data, edit_tensors=nan_head))
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(nan), str(ecg), "--out", str(out), "--workers", "1",
                "--no-progress"]) == 0
    assert pd.read_csv(out).empty  # no percentile 100, no flag: no row at all
    skipped = pd.read_csv(tmp_path / "p_skipped.csv")
    assert skipped.id.tolist() == ["00001_hr"]
    assert skipped.reason[0].startswith("non-finite model output: 00001_hr: a fold model "
                                        "gives log-risk nan")


# --------------------------------------------------------------------------- run directories
def _nan_risk(df: pd.DataFrame) -> None:
    df.loc[0, "risk"] = np.nan


def _duplicate_eid(df: pd.DataFrame) -> None:
    df.loc[1, "eid"] = df.loc[0, "eid"]


@pytest.mark.parametrize("edit, words", [
    (_nan_risk, "column 'risk': NaN, infinite or invalid for eid(s)"),
    (_duplicate_eid, "duplicate eid(s)")])
def test_edited_fold_predictions_are_one_line_errors_in_compare(tiny_cox_run, tmp_path, edit,
                                                                words, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_cox_run, run)
    csv = RunDir(run).fold(42, 0).csv
    df = pd.read_csv(csv)
    edit(df)
    df.to_csv(csv, index=False)
    with pytest.raises(RunDirError, match=r"seed42_fold0.csv: "):
        RunDir(run).fold(42, 0).read_test()
    assert cli(["compare", str(tiny_cox_run), str(run), "--n-boot", "5",
                "--out", str(tmp_path / "cmp")]) == 2
    line = _one_line(capsys, "run directory error")
    assert str(csv) in line and words in line


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_write_over_the_file_size_limit_is_one_line(tmp_path):
    io = SafeCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.zeros(100)}, path)  # just under the limit below: written
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(OSError) as e:
            io.save_checkpoint({"w": torch.zeros(100_000)}, path)  # 400 kB: over
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert e.value.errno == errno.EFBIG  # an OSError: one line through the CLI
    assert f"{path}: writing failed: File too large" in _error_text(e.value)
    assert read_checkpoint(path)["w"].numel() == 100  # the previous one, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_pickled_checkpoint_refusal_gives_no_advice_to_load_it_unsafely(tmp_path):
    torch.save({"x": _Payload()}, tmp_path / "p.ckpt")
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / "p.ckpt")
    text = str(e.value)
    assert "was refused" in text and "Unsupported global: GLOBAL print" in text
    assert "weights_only" not in text and "likely succeed" not in text
    assert "\n" not in text and "\x1b" not in text

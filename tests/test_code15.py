"""CODE-15% / SaMi-Trop: the reader on their synthetic twins (units, padding, leads by name, one
exam per patient, skips per reason, bad input) and one run end to end: twin -> cache (CLI) ->
finetune -> export -> predict on a SaMi-Trop twin with its external-validation C-index."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_modules.cache import BuildSummary, Shard, open_cache, read_skipped, read_warnings
from data_modules.errors import DataError
from data_modules.sources.code15 import (
    LEADS_CODE15,
    build_code15_cache,
    exam_median,
    strip_padding,
)
from data_modules.synthetic.beat_model import simulate_record
from data_modules.synthetic.code15_format import padded, write_code15, write_samitrop
from ecg_dan.cli import main

N_PATIENTS = 40


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """A CODE-15% twin whose part 1 lists its leads in another order (named in an attribute)."""
    return write_code15(tmp_path_factory.mktemp("code15") / "code15", n=N_PATIENTS, seed=3,
                        shuffled_part=1)["code15"]


@pytest.fixture(scope="module")
def cache(twin: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("c15cache") / "code15.h5"
    assert main(["cache", "code15", "--root", str(twin), "--out", str(out),
                 "--workers", "1"]) == 0
    return out


def _skips(path: Path) -> dict[str, list[str]]:
    with open_cache(path, "cohort") as f:
        out: dict[str, list[str]] = {}
        for i, r in read_skipped(f):
            out.setdefault(r.split(":")[0], []).append(i)
        return out


def test_padding_units_and_resampling() -> None:
    rec = simulate_record(np.random.default_rng(0), "NORM", fs=400, seconds=7.0, noise="none")
    x = padded(rec.signal)  # (4096, 12), 648 zeros on each side
    assert strip_padding(x.T).shape == (12, 2800)
    beat = exam_median(x, LEADS_CODE15, 1, "test")
    assert beat.shape == (12, 600)
    np.testing.assert_allclose(np.ptp(beat, axis=1), np.ptp(rec.beat, axis=1), rtol=0.15)
    tenth = exam_median(x * 10, LEADS_CODE15, 1, "test", mv_per_unit=0.1)
    np.testing.assert_allclose(tenth, beat, atol=1e-5)


def test_cache_one_exam_per_patient_and_skips(twin: Path, cache: Path) -> None:
    summary = BuildSummary.from_cache(cache, "cohort")
    assert 0.5 < summary.median_r_mv < 3 and "median R amplitude" in summary.report()
    exams = pd.read_csv(twin / "exams.csv")
    first = exams[exams["timey"].notna()].set_index("exam_id")
    with open_cache(cache, "cohort") as f:
        eid = f["eid"][...]
        assert list(eid) == sorted(first.index)  # the exams with an outcome, one per patient
        assert len(set(f["patient_id"][...])) == len(eid)
        np.testing.assert_array_equal(f["event"][...], first.loc[eid, "death"].astype(int))
        np.testing.assert_allclose(f["time_days"][...],
                                   first.loc[eid, "timey"] * 365.25, rtol=1e-6)
        np.testing.assert_array_equal(f["sex"][...], first.loc[eid, "is_male"].astype(int))
        assert f["time"].attrs["time_unit"] == "months"
    skips = _skips(cache)
    assert len(skips["no outcome"]) == len(exams) - len(first)
    padding = []
    for k in range(2):  # the last row of each part: exam_id 0
        with h5py.File(twin / f"exams_part{k}.hdf5") as f:
            assert f["exam_id"][-1] == 0
            padding.append(f"exams_part{k}.hdf5#{f['exam_id'].shape[0] - 1}")
    assert sorted(skips["no exams.csv row"]) == padding


def test_leads_are_mapped_by_name(twin: Path, cache: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"  # part 1 alone, its leads put back in the documented order
    plain.mkdir()
    shutil.copy(twin / "exams.csv", plain)
    shutil.copy(twin / "exams_part1.hdf5", plain)
    with h5py.File(plain / "exams_part1.hdf5", "r+") as f:
        names = [str(n) for n in f["tracings"].attrs["leads"]]
        x = f["tracings"][...]
        f["tracings"][...] = x[:, :, [names.index(n) for n in LEADS_CODE15]]
        del f["tracings"].attrs["leads"]
    assert names != list(LEADS_CODE15)
    build_code15_cache(plain, tmp_path / "plain.h5", workers=1, progress=False)
    with open_cache(cache, "cohort") as a, open_cache(tmp_path / "plain.h5", "cohort") as b:
        rows = np.flatnonzero(np.isin(a["eid"][...], b["eid"][...]))
        assert rows.size == b["eid"].shape[0] > 0
        np.testing.assert_array_equal(a["median"][...][rows], b["median"][...])


def test_a_shard_holds_its_patients(cache: Path, twin: Path, tmp_path: Path) -> None:
    part = Shard(0, 2)
    s = build_code15_cache(twin, tmp_path / "p0.h5", workers=1, progress=False, shard=part)
    with open_cache(cache, "cohort") as f, open_cache(s.out, "cohort") as g:
        mine = [part.holds(int(p)) for p in f["patient_id"][...]]
        assert g["eid"][...].tolist() == f["eid"][...][mine].tolist()
        np.testing.assert_array_equal(g["median"][...], f["median"][...][mine])
        assert {i for i, _ in read_skipped(g)} < {i for i, _ in read_skipped(f)}


def _locate(root: Path, exam_id: int) -> tuple[Path, int]:
    for p in sorted(root.glob("exams_part*.hdf5")):
        with h5py.File(p) as f:
            hit = np.flatnonzero(f["exam_id"][...] == exam_id)
        if hit.size:
            return p, int(hit[0])
    raise AssertionError(exam_id)


def test_bad_input_is_skipped_per_reason_or_refused(twin: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(twin, bad)
    exams = pd.read_csv(bad / "exams.csv", dtype=str, keep_default_na=False)
    first = exams[exams["timey"] != ""].sort_values("exam_id", key=lambda v: v.astype(int))
    a, b, c, d, e, g = first["exam_id"].iloc[:6]
    exams.loc[exams.exam_id == a, "death"] = "maybe"
    exams.loc[exams.exam_id == b, "timey"] = "-1.0"
    exams.loc[exams.exam_id == c, "timey"] = "inf"
    exams.loc[exams.exam_id == d, "timey"] = "0"
    taken = set(first["patient_id"].iloc[:6])
    later = exams[(exams["timey"] == "") & ~exams["patient_id"].isin(taken)].iloc[0]
    exams.loc[exams.exam_id == later.exam_id, ["death", "timey"]] = ["False", "1.0"]
    orphan = {**first.iloc[0].to_dict(), "exam_id": "9999999", "patient_id": "9999999"}
    exams = pd.concat([exams[exams.exam_id != e], pd.DataFrame([orphan])])
    exams.to_csv(bad / "exams.csv", index=False)
    part, row = _locate(bad, int(g))  # exam g's tracing in a second file too
    with h5py.File(part) as src, h5py.File(bad / "exams_part7.hdf5", "w") as dst:
        dst["tracings"], dst["exam_id"] = src["tracings"][row:row + 1], src["exam_id"][row:row + 1]
    s = build_code15_cache(bad, tmp_path / "bad.h5", workers=1, progress=False)
    skips = _skips(s.out)
    assert sorted(skips["bad outcome"]) == sorted((a, b, c))
    assert e in skips["no exams.csv row"] and skips["no tracing"] == ["9999999"]
    assert skips["duplicate tracings"] == [g] and len(skips["not first exam"]) == 1
    with open_cache(s.out, "cohort") as f:
        assert d in dict(read_warnings(f))  # timey 0 -> 1 day
        assert int(d) in f["eid"][...]
    (bad / "exams_part7.hdf5").write_bytes((bad / "exams_part1.hdf5").read_bytes()[:5000])
    with pytest.raises(DataError, match="exams_part7.hdf5: unreadable HDF5"):
        build_code15_cache(bad, tmp_path / "x.h5", workers=1, progress=False)
    pd.concat([exams, exams.iloc[:1]]).to_csv(bad / "exams.csv", index=False)
    with pytest.raises(DataError, match="duplicate exam_ids"):
        build_code15_cache(bad, tmp_path / "x.h5", workers=1, progress=False)
    (bad / "exams.csv").unlink()
    with pytest.raises(FileNotFoundError, match="exams.csv"):
        build_code15_cache(bad, tmp_path / "x.h5", workers=1, progress=False)


@pytest.mark.slow  # ~30 s of CPU: a two-fold finetuning, an export and a prediction
def test_code15_finetune_export_predict_on_samitrop(cache: Path, tmp_path: Path,
                                                     capsys) -> None:
    from ecg_dan.config import load_config
    from ecg_dan.jobs.finetune import run_finetune

    run = run_finetune(load_config("finetune_code15", [
        "+tiny", "finetune.scratch=true", f"data.cohort_cache={cache}",
        f"run_dir={tmp_path / 'run'}"]))
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp"), "--n-boot", "20"]) == 0
    assert f"data: cohort cache {cache.name}" in (tmp_path / "cmp" / "comparison.md").read_text()
    model = tmp_path / "model.safetensors"
    assert main(["export", str(run), "--out", str(model)]) == 0
    from ecg_dan.model_file import read_model
    # trained on a cohort cache: CardioSoft inputs get the strip-derived beat, as in training
    assert read_model(model).manifest["preprocessing"]["cardiosoft_beat"] == "strip"
    sami = write_samitrop(tmp_path / "samitrop", n=16, seed=1)["samitrop"]
    assert main(["cache", "samitrop", "--root", str(sami), "--out", str(tmp_path / "s.h5"),
                 "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(model), str(tmp_path / "s.h5"), "--out",
                 str(tmp_path / "p.csv"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "C-index against the outcomes of" in err and "95% CI" in err
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns[:7]) == ["id", "source", "log_risk", "log_risk_std", "n_models",
                                   "out_of_fold", "percentile"]
    assert sorted(p["id"]) == sorted(pd.read_csv(sami / "exams.csv")["exam_id"])


def test_a_cohort_cache_is_the_finetuning_data_when_configured(cache: Path) -> None:
    from ecg_dan.config import ConfigError, load_config
    from ecg_dan.jobs.cox_baseline import cohort_table
    from ecg_dan.jobs.data import ukb_cache

    cfg = load_config("finetune_code15", ["+tiny", f"data.cohort_cache={cache}"])
    assert ukb_cache(cfg) == cache
    with pytest.raises(ConfigError, match="holds times in months"):
        ukb_cache(load_config("finetune_code15", [f"data.cohort_cache={cache}",
                                                  "data.time_unit=days"]))
    with pytest.raises(ConfigError, match="device measurements"):
        cohort_table(cache, np.arange(3), with_biomarkers=True)

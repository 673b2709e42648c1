"""``ecg-dan cache cohort`` on a mixed twin (WFDB at 250/500/1000 Hz, CardioSoft and MUSE XML)
with every kind of bad input: one skip per participant with its reason, counted per reason;
shards by id; a table that cannot be used is one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_modules.cache import BuildSummary, open_cache
from data_modules.errors import DataError
from data_modules.sources.cohort_table import build_cohort_cache
from data_modules.synthetic.cohort_format import write_cohort
from ecg_dan.cli import main

N = 30


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> tuple[Path, Path]:
    """The twin's folder and a table with one defect of each kind."""
    root = tmp_path_factory.mktemp("cohort")
    paths = write_cohort(root, n=N, seed=1, events="dense")
    ecgs, table = paths["cohort_ecgs"], paths["cohort_table"]
    t = pd.read_csv(table)
    t.loc[0, "ecg_file"] = "wfdb/missing.hea"  # missing file (its real file: no row)
    t.loc[1, "ecg_file"] = None  # a row without its ECG (its file: no row)
    t.loc[3, "id"] = t.loc[2, "id"]  # duplicate id: both rows
    t.loc[6, "event"] = 2
    t.loc[7, "time"] = -5
    t.loc[8, "time"] = np.nan
    t.loc[9, "sex"] = "X"
    t.loc[11, "sex"] = "female"  # accepted spellings
    t.loc[12, "sex"] = "1"
    t.to_csv(table, index=False)
    hea = ecgs / t.loc[10, "ecg_file"]  # a WFDB record with an unknown lead name
    lines = hea.read_text().splitlines()
    lines[8] = " ".join(lines[8].split()[:-1] + ["X7"])
    hea.write_text("\n".join(lines) + "\n")
    return ecgs, table


def _build(twin, out: Path, *extra: str) -> BuildSummary:
    ecgs, table = twin
    assert main(["cache", "cohort", "--ecgs", str(ecgs), "--table", str(table), "--out",
                 str(out), "--workers", "1", *extra]) == 0
    return BuildSummary.from_cache(out, "cohort")


@pytest.fixture(scope="module")
def built(twin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "c.h5"
    _build(twin, out)
    return out


def test_cohort_cache_records_one_skip_per_participant_counted_per_reason(twin, built):
    s = BuildSummary.from_cache(built, "cohort")
    assert s.reason_counts() == {"ECG without a table row": 2, "bad time": 2, "bad event": 1,
                                 "bad sex": 1, "duplicate id": 1, "ECG file not found": 1,
                                 "no ECG file": 1, "unusable WFDB record": 1}
    assert s.n_records == N - 9 and s.source == "cohort"
    reasons = dict(s.skipped)
    t = pd.read_csv(twin[1])
    assert reasons[str(t.loc[2, "id"])].startswith(f"duplicate id: id {t.loc[2, 'id']} has 2 "
                                                   "rows in cohort.csv (rows [4, 5])")
    assert reasons[str(t.loc[7, "id"])] == (f"bad time: cohort.csv row 9 (id {t.loc[7, 'id']}):"
                                            " time '-5.0' days (must be a finite number > 0)")
    assert "unknown lead name 'X7'" in reasons[str(t.loc[10, "id"])]
    assert reasons["wfdb/ecg_00000.hea"] == ("ECG without a table row: wfdb/ecg_00000.hea is "
                                             "not named in cohort.csv")
    with open_cache(built, "cohort") as f:
        eid = f["eid"][...]
        assert np.all(np.diff(eid) > 0) and f["median"].shape == (N - 9, 12, 600)
        assert set(f["fs"][...].tolist()) == {250.0, 500.0, 1000.0}
        assert f["time"].attrs["time_unit"] == "months"
        assert list(f["covariates"].attrs["names"]) == ["bmi"]
        kept = t.set_index("id").loc[eid]
        assert np.allclose(f["time_days"][...], kept["time"])
        assert np.array_equal(f["event"][...], kept["event"])
        sex = dict(zip(eid.tolist(), f["sex"][...].tolist()))
        assert sex[t.loc[11, "id"]] == 0 and sex[t.loc[12, "id"]] == 1
        assert np.allclose(f["true_log_hazard"][...], kept["true_log_hazard"], atol=1e-5)
    assert _build(twin, built).n_records == s.n_records  # re-run: a no-op


def test_shards_split_by_id_and_together_equal_the_whole_build(twin, built, tmp_path):
    whole = BuildSummary.from_cache(built, "cohort")
    parts = [_build(twin, tmp_path / f"p{k}.h5", "--shard", f"{k}/2") for k in range(2)]
    assert sorted(parts[0].skipped + parts[1].skipped) == sorted(whole.skipped)
    with h5py.File(built) as w, h5py.File(tmp_path / "p0.h5") as a, \
            h5py.File(tmp_path / "p1.h5") as b:
        eid = np.concatenate([a["eid"][...], b["eid"][...]])
        order = np.argsort(eid)
        assert np.array_equal(eid[order], w["eid"][...]) and a["eid"].size and b["eid"].size
        med = np.concatenate([a["median"][...], b["median"][...]])[order]
        assert np.array_equal(med, w["median"][...])


def test_a_table_with_ids_that_are_not_integers_is_one_line(twin, tmp_path):
    t = pd.read_csv(twin[1])
    t["id"] = "P" + t["id"].astype(str)
    bad = tmp_path / "bad.csv"
    t.to_csv(bad, index=False)
    with pytest.raises(DataError) as e:  # the CLI prints a DataError as one line, exit 2
        build_cohort_cache(twin[0], bad, tmp_path / "x.h5", progress=False)
    assert "\n" not in str(e.value) and "column 'id': non-integer value(s)" in str(e.value)
    assert "map ids to integers" in str(e.value) and not (tmp_path / "x.h5").exists()

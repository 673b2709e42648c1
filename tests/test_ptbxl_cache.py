"""PTB-XL cache: contract layout on the real sample, skips with reasons, atomicity, PTB-XL+,
download helper, and the shared HDF5 plumbing (data_modules.cache)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import wfdb

from data_modules.cache import (
    CacheError,
    atomic_h5,
    is_complete_cache,
    open_cache,
    read_skipped,
    write_skipped,
)
from data_modules.errors import DataError
from data_modules.signal.leads import BEAT_LEN, R_INDEX, SUPERCLASSES
from data_modules.signal.median_beat import clean_ecg
from data_modules.sources import ptbxl
from data_modules.sources.ptbxl import (
    PTBXLDownloadError,
    build_ptbxl_cache,
    fetch_ptbxl,
    read_ptbxl_metadata,
    read_scp_statements,
    superclass_labels,
)
from tests.test_median_beat import beat_at, make_record, template

WFDB_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
RESOURCES = Path(ptbxl.__file__).resolve().parents[1] / "resources"


def write_record(stem: Path, x: np.ndarray, fs: int, names: list[str] | None = None,
                 fmt: str = "16") -> None:
    """A WFDB record (channels x samples, mV) like PTB-XL's."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    names = names or WFDB_NAMES[:x.shape[0]]
    kw = dict(adc_gain=[1000.0] * x.shape[0], baseline=[0] * x.shape[0]) if fmt == "16" else {}
    wfdb.wrsamp(stem.name, fs=fs, units=["mV"] * x.shape[0], sig_name=names,
                p_signal=x.T.astype(np.float64), fmt=[fmt] * x.shape[0],
                write_dir=str(stem.parent), **kw)


# --------------------------------------------------------------------------- real sample
@pytest.fixture(scope="module")
def real_cache(ptbxl_dir, tmp_path_factory):
    """One full build of the 500 real records (2 workers), shared by the tests below."""
    out = tmp_path_factory.mktemp("real") / "ptbxl.h5"
    summary = build_ptbxl_cache(ptbxl_dir, out, strips="none", workers=2, progress=False)
    return out, summary


def test_real_yield_and_reasons(real_cache):
    out, summary = real_cache
    assert summary.n_records + summary.n_skipped == 500
    assert summary.n_records / 500 >= 0.98
    with h5py.File(out) as f:
        skipped = read_skipped(f)
    assert len(skipped) == summary.n_skipped
    assert all(reason.strip() for _, reason in skipped)


def test_real_cache_layout_matches_contract(real_cache):
    out, summary = real_cache
    n = summary.n_records
    spec = {
        "median": (np.float32, (n, 12, BEAT_LEN)), "median_clean": (np.float32, (n, 12, BEAT_LEN)),
        "ecg_id": (np.int64, (n,)), "patient_id": (np.int64, (n,)), "age": (np.float32, (n,)),
        "sex": (np.int8, (n,)), "strat_fold": (np.int8, (n,)),
        "validated_by_human": (np.bool_, (n,)), "superclass": (np.float32, (n, 5)),
        **{k: (np.bool_, (n,)) for k in ptbxl.NOISE_FLAGS},
    }
    with open_cache(out, "ptbxl") as f:
        for name, (dtype, shape) in spec.items():
            assert f[name].dtype == dtype, name
            assert f[name].shape == shape, name
        for name in ("report", "scp_codes"):
            assert h5py.check_string_dtype(f[name].dtype).encoding == "utf-8"
            assert f[name].shape == (n,)
        assert "strip" not in f
        assert int(f.attrs["schema_version"]) == 1 and f.attrs["kind"] == "ptbxl"
        assert bool(f.attrs["complete"]) and int(f.attrs["n_records"]) == n
        assert json.loads(f.attrs["build_config"])["strips"] == "none"
        ids = f["ecg_id"][...]
        assert np.all(np.diff(ids) > 0)
        assert set(np.unique(f["strat_fold"][...])) == set(range(1, 11))
        med = f["median"][...]
        assert np.isfinite(med).all()
        # median_clean is clean_ecg applied to the stored median beat
        for i in (0, 123, n - 1):
            np.testing.assert_allclose(f["median_clean"][i], clean_ecg(med[i], 500), atol=1e-5)
        # R at R_INDEX: 12-lead energy peak within 6 samples for nearly every record
        peak = np.argmax((med.astype(np.float64) ** 2).sum(1)[:, R_INDEX - 40:R_INDEX + 41], 1)
        assert np.mean(np.abs(peak - 40) <= 6) >= 0.9


def test_real_labels_match_csv(real_cache, ptbxl_dir):
    out, _ = real_cache
    meta = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    with open_cache(out, "ptbxl") as f:
        row = {int(e): i for i, e in enumerate(f["ecg_id"][...])}
        for eid in (1, 2, 4, 8, 263, 351):
            i = row[eid]
            m = meta.loc[eid]
            assert json.loads(f["scp_codes"].asstr()[i]) == ast.literal_eval(m["scp_codes"])
            assert f["report"].asstr()[i] == m["report"]
            assert f["strat_fold"][i] == m["strat_fold"] and f["sex"][i] == m["sex"]
            assert f["patient_id"][i] == int(m["patient_id"])
            assert f["age"][i] == pytest.approx(m["age"])
            for flag in ptbxl.NOISE_FLAGS:
                assert bool(f[flag][i]) == (isinstance(m[flag], str) and bool(m[flag].strip()))
        sc = f["superclass"][...]
        np.testing.assert_array_equal(sc[row[1]], [1, 0, 0, 0, 0])  # {'NORM': 100, ...}
        # 263 {'ASMI': 50, 'NST_': 0, ...}: likelihood-0 STTC code does not count
        np.testing.assert_array_equal(sc[row[263]], [0, 1, 0, 0, 0])
        np.testing.assert_array_equal(sc[row[351]], [0, 0, 0, 0, 0])  # AFIB only: no class
        assert bool(f["static_noise"][row[1]]) and not bool(f["baseline_drift"][row[1]])
        assert bool(f["baseline_drift"][row[4]])
        # single-superclass counts (README: 290 NORM, 51 STTC, 37 CD, 31 MI when likelihood-0
        # codes are counted; with the contract's likelihood > 0 rule: 290, 50, 37, 32)
        only = {c: int(((sc[:, k] == 1) & (sc.sum(1) == 1)).sum())
                for k, c in enumerate(SUPERCLASSES)}
    assert only["NORM"] == 290 and only["STTC"] == 50 and only["CD"] == 37 and only["MI"] == 32


def test_real_rerun_is_noop(real_cache, ptbxl_dir, capsys):
    out, summary = real_cache
    mtime = os.stat(out).st_mtime_ns
    again = build_ptbxl_cache(ptbxl_dir, out, strips="none", workers=2, progress=False)
    assert again.noop and again.n_records == summary.n_records
    assert "nothing to do" in capsys.readouterr().out
    assert os.stat(out).st_mtime_ns == mtime


@pytest.mark.parametrize("strips,length,folder", [("100", 1000, "records100"),
                                                  ("500", 5000, "records500")])
def test_real_strip_options(ptbxl_dir, tmp_path, strips, length, folder):
    out = tmp_path / "c.h5"
    s = build_ptbxl_cache(ptbxl_dir, out, strips=strips, workers=1, progress=False, limit=3)
    assert s.n_records == 3
    with open_cache(out, "ptbxl") as f:
        assert f["strip"].shape == (3, 12, length) and f["strip"].dtype == np.float32
        suffix = "lr" if strips == "100" else "hr"
        x, _ = wfdb.rdsamp(str(ptbxl_dir / folder / "00000" / f"00002_{suffix}"))
        np.testing.assert_allclose(f["strip"][1], x.T, atol=1e-6)  # same lead order (I..V6)
    # a different strips option is a different cache: not a no-op
    s2 = build_ptbxl_cache(ptbxl_dir, out, strips="none", workers=1, progress=False, limit=3)
    assert not s2.noop
    with open_cache(out, "ptbxl") as f:
        assert "strip" not in f


# --------------------------------------------------------------------------- bad input
def _meta_row(eid: int, **kw) -> dict:
    row = dict(ecg_id=eid, patient_id=float(1000 + eid), age=50.0 + eid, sex=eid % 2,
               report=f"bericht {eid}", scp_codes="{'NORM': 100.0, 'SR': 0.0}",
               strat_fold=eid % 10 + 1, validated_by_human=True,
               filename_lr=f"records100/00000/{eid:05d}_lr",
               filename_hr=f"records500/00000/{eid:05d}_hr")
    row.update({k: np.nan for k in ptbxl.NOISE_FLAGS})
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def mini_ptbxl(tmp_path_factory) -> Path:
    """A small PTB-XL-format directory with good records and one of each kind of bad one."""
    root = tmp_path_factory.mktemp("mini") / "ptbxl"
    rng = np.random.default_rng(0)
    rows = []

    def good(eid: int) -> np.ndarray:
        x = make_record(rng, hr=60 + eid)
        write_record(root / f"records500/00000/{eid:05d}_hr", x, 500)
        write_record(root / f"records100/00000/{eid:05d}_lr", x[:, ::5], 100)
        return x

    for eid in (1, 2, 12):
        good(eid)
        rows.append(_meta_row(eid, validated_by_human=eid != 12,
                              static_noise=" , alles, " if eid == 2 else np.nan))
    good(3)  # truncated .dat
    dat = root / "records500/00000/00003_hr.dat"
    dat.write_bytes(dat.read_bytes()[:50000])
    good(4)  # corrupt header
    (root / "records500/00000/00004_hr.hea").write_text("this is not a header\n")
    x = make_record(rng)
    x[5, 1000:1100] = np.nan
    write_record(root / "records500/00000/00005_hr", x, 500)
    x = make_record(rng)
    x[8] = 0.0
    write_record(root / "records500/00000/00006_hr", x, 500)
    write_record(root / "records500/00000/00007_hr", make_record(rng)[:8], 500)
    write_record(root / "records500/00000/00008_hr", make_record(rng, fs=250), 250)
    # 9: files missing
    write_record(root / "records500/00000/00010_hr", make_record(rng), 500,
                 names=WFDB_NAMES[:11] + ["X1"])
    good(11)
    for eid in (3, 4, 5, 6, 7, 8, 9, 10):
        rows.append(_meta_row(eid))
    rows.append(_meta_row(11, scp_codes="{'FOO': 100.0}"))
    pd.DataFrame(rows).sort_values("ecg_id").to_csv(root / "ptbxl_database.csv", index=False)
    shutil.copy(RESOURCES / "scp_statements.csv", root / "scp_statements.csv")
    return root


def test_bad_records_are_skipped_with_reasons(mini_ptbxl, tmp_path):
    out = tmp_path / "mini.h5"
    s = build_ptbxl_cache(mini_ptbxl, out, workers=2, progress=False)  # parallel path
    reasons = dict(s.skipped)
    expected = {
        "3": r"unreadable WFDB record 00003_hr",
        "4": r"unreadable WFDB record 00004_hr",
        "5": r"median beat: NaN.*lead\(s\) aVF",
        "6": r"median beat: flat lead\(s\) V3",
        "7": r"wrong lead count: 8 leads",
        "8": r"wrong sampling rate: 250 Hz in 00008_hr, expected 500",
        "9": r"record files not found",
        "10": r"unknown lead name 'X1'",
        "11": r"labels: unknown SCP code 'FOO'",
    }
    assert set(reasons) == set(expected)
    for eid, pattern in expected.items():
        assert pd.Series([reasons[eid]]).str.contains(pattern).all(), (eid, reasons[eid])
    with open_cache(out, "ptbxl") as f:
        np.testing.assert_array_equal(f["ecg_id"][...], [1, 2, 12])
        assert [tuple(r) for r in read_skipped(f)] == sorted(s.skipped, key=lambda t: int(t[0]))
        np.testing.assert_array_equal(f["validated_by_human"][...], [True, True, False])
        np.testing.assert_array_equal(f["static_noise"][...], [False, True, False])
        assert np.isnan(f["age"][...]).sum() == 0
        # the derived median recovers the known beat
        assert np.corrcoef(f["median"][0].ravel(), template().ravel())[0, 1] > 0.99


def test_validated_only_lists_the_rest(mini_ptbxl, tmp_path):
    s = build_ptbxl_cache(mini_ptbxl, tmp_path / "v.h5", validated_only=True, workers=1,
                          progress=False)
    assert dict(s.skipped)["12"] == "not validated_by_human (validated_only)"
    assert s.n_records == 2


def _copy_meta(root: Path, tmp_path: Path, edit) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    df = pd.read_csv(dst / "ptbxl_database.csv")
    edit(df).to_csv(dst / "ptbxl_database.csv", index=False)
    return dst


def test_bad_metadata_is_a_clear_error(mini_ptbxl, tmp_path):
    def bad_scp(df):
        df.loc[df.ecg_id == 2, "scp_codes"] = "{'NORM': 100.0"
        return df
    root = _copy_meta(mini_ptbxl, tmp_path, bad_scp)
    with pytest.raises(ValueError, match=r"ptbxl_database.csv: row ecg_id=2: field scp_codes"):
        build_ptbxl_cache(root, tmp_path / "x.h5", workers=1, progress=False)
    assert not (tmp_path / "x.h5").exists()
    shutil.rmtree(root)

    root = _copy_meta(mini_ptbxl, tmp_path, lambda df: pd.concat([df, df.iloc[[0]]]))
    with pytest.raises(ValueError, match=r"field ecg_id: duplicate ecg_id\(s\) \[1\]"):
        read_ptbxl_metadata(root)
    shutil.rmtree(root)

    def bad_fold(df):
        df.loc[df.ecg_id == 3, "strat_fold"] = 11
        return df
    root = _copy_meta(mini_ptbxl, tmp_path, bad_fold)
    with pytest.raises(ValueError, match=r"row ecg_id=3: field strat_fold"):
        read_ptbxl_metadata(root)
    shutil.rmtree(root)

    def bad_likelihood(df):
        df.loc[df.ecg_id == 1, "scp_codes"] = "{'NORM': 'high'}"
        return df
    root = _copy_meta(mini_ptbxl, tmp_path, bad_likelihood)
    with pytest.raises(ValueError, match=r"ecg_id=1: field scp_codes: bad entry 'NORM'"):
        read_ptbxl_metadata(root)
    shutil.rmtree(root)

    root = _copy_meta(mini_ptbxl, tmp_path, lambda df: df.drop(columns=["strat_fold"]))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['strat_fold'\]"):
        read_ptbxl_metadata(root)


def test_superclass_labels_rule():
    st = read_scp_statements(RESOURCES)
    # IMI -> MI, LNGQT (long QT) -> STTC
    np.testing.assert_array_equal(superclass_labels({"IMI": 15.0, "LNGQT": 100.0}, st),
                                  [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(superclass_labels({"IMI": 0.0, "LNGQT": 100.0}, st),
                                  [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(superclass_labels({"NORM": 100.0, "LVH": 50.0, "NDT": 0.0},
                                                    st), [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(superclass_labels({"SR": 100.0}, st), [0, 0, 0, 0, 0])
    with pytest.raises(KeyError, match="unknown SCP code 'XYZ'"):
        superclass_labels({"XYZ": 100.0}, st)


def test_interrupted_build_leaves_nothing(mini_ptbxl, tmp_path, monkeypatch):
    real = ptbxl._process
    calls = []

    def flaky(task):
        calls.append(task[0])
        if len(calls) == 3:
            raise RuntimeError("simulated crash mid-build")
        return real(task)

    monkeypatch.setattr(ptbxl, "_process", flaky)
    out = tmp_path / "crash.h5"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_ptbxl_cache(mini_ptbxl, out, workers=1, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file, no lock file


def test_implausible_gain_is_skipped_with_the_reason(tmp_path):
    """WFDB gain 1 (1000x amplitudes) and gain 0 (scale unknown; WFDB would guess 200) are
    skipped with the reason; a lower max_abs_mv moves the limit (and the config)."""
    root = tmp_path / "ptbxl"
    rng = np.random.default_rng(5)
    for eid in (1, 2, 3):
        write_record(root / f"records500/00000/{eid:05d}_hr", make_record(rng, hr=70), 500)
    for eid, gain in ((2, "1.0"), (3, "0")):
        hea = root / f"records500/00000/{eid:05d}_hr.hea"
        hea.write_text(hea.read_text().replace("1000.0(0)/mV", f"{gain}(0)/mV"))
    pd.DataFrame([_meta_row(e) for e in (1, 2, 3)]).to_csv(root / "ptbxl_database.csv",
                                                           index=False)
    shutil.copy(RESOURCES / "scp_statements.csv", root / "scp_statements.csv")
    s = build_ptbxl_cache(root, tmp_path / "g.h5", workers=1, progress=False)
    reasons = dict(s.skipped)
    assert s.n_records == 1 and set(reasons) == {"2", "3"}
    assert reasons["2"].startswith("implausible amplitude: |x| reaches ")
    assert "(plausible: <= 20 mV" in reasons["2"] and "00002_hr" in reasons["2"]
    assert "header gain 0 (scale unknown) for lead(s) I,II" in reasons["3"]
    assert s.reason_counts()["implausible amplitude"] == 1
    with open_cache(tmp_path / "g.h5", "ptbxl") as f:
        assert np.abs(f["median"][...]).max() < 20
        assert json.loads(f.attrs["build_config"])["max_abs_mv"] == 20.0
    with pytest.raises(DataError, match=r"no usable record.*implausible amplitude"):
        build_ptbxl_cache(root, tmp_path / "low.h5", workers=1, progress=False,
                          max_abs_mv=0.05, limit=1)
    assert not (tmp_path / "low.h5").exists()


# --------------------------------------------------------------------------- PTB-XL+
def test_ptbxl_plus_medians(mini_ptbxl, tmp_path):
    plus = tmp_path / "plus"
    base = plus / "median_beats" / "12sl"
    tm = template()
    shifted = beat_at(np.arange(BEAT_LEN) / 500, 300 / 500)  # device fiducial at 300
    write_record(base / "00000" / "00001_medians", shifted, 500, fmt="32")
    # flat layout, a header whose record name carries a directory prefix, values in uV
    write_record(base / "00002_medians", tm * 1000.0, 500, fmt="32")
    hea = base / "00002_medians.hea"
    lines = hea.read_text().splitlines()
    lines[0] = "ge_median_beats_wfdb/" + lines[0]
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception):  # noqa: B017 - wfdb itself refuses that header
        wfdb.rdrecord(str(base / "00002_medians"))
    out = tmp_path / "plus.h5"
    s = build_ptbxl_cache(mini_ptbxl, out, ptbxl_plus_dir=plus, workers=1, progress=False)
    reasons = dict(s.skipped)
    assert "no PTB-XL+ median" in reasons["12"]
    with open_cache(out, "ptbxl") as f:
        np.testing.assert_array_equal(f["ecg_id"][...], [1, 2])
        assert f.attrs["median_source"] == "ptbxl_plus_12sl"
        assert int(f.attrs["ptbxl_plus_rescaled_uV"]) == 1
        med = f["median"][...]
        for i in range(2):  # both re-centred onto R_INDEX, in mV
            assert np.corrcoef(med[i][:, 60:-60].ravel(), tm[:, 60:-60].ravel())[0, 1] > 0.999
            np.testing.assert_allclose(med[i][1, R_INDEX], tm[1, R_INDEX], atol=0.02)
    with pytest.raises(FileNotFoundError, match="median_beats/12sl"):
        build_ptbxl_cache(mini_ptbxl, tmp_path / "y.h5", ptbxl_plus_dir=tmp_path / "nothing")


# --------------------------------------------------------------------------- download
def test_fetch_ptbxl_from_local_zip(tmp_path):
    src = tmp_path / "src" / "ptb-xl-1.0.3"
    src.mkdir(parents=True)
    (src / "ptbxl_database.csv").write_text("ecg_id\n1\n")
    (src / "scp_statements.csv").write_text("x\n")
    archive = tmp_path / "ptbxl.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in src.iterdir():
            z.write(p, f"ptb-xl-1.0.3/{p.name}")
    dest = tmp_path / "dest"
    root = fetch_ptbxl(dest, url=archive.as_uri())
    assert root == dest / "ptb-xl-1.0.3" and (root / "ptbxl_database.csv").is_file()
    assert not list(dest.glob("*.part"))
    # already there: returned without touching the network
    assert fetch_ptbxl(dest, url="http://127.0.0.1:9/never.zip") == root
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    with pytest.raises(PTBXLDownloadError, match="not a valid zip"):
        fetch_ptbxl(tmp_path / "dest2", url=bad.as_uri())


def test_fetch_ptbxl_unreachable_fails_fast_with_help(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(PTBXLDownloadError) as e:
        fetch_ptbxl(tmp_path / "d", url="http://127.0.0.1:9/ptbxl.zip", timeout=2)
    msg = str(e.value)
    assert "physionet.org/content/ptb-xl" in msg and "ecg-dan synth" in msg
    assert "ecg-dan cache ptbxl --root" in msg
    assert time.monotonic() - t0 < 30  # generous bound: "fails fast", not a timing benchmark
    assert not list((tmp_path / "d").glob("*.part"))


# --------------------------------------------------------------------------- cache
def test_atomic_h5_and_open_cache_refusals(tmp_path):
    out = tmp_path / "c.h5"
    cfg = {"a": 1, "b": "x"}
    with pytest.raises(ZeroDivisionError):
        with atomic_h5(out, "ptbxl", cfg) as f:
            f.create_dataset("median", data=np.zeros((1, 12, 600), np.float32))
            1 / 0  # noqa: B018
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CacheError, match="c.h5: cache file not found"):
        open_cache(out, "ptbxl")

    with atomic_h5(out, "ptbxl", cfg) as f:
        f.attrs["n_records"] = 1
        for name in ("median", "median_clean"):
            f.create_dataset(name, data=np.zeros((1, 12, 600), np.float32))
        f.create_dataset("strat_fold", data=np.array([1], np.int8))
        f.create_dataset("superclass", data=np.zeros((1, 5), np.float32))
        f.create_dataset("ecg_id", data=np.array([1], np.int64))
        write_skipped(f, [("7", "flat lead(s) V3"), ("9", "no beats")])
    with open_cache(out, "ptbxl") as f:
        assert bool(f.attrs["complete"]) and int(f.attrs["schema_version"]) == 1
        assert json.loads(f.attrs["build_config"]) == cfg
        assert read_skipped(f) == [("7", "flat lead(s) V3"), ("9", "no beats")]
    assert is_complete_cache(out, "ptbxl", {"b": "x", "a": 1})
    assert not is_complete_cache(out, "ptbxl", {"a": 2, "b": "x"})
    assert not is_complete_cache(out, "ukb", cfg)
    with pytest.raises(CacheError,
                       match=r"is a PTB-XL cache \(kind 'ptbxl'\); expected a UK Biobank"):
        open_cache(out, "ukb")

    with h5py.File(out, "a") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(CacheError, match="schema_version 2"):
        open_cache(out, "ptbxl")
    with h5py.File(out, "a") as f:
        f.attrs["schema_version"] = 1
        f.attrs["complete"] = False
    with pytest.raises(CacheError, match="incomplete cache"):
        open_cache(out, "ptbxl")
    assert not is_complete_cache(out, "ptbxl", cfg)
    (tmp_path / "junk.h5").write_text("no hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        open_cache(tmp_path / "junk.h5", "ptbxl")


def test_metadata_in_a_subfolder_is_named_in_the_error(tmp_path: Path) -> None:
    """fetch_ptbxl unzips into a subfolder of the folder given: pointing at the parent
    says where the release is instead of only 'not found'."""
    inner = tmp_path / "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
    inner.mkdir()
    (inner / "ptbxl_database.csv").write_text("ecg_id\n1\n")
    with pytest.raises(FileNotFoundError, match=f"the release is in {inner}: pass that folder"):
        read_ptbxl_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"metadata table not found$"):
        read_ptbxl_metadata(tmp_path / "nothing")

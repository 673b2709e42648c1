"""The Cox baselines (ecg_dan/jobs/cox_baseline.py) end to end on the tiny synthetic twin, in
ECG-DAN's protocol: every participant predicted once per seed, results written, the penalty
chosen within the grid and recorded, and the fitted risks equal to lifelines' own fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from data_modules.protocol.splits import load_splits
from ecg_dan.config import ConfigError, load_config
from ecg_dan.jobs.compare import run_compare
from ecg_dan.jobs.cox_baseline import _design, cohort_table
from ecg_dan.jobs.finetune import run_finetune
from ecg_dan.metrics.reclassification import RECLASSIFICATION_KEYS

GRID = ["baseline.n_penalties=4"]


def _cfg(name: str, tmp_path: Path, data_root: Path, *extra: str):
    return load_config(name, ["+tiny", f"data.root={data_root}", f"run_dir={tmp_path / 'run'}",
                              *GRID, *extra])


@pytest.fixture(scope="module")
def biomarker_run(tmp_path_factory, tiny_data_root) -> Path:
    tmp = tmp_path_factory.mktemp("bio-cox")
    return run_finetune(_cfg("baselines/biomarker_cox", tmp, tiny_data_root))


def _check_protocol(run: Path) -> None:
    splits = load_splits(run / "splits.json")
    oof = pd.read_csv(run / "oof_predictions.csv")
    for seed in {s.seed for s in splits}:
        eids = oof[oof.seed == seed].eid
        cohort = np.concatenate([np.concatenate([s.train_eid, s.val_eid, s.test_eid])
                                 for s in splits if s.seed == seed and s.fold == 0])
        assert sorted(eids) == sorted(cohort) and eids.is_unique  # each once per seed
    for s in splits:
        meta = json.loads((run / "predictions" / f"{s.name}.json").read_text())
        grid = meta["penalty_grid"]
        assert len(grid) == 4 and meta["penalizer"] in grid
        assert np.isclose(grid[0], 1e-2) and np.isclose(grid[-1], 1e5)
        assert meta["config_hash"] == json.loads((run / "run.json").read_text())["config_hash"]
        train = pd.read_csv(run / "predictions" / f"{s.name}_train.csv")
        assert sorted(train.eid) == sorted(np.concatenate([s.train_eid, s.val_eid]))
        test = pd.read_csv(run / "predictions" / f"{s.name}.csv")
        assert list(test.columns) == ["eid", "seed", "fold", "risk", "time", "event",
                                      "checkpoint"]
    assert (run / "results.md").is_file() and (run / "results.json").is_file()


def test_biomarker_cox_runs_the_protocol(biomarker_run):
    _check_protocol(biomarker_run)
    feats = pd.read_csv(biomarker_run / "biomarkers.csv")
    assert {"ventricular_rate", "rbbb", "lvh", "prolonged_qt"} <= set(feats.columns)


@pytest.fixture(scope="module")
def clinical_run(tmp_path_factory, tiny_data_root) -> Path:
    tmp = tmp_path_factory.mktemp("clinical-cox")
    return run_finetune(_cfg("baselines/clinical_cox", tmp, tiny_data_root))


@pytest.fixture(scope="module")
def ecgdan_clinical_run(tmp_path_factory, tiny_data_root, biomarker_run) -> Path:
    """ECG-DAN + age + sex on a stand-in for a finished ECG-DAN run (``<tmp>/ecgdan``): the
    biomarker run's splits and predictions with informative risks."""
    tmp = tmp_path_factory.mktemp("ecgdan-clinical")
    fake = tmp / "ecgdan"
    (fake / "predictions").mkdir(parents=True)
    shutil.copy(biomarker_run / "splits.json", fake / "splits.json")
    for p in (biomarker_run / "predictions").glob("seed*_fold*.csv"):
        df = pd.read_csv(p)
        df["risk"] = -df["time"] * (df["event"] + 0.5)  # informative, like a trained model
        df.to_csv(fake / "predictions" / p.name, index=False)
    return run_finetune(_cfg("baselines/ecgdan_clinical_cox", tmp, tiny_data_root,
                             f"baseline.ecgdan_run={fake}"))


def test_clinical_cox_runs_the_protocol(clinical_run):
    _check_protocol(clinical_run)
    meta = json.loads(next((clinical_run / "predictions").glob("seed*_fold0.json")).read_text())
    assert meta["columns"] == ["age", "sex"]


def test_fitted_risk_equals_lifelines_on_one_fold(biomarker_run):
    split = load_splits(biomarker_run / "splits.json")[0]
    meta = json.loads((biomarker_run / "predictions" / f"{split.name}.json").read_text())
    cache = json.loads((biomarker_run / "splits.json").read_text())["meta"]["cache"]
    rows = np.concatenate([split.train_idx, split.val_idx, split.test_idx])
    table = cohort_table(Path(cache), rows, with_biomarkers=True)
    cols = [c for c in table.columns if c not in ("eid", "time", "event", "age", "sex")]
    x, kept, _ = _design(table, cols, split.train_idx)
    assert kept == meta["columns"]
    df = x.loc[split.train_idx].assign(T=table.loc[split.train_idx, "time"],
                                       E=table.loc[split.train_idx, "event"])
    cph = CoxPHFitter(penalizer=meta["penalizer"], l1_ratio=0.0).fit(df, "T", "E")
    want = cph.predict_log_partial_hazard(x.loc[split.test_idx]).to_numpy()
    got = pd.read_csv(biomarker_run / "predictions" / f"{split.name}.csv")
    want = pd.Series(want, index=table.loc[split.test_idx, "eid"]).loc[got.eid].to_numpy()
    assert np.std(want) > 1e-3  # a fitted model, not risks shrunk to 0
    np.testing.assert_allclose(got.risk.to_numpy(), want, rtol=1e-7, atol=1e-9 * np.std(want))


def test_ecgdan_clinical_uses_the_ecgdan_run_splits_and_validation_rows(
        ecgdan_clinical_run, tmp_path, tiny_data_root):
    with pytest.raises(ConfigError, match="ecgdan_run"):
        run_finetune(_cfg("baselines/ecgdan_clinical_cox", tmp_path, tiny_data_root))
    run = ecgdan_clinical_run
    fake = run.parent / "ecgdan"
    assert (run / "splits.json").read_bytes() == (fake / "splits.json").read_bytes()
    split = load_splits(run / "splits.json")[0]
    meta = json.loads((run / "predictions" / f"{split.name}.json").read_text())
    assert meta["fit_rows"] == "val" and meta["n_val"] == split.val_idx.size
    assert meta["columns"][0] == "ecgdan_risk"
    assert (run / "results.md").is_file()


def test_compare_of_the_clinical_pair_adds_nri_idi(clinical_run, ecgdan_clinical_run, tmp_path):
    """``compare`` of ECG-DAN + age + sex with age + sex: the reclassification at each
    horizon within follow-up, finite, each CI around its estimate, in all three outputs."""
    md = run_compare([clinical_run, ecgdan_clinical_run], out_dir=tmp_path, n_boot=30)
    table = pd.read_csv(tmp_path / "reclassification.csv")
    rec = json.loads((tmp_path / "comparison.json").read_text())["reclassification"]
    assert rec["new"].startswith("ecgdan-clinical") and rec["old"].startswith("clinical-cox")
    assert len(rec["table"]) == len(table) >= 1
    assert set(table.horizon) <= {12.0, 24.0, 36.0, 48.0, 60.0}
    for k in RECLASSIFICATION_KEYS:
        est, lo, hi = table[k].to_numpy(), table[f"{k}_low"].to_numpy(), table[f"{k}_high"]
        assert np.isfinite(est).all() and (lo <= est + 1e-12).all() and (est <= hi + 1e-12).all()
    assert "## Reclassification: ecgdan-clinical" in md.read_text()


def test_synthetic_twin_xml_carries_the_device_measurements(tiny_data_root):
    """The twin's CardioSoft files hold the measurements the biomarkers need, tied to the
    simulated beat: QRS duration near the generating one, bundle branch blocks found."""
    from ecg_dan.jobs.data import synthetic_dir

    cfg = load_config("demo_finetune", ["+tiny", f"data.root={tiny_data_root}"])
    cache = next(tiny_data_root.glob("*-ukb-*.h5"))
    table = cohort_table(cache, np.arange(240), with_biomarkers=True)
    truth = pd.read_csv(synthetic_dir(cfg) / "ground_truth" / "ukb.csv").set_index("eid")
    truth = truth.loc[table.eid]
    assert table.filter(like="_missing").drop(
        columns=["p_duration_gt120_missing", "pr_gt200_missing",
                 "abnormal_p_axis_missing"]).to_numpy().sum() == 0  # P: empty in AF only
    assert (table.pr_gt200_missing.to_numpy() == truth.af.to_numpy()).all()
    assert (table.rbbb.to_numpy() == truth.rbbb.to_numpy()).mean() > 0.95
    assert (table.lbbb.to_numpy() == truth.lbbb.to_numpy()).mean() > 0.95
    qrs_gt100 = truth.qrs_ms.to_numpy() > 110  # well above the threshold: device noise 4 ms
    assert table.qrs_gt100.to_numpy()[qrs_gt100].all()

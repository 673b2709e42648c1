"""Label-efficiency runs (docs/method.md section 7): nested, event-stratified fractions of the
training folds with the held-out folds untouched, the epochs that keep the samples seen
equal, the encoder probes and the shuffled-reports control, and the FRACTIONS axis of
``make ablations`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from data_modules.protocol.splits import nested_fraction, survival_cv_splits
from ecg_dan.config import ConfigError, load_config, pretrain_objective
from ecg_dan.jobs.cox_baseline import probe_components
from ecg_dan.jobs.finetune import fraction_epochs
from ecg_dan.jobs.matrix import parse_fractions
from ecg_dan.jobs.pretrain import shuffled_reports

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(3)
    event = (rng.random(600) < 0.2).astype(int)
    rows = np.sort(rng.choice(5000, 600, replace=False))  # cache rows are not 0..n-1
    eids = rows * 7 + 11
    splits = survival_cv_splits(event, 2, (42, 2021), 0.2, rows=rows, eids=eids)
    return splits, dict(zip(rows.tolist(), event.tolist())), dict(zip(rows.tolist(),
                                                                      eids.tolist()))


def test_fractions_nest_stratify_and_never_touch_the_held_out_fold(cohort):
    splits, event_of_row, eid_of_row = cohort
    for split in splits:
        subs = [nested_fraction(split, event_of_row, f) for f in FRACTIONS]
        assert subs[-1] is split  # fraction 1: the protocol's split itself
        for part in ("train", "val"):
            full = getattr(split, f"{part}_idx")
            n_ev = sum(event_of_row[r] for r in full)
            for f, sub in zip(FRACTIONS, subs):
                idx = getattr(sub, f"{part}_idx")
                ev = sum(event_of_row[r] for r in idx)
                # each event stratum keeps ceil(f * its size): the event share is preserved
                assert ev == math.ceil(f * n_ev)
                assert len(idx) - ev == math.ceil(f * (len(full) - n_ev))
                assert np.all(np.diff(idx) > 0) and set(idx) <= set(full)
                assert getattr(sub, f"{part}_eid").tolist() == [eid_of_row[r] for r in idx]
            for small, large in zip(subs, subs[1:]):  # 5% inside 10% inside 25% ...
                assert set(getattr(small, f"{part}_idx")) <= set(getattr(large, f"{part}_idx"))
        for sub in subs:
            assert np.array_equal(sub.test_idx, split.test_idx)
            assert np.array_equal(sub.test_eid, split.test_eid)
            assert (sub.seed, sub.fold) == (split.seed, split.fold)
    # the draw is fixed per (seed, fold) and differs between seeds
    a, b = (nested_fraction(s, event_of_row, 0.1) for s in splits[:2])
    assert nested_fraction(splits[0], event_of_row, 0.1) == a
    s42, s2021 = (nested_fraction(s, event_of_row, 0.25) for s in (splits[0], splits[2]))
    assert set(s42.train_idx) != set(s2021.train_idx)
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        nested_fraction(splits[0], event_of_row, 0.0)


def test_a_fraction_trains_for_the_same_number_of_samples():
    cfg = load_config("demo_finetune", ["trainer.max_epochs=10"])
    for f, epochs in ((1.0, 10), (0.5, 20), (0.3, 34), (0.05, 200)):
        cfg.finetune.train_fraction = f
        assert fraction_epochs(cfg) == epochs
    with pytest.raises(ConfigError, match="train_fraction"):
        load_config("demo_finetune", ["finetune.train_fraction=0"])


def test_fractions_from_make():
    assert parse_fractions("1,0.05, 0.25,0.05") == [0.05, 0.25, 1.0]
    assert parse_fractions("") is None
    for bad in ("0.5,abc", "0,1", "1.5"):
        with pytest.raises(ConfigError, match="FRACTIONS="):
            parse_fractions(bad)


def test_shuffled_reports_permute_the_texts_and_are_a_different_objective():
    cfg = load_config("demo_pretrain", ["pretrain.shuffle_reports=true"])
    texts = {"ptbxl": np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)}
    out = shuffled_reports(cfg, texts)["ptbxl"]
    assert sorted(out[:, 0].tolist()) == texts["ptbxl"][:, 0].tolist()  # same reports
    assert (out[:, 0] != texts["ptbxl"][:, 0]).mean() > 0.9  # ... on other records
    np.testing.assert_array_equal(shuffled_reports(cfg, texts)["ptbxl"], out)  # seeded
    cfg.pretrain.shuffle_reports = False
    assert shuffled_reports(cfg, texts) is texts
    # a checkpoint aligned to shuffled reports cannot pass for the proposed pretraining
    proposed = pretrain_objective(load_config("demo_pretrain").pretrain)
    shuffled = pretrain_objective(
        load_config("demo_pretrain", ["pretrain.shuffle_reports=true"]).pretrain)
    assert shuffled == {**proposed, "shuffle_reports": True}


def test_probe_components_are_the_training_rows_principal_components():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    z = rng.normal(size=(80, 12)) @ rng.normal(size=(12, 12)) + 5.0
    train = np.arange(0, 80, 2)
    pcs = probe_components(z, train, 4)
    zs = (z - z[train].mean(0)) / z[train].std(0)
    ref = PCA(4).fit(zs[train]).transform(zs)
    for k in range(4):  # equal up to each component's sign
        assert min(np.abs(pcs[:, k] - ref[:, k]).max(),
                   np.abs(pcs[:, k] + ref[:, k]).max()) < 1e-8
    assert probe_components(z, train[:3], 32).shape == (80, 2)  # capped by the rows


def test_a_fraction_fold_trains_the_scaled_epochs(tmp_path, tiny_data_root, monkeypatch):
    """The network's fold fit reads fraction_epochs (stopped at the trainer's construction)."""
    import ecg_dan.jobs.finetune as finetune

    class Built(Exception):
        pass

    def trainer(cfg, fold_dir):
        raise Built(cfg.trainer.max_epochs)

    monkeypatch.setattr(finetune, "build_trainer", trainer)
    cfg = load_config("demo_finetune", ["+tiny", f"data.root={tiny_data_root}",
                                        f"run_dir={tmp_path / 'run'}", "finetune.scratch=true",
                                        "trainer.max_epochs=3", "finetune.train_fraction=0.25"])
    with pytest.raises(Built, match="12"):
        finetune.run_finetune(cfg)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["meta"]["train_fraction"] == 0.25


def test_make_ablations_fractions_end_to_end(tmp_path, tiny_data_root, tiny_pretrained,
                                             monkeypatch):
    import ecg_dan.jobs.matrix as matrix
    from ecg_dan.make_targets import main as make_main

    monkeypatch.chdir(tmp_path)
    compare = matrix.run_compare
    monkeypatch.setattr(matrix, "run_compare",
                        lambda *a, **kw: compare(*a, **{**kw, "n_boot": 20}))
    args = ["+tiny", f"data.root={tiny_data_root}", "finetune.n_boot=0",
            "baseline.n_penalties=2"]
    assert make_main(["ablations", "DATA=synthetic", "COHORT=mi", "FRACTIONS=0.5,1",
                      "ABLATIONS=probe_pretrained", f"CKPT={tiny_pretrained}",
                      "--", *args]) == 0
    root = Path("runs/matrix_mi_synthetic")
    half, full = root / "frac0.5/probe_pretrained", root / "frac1/probe_pretrained"
    assert OmegaConf.load(half / "config.yaml").finetune.train_fraction == 0.5
    for fold in ("seed42_fold0", "seed42_fold1"):
        test_h, test_f = (pd.read_csv(d / "predictions" / f"{fold}.csv") for d in (half, full))
        assert test_h.eid.tolist() == test_f.eid.tolist()  # held-out fold unchanged
        tr_h, tr_f = (pd.read_csv(d / "predictions" / f"{fold}_train.csv") for d in (half, full))
        assert set(tr_h.eid) < set(tr_f.eid) and tr_h.event.sum() >= 1
    meta = json.loads((half / "predictions/seed42_fold0.json").read_text())
    assert meta["encoder"] == str(tiny_pretrained) and meta["features"] == "encoder"
    assert len(meta["columns"]) >= 1 and all(c.startswith("pc") for c in meta["columns"])
    # compared within each fraction, joined in the label-efficiency curve
    for f in ("0.5", "1"):
        assert (root / "comparison" / f"comparison_frac{f}" / "comparison.md").is_file()
    curve = pd.read_csv(root / "comparison" / "label_efficiency.csv")
    assert sorted(curve.fraction.unique().tolist()) == [0.5, 1.0]


def test_report_agreement_detects_a_collapsed_alignment(caplog):
    import torch

    from ecg_dan.jobs.pretrain import warn_collapse
    from ecg_dan.losses.alignment import projected_report_agreement

    g = torch.Generator().manual_seed(0)
    text = torch.randn(6, 16, generator=g).repeat(2, 1)  # 6 reports, each twice
    distinct = torch.randn(6, 8, generator=g).repeat(2, 1)
    collapsed = torch.ones(12, 8) + 1e-3 * torch.randn(12, 8, generator=g)
    a = projected_report_agreement(text, distinct)
    # only pairs of different reports count: the hand mean over them
    p = torch.nn.functional.normalize(distinct, dim=-1)
    same = torch.arange(12)[:, None] % 6 == torch.arange(12)[None, :] % 6
    assert a.item() == pytest.approx((p @ p.T)[~same].mean().item(), abs=1e-6)
    assert a < 0.9 and projected_report_agreement(text, collapsed) > 0.999
    assert torch.isnan(projected_report_agreement(text[:1].repeat(4, 1), distinct[:4]))
    assert warn_collapse(torch.tensor(0.9995)) and "collapsed" in caplog.text
    assert not warn_collapse(torch.tensor(0.5)) and not warn_collapse(None)

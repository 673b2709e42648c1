"""`ecg-dan explain` and the per-ECG explanation (docs/method.md section 8): the maps' shapes
and normalisation, group statistics against direct loops, the gradient map on inputs whose
answer is known, the smoothing/crop/rescale rules, the out-of-fold assignment, and the
command end to end on a tiny finetuning run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA

from data_modules.errors import DataError
from data_modules.loading.ukb_datamodule import UKBDataModule
from data_modules.protocol.splits import load_splits, load_splits_meta
from ecg_dan.checkpoints import finetune_module_from_checkpoint
from ecg_dan.cli import main as cli
from ecg_dan.config import ConfigError, load_config, save_config
from ecg_dan.interpretation import explain_ecg
from ecg_dan.interpretation.maps import (
    center_crop,
    group_mean_std,
    pca_2d,
    rescale01,
    temporal_sample_map,
    token_input_gradients,
    token_weights,
)
from ecg_dan.interpretation.single import attention_of
from ecg_dan.jobs.explain import held_out_assignment, run_explain
from ecg_dan.models import ECGDAN, ModelConfig

L, S, T = 12, 608, 19


def _net(**kw) -> ECGDAN:
    torch.manual_seed(0)
    return ECGDAN(ModelConfig(latent_dim=32, **kw)).eval()


def test_maps_have_the_papers_shapes_and_rows_sum_to_one():
    x = torch.randn(3, L, S)
    m = attention_of(_net(), x, gradients=False)
    assert m["cross_lead"].shape == (3, L, L) and m["token_weights"].shape == (3, L, T)
    assert m["z"].shape == (3, 32) and "temporal_map" not in m
    np.testing.assert_allclose(m["cross_lead"].sum(-1), 1.0, atol=1e-5)  # softmax rows
    np.testing.assert_allclose(m["token_weights"].sum(-1), 1.0, atol=1e-5)
    assert (m["cross_lead"] >= 0).all() and (m["token_weights"] >= 0).all()


def test_token_weights_are_the_query_average():
    rng = np.random.default_rng(0)
    a = rng.random((2, L, T, T))
    a /= a.sum(-1, keepdims=True)
    w = token_weights(torch.from_numpy(a))
    for b in range(2):
        for lead in range(L):
            for t in range(T):
                assert w[b, lead, t] == pytest.approx(sum(a[b, lead, q, t] for q in range(T)) / T)


def test_group_mean_and_std_against_a_direct_loop():
    rng = np.random.default_rng(1)
    maps = rng.random((7, 3, 3))
    members = np.array([True, False, True, True, False, False, True])
    mean, std = group_mean_std(maps, members)
    sel = [maps[i] for i in range(7) if members[i]]
    for i in range(3):
        for j in range(3):
            vals = [m[i, j] for m in sel]
            mu = sum(vals) / len(vals)
            assert mean[i, j] == pytest.approx(mu, abs=1e-12)
            assert std[i, j] == pytest.approx((sum((v - mu) ** 2 for v in vals) / len(vals))
                                              ** 0.5, abs=1e-12)
    with pytest.raises(ValueError, match="empty group"):
        group_mean_std(maps, np.zeros(7, bool))


def test_gradient_of_a_linear_feature_map_is_its_weight_on_the_own_lead():
    """h[b, c, l, t] = sum_s W[c, t, s] x[b, l, s] + sum_s V[c, t, s] x[b, l+1, s]: the token's
    gradient on its own lead is sum_c W[c, t, :] (the cross-lead term V must not leak in),
    clipped at zero."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, T, S, generator=g, dtype=torch.float64)
    V = torch.randn(4, T, S, generator=g, dtype=torch.float64)

    def features(x):
        return (torch.einsum("cts,bls->bclt", W, x)
                + torch.einsum("cts,bls->bclt", V, torch.roll(x, -1, dims=1)))

    x = torch.randn(3, L, S, generator=g, dtype=torch.float64)
    got = token_input_gradients(features, x, chunk=24)  # several chunks
    want = W.sum(0).clamp_min(0).numpy()  # (T, S)
    assert got.shape == (3, L, T, S)
    for b in range(3):
        for lead in range(L):
            np.testing.assert_allclose(got[b, lead], want, rtol=1e-6, atol=1e-6)


def test_gradient_map_peaks_where_the_energy_is():
    """Token t = energy of its own 32-sample window; a positive bump in one window: with
    uniform token weights the map is the (smoothed) 2x inside that window, peaking there."""

    def features(x):
        e = (x**2).view(x.shape[0], L, T, 32).sum(-1)  # (B, L, T)
        return e.unsqueeze(1).repeat(1, 2, 1, 1)  # (B, C=2, L, T)

    x = torch.zeros(1, L, S, dtype=torch.float64)
    x[0, :, 300:316] = torch.hann_window(16, dtype=torch.float64) + 0.1
    grads = token_input_gradients(features, x)
    m = temporal_sample_map(np.full((1, L, T), 1 / T), grads)
    assert m.shape == (1, L, 600)
    peak = m[0].argmax(-1)  # cropped coordinates: padded index - 4
    assert ((peak >= 296) & (peak < 312)).all()
    assert m[0, :, :280].max() == 0 and m[0, :, 330:].max() == 0


def test_smoothing_crop_and_rescale_rules():
    grads = np.zeros((1, 1, 2, S))
    grads[0, 0, 1, 304] = 5.0  # a delta at padded sample 304 = beat sample 300
    grads[0, 0, 0, 10] = 100.0  # a token with zero weight contributes nothing
    m = temporal_sample_map(np.array([[[0.0, 1.0]]]), grads, sigma=4.0)
    d = np.arange(600) - 300
    want = np.where(np.abs(d) <= 16, np.exp(-d**2 / (2 * 16.0)), 0.0)  # scipy truncates at 4 sigma
    np.testing.assert_allclose(m[0, 0], want, atol=1e-12)
    assert center_crop(np.arange(608)).tolist() == list(range(4, 604))
    np.testing.assert_array_equal(rescale01(np.array([[2.0, 2.0], [1.0, 3.0]])),
                                  [[0.0, 0.0], [0.0, 1.0]])


def test_pca_matches_sklearn():
    z = np.random.default_rng(3).normal(size=(40, 6)) * [5, 3, 1, 1, 1, 1]
    proj, share = pca_2d(z)
    ref = PCA(2).fit(z)
    np.testing.assert_allclose(share, ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(proj), np.abs(ref.transform(z)), atol=1e-9)


def test_explain_ecg_of_one_beat(tmp_path):
    beat = np.random.default_rng(0).normal(size=(L, 600)) * 0.3 + 1.0
    res = explain_ecg(_net(), beat, tmp_path / "one.png", title="x")
    assert res["path"].stat().st_size > 10_000 and res["risk"] is None
    assert res["cross_lead"].shape == (L, L) and res["temporal_map"].shape == (L, 600)
    np.testing.assert_allclose(res["temporal_map"].max(-1), 1.0)
    np.testing.assert_allclose(res["temporal_map"].min(-1), 0.0)
    np.testing.assert_allclose(res["beat"].mean(-1), 0.0, atol=1e-5)  # z-scored as in training
    with pytest.raises(ValueError, match="no temporal_map"):
        explain_ecg(_net(temporal_attention=False), beat)
    with pytest.raises(ValueError, match=r"\(12, 600\)"):
        explain_ecg(_net(), beat[:, :500])


# ----------------------------------------------------------------- the command, end to end
@pytest.fixture(scope="module")
def tiny_run(tiny_cox_run) -> Path:
    return tiny_cox_run  # tests/conftest.py: one step per fold, from scratch


def test_each_participant_is_explained_by_its_held_out_model(tiny_run):
    assign = held_out_assignment(tiny_run)
    splits = {(s.seed, s.fold): s for s in load_splits(tiny_run / "splits.json")}
    oof = pd.read_csv(tiny_run / "oof_predictions.csv")
    assert len(assign) == len(oof) and not assign.duplicated(["eid", "seed"]).any()
    for r in assign.itertuples():
        sp = splits[(r.seed, r.fold)]
        assert r.eid in set(sp.test_eid) and r.eid not in set(sp.train_eid) | set(sp.val_eid)
        assert Path(r.checkpoint).parent.parent.name == f"seed{r.seed}_fold{r.fold}"


def test_explain_command_writes_the_figures(tiny_run, capsys):
    assert cli(["explain", str(tiny_run), "--max-gradient-subjects", "1"]) == 0
    out = tiny_run / "explain"
    for name in ("cross_lead", "km_and_cross_lead", "temporal_high_risk", "temporal_low_risk",
                 "latent_pca", "kaplan_meier"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    summary = json.loads((out / "explain.json").read_text())
    md = (out / "explain.md").read_text()
    assert f"n = {summary['n_high']} ({summary['events_high']} events)" in md
    assert f">= {summary['threshold']:.4f}" in md and "cross_lead.png" in md
    assert summary["gradient_subjects"] == {"high": 1, "low": 1}
    with np.load(out / "maps.npz") as z:
        eid, high, cross = z["eid"], z["high"], z["cross_lead"]
        np.testing.assert_allclose(z["cross_lead_high_mean"], cross[high].mean(0), atol=1e-12)
        np.testing.assert_allclose(z["cross_lead_low_std"], cross[~high].std(0), atol=1e-12)
        assert z["temporal_map"].shape == (2, L, 600)
    assert summary["n_high"] == int(high.sum()) and summary["n"] == len(eid)
    np.testing.assert_allclose(cross.sum(-1), 1.0, atol=1e-5)
    singles = list(out.glob("ecg_*.png"))
    assert len(singles) == 1
    # independent route: the held-out model through the datamodule's own predict loader
    assign = held_out_assignment(tiny_run)
    e = int(eid[high][0])
    r = assign[assign.eid == e].iloc[0]
    split = next(s for s in load_splits(tiny_run / "splits.json")
                 if (s.seed, s.fold) == (r.seed, r.fold))
    cache = load_splits_meta(tiny_run / "splits.json")["cache"]
    dm = UKBDataModule(cache, "hyp", split, batch_size=512)
    batch = dm.on_after_batch_transfer(next(iter(dm.predict_dataloader())), 0)
    module = finetune_module_from_checkpoint(r.checkpoint)
    with torch.no_grad():
        want = module(batch["x"], return_attention=True)["cross_lead"][batch["eid"] == e][0]
    np.testing.assert_allclose(cross[eid == e][0], want.numpy(), atol=1e-5)


def test_explain_refuses_cox_baselines_and_tampered_predictions(tiny_run, tmp_path, capsys):
    cox = tmp_path / "cox"
    cox.mkdir()
    save_config(load_config("baselines/biomarker_cox", [f"run_dir={cox}"]), cox / "config.yaml")
    with pytest.raises(ConfigError, match="no network"):
        run_explain(cox)
    assert cli(["explain", str(cox)]) == 2
    assert "task=cox_baseline" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad, ignore=shutil.ignore_patterns("explain"))
    pred = bad / "predictions"
    f0, f1 = pd.read_csv(pred / "seed42_fold0.csv"), pd.read_csv(pred / "seed42_fold1.csv")
    f0.risk = f0.risk + 1.0  # not what the checkpoint computes
    f0.to_csv(pred / "seed42_fold0.csv", index=False)
    with pytest.raises(DataError, match="the cache or checkpoint changed"):
        run_explain(bad, max_gradient_subjects=1)
    f1.assign(fold=0, seed=42).to_csv(pred / "seed42_fold0.csv", index=False)
    with pytest.raises(DataError, match="not in the held-out part"):
        held_out_assignment(bad)

"""`ecg-dan compare`: the paired bootstrap, the comparison table and the CLI end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from omegaconf import OmegaConf
from scipy.stats import norm, rankdata

from data_modules.errors import DataError
from data_modules.protocol.splits import Split
from ecg_dan.cli import main as cli
from ecg_dan.config import load_config, save_config
from ecg_dan.jobs.compare import load_run
from ecg_dan.reporting.comparison import comparison_table, paired_bootstrap_diff
from ecg_dan.reporting.paper import paper_value
from ecg_dan.run_dir import RunDir

SEEDS = (42, 2021)


def _cohort(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latent log-hazard, time, event) of n participants."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    time = np.round(rng.exponential(np.exp(-1.5 * latent)) * 50 + 1, 2)
    event = (rng.random(n) < 0.5).astype(int)
    event[:4] = 1  # a few events whatever the draw
    return latent, time, event


def _oof(risk_by_seed: dict[int, np.ndarray], time: np.ndarray, event: np.ndarray
         ) -> pd.DataFrame:
    """OOF frame, 2 folds per seed (alternating within event strata after a seeded shuffle)."""
    parts = []
    n = len(time)
    for s, risk in risk_by_seed.items():
        order = np.random.default_rng(s).permutation(n)
        fold = np.empty(n, dtype=int)
        for ev in (0, 1):
            members = order[event[order] == ev]
            fold[members] = np.arange(len(members)) % 2
        parts.append(pd.DataFrame({"eid": np.arange(1000, 1000 + n), "seed": s, "fold": fold,
                                   "risk": risk, "time": time, "event": event}))
    return pd.concat(parts, ignore_index=True)


def _model(latent: np.ndarray, noise: float, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: latent + noise * rng.normal(size=len(latent)) for s in SEEDS}


def test_paired_bootstrap_matches_an_explicit_loop():
    latent, time, event = _cohort(40, seed=1)
    a = _oof(_model(latent, 1.0, 2), time, event)
    b = _oof(_model(latent, 2.0, 3), time, event)
    a.loc[a.fold == 1, "risk"] += 5.0  # a fold model's constant: no effect on the fold-mean C
    n_boot, boot_seed = 60, 7
    ci = paired_bootstrap_diff(a, b, n_boot=n_boot, seed=boot_seed)

    # direct computation: wide arrays ordered by eid, stratified draws (event 0, then 1),
    # per seed the mean over folds of the held-out fold's C (lifelines' convention)
    wide = {k: {m: d.pivot(index="eid", columns="seed", values=k).to_numpy()
                for m, d in (("a", a), ("b", b))} for k in ("risk", "fold")}

    def c(model, idx):
        r, f = wide["risk"][model][idx], wide["fold"][model][idx]
        return np.mean([np.mean([concordance_index(time[idx][f[:, k] == g],
                                                   -r[f[:, k] == g, k],
                                                   event[idx][f[:, k] == g])
                                 for g in (0, 1)]) for k in range(len(SEEDS))])

    everyone = np.arange(len(time))
    assert ci.estimate == pytest.approx(c("a", everyone) - c("b", everyone), abs=1e-12)
    rng = np.random.default_rng(boot_seed)
    draws = []
    for ev in (0, 1):
        members = np.flatnonzero(event == ev)
        draws.append(members[rng.integers(0, len(members), size=(n_boot, len(members)))])
    idx = np.concatenate(draws, axis=1)
    diffs = [c("a", idx[i]) - c("b", idx[i]) for i in range(n_boot)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert (ci.low, ci.high) == pytest.approx((lo, hi), abs=1e-12)
    assert ci.n_skipped == 0


def test_paired_ci_contains_zero_for_noise_and_excludes_it_for_a_better_model():
    latent, time, event = _cohort(60, seed=4)
    a = _oof(_model(latent, 1.0, 5), time, event)
    rng = np.random.default_rng(6)
    b_noise = a.assign(risk=a.risk + 0.2 * rng.normal(size=len(a)))
    d = paired_bootstrap_diff(b_noise, a, n_boot=200, seed=0)
    assert d.low <= 0 <= d.high and d.high - d.low < 0.1
    weak = _oof(_model(latent, 4.0, 8), time, event)
    strong = _oof(_model(latent, 0.0, 9), time, event)
    d = paired_bootstrap_diff(strong, weak, n_boot=200, seed=0)
    assert d.estimate > 0.1 and d.low > 0


def _write_run(root, name, oof, overrides=(), train=False):
    run = root / name
    (run / "predictions").mkdir(parents=True)
    cfg = load_config("finetune_hyp", [f"name={name}", f"run_dir={run}", "logging.wandb=false",
                                       *overrides])
    save_config(cfg, run / "config.yaml")
    splits = []
    for (s, f), g in oof.groupby(["seed", "fold"]):
        g.to_csv(run / "predictions" / f"seed{s}_fold{f}.csv", index=False)
        if train:
            tr = oof[(oof.seed == s) & (oof.fold != f)]
            tr.to_csv(run / "predictions" / f"seed{s}_fold{f}_train.csv", index=False)
            val = tr.eid.to_numpy()[::3]  # the inner validation rows that recalibrate it
            rest = np.setdiff1d(tr.eid.to_numpy(), val)
            splits.append(Split(int(s), int(f), rest, val, g.eid.to_numpy(), rest, val,
                                g.eid.to_numpy()))
    if splits:
        RunDir(run).save_splits(splits, meta={"cache": "none.h5", "cohort": "hyp"})
    return run


@pytest.fixture()
def runs(tmp_path):
    latent, time, event = _cohort(40, seed=11)
    proposed = _oof(_model(latent, 0.5, 12), time, event)
    ablation = _oof(_model(latent, 1.5, 13), time, event)
    root = tmp_path / "runs"
    return {"finetune_hyp": (_write_run(root, "finetune_hyp", proposed, train=True), proposed),
            "ablation_no_attention": (_write_run(
                root, "ablation_no_attention", ablation,
                ["model.cross_lead_attention=false", "model.temporal_attention=false"]),
                ablation)}


def test_comparison_table_mean_and_std_as_the_paper(runs):
    loaded = {name: load_run(d) for name, (d, _) in runs.items()}
    table = comparison_table({n: oof for n, (oof, _, _) in loaded.items()}, "finetune_hyp",
                             folds={n: fm for n, (_, fm, _) in loaded.items()},
                             configs={n: c for n, (_, _, c) in loaded.items()}, n_boot=50)
    assert list(table.model) == ["finetune_hyp", "ablation_no_attention"]
    for name, (_, oof) in runs.items():
        row = table[table.model == name].iloc[0]
        per_seed = {s: [concordance_index(g.time, -g.risk, g.event)
                        for _, g in oof[oof.seed == s].groupby("fold")] for s in SEEDS}
        assert row.c_mean == pytest.approx(np.mean([np.mean(v) for v in per_seed.values()]))
        assert row.c_std_paper == pytest.approx(np.mean([np.std(v) for v in per_seed.values()]))
        # pooled across folds on the rank scale: the normal score of the mid-rank within
        # each fold (written out with scipy)
        oof = oof.assign(risk=oof.groupby(["seed", "fold"]).risk.transform(
            lambda r: norm.ppf((rankdata(r) - 0.5) / len(r))))
        pooled = np.mean([concordance_index(g.time, -g.risk, g.event)
                          for _, g in oof.groupby("seed")])
        assert row.c_pooled == pytest.approx(pooled)
        assert row.c_pooled_low <= pooled <= row.c_pooled_high
        assert row.n == 40 and row.events == int(oof[oof.seed == 42].event.sum())
    ref, abl = table.iloc[0], table.iloc[1]
    assert ref.reference and ref.diff_vs_ref == 0 and pd.isna(ref.diff_excludes_0)
    assert abl.diff_vs_ref == pytest.approx(abl.c_mean - ref.c_mean)
    assert abl.diff_low <= abl.diff_vs_ref <= abl.diff_high
    assert np.isfinite(ref.ibs_mean) and np.isnan(abl.ibs_mean)  # *_train.csv for one run
    assert np.isfinite(ref.uno_c_mean) and np.isfinite(abl.uno_c_mean)
    # Antolini's C of each fold's recalibrated curves, summarised as the paper's C
    from ecg_dan.reporting.fold_metrics import fold_antolini

    _, folds, _ = loaded["finetune_hyp"]
    per = {s: [fold_antolini(f) for f in folds if f.key[0] == s] for s in SEEDS}
    assert ref.antolini_c_mean == pytest.approx(np.mean([np.mean(v) for v in per.values()]))
    assert 0.0 < ref.antolini_c_mean < 1.0 and np.isnan(abl.antolini_c_mean)
    assert ref.n_params == 1_274_536 + 110_570 + 2_573  # encoder + decoder + risk head
    assert abl.n_params == 122_840 + 110_570 + 2_573
    assert (ref.paper, abl.paper) == ("0.6349", "")  # finetune_hyp has data.source=real
    synthetic = loaded["finetune_hyp"][2].copy()
    OmegaConf.update(synthetic, "data.source", "synthetic")
    assert paper_value(synthetic) == ""  # not comparable with the paper
    other = loaded["finetune_hyp"][2].copy()  # real data, but another cohort's cache
    OmegaConf.update(other, "data.cohort_cache", "code15.h5")
    assert paper_value(other) == ""


def test_comparison_refuses_different_participants(runs):
    (_, a), (_, b) = runs.values()
    with pytest.raises(DataError, match="'other'.*'finetune_hyp'"):
        comparison_table({"finetune_hyp": a, "other": b[b.eid != 1003]}, "finetune_hyp",
                         n_boot=10)


def test_a_fold_file_without_its_columns_is_refused_naming_it(runs):
    run, _ = runs["ablation_no_attention"]
    csv = sorted((run / "predictions").glob("seed*_fold*.csv"))[0]
    pd.read_csv(csv).drop(columns=["event"]).to_csv(csv, index=False)
    with pytest.raises(DataError, match=rf"{csv.name}: missing column\(s\) \['event'\]"):
        load_run(run)


def test_cli_compare_end_to_end(runs, tmp_path, capsys):
    dirs = [str(d) for d, _ in runs.values()]
    assert cli(["compare", *dirs[::-1], "--n-boot", "50"]) == 0
    out = tmp_path / "runs" / "comparison"
    for f in ("comparison.md", "comparison.csv", "comparison.json", "forest_plot.png"):
        assert (out / f).is_file(), f
    assert (out / "forest_plot.png").stat().st_size > 10_000
    md = (out / "comparison.md").read_text()
    assert "**finetune_hyp** (reference)" in md and "not comparable" in md
    csv = pd.read_csv(out / "comparison.csv")
    assert list(csv.model) == ["ablation_no_attention", "finetune_hyp"]

    # a run scored on other participants: one line, naming both runs, exit 2
    _, oof = runs["finetune_hyp"]
    bad = _write_run(tmp_path / "runs", "short", oof[oof.eid != 1005])
    capsys.readouterr()
    assert cli(["compare", dirs[0], str(bad), "--n-boot", "10", "--out",
                str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'short'" in err[0] and "'finetune_hyp'" in err[0], err


def test_model_kind_and_default_reference():
    from ecg_dan.jobs.compare import default_reference
    from ecg_dan.reporting.run_kind import model_kind

    hyp = load_config("finetune_hyp", ["name=finetune_hyp_synthetic"])
    scratch = load_config("finetune_hyp", ["finetune.scratch=true"])
    abl = load_config("finetune_hyp", ["name=ablation_no_temporal_hyp"])
    cox = load_config("finetune_hyp", ["name=cox", "logging.compare_label=biomarker_cox",
                                       "finetune.cohort=mi"])
    assert [model_kind(c) for c in (hyp, scratch, abl, cox)] == [
        "ecg_dan", "ecg_dan_scratch", "ablation_no_temporal_hyp", "biomarker_cox"]
    assert paper_value(cox) == "0.519–0.540"
    assert default_reference(["a", "b", "c"], [abl, hyp, cox]) == "b"
    assert default_reference(["a", "b"], [abl, cox]) == "a"  # no proposed run: the first
    assert default_reference(["a", "b"], [hyp, hyp]) == "a"  # two: unclear, the first


def test_compare_across_cohorts_gives_the_papers_table_shape(runs, tmp_path):
    """Runs of two cohorts: each cohort compared on its own (own reference and bootstrap),
    then one row per model with each cohort's columns, equal to the per-cohort tables."""
    latent, time, event = _cohort(30, seed=21)
    mi = {"proposed": _oof(_model(latent, 0.5, 22), time, event),
          "ablation_no_attention": _oof(_model(latent, 1.5, 23), time, event)}
    root = tmp_path / "mi"
    mi_dirs = [_write_run(root, "finetune_hyp" if k == "proposed" else k, v,
                          ["finetune.cohort=mi"]) for k, v in mi.items()]
    hyp_dirs = [d for d, _ in runs.values()]
    out = tmp_path / "both"
    md = cli(["compare", *map(str, hyp_dirs + mi_dirs), "--n-boot", "30", "--out", str(out)])
    assert md == 0
    wide = pd.read_csv(out / "comparison.csv")
    assert list(wide.model) == ["finetune_hyp", "ablation_no_attention"]
    for cohort in ("hyp", "mi"):
        per = pd.read_csv(out / f"comparison_{cohort}" / "comparison.csv").set_index("model")
        assert (out / f"comparison_{cohort}" / "forest_plot.png").is_file()
        for field in ("c_mean", "c_std_paper", "c_pooled", "diff_vs_ref", "diff_low"):
            got = wide.set_index("model")[f"{cohort}_{field}"]
            assert np.allclose(got.to_numpy(), per.loc[got.index, field].to_numpy(),
                               equal_nan=True), (cohort, field)
        assert wide.set_index("model")[f"{cohort}_reference"].to_dict() == {
            "finetune_hyp": True, "ablation_no_attention": False}
    # the MI columns are the MI runs' own C-index, not the HYP ones
    ranked = mi["proposed"].assign(risk=mi["proposed"].groupby(["seed", "fold"]).risk.transform(
        lambda r: norm.ppf((rankdata(r) - 0.5) / len(r))))  # pooled on the rank scale
    mi_c = np.mean([concordance_index(g.time, -g.risk, g.event)
                    for _, g in ranked.groupby("seed")])
    assert wide.mi_c_pooled[0] == pytest.approx(mi_c)
    text = (out / "comparison.md").read_text()
    assert "hyp: C mean ± std" in text and "mi: ΔC vs reference" in text

"""The label-efficiency curve of `compare` over runs of two training fractions x two cells."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_modules.protocol.splits import Split
from ecg_dan.config import load_config, save_config
from ecg_dan.jobs.compare import load_run, run_compare
from ecg_dan.reporting.comparison import fold_mean_bootstrap, paired_bootstrap_diff
from ecg_dan.reporting.html_report import build_report
from ecg_dan.run_dir import RunDir
from tests.test_compare import _cohort, _model, _oof

N_BOOT = 40


def _write_frac_run(root, name, oof, fraction):
    """A finished run of ``fraction``: held-out folds as they are, each fold's training rows
    (``*_train.csv``, splits) a seeded event-stratified draw of that share of its training
    fold, as finetune.train_fraction draws them."""
    run = root / f"frac{fraction:g}" / name
    (run / "predictions").mkdir(parents=True)
    cfg = load_config("finetune_hyp", [f"name={name}", f"run_dir={run}", "logging.wandb=false",
                                       f"finetune.train_fraction={fraction}"])
    save_config(cfg, run / "config.yaml")
    splits = []
    for (s, f), g in oof.groupby(["seed", "fold"]):
        g.to_csv(run / "predictions" / f"seed{s}_fold{f}.csv", index=False)
        tr = oof[(oof.seed == s) & (oof.fold != f)]
        tr = pd.concat([e.sample(frac=fraction, random_state=int(s)) for _, e in
                        tr.groupby("event")]).sort_values("eid")
        tr.to_csv(run / "predictions" / f"seed{s}_fold{f}_train.csv", index=False)
        val = tr.eid.to_numpy()[::3]
        rest = np.setdiff1d(tr.eid.to_numpy(), val)
        splits.append(Split(int(s), int(f), rest, val, g.eid.to_numpy(), rest, val,
                            g.eid.to_numpy()))
    RunDir(run).save_splits(splits, meta={"cache": "none.h5", "cohort": "hyp"})
    return run


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    latent, time, event = _cohort(40, seed=31)
    root = tmp_path_factory.mktemp("le") / "matrix"
    dirs = {}
    for frac, noise in ((0.5, 1.5), (1.0, 0.7)):  # more labels: the pretrained closer
        for cell, (n, s) in (("proposed", (noise, 32)), ("scratch", (2.0, 33))):
            dirs[frac, cell] = _write_frac_run(root, cell, _oof(_model(latent, n, s),
                                                                 time, event), frac)
    out = root / "comparison"
    md = run_compare([str(d) for d in dirs.values()], out, n_boot=N_BOOT)
    return dirs, out, md


def test_label_efficiency_groups_fractions_and_pairs_with_scratch(matrix):
    dirs, out, md = matrix
    assert md == out / "label_efficiency.md"
    for f in ("label_efficiency.csv", "label_efficiency.md", "label_efficiency.json",
              "comparison_frac0.5/comparison.md", "comparison_frac1/comparison.md"):
        assert (out / f).is_file(), f
    assert (out / "label_efficiency.png").stat().st_size > 10_000
    table = pd.read_csv(out / "label_efficiency.csv")
    assert list(zip(table.fraction, table.cell)) == [
        (0.5, "proposed"), (0.5, "scratch"), (1.0, "proposed"), (1.0, "scratch")]
    assert list(table.reference) == [False, True, False, True]  # scratch, not the proposed
    loaded = {k: load_run(d) for k, d in dirs.items()}
    for r in table.itertuples():
        oof, folds, _ = loaded[r.fraction, r.cell]
        train = [f.train for f in folds]
        assert r.train_events == pytest.approx(np.mean([t.event.sum() for t in train]))
        assert r.train_participants == pytest.approx(np.mean([len(t) for t in train]))
        c = fold_mean_bootstrap(oof, n_boot=N_BOOT)
        assert (r.c_mean, r.c_low, r.c_high) == pytest.approx(tuple(c))
        assert r.events == int(oof[oof.seed == oof.seed.iloc[0]].event.sum())
    half, full = table[table.fraction == 0.5], table[table.fraction == 1.0]
    assert (half.train_events.to_numpy() < full.train_events.to_numpy()).all()
    assert (half.events.to_numpy() == full.events.to_numpy()).all()  # same held-out people
    # the paired difference is paired_bootstrap_diff's, its SE the replicates' SD
    for frac in (0.5, 1.0):
        a, b = (loaded[frac, c][0] for c in ("proposed", "scratch"))
        d = paired_bootstrap_diff(a, b, n_boot=N_BOOT)
        row = table[(table.fraction == frac) & (table.cell == "proposed")].iloc[0]
        assert (row.diff_vs_ref, row.diff_low, row.diff_high) == pytest.approx(tuple(d))
        assert row.diff_se == pytest.approx(np.std(d.replicates, ddof=1))
        assert row["events_for_0.02"] > row["events_for_0.05"] > 0
        # same resamples: the difference's replicates are those of the single models
        ca, cb = (fold_mean_bootstrap(x, n_boot=N_BOOT) for x in (a, b))
        assert np.allclose(d.replicates, ca.replicates - cb.replicates)
    text = md.read_text()
    assert "Power of the differences" in text and "proposed @ 0.5" in text
    assert "shown" in text and "(reference)" in text
    doc = json.loads((out / "label_efficiency.json").read_text())
    assert doc["fractions"] == [0.5, 1.0] and len(doc["table"]) == 4
    per = (out / "comparison_frac0.5" / "comparison.md").read_text()
    assert "**scratch** (reference)" in per and "events for ΔC 0.02 (80% power)" in per
    rec = json.loads((out / "comparison_frac0.5" / "comparison.json").read_text())
    assert rec["reference"] == "scratch"
    assert next(r for r in rec["table"] if r["model"] == "proposed")["events_for_0.02"] > 0


def test_html_report_shows_the_label_efficiency_curve(matrix):
    _, out, _ = matrix
    page = build_report(out.parent).html
    assert "Label efficiency: <code>comparison</code>" in page
    assert "Comparison: <code>comparison/comparison_frac0.5</code>" in page
    assert page.count("data:image/png;base64") >= 3  # the curve and two forest plots

"""Few-shot probe curve: the labelled-subset draw, the paired bootstrap (against sklearn),
the report, the CLI options, and the draw on the real PTB-XL sample's labels."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data_modules.protocol.splits import ptbxl_split
from data_modules.signal.leads import SUPERCLASSES
from ecg_dan.cli import _lift_options
from ecg_dan.evaluation.few_shot import (
    auroc_rows,
    few_shot_curve,
    few_shot_subsets,
    paired_curve,
    parse_sizes,
)
from ecg_dan.reporting.few_shot import few_shot_markdown, few_shot_plot, few_shot_table


def _labels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 5)) < [0.45, 0.25, 0.25, 0.2, 0.12]).astype(np.float32)
    folds = rng.integers(1, 11, n)
    return y, folds


def test_subsets_k_positives_nested_deterministic_training_folds_only():
    y, folds = _labels(400)
    split = ptbxl_split(folds)
    train = split["train"]
    sizes = [5, 10, 20, "all"]
    a = few_shot_subsets(y[train], sizes, draw=3, seed=72)
    assert {k: v.tolist() for k, v in a.items()} == \
        {k: v.tolist() for k, v in few_shot_subsets(y[train], sizes, 3, 72).items()}
    assert a[5].tolist() != few_shot_subsets(y[train], sizes, 4, 72)[5].tolist()
    for k in (5, 10, 20):
        pos = y[train][a[k]].sum(0)
        assert (pos >= np.minimum(k, y[train].sum(0))).all()  # k positives of each class
        rows = train[a[k]]
        assert set(folds[rows]) <= set(range(1, 9))  # never validation or test
        assert not set(rows) & set(split["test"]) and not set(rows) & set(split["val"])
    assert set(a[5]) <= set(a[10]) <= set(a[20])  # nested
    assert a["all"].tolist() == list(range(len(train)))
    # a class with fewer positives than k contributes all it has
    tiny = np.zeros((30, 2))
    tiny[:3, 0] = 1
    tiny[3:, 1] = 1
    assert set(few_shot_subsets(tiny, [5], 0)[5][:3]) == {0, 1, 2}


def test_auroc_rows_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, (6, 40)).astype(float)  # many ties
    y = rng.random((6, 40)) < 0.3
    got = auroc_rows(s, y)
    assert np.allclose(got, [roc_auc_score(y[i], s[i]) for i in range(6)])
    assert np.isnan(auroc_rows(s[:1], np.zeros((1, 40))))[0]


def _independent_bootstrap(a, b, y, classes, n_boot, seed):
    """The paired two-level bootstrap written out with sklearn, for the check below."""
    rng = np.random.default_rng(seed)
    D, n = a.shape[:2]

    def macro(s, yy):
        vals = [roc_auc_score(yy[:, j], s[:, j]) for j in classes
                if 0 < yy[:, j].sum() < len(yy)]
        return np.mean(vals) if vals else np.nan

    out = []
    for _ in range(n_boot):
        draws, rows = rng.integers(0, D, D), rng.integers(0, n, n)
        ra = np.array([macro(a[d][rows], y[rows]) for d in draws])
        rb = np.array([macro(b[d][rows], y[rows]) for d in draws])
        out.append([np.nanmean(ra), np.nanmean(rb), np.nanmean(ra - rb)])
    return np.percentile(np.array(out), [2.5, 97.5], axis=0)


def test_paired_curve_against_sklearn():
    rng = np.random.default_rng(2)
    n, D = 60, 3
    y = rng.random((n, 5)) < [0.5, 0.3, 0.3, 0.3, 0.05]  # HYP: 3 positives -> excluded
    y[:3, 4], y[3:, 4] = True, False
    signal = y.astype(float)
    a = signal[None] + rng.normal(0, 0.5, (D, n, 5))
    b = signal[None] + rng.normal(0, 3.0, (D, n, 5))
    res = paired_curve({"pretrained": a, "random init": b}, y, SUPERCLASSES, n_boot=12, seed=5)
    classes = [0, 1, 2, 3]
    assert res["classes"] == ["NORM", "MI", "STTC", "CD"]
    assert res["excluded_classes"] == {"HYP": 3}
    hand = {k: np.mean([np.mean([roc_auc_score(y[:, j], s[d][:, j]) for j in classes])
                        for d in range(D)]) for k, s in (("a", a), ("b", b))}
    assert res["estimate"]["pretrained"] == pytest.approx(hand["a"])
    assert res["estimate"]["random init"] == pytest.approx(hand["b"])
    assert res["estimate"]["difference"] == pytest.approx(hand["a"] - hand["b"])
    lo, hi = _independent_bootstrap(a, b, y, classes, 12, 5)
    keys = ["pretrained", "random init", "difference"]
    assert [res["ci_low"][k] for k in keys] == pytest.approx(lo.tolist())
    assert [res["ci_high"][k] for k in keys] == pytest.approx(hi.tolist())
    assert res["ci_low"]["difference"] > 0  # the less noisy scores win, CI excludes 0


def test_curve_report_and_figure(tmp_path):
    y, _ = _labels(220, seed=3)
    rng = np.random.default_rng(4)
    feats = {"pretrained": y @ rng.normal(size=(5, 16)) + rng.normal(0, 1, (220, 16)),
             "random init": rng.normal(size=(220, 16))}
    tr, te = slice(0, 160), slice(160, None)
    curve = few_shot_curve({k: (f[tr], f[te]) for k, f in feats.items()}, y[tr], y[te],
                           SUPERCLASSES, sizes=[5, "all"], n_draws=3, n_boot=30)
    r5, rall = curve["rows"]
    assert (r5["n_draws"], rall["n_draws"]) == (3, 1)
    assert r5["min_class_positives"] >= 5
    assert rall["estimate"]["pretrained"] > rall["estimate"]["random init"]
    table = few_shot_table(curve)
    assert len(table) == 6 and set(table.series) == {"pretrained", "random init",
                                                      "difference"}
    md = few_shot_markdown(curve)
    assert "Small sample" in md and "| 5 |" in md
    assert few_shot_plot(curve, tmp_path / "f.png").stat().st_size > 1000


def test_sizes_and_cli_options():
    assert parse_sizes("5, 10,all") == [5, 10, "all"]
    with pytest.raises(ValueError, match="'0'"):
        parse_sizes("0,5")
    rest, found = _lift_options(["evaluate", "pretrain", "x.ckpt", "--few-shot", "5,all",
                                 "data.ptbxl_dir=P", "--few-shot-draws=3"])
    assert rest == ["evaluate", "pretrain", "x.ckpt", "data.ptbxl_dir=P"]
    assert found == {"--few-shot": "5,all", "--few-shot-draws": "3"}


def test_real_sample_draw(ptbxl_dir):
    """On the real sample's labels and folds: 20 per class exist in folds 1-8 for every
    superclass, and the test fold is small enough for the report to say so."""
    meta = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    st = pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0)
    cls = st["diagnostic_class"].dropna()
    y = np.array([[any(c in cls.index and cls[c] == s and v > 0
                       for c, v in ast.literal_eval(codes).items()) for s in SUPERCLASSES]
                  for codes in meta.scp_codes])
    split = ptbxl_split(meta.strat_fold.to_numpy())
    sub = few_shot_subsets(y[split["train"]], [20], draw=0, seed=72)[20]
    assert (y[split["train"]][sub].sum(0) >= 20).all()
    assert len(split["test"]) < 500 and y[split["test"]].sum(0).min() < 30

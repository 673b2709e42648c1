"""Results table (paper's mean / std conventions), Markdown rendering and the KM plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_ipcw
from sksurv.util import Surv

from ecg_dan.reporting.figures import kaplan_meier_plot
from ecg_dan.reporting.markdown import to_markdown
from ecg_dan.reporting.tables import MIN_TD_AUC_EVENTS, results_table, summarize_folds

# UKB-MI per-fold C-indices from docs/method.md section 6 (seed: fold 0, fold 1); paper: 0.5805.
UKB_MI = {
    42: (0.4943, 0.6701),
    2021: (0.5874, 0.5479),
    2022: (0.6468, 0.6093),
    2023: (0.6478, 0.3953),
    2024: (0.5656, 0.6407),
}


def _row(table: pd.DataFrame, kind: str, **where) -> pd.Series:
    sel = table["row"] == kind
    for k, v in where.items():
        sel &= table[k] == v
    assert sel.sum() == 1, (kind, where)
    return table[sel].iloc[0]


# ---------------------------------------------------------------------- hand-made OOF frame
# participant: (time, event)
_SURV = {1: (1, 1), 2: (2, 0), 3: (3, 1), 4: (4, 0), 5: (1, 1), 6: (2, 1), 7: (3, 0), 8: (5, 0)}
# seed -> fold -> {eid: risk}. Hand-computed Harrell C (earlier member must have the event):
# seed 1 fold 0, eids 1-4: pairs (1,2) (1,3) (1,4) (3,4); concordant 3           -> 3/4
# seed 1 fold 1, eids 5-8: pairs (5,6) (5,7) (5,8) (6,7) (6,8); conc. (5,8) (6,8),
#                          tie (6,7)                                             -> 2.5/5
# seed 2 fold 0, eids 1,3,5,7: pairs (1,3) (1,7) (5,3) (5,7) (3,7) [3 event, 7 censored
#                          at the same time]; (1,5) both events at t=1: not comparable;
#                          concordant all but (5,3)                              -> 4/5
# seed 2 fold 1, eids 2,4,6,8: pairs (6,2) [same time, 2 censored] (6,4) (6,8);
#                          ties (6,2) (6,4), (6,8) discordant                    -> 1/3
_RISK = {
    1: {0: {1: 4.0, 2: 3.0, 3: 1.0, 4: 2.0}, 1: {5: 1.0, 6: 2.0, 7: 2.0, 8: 0.0}},
    2: {0: {1: 3.0, 3: 2.0, 5: 1.0, 7: 0.0}, 1: {2: 1.0, 4: 1.0, 6: 1.0, 8: 2.0}},
}
_HAND_C = {(1, 0): 0.75, (1, 1): 0.5, (2, 0): 0.8, (2, 1): 1 / 3}
_HAND_EVENTS = {(1, 0): 2, (1, 1): 2, (2, 0): 3, (2, 1): 1}


def _hand_df() -> pd.DataFrame:
    rows = [
        {"eid": eid, "seed": s, "fold": f, "risk": r, "time": _SURV[eid][0], "event": _SURV[eid][1]}
        for s, folds in _RISK.items()
        for f, risks in folds.items()
        for eid, r in risks.items()
    ]
    return pd.DataFrame(rows)


def test_results_table_on_hand_made_frame() -> None:
    df = _hand_df()
    table = results_table(df, n_boot=0)
    for (s, f), c in _HAND_C.items():
        row = _row(table, "fold", seed=s, fold=f)
        assert row["harrell_c"] == pytest.approx(c)
        assert row["n"] == 4
        assert row["events"] == _HAND_EVENTS[(s, f)]
    # mean over seeds of fold means: (0.625 + 0.5666...) / 2
    assert _row(table, "mean")["harrell_c"] == pytest.approx((0.625 + (0.8 + 1 / 3) / 2) / 2)
    # mean over seeds of across-fold np.std (ddof=0): (0.125 + 0.2333...) / 2
    assert _row(table, "std_paper")["harrell_c"] == pytest.approx((0.125 + (0.8 - 1 / 3) / 2) / 2)
    assert _row(table, "std_all")["harrell_c"] == pytest.approx(np.std(list(_HAND_C.values())))
    for s in (1, 2):
        g = df[df["seed"] == s]
        pooled = _row(table, "pooled_seed", seed=s)
        assert pooled["harrell_c"] == pytest.approx(concordance_index(g.time, -g.risk, g.event))
        assert pooled["n"] == 8
        assert pooled["events"] == 4
    overall = _row(table, "pooled")
    per_seed = [_row(table, "pooled_seed", seed=s)["harrell_c"] for s in (1, 2)]
    assert overall["harrell_c"] == pytest.approx(np.mean(per_seed))
    assert "uno_c" not in table.columns


def test_results_table_validates_input() -> None:
    df = _hand_df()
    with pytest.raises(ValueError, match="lacks columns"):
        results_table(df.drop(columns="risk"))
    with pytest.raises(ValueError, match="more than once"):
        results_table(pd.concat([df, df.iloc[:1]]))


# --------------------------------------------------------------- UKB-MI 0.5805 reproduction


def test_summary_reproduces_paper_ukb_mi_from_per_fold_values() -> None:
    folds = pd.DataFrame(
        [{"seed": s, "fold": f, "c": c} for s, cs in UKB_MI.items() for f, c in enumerate(cs)]
    )
    summary = summarize_folds(folds, "c")
    assert round(summary["mean"], 4) == 0.5805
    # the authors' std: np.std (ddof=0) per seed, averaged; ddof=1 would give 0.0821
    assert round(summary["std_paper"], 4) == 0.0580
    assert summary["std_all"] == pytest.approx(np.std([c for cs in UKB_MI.values() for c in cs]))


def _fold_with_cindex(c: float, eid0: int, seed: int, fold: int) -> list[dict]:
    """200 participants whose Harrell C is exactly c (4 decimals): 100 events at t=1 vs
    100 censored at t=2 gives 10,000 comparable pairs; control risks are 0..99 and event i gets
    risk k_i - 0.5, i.e. beats exactly k_i controls, with sum k_i = 10,000 c."""
    k_total = round(c * 10_000)
    k = np.full(100, k_total // 100)
    k[: k_total % 100] += 1
    rows = [
        {"eid": eid0 + i, "seed": seed, "fold": fold, "risk": k[i] - 0.5, "time": 1.0, "event": 1}
        for i in range(100)
    ]
    rows += [
        {
            "eid": eid0 + 100 + j,
            "seed": seed,
            "fold": fold,
            "risk": float(j),
            "time": 2.0,
            "event": 0,
        }
        for j in range(100)
    ]
    return rows


def test_results_table_reproduces_paper_ukb_mi_mean() -> None:
    rows = []
    for s, cs in UKB_MI.items():
        for f, c in enumerate(cs):
            rows += _fold_with_cindex(c, eid0=200 * f, seed=s, fold=f)
    table = results_table(pd.DataFrame(rows), n_boot=20)
    for s, cs in UKB_MI.items():
        for f, c in enumerate(cs):
            assert _row(table, "fold", seed=s, fold=f)["harrell_c"] == pytest.approx(c, abs=1e-12)
    assert round(_row(table, "mean")["harrell_c"], 4) == 0.5805
    assert round(_row(table, "std_paper")["harrell_c"], 4) == 0.0580
    pooled = _row(table, "pooled")
    assert pooled["ci_low"] <= pooled["harrell_c"] <= pooled["ci_high"]
    assert pooled["n"] == 400


# ------------------------------------------------------------------------ Uno C / td-AUC


def _synthetic_oof(n: int = 240, seeds=(0, 1), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_ev = rng.exponential(20 * np.exp(-x))
    t_c = rng.uniform(5, 60, size=n)
    time = np.round(np.minimum(t_ev, t_c), 1) + 1.0
    event = (t_ev <= t_c).astype(int)
    frames = []
    for s in seeds:
        fold = np.random.default_rng(100 + s).permutation(n) % 2
        risk = x + rng.normal(scale=0.5, size=n)
        frames.append(
            pd.DataFrame(
                {
                    "eid": np.arange(n),
                    "seed": s,
                    "fold": fold,
                    "risk": risk,
                    "time": time,
                    "event": event,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_results_table_uno_and_td_auc_with_oof_lookup() -> None:
    df = _synthetic_oof()
    table = results_table(df, train_lookup="oof", horizons=[10.0, 20.0], n_boot=0)
    assert {"uno_c", "td_auc_mean", "td_auc@10", "td_auc@20"} <= set(table.columns)
    for (s, f), test in df.groupby(["seed", "fold"]):
        train = df[(df.seed == s) & (df.fold != f)]
        ref = concordance_index_ipcw(
            Surv.from_arrays(train.event.astype(bool), train.time),
            Surv.from_arrays(test.event.astype(bool), test.time),
            test.risk.to_numpy(),
            tau=train.time.max(),
        )[0]
        row = _row(table, "fold", seed=s, fold=f)
        assert row["uno_c"] == pytest.approx(ref, abs=1e-9)
        assert 0.5 < row["td_auc@10"] <= 1.0  # risk is informative
    mean_uno = _row(table, "mean")["uno_c"]
    fold_uno = table.loc[table.row == "fold", ["seed", "uno_c"]]
    assert mean_uno == pytest.approx(fold_uno.groupby("seed")["uno_c"].mean().mean())


def test_td_auc_left_empty_below_the_minimum_of_events() -> None:
    """A horizon before which a fold has fewer than MIN_TD_AUC_EVENTS events gets no AUC in
    that fold, and no mean / std either (not the one fold's value with std 0)."""
    df = _synthetic_oof(seeds=(1,))
    first = df[df.fold == 0].sort_values("time")
    # the earliest events of fold 0: a horizon just after its (MIN - 1)-th event
    ev_times = first.time[first.event == 1].to_numpy()
    h = float(ev_times[MIN_TD_AUC_EVENTS - 2]) + 1e-3
    other = df[df.fold == 1]
    n_other = int(((other.time <= h) & (other.event == 1)).sum())
    table = results_table(df, train_lookup="oof", horizons=[h, 20.0], n_boot=0)
    col = f"td_auc@{h:g}"
    assert np.isnan(_row(table, "fold", seed=1, fold=0)[col])
    assert np.isnan(_row(table, "mean")[col]) and np.isnan(_row(table, "std_paper")[col])
    if n_other >= MIN_TD_AUC_EVENTS:  # the other fold still has its own AUC
        assert np.isfinite(_row(table, "fold", seed=1, fold=1)[col])
    assert np.isfinite(_row(table, "mean")["td_auc@20"])


def test_mapping_lookup_equals_oof_lookup() -> None:
    df = _synthetic_oof()
    mapping = {
        (s, f): df[(df.seed == s) & (df.fold != f)][["time", "event"]]
        for s in df.seed.unique()
        for f in (0, 1)
    }
    a = results_table(df, train_lookup="oof", horizons=[15.0], n_boot=0)
    b = results_table(df, train_lookup=mapping, horizons=[15.0], n_boot=0)
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------------- markdown


def test_to_markdown_renders_every_row() -> None:
    table = results_table(_hand_df(), n_boot=0)
    md = to_markdown(table)
    lines = md.strip().splitlines()
    assert len(lines) == len(table) + 2
    assert lines[0].startswith("| row | seed | fold | n | events | harrell_c |")
    assert "| fold | 1 | 0 | 4 | 2 | 0.7500 |" in md
    assert "| mean |  |  |  |  | 0.5958 |" in md  # NaN / NA cells are blank


# ------------------------------------------------------------------------------- KM plot


def test_kaplan_meier_plot_writes_png_atomically(tmp_path) -> None:
    df = _synthetic_oof(n=200, seeds=(0, 1, 2))
    out = tmp_path / "km" / "high_risk.png"
    res = kaplan_meier_plot(df, top_fraction=0.04, out_png=out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in out.parent.iterdir()] == ["high_risk.png"]  # no temp file left
    # mean risk over seeds, top 4% of 200 participants -> the 8 highest means
    mean_risk = df.groupby("eid")["risk"].mean()
    top = mean_risk.sort_values(ascending=False).index[:8]
    assert res["n_high"] == 8 and res["n_low"] == 192
    per_eid = df.groupby("eid")[["time", "event"]].first()
    hi, lo = per_eid.loc[top], per_eid.drop(index=top)
    ref = logrank_test(hi.time, lo.time, hi.event, lo.event).p_value
    assert res["p_value"] == pytest.approx(ref)
    assert res["events_high"] == hi.event.sum()


def test_kaplan_meier_plot_per_seed_grouping(tmp_path) -> None:
    df = _synthetic_oof(n=200, seeds=(0, 1))
    res = kaplan_meier_plot(df, top_fraction=0.1, out_png=tmp_path / "km.png", grouping="per_seed")
    assert res["n_high"] == 40  # 10% of 200 in each of 2 seeds
    assert (tmp_path / "km.png").stat().st_size > 0
    with pytest.raises(ValueError, match="grouping"):
        kaplan_meier_plot(df, out_png=tmp_path / "x.png", grouping="bogus")  # type: ignore[arg-type]


def test_kaplan_meier_label_states_the_real_size_when_top_risks_tie(tmp_path) -> None:
    rng = np.random.default_rng(3)
    n = 400
    risk = rng.normal(size=n)
    risk[:40] = 9.0  # 10% share the top score; top_fraction asks for 2%
    df = pd.DataFrame({"eid": np.arange(n), "seed": 1, "fold": np.arange(n) % 2, "risk": risk,
                       "time": rng.uniform(1, 50, n), "event": rng.integers(0, 2, n)})
    res = kaplan_meier_plot(df, top_fraction=0.02, out_png=tmp_path / "km.png")
    assert res["n_high"] == 40
    assert "ties" in res["high_label"] and "10.0%" in res["high_label"]
    untied = df.assign(risk=rng.normal(size=n))
    res = kaplan_meier_plot(untied, top_fraction=0.02, out_png=tmp_path / "km2.png")
    assert res["n_high"] == 8 and "ties" not in res["high_label"]

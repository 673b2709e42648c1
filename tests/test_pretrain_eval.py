"""Evaluation of pretrained encoders on synthetic embeddings with known answers."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ecg_dan.evaluation import (
    SUPERCLASSES,
    compare_probes,
    linear_probe,
    retrieval_recall,
    superclass_prompts,
    superclass_text_embeddings,
    zero_shot_superclass,
)
from ecg_dan.reporting.markdown import results_markdown
from ecg_dan.text import load_statements, statement_text


def _split(x, y, rng):
    idx = rng.permutation(len(x))
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return [(x[i], y[i]) for i in (idx[:a], idx[a:b], idx[b:])]


def _separable(n=1000, d=16, k=3, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w = rng.standard_normal((d, k))
    y = (x @ w + noise * rng.standard_normal((n, k)) > 0).astype(np.float32)
    return x, y, rng


# --- linear probe --------------------------------------------------------------------


def test_probe_separable_classes_near_perfect():
    x, y, rng = _separable()
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    res = linear_probe(tx, ty, vx, vy, sx, sy, class_names=["A", "B", "C"])
    assert res["kind"] == "linear_probe"
    assert list(res["per_class"]) == ["A", "B", "C"] and res["skipped"] == []
    assert res["macro_auroc"] > 0.95
    assert all(v["auroc"] > 0.95 for v in res["per_class"].values())


def test_probe_random_features_are_chance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1200, 16))
    y = (rng.random((1200, 3)) < 0.4).astype(int)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    res = linear_probe(tx, ty, vx, vy, sx, sy)
    assert abs(res["macro_auroc"] - 0.5) < 0.08


def test_probe_choice_of_c_ignores_test_labels():
    x, y, rng = _separable(noise=1.5, seed=3)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    a = linear_probe(tx, ty, vx, vy, sx, sy)
    flipped = linear_probe(tx, ty, vx, vy, sx, rng.permutation(sy))
    for c in a["per_class"]:
        assert a["per_class"][c]["C"] == flipped["per_class"][c]["C"]
        assert a["per_class"][c]["val_auroc"] == flipped["per_class"][c]["val_auroc"]
    assert a["macro_auroc"] != flipped["macro_auroc"]  # test labels do reach the score
    # ... while validation labels do drive the choice: it is the val-AUROC argmax.
    for v in a["per_class"].values():
        best = max(v["val_auroc_by_C"].items(), key=lambda kv: (kv[1], -kv[0]))
        assert v["C"] == best[0] and v["C_selected_by"] == "val_auroc"


def test_probe_changing_val_labels_can_change_c():
    x, y, rng = _separable(noise=1.5, seed=4)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    a = linear_probe(tx, ty, vx, vy, sx, sy)
    chosen = []
    for seed in range(6):
        shuffled = np.random.default_rng(seed).permutation(vy)
        chosen.append(linear_probe(tx, ty, vx, shuffled, sx, sy)["per_class"])
    assert any(r[c]["C"] != a["per_class"][c]["C"] for r in chosen for c in r)


def test_probe_is_scale_invariant_because_it_standardises_on_train():
    x, y, rng = _separable(noise=1.0, seed=5)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    scale = np.geomspace(1e-3, 1e3, x.shape[1])
    a = linear_probe(tx, ty, vx, vy, sx, sy)
    b = linear_probe(tx * scale + 7, ty, vx * scale + 7, vy, sx * scale + 7, sy)
    assert a["macro_auroc"] == pytest.approx(b["macro_auroc"], abs=1e-3)


def test_probe_skips_and_lists_classes_missing_a_label_in_test():
    x, y, rng = _separable(k=3)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    sy = sy.copy()
    sy[:, 1] = 0
    res = linear_probe(tx, ty, vx, vy, sx, sy, class_names=["A", "B", "C"])
    assert res["skipped"] == ["B"] and "B" not in res["per_class"]
    assert res["macro_auroc"] == pytest.approx(
        np.mean([res["per_class"][c]["auroc"] for c in ("A", "C")])
    )


def test_probe_accepts_1d_labels():
    x, y, rng = _separable(k=1)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y[:, 0], rng)
    res = linear_probe(tx, ty, vx, vy, sx, sy, Cs=(0.1, 1.0))
    assert list(res["per_class"]) == ["class_0"] and res["macro_auroc"] > 0.95


def test_compare_probes_and_markdown():
    x, y, rng = _separable(k=5, noise=0.5)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, rng)
    pre = linear_probe(tx, ty, vx, vy, sx, sy, Cs=(0.1, 1.0))
    noise = rng.standard_normal(x.shape)
    (rtx, _), (rvx, _), (rsx, _) = _split(noise, y, np.random.default_rng(0))
    rnd = linear_probe(rtx, ty, rvx, vy, rsx, sy, Cs=(0.1, 1.0))
    cmp = compare_probes(pre, rnd)
    assert list(cmp["per_class"]) == list(SUPERCLASSES)
    assert cmp["macro"]["delta"] == pytest.approx(pre["macro_auroc"] - rnd["macro_auroc"])
    assert cmp["macro"]["delta"] > 0.2
    md = results_markdown(cmp)
    assert md.splitlines()[0] == "| class | pretrained AUROC | random init AUROC | Δ |"
    assert f"| **macro** | {pre['macro_auroc']:.3f} | {rnd['macro_auroc']:.3f} |" in md
    assert len(md.strip().splitlines()) == 2 + 1 + len(SUPERCLASSES)


# --- retrieval -----------------------------------------------------------------------


def test_retrieval_identity_is_perfect():
    emb = np.eye(50)
    res = retrieval_recall(emb, emb, ks=(1, 5))
    assert res["recall"] == {1: 1.0, 5: 1.0} and res["median_rank"] == 1.0


def test_retrieval_unrelated_embeddings_are_chance():
    rng = np.random.default_rng(0)
    text = rng.standard_normal((400, 32))
    ecg = text[rng.permutation(400)]
    res = retrieval_recall(ecg, text, ks=(1, 40, 100), chunk=64)
    assert res["chance"] == {1: 1 / 400, 40: 0.1, 100: 0.25}
    assert res["recall"][1] < 0.02
    assert abs(res["recall"][40] - 0.1) < 0.05 and abs(res["recall"][100] - 0.25) < 0.07


def test_retrieval_collapses_duplicate_texts():
    a, b, c = np.eye(3)
    text = np.stack([a, a, a, a, a, b, c])  # five records share text "a"
    ecg = text.copy()
    ecg[5] = 0.9 * a + 0.5 * b  # ECG of the "b" record: nearest is a, then b
    res = retrieval_recall(ecg, text, ks=(1, 2))
    assert res["n_distinct_texts"] == 3
    # b ranks 2nd among the 3 distinct texts (it would be 6th among all 7 rows).
    assert res["recall"][1] == pytest.approx(6 / 7) and res["recall"][2] == 1.0


def test_retrieval_uses_cosine_not_dot_product():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    ecg = np.array([[1.0, 0.1], [0.1, 1.0]]) * np.array([[1.0], [100.0]])
    assert retrieval_recall(ecg, text * np.array([[100.0], [1.0]]), ks=(1,))["recall"][1] == 1.0


# --- zero-shot -----------------------------------------------------------------------


def test_zero_shot_known_answer_and_chance():
    rng = np.random.default_rng(0)
    labels = (rng.random((600, 5)) < 0.3).astype(int)
    classes = np.eye(5)
    ecg = labels + 0.3 * rng.standard_normal(labels.shape)
    good = zero_shot_superclass(ecg, classes, labels)
    assert list(good["per_class"]) == list(SUPERCLASSES)
    assert good["macro_auroc"] > 0.95 and good["top1_hit"] > 0.9
    bad = zero_shot_superclass(rng.standard_normal(labels.shape), classes, labels)
    assert abs(bad["macro_auroc"] - 0.5) < 0.08


def test_zero_shot_mapping_input_and_skipped_class():
    rng = np.random.default_rng(1)
    labels = (rng.random((200, 3)) < 0.5).astype(int)
    labels[:, 2] = 0
    cls = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}
    res = zero_shot_superclass(labels + 0.1 * rng.standard_normal(labels.shape), cls, labels)
    assert res["skipped"] == ["z"] and set(res["per_class"]) == {"x", "y"}
    assert res["per_class"]["x"]["auroc"] > 0.95


def test_superclass_prompts_from_real_statements():
    st = load_statements()
    prompts = superclass_prompts(st)
    assert list(prompts) == list(SUPERCLASSES)
    assert prompts["NORM"] == ["Normal/abnormal: normal ECG"]
    assert (
        statement_text("IMI", st) in prompts["MI"]
        and statement_text("IMI", st) not in prompts["CD"]
    )
    counts = st["diagnostic_class"].value_counts()
    assert {c: len(v) for c, v in prompts.items()} == {c: int(counts[c]) for c in SUPERCLASSES}


class _FakeEncoder:
    name, revision, dim = "fake", "r1", 6

    def vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, texts, batch_size=64):
        return np.stack([self.vec(t) for t in texts])


def test_superclass_text_embeddings_are_statement_means(tmp_path):
    st = load_statements()
    enc = _FakeEncoder()
    emb = superclass_text_embeddings(st, enc, tmp_path)
    assert list(emb) == list(SUPERCLASSES)
    np.testing.assert_allclose(emb["NORM"], enc.vec("Normal/abnormal: normal ECG"), rtol=1e-6)
    mi = np.mean([enc.vec(t) for t in superclass_prompts(st)["MI"]], axis=0)
    np.testing.assert_allclose(emb["MI"], mi, rtol=1e-5, atol=1e-6)


# --- markdown ------------------------------------------------------------------------


def test_results_markdown_runs_side_by_side():
    # hand-made results with known numbers: the expected cells do not come from the code
    probe = {"kind": "linear_probe", "macro_auroc": 0.81249,
             "per_class": {"A": {"auroc": 0.75}, "B": {"auroc": 0.875}}}
    retr = retrieval_recall(np.eye(4), np.eye(4), ks=(1,))
    md = results_markdown(
        {"pretrained": [probe, retr], "random init": {"probe": probe}, "note": {"epochs": 3}}
    )
    lines = md.strip().splitlines()
    assert lines[0] == "| metric | pretrained | random init | note |"
    assert "| linear probe macro-AUROC | 0.812 | 0.812 |  |" in lines
    assert "| linear probe AUROC B | 0.875 | 0.875 |  |" in lines
    assert "| ECG→text recall@1 | 1.000 |  |  |" in lines
    assert "| epochs |  |  | 3 |" in lines
    single = results_markdown(retr)
    assert "| ECG→text recall@1 | 1.000 |" in single and "| distinct texts | 4 |" in single


def test_retrieval_of_a_collapsed_projector_scores_chance_not_perfect():
    # every ECG embedding identical and equally similar to all six distinct texts:
    # the expected recall under random tie-breaking is k / m, the expected rank (m + 1) / 2
    ecg = np.tile(np.array([[1.0, 0.0, 0.0]]), (6, 1))
    txt = np.array([[0.0, np.cos(a), np.sin(a)] for a in np.linspace(0, 2, 6)])
    res = retrieval_recall(ecg, txt, ks=(1, 3, 6))
    assert res["recall"] == {1: pytest.approx(1 / 6), 3: pytest.approx(0.5), 6: 1.0}
    assert res["median_rank"] == pytest.approx(3.5)

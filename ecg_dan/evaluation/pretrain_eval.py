"""How good is a pretrained ECG encoder? Pure functions over numpy embeddings.

* :func:`linear_probe` - frozen-feature logistic regression per superclass, the standard
  test of whether pretraining produced linearly useful features (run it for the pretrained
  and a random-init encoder and put both through :func:`compare_probes`).
* :func:`retrieval_recall` - does an ECG's projected embedding find its own report text?
  Tests the alignment objective directly.
* :func:`zero_shot_superclass` - ranking ECGs by similarity to class statements, with no
  labels used at all.

Every result dict carries ``"kind"`` so ``ecg_dan.reporting.markdown.results_markdown`` can
lay it out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ecg_dan.text.embedding_cache import embed_texts
from ecg_dan.text.recipes import statement_text

#: PTB-XL diagnostic superclasses, in the order of the cache's ``superclass`` column.
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
#: Inverse L2 strengths tried per class (log grid, strong to weak regularisation).
DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _as_2d_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{name} must be (n,) or (n, n_classes), got shape {y.shape}")
    return (y > 0.5).astype(np.int8)


def _class_names(n: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return list(SUPERCLASSES) if n == len(SUPERCLASSES) else [f"class_{i}" for i in range(n)]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} label columns")
    return [str(c) for c in class_names]


def _has_both(y: np.ndarray) -> bool:
    return bool(y.min() != y.max()) if len(y) else False


def _macro(per_class: Mapping[str, Mapping[str, float]], key: str = "auroc") -> float:
    vals = [v[key] for v in per_class.values()]
    return float(np.mean(vals)) if vals else float("nan")


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    Cs: Sequence[float] = DEFAULT_CS,
    class_names: Sequence[str] | None = None,
    max_iter: int = 2000,
) -> dict[str, Any]:
    """One L2 logistic regression per class on frozen features; test AUROC per class.

    Features are standardised with train statistics only. C is chosen per class by
    validation AUROC (ties go to the smaller C, i.e. stronger regularisation), so the test
    set never influences a choice. The chosen model is the one fitted on train (no refit on
    train+val), keeping validation purely for selection. Classes lacking both labels in
    train or test are skipped and listed; a class lacking both labels in val keeps C = 1.
    """
    train_y = _as_2d_labels(train_y, "train_y")
    val_y = _as_2d_labels(val_y, "val_y")
    test_y = _as_2d_labels(test_y, "test_y")
    if not (train_y.shape[1] == val_y.shape[1] == test_y.shape[1]):
        raise ValueError("train_y, val_y and test_y must have the same number of classes")
    names = _class_names(train_y.shape[1], class_names)
    cs = sorted(float(c) for c in Cs)
    if not cs:
        raise ValueError("Cs must not be empty")
    scaler = StandardScaler().fit(np.asarray(train_x, dtype=np.float64))
    xtr, xva, xte = (
        scaler.transform(np.asarray(x, dtype=np.float64)) for x in (train_x, val_x, test_x)
    )

    per_class: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for j, name in enumerate(names):
        ytr, yva, yte = train_y[:, j], val_y[:, j], test_y[:, j]
        if not _has_both(ytr):
            skipped[name] = "train has a single label"
            continue
        if not _has_both(yte):
            skipped[name] = "test has a single label"
            continue
        fits: list[tuple[float, float, LogisticRegression]] = []
        for c in cs:
            clf = _fit_logreg(xtr, ytr, c, max_iter)
            val_auc = (
                float(roc_auc_score(yva, clf.decision_function(xva)))
                if _has_both(yva)
                else float("nan")
            )
            fits.append((c, val_auc, clf))
        if _has_both(yva):
            best = max(range(len(fits)), key=lambda i: (fits[i][1], -i))
            selected_by = "val_auroc"
        else:
            best = int(np.argmin([abs(math.log10(c)) for c in cs]))  # C closest to 1
            selected_by = "default (val has a single label)"
        c, val_auc, clf = fits[best]
        per_class[name] = {
            "auroc": float(roc_auc_score(yte, clf.decision_function(xte))),
            "val_auroc": val_auc,
            "C": c,
            "C_selected_by": selected_by,
            "val_auroc_by_C": {f: v for f, v, _ in fits},
            "test_prevalence": float(yte.mean()),
        }
    return {
        "kind": "linear_probe",
        "macro_auroc": _macro(per_class),
        "per_class": per_class,
        "skipped": list(skipped),
        "skip_reasons": skipped,
        "Cs": cs,
        "n_train": len(xtr),
        "n_val": len(xva),
        "n_test": len(xte),
    }


def _fit_logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    with warnings.catch_warnings():
        # Weakly regularised fits on separable data stop at max_iter; their val AUROC still
        # says what they are worth, so the warning is noise here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=max_iter).fit(x, y)


def compare_probes(
    pretrained: Mapping[str, Any],
    random: Mapping[str, Any],
    names: tuple[str, str] = ("pretrained", "random init"),
) -> dict[str, Any]:
    """Side-by-side test AUROC of two :func:`linear_probe` results, with the difference.

    Only classes evaluated in both are compared; the macro values are recomputed over those
    shared classes so the delta compares like with like.
    """
    a, b = pretrained["per_class"], random["per_class"]
    shared = [c for c in a if c in b]
    per_class = {
        c: {
            names[0]: a[c]["auroc"],
            names[1]: b[c]["auroc"],
            "delta": a[c]["auroc"] - b[c]["auroc"],
        }
        for c in shared
    }
    ma = float(np.mean([a[c]["auroc"] for c in shared])) if shared else float("nan")
    mb = float(np.mean([b[c]["auroc"] for c in shared])) if shared else float("nan")
    return {
        "kind": "probe_comparison",
        "columns": list(names),
        "per_class": per_class,
        "macro": {names[0]: ma, names[1]: mb, "delta": ma - mb},
        "not_shared": sorted((set(a) | set(b)) - set(shared)),
    }


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def retrieval_recall(
    ecg_emb: np.ndarray,
    text_emb: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, Any]:
    """ECG-to-text retrieval: recall@k of each record's own text by cosine similarity.

    Row i of ``ecg_emb`` and ``text_emb`` belong to the same record. Records often share a
    text (identical statements, identical report), so the gallery is the set of *distinct*
    text embeddings (rows exactly equal are one entry) and a query hits when its own text's
    entry ranks in the top k. This equals "any record with the identical text is retrieved"
    while keeping duplicates from filling the top k. Similarity ties count as random
    tie-breaking would in expectation: a query whose own text ties with t entries (itself
    included) behind g strictly better ones scores clip((k - g) / t, 0, 1) at k, so a
    collapsed projector (all similarities equal) scores chance, k / n_distinct_texts,
    rather than a perfect recall. Ranks are the expected ranks, g + (t + 1) / 2.
    """
    ecg = np.asarray(ecg_emb)
    txt = np.asarray(text_emb)
    if ecg.ndim != 2 or txt.ndim != 2 or len(ecg) != len(txt):
        raise ValueError(f"need paired (n, d) arrays, got {ecg.shape} and {txt.shape}")
    gallery_raw, target = np.unique(txt, axis=0, return_inverse=True)
    target = target.reshape(-1)
    gallery = _l2_normalise(gallery_raw)
    queries = _l2_normalise(ecg)
    better = np.empty(len(queries), dtype=np.int64)
    tied = np.empty(len(queries), dtype=np.int64)
    for s in range(0, len(queries), chunk):
        sim = queries[s : s + chunk] @ gallery.T
        own = sim[np.arange(len(sim)), target[s : s + chunk]]
        better[s : s + chunk] = (sim > own[:, None]).sum(axis=1)
        tied[s : s + chunk] = (sim == own[:, None]).sum(axis=1)
    ranks = better + (tied + 1) / 2.0
    m = len(gallery)
    return {
        "kind": "retrieval",
        "recall": {int(k): float(np.mean(np.clip((k - better) / tied, 0.0, 1.0)))
                   for k in ks},
        "chance": {int(k): min(1.0, k / m) if m else float("nan") for k in ks},
        "median_rank": float(np.median(ranks)) if len(ranks) else float("nan"),
        "mean_rank": float(np.mean(ranks)) if len(ranks) else float("nan"),
        "n_queries": int(len(queries)),
        "n_distinct_texts": int(m),
    }


def superclass_prompts(
    statements: pd.DataFrame, classes: Sequence[str] = SUPERCLASSES
) -> dict[str, list[str]]:
    """The diagnostic statements of each superclass, worded as the structured recipe words them.

    Using the recipe's own ``"<category>: <description>"`` form keeps class prompts in the
    same text distribution the projector was trained on.
    """
    cls_col = statements["diagnostic_class"]
    if "diagnostic" in statements.columns:
        diag = statements["diagnostic"].fillna(0).astype(float) > 0
    else:
        diag = cls_col.notna()
    out: dict[str, list[str]] = {}
    for c in classes:
        codes = statements.index[diag & (cls_col == c)]
        if len(codes) == 0:
            raise ValueError(f"no diagnostic statements with diagnostic_class {c!r}")
        out[c] = [statement_text(code, statements) for code in codes]
    return out


def superclass_text_embeddings(
    statements: pd.DataFrame,
    encoder: Any,
    cache_dir: str | Path | None = None,
    classes: Sequence[str] = SUPERCLASSES,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Mean raw text embedding of each superclass's statements (caller then projects it).

    The mean in raw text space mirrors how the structured recipe builds record targets (a
    weighted mean of statement embeddings), so class vectors live where record targets do.
    The statements share the ``scp_structured`` cache entries.
    """
    prompts = superclass_prompts(statements, classes)
    out = {}
    for c, texts in prompts.items():
        emb = embed_texts(texts, encoder, cache_dir, namespace="scp_structured", progress=progress)
        out[c] = emb.astype(np.float64).mean(axis=0).astype(np.float32)
    return out


def zero_shot_superclass(
    ecg_emb: np.ndarray,
    class_text_emb: np.ndarray | Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Zero-shot superclass detection: AUROC of cosine(ECG, class text) per class.

    ``class_text_emb`` is (K, d) in the ECG embedding space (after the projectors) or a
    mapping name -> vector; ``labels`` is (n, K) multi-hot. Classes without both labels are
    skipped and listed. ``top1_hit`` is the share of labelled records whose most similar
    class is one of their labels.
    """
    if isinstance(class_text_emb, Mapping):
        class_names = list(class_text_emb) if class_names is None else list(class_names)
        cls = np.stack([np.asarray(class_text_emb[c]) for c in class_names])
    else:
        cls = np.asarray(class_text_emb)
    y = _as_2d_labels(labels, "labels")
    if cls.shape[0] != y.shape[1]:
        raise ValueError(f"{cls.shape[0]} class embeddings for {y.shape[1]} label columns")
    names = _class_names(y.shape[1], class_names)
    scores = _l2_normalise(ecg_emb) @ _l2_normalise(cls).T
    per_class: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    for j, name in enumerate(names):
        if not _has_both(y[:, j]):
            skipped.append(name)
            continue
        per_class[name] = {
            "auroc": float(roc_auc_score(y[:, j], scores[:, j])),
            "prevalence": float(y[:, j].mean()),
        }
    labelled = y.sum(axis=1) > 0
    top = scores.argmax(axis=1)
    hit = y[np.arange(len(y)), top] > 0
    return {
        "kind": "zero_shot",
        "macro_auroc": _macro(per_class),
        "per_class": per_class,
        "skipped": skipped,
        "top1_hit": float(hit[labelled].mean()) if labelled.any() else float("nan"),
        "n": int(len(y)),
    }

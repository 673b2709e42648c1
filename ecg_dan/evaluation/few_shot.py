"""Few-shot linear probe: test AUROC against the number of labels per class, pretrained
encoder vs a random one, paired, with bootstrap CIs. Pure functions over numpy features.

*k labels per class* (multi-label PTB-XL superclasses): for every class, k records
positive for it are drawn from the training rows (fewer if the class has fewer) and the
draws are unioned, so each class has at least k positives (a record drawn for one class
may be positive for others too) and the other classes' records are its negatives. The
draws are nested: draw ``d`` orders each class's positives once (seeded by ``(seed, d)``)
and size k takes the first k, so the subset of 5 lies inside that of 10 and of 20.
``"all"`` is every training row. The same subsets serve both encoders (paired).

Every fit uses one fixed L2 strength ``C`` (no validation labels: choosing C on a labelled
validation fold would use more labels than the curve claims).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

#: Sizes of the default curve; "all" is the whole training split.
DEFAULT_SIZES: tuple[int | str, ...] = (5, 10, 20, "all")
#: A class enters the macro AUROC only with at least this many test positives (and negatives).
MIN_TEST_POSITIVES = 5


def parse_sizes(text: str) -> list[int | str]:
    """``"5,10,20,all"`` -> ``[5, 10, 20, "all"]`` (positive integers and ``all``)."""
    out: list[int | str] = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        if part == "all":
            out.append("all")
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise ValueError(f"few-shot size {part!r} is neither a positive integer nor 'all'")
    if not out:
        raise ValueError("no few-shot sizes given (e.g. 5,10,20,all)")
    return out


def few_shot_subsets(y: np.ndarray, sizes: Sequence[int | str], draw: int, seed: int = 0
                     ) -> dict[int | str, np.ndarray]:
    """Positions into ``y`` ((n, K) multi-hot training labels) of each size's labelled
    subset for one draw: per class the first k of a seeded order of its positives, unioned;
    nested across sizes; sorted. ``"all"``: every row."""
    y = np.asarray(y) > 0.5
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(draw)]))
    orders = [rng.permutation(np.flatnonzero(y[:, j])) for j in range(y.shape[1])]
    out: dict[int | str, np.ndarray] = {}
    for k in sizes:
        if k == "all":
            out[k] = np.arange(len(y))
        else:
            out[k] = np.unique(np.concatenate([o[: int(k)] for o in orders] or [[]])
                               ).astype(np.int64)
    return out


def auroc_rows(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` (R, n) against labels ``y`` (R, n) (Mann-Whitney,
    ties counted half); NaN for a row without both labels. Vectorised for the bootstrap."""
    y = np.asarray(y) > 0.5
    ranks = rankdata(scores, axis=-1)
    n_pos = y.sum(-1)
    n_neg = y.shape[-1] - n_pos
    u = (ranks * y).sum(-1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, C: float = 0.1,
                 max_iter: int = 2000) -> np.ndarray:
    """Test decision scores (n_test, K) of one L2 logistic regression per class, fitted on
    standardised training features; a class with a single training label scores NaN."""
    y = np.asarray(train_y) > 0.5
    scaler = StandardScaler().fit(np.asarray(train_x, dtype=np.float64))
    xtr = scaler.transform(np.asarray(train_x, dtype=np.float64))
    xte = scaler.transform(np.asarray(test_x, dtype=np.float64))
    out = np.full((len(xte), y.shape[1]), np.nan)
    for j in range(y.shape[1]):
        if y[:, j].min() == y[:, j].max():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=C, max_iter=max_iter).fit(xtr, y[:, j])
        out[:, j] = clf.decision_function(xte)
    return out


def _macro(scores: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Macro AUROC over ``classes`` of scores (..., n, K) and labels (..., n, K)."""
    per = auroc_rows(np.moveaxis(scores[..., classes], -1, -2),
                     np.moveaxis(y[..., classes], -1, -2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no class: NaN
        return np.nanmean(per, axis=-1)


def paired_curve(scores: Mapping[str, np.ndarray], test_y: np.ndarray,
                 class_names: Sequence[str], n_boot: int = 1000, seed: int = 0,
                 min_test_positives: int = MIN_TEST_POSITIVES) -> dict[str, Any]:
    """Mean macro AUROC over draws of each encoder and of their difference (first - second),
    with percentile 95% CIs from a two-level paired bootstrap.

    ``scores``: encoder name -> (D draws, n_test, K) test scores of one size (exactly two
    encoders, the same draws). Each replicate resamples the draws and the test records with
    replacement, the same for both encoders, and averages the macro AUROC over the resampled
    draws: the CI covers which labelled subset was drawn and which records were tested.
    Only classes with at least ``min_test_positives`` positives and negatives in the test
    set (and finite scores in every draw) enter the macro; the others are listed.
    """
    names = list(scores)
    if len(names) != 2:
        raise ValueError(f"paired_curve compares two encoders, got {names}")
    a, b = (np.asarray(scores[n], dtype=np.float64) for n in names)
    y = np.asarray(test_y) > 0.5
    pos = y.sum(0)
    ok = (pos >= min_test_positives) & (len(y) - pos >= min_test_positives)
    ok &= np.isfinite(a).all(axis=(0, 1)) & np.isfinite(b).all(axis=(0, 1))
    classes = np.flatnonzero(ok)
    excluded = {str(class_names[j]): int(pos[j]) for j in range(y.shape[1]) if not ok[j]}
    D, n = a.shape[:2]
    ma, mb = _macro(a, y[None], classes), _macro(b, y[None], classes)  # per draw
    per_class = {str(class_names[j]): {
        names[0]: float(auroc_rows(a[..., j], np.broadcast_to(y[:, j], (D, n))).mean()),
        names[1]: float(auroc_rows(b[..., j], np.broadcast_to(y[:, j], (D, n))).mean())}
        for j in classes}
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, 3))
    for r in range(n_boot):
        draws = rng.integers(0, D, D)
        rows = rng.integers(0, n, n)
        yr = y[rows][None]
        ra = _macro(a[draws][:, rows], yr, classes)
        rb = _macro(b[draws][:, rows], yr, classes)
        boot[r] = [np.nanmean(ra), np.nanmean(rb), np.nanmean(ra - rb)]
    est = [float(ma.mean()), float(mb.mean()), float((ma - mb).mean())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0)
    keys = [names[0], names[1], "difference"]
    return {
        "estimate": dict(zip(keys, est)),
        "ci_low": dict(zip(keys, map(float, lo))),
        "ci_high": dict(zip(keys, map(float, hi))),
        "draw_sd": {names[0]: float(ma.std(ddof=1)) if D > 1 else 0.0,
                    names[1]: float(mb.std(ddof=1)) if D > 1 else 0.0},
        "per_class": per_class,
        "classes": [str(class_names[j]) for j in classes],
        "excluded_classes": excluded,
    }


def few_shot_curve(features: Mapping[str, tuple[np.ndarray, np.ndarray]], train_y: np.ndarray,
                   test_y: np.ndarray, class_names: Sequence[str],
                   sizes: Sequence[int | str] = DEFAULT_SIZES, n_draws: int = 10,
                   seed: int = 0, C: float = 0.1, n_boot: int = 1000,
                   min_test_positives: int = MIN_TEST_POSITIVES) -> dict[str, Any]:
    """The few-shot curve: for each size, ``n_draws`` nested labelled subsets of the training
    rows (:func:`few_shot_subsets`; one draw for ``"all"``), a probe per encoder on each,
    and :func:`paired_curve` over the draws. ``features``: encoder name -> (train, test)
    feature arrays, rows aligned with ``train_y`` / ``test_y``; exactly two encoders."""
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    train_y = np.asarray(train_y) > 0.5
    test_y = np.asarray(test_y) > 0.5
    draws = [few_shot_subsets(train_y, sizes, d, seed) for d in range(n_draws)]
    rows = []
    for k in sizes:
        subsets = [draws[0][k]] if k == "all" else [d[k] for d in draws]
        scores = {name: np.stack([probe_scores(tr[s], train_y[s], te, C) for s in subsets])
                  for name, (tr, te) in features.items()}
        res = paired_curve(scores, test_y, class_names, n_boot, seed, min_test_positives)
        sub_pos = np.array([train_y[s].sum(0) for s in subsets])
        rows.append({"labels_per_class": k, "n_draws": len(subsets),
                     "labelled_records": float(np.mean([len(s) for s in subsets])),
                     "min_class_positives": int(sub_pos.min()), **res})
    return {"kind": "few_shot_probe", "encoders": list(features), "C": C, "seed": seed,
            "n_boot": n_boot, "n_train": int(len(train_y)), "n_test": int(len(test_y)),
            "test_positives": {str(c): int(v) for c, v in zip(class_names, test_y.sum(0))},
            "min_test_positives": min_test_positives, "rows": rows}

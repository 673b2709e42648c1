"""Train/validation/test splits (docs/method.md sections 5 and 6).

PTB-XL: the patient-wise ``strat_fold`` split (1-8 train, 9 validation, 10 test).
UK Biobank: stratified-by-event 2-fold cross-validation repeated over five seeds; inside
each training fold a stratified 20% validation split selects the checkpoint. Splits are
saved as JSON (row indices and eids) with every run so a result can be re-derived and the
split verified against a rebuilt cache.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from data_modules.errors import DataError
from data_modules.protocol.survival_arrays import check_events

PAPER_SEEDS: tuple[int, ...] = (42, 2021, 2022, 2023, 2024)
SPLITS_FORMAT = "ecg-dan-splits"
SPLITS_VERSION = 1


# --------------------------------------------------------------------------- PTB-XL
def ptbxl_split(
    strat_fold: Sequence[int] | np.ndarray,
    validated: Sequence[bool] | np.ndarray | None = None,
    validated_only: bool = False,
) -> dict[str, np.ndarray]:
    """Row indices of the standard split: folds 1-8 train, 9 val, 10 test.

    ``validated_only`` keeps only rows with ``validated_by_human`` (the paper's filter;
    docs/method.md marks the exact filter as open). Returns sorted int64 arrays.
    """
    folds = np.asarray(strat_fold).astype(np.int64)
    if folds.ndim != 1:
        raise ValueError(f"strat_fold must be 1-d, got shape {folds.shape}")
    bad = (folds < 1) | (folds > 10)
    if bad.any():
        raise ValueError(
            f"strat_fold must be in 1..10; {int(bad.sum())} rows are not "
            f"(e.g. row {int(np.flatnonzero(bad)[0])} has {int(folds[bad][0])})"
        )
    keep = np.ones(folds.shape, dtype=bool)
    if validated_only:
        if validated is None:
            raise ValueError("validated_only=True needs the validated_by_human column")
        v = np.asarray(validated).astype(bool)
        if v.shape != folds.shape:
            raise ValueError(f"validated has shape {v.shape}, strat_fold {folds.shape}")
        keep &= v
    return {
        "train": np.flatnonzero(keep & (folds <= 8)).astype(np.int64),
        "val": np.flatnonzero(keep & (folds == 9)).astype(np.int64),
        "test": np.flatnonzero(keep & (folds == 10)).astype(np.int64),
    }


# --------------------------------------------------------------------------- UKB CV
def _arr_eq(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))



def fold_name(seed: int, fold: int) -> str:
    """``seed<s>_fold<f>``: a fold's name in messages, logs and W&B, its training folder and
    the stem of its prediction files (ecg_dan/run_dir.py)."""
    return f"seed{int(seed)}_fold{int(fold)}"

@dataclass(eq=False)
class Split:
    """One (seed, fold) of the survival cross-validation.

    ``*_idx`` are cache row indices (sorted int64); ``*_eid`` the matching participant
    ids when known, so a split can be checked against a rebuilt cache.
    """

    seed: int
    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    train_eid: np.ndarray | None = None
    val_eid: np.ndarray | None = None
    test_eid: np.ndarray | None = None

    @property
    def name(self) -> str:
        return fold_name(self.seed, self.fold)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.seed == other.seed
            and self.fold == other.fold
            and all(
                _arr_eq(getattr(self, k), getattr(other, k))
                for k in ("train_idx", "val_idx", "test_idx", "train_eid", "val_eid", "test_eid")
            )
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seed": int(self.seed), "fold": int(self.fold)}
        for part in ("train", "val", "test"):
            d[f"{part}_idx"] = [int(v) for v in getattr(self, f"{part}_idx")]
            eid = getattr(self, f"{part}_eid")
            d[f"{part}_eid"] = None if eid is None else [int(v) for v in eid]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        kw: dict[str, Any] = {"seed": int(d["seed"]), "fold": int(d["fold"])}
        for part in ("train", "val", "test"):
            kw[f"{part}_idx"] = np.asarray(d[f"{part}_idx"], dtype=np.int64)
            eid = d.get(f"{part}_eid")
            kw[f"{part}_eid"] = None if eid is None else np.asarray(eid, dtype=np.int64)
        return cls(**kw)


def _binary_events(event: Sequence[int] | np.ndarray) -> np.ndarray:
    """0/1 events as int64, refused with the words of the shared survival validator."""
    return check_events(event, "survival_cv_splits").astype(np.int64)


def survival_cv_splits(
    event: Sequence[int] | np.ndarray,
    n_folds: int = 2,
    seeds: Sequence[int] = PAPER_SEEDS,
    val_fraction: float = 0.2,
    rows: Sequence[int] | np.ndarray | None = None,
    eids: Sequence[int] | np.ndarray | None = None,
) -> list[Split]:
    """Repeated stratified K-fold CV with an inner stratified validation split.

    For each seed: ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` on
    ``event``; fold k's held-out part is the test set, and ``train_test_split(...,
    test_size=val_fraction, stratify=event, random_state=seed)`` of the rest gives
    train/val. Every participant is held out exactly once per seed.

    ``event[i]`` belongs to cache row ``rows[i]`` (default ``i``) and participant
    ``eids[i]`` (optional); the returned indices are cache rows.
    """
    e = _binary_events(event)
    n = e.shape[0]
    rows_arr = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows_arr.shape != (n,):
        raise ValueError(f"rows has shape {rows_arr.shape}, event has {n} entries")
    eid_arr = None if eids is None else np.asarray(eids, dtype=np.int64)
    if eid_arr is not None and eid_arr.shape != (n,):
        raise ValueError(f"eids has shape {eid_arr.shape}, event has {n} entries")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_events = int(e.sum())
    if n_events == 0:
        raise DataError(f"the cohort has no events (0 of {n} participants): cannot stratify "
                         "or fit a Cox model")
    if n_events < n_folds:
        raise DataError(f"the cohort has {n_events} events for {n_folds} folds: every test "
                         "fold needs at least one event")

    def pick(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        pos = np.sort(pos)
        return rows_arr[pos], (None if eid_arr is None else eid_arr[pos])

    splits: list[Split] = []
    for seed in seeds:
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
        for fold, (train_pos, test_pos) in enumerate(skf.split(np.zeros(n), e)):
            ev_tr, ev_te = int(e[train_pos].sum()), int(e[test_pos].sum())
            where = f"seed {seed} fold {fold}"
            if ev_te == 0:
                raise DataError(f"{where}: the test fold gets no events "
                                 f"({len(test_pos)} participants, cohort has {n_events} events)")
            if val_fraction > 0:
                if ev_tr < 2:
                    raise DataError(
                        f"{where}: the training fold has {ev_tr} event(s) among {len(train_pos)} "
                        "participants; a stratified validation split needs at least 2"
                    )
                try:
                    tr_pos, va_pos = train_test_split(
                        train_pos, test_size=val_fraction, stratify=e[train_pos],
                        random_state=int(seed),
                    )
                except ValueError as err:
                    raise DataError(
                        f"{where}: stratified validation split failed "
                        f"({len(train_pos)} participants, {ev_tr} events): {err}"
                    ) from err
                ev_tr2, ev_va = int(e[tr_pos].sum()), int(e[va_pos].sum())
                if ev_tr2 == 0 or ev_va == 0:
                    raise DataError(
                        f"{where}: the inner split leaves {ev_tr2} training and {ev_va} "
                        f"validation events (of {ev_tr}); use more data or a larger val_fraction"
                    )
            else:
                tr_pos, va_pos = train_pos, np.empty(0, dtype=np.int64)
            (tr, tr_e), (va, va_e), (te, te_e) = pick(tr_pos), pick(va_pos), pick(test_pos)
            splits.append(Split(int(seed), fold, tr, va, te, tr_e, va_e, te_e))
    return splits


# --------------------------------------------------------------------------- label efficiency
def nested_fraction(split: Split, event_of_row: Mapping[int, int] | np.ndarray,
                    fraction: float) -> Split:
    """``split`` with ``fraction`` of its training rows and of its inner-validation rows each,
    stratified by event; the held-out rows unchanged (label-efficiency runs).

    Nested: each (seed, fold, part, event stratum) has one fixed random order of its rows
    (a generator keyed by those four, not by the fraction), and a fraction keeps the first
    ``ceil(fraction * n)`` of them, so a smaller fraction's rows lie inside a larger one's
    and every stratum keeps at least one row. ``event_of_row[r]``: the event (0/1) of
    cache row ``r``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return split
    kept: dict[str, Any] = {}
    for code, part in enumerate(("train", "val")):
        idx = getattr(split, f"{part}_idx")
        eid = getattr(split, f"{part}_eid")
        ev = np.asarray([int(event_of_row[int(r)]) for r in idx], dtype=np.int64)
        pos: list[np.ndarray] = []
        for stratum in (0, 1):
            members = np.flatnonzero(ev == stratum)
            if members.size == 0:
                continue
            order = np.random.default_rng([int(split.seed), int(split.fold), code, stratum]
                                          ).permutation(members.size)
            pos.append(members[order[:math.ceil(fraction * members.size)]])
        take = np.sort(np.concatenate(pos)) if pos else np.empty(0, dtype=np.int64)
        kept[f"{part}_idx"] = idx[take]
        kept[f"{part}_eid"] = None if eid is None else eid[take]
    return Split(split.seed, split.fold, test_idx=split.test_idx, test_eid=split.test_eid,
                 **kept)


# --------------------------------------------------------------------------- persistence
def save_splits(
    splits: Sequence[Split], path: str | Path, meta: dict[str, Any] | None = None
) -> Path:
    """Write splits (row indices and eids) as JSON; ``meta`` records e.g. cache and cohort."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": SPLITS_FORMAT,
        "version": SPLITS_VERSION,
        "meta": meta or {},
        "splits": [s.to_dict() for s in splits],
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    return path


def load_splits(path: str | Path) -> list[Split]:
    """Read splits written by :func:`save_splits`."""
    path = Path(path)
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != SPLITS_FORMAT:
        raise DataError(f"{path} is not an ecg-dan splits file")
    if doc.get("version") != SPLITS_VERSION:
        raise DataError(f"{path}: splits file version {doc.get('version')}, "
                         f"this code reads {SPLITS_VERSION}")
    return [Split.from_dict(d) for d in doc["splits"]]


def load_splits_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` dictionary saved with the splits."""
    return dict(json.loads(Path(path).read_text()).get("meta", {}))

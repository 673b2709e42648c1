"""Synthetic CODE-15% and SaMi-Trop in their published layout (data_modules/sources/code15.py).

CODE-15%: ``exams.csv`` (the 15 published columns, rows in no particular order) and
``exams_part0.hdf5`` ... with ``tracings`` (N, 4096, 12) float32 and ``exam_id`` (N,);
each part ends with a padding row (exam_id 0, all zeros), as the real parts do. Patients
have one to three exams; only the first carries ``death``/``timey`` (and ``trace_file``),
the others leave them empty, as documented. SaMi-Trop: ``exams.csv`` (``exam_id, age,
is_male, normal_ecg, death, timey, nn_predicted_age``) and one ``exams.hdf5`` whose
``tracings`` (float64) rows follow the table, one exam per patient.

Records are 7 s or 10 s at 400 Hz, zero-padded on both sides (centred) to 4,096 samples, in
the leads DI, DII, DIII, AVR, AVL, AVF, V1-V6, in mV (the unit the reader assumes). Hearts
come from :mod:`data_modules.synthetic.beat_model`, outcomes (all-cause death) from the
Weibull hazard of :mod:`data_modules.synthetic.outcomes` on the first exam's ECG features
and age, so a model can learn the risk; ``ground_truth.csv`` beside the files holds the
generating features and the true log-hazard. ``shuffled_part=K`` writes part K with its
leads in another order, named in the ``tracings`` attribute ``leads`` (not in the real
files; it exercises the reader's mapping by name).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from data_modules.sources.code15 import FS_CODE15, LEADS_CODE15, MV_PER_UNIT
from data_modules.synthetic.beat_model import sample_beat_params, simulate_record
from data_modules.synthetic.outcomes import (
    EVENT_TARGETS,
    draw_outcomes,
    linear_predictor,
    sample_population,
)
from data_modules.synthetic.settings import draw_severity, twin_setting

N_SAMPLES = 4096
CODE15_COLUMNS = ("exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB",
                  "SB", "ST", "AF", "patient_id", "death", "timey", "normal_ecg", "trace_file")
SAMITROP_COLUMNS = ("exam_id", "age", "is_male", "normal_ecg", "death", "timey",
                    "nn_predicted_age")


def padded(signal_mv: np.ndarray) -> np.ndarray:
    """(12, T) mV -> (4096, 12) in the file's unit, centred between zeros."""
    n = signal_mv.shape[1]
    out = np.zeros((N_SAMPLES, 12))
    a = (N_SAMPLES - n) // 2
    out[a:a + n] = signal_mv.T / MV_PER_UNIT
    return out


def _flags(labels: tuple[str, ...], hr: float) -> dict[str, bool]:
    return {"1dAVb": "1AVB" in labels, "RBBB": "CRBBB" in labels, "LBBB": "CLBBB" in labels,
            "SB": hr < 60 and "AFIB" not in labels, "ST": hr > 100 and "AFIB" not in labels,
            "AF": "AFIB" in labels}


def _exams(n: int, seed: int, setting: str, key: int, multi: bool
           ) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame]:
    """Exams (one row each, the patient's first exam first) with their tracings, and the
    first exams' generating features."""
    ts = twin_setting(setting)
    pop = sample_population(np.random.default_rng([seed, key]), n)
    ids = np.random.default_rng([seed, key, 1]).choice(np.arange(1, 4_000_000), size=3 * n,
                                                        replace=False)
    rows, traces, truth = [], [], []
    k = 0
    for p in pop.itertuples(index=False):
        pid = int(p.eid)
        rng = np.random.default_rng([seed, key, 2, pid])
        params = sample_beat_params(rng, p.label, age=p.age, female=p.sex == 0,
                                    severity=draw_severity(ts, seed, key, pid))
        n_exams = 1 + (int(rng.integers(1, 3)) if multi and rng.random() < 0.3 else 0)
        for j in range(n_exams):
            seconds = 7.0 if rng.random() < 0.3 else 10.0
            rec = simulate_record(rng, params=params, fs=int(FS_CODE15), seconds=seconds,
                                  noise="ukb")
            age = float(p.age) + 2 * j
            hr = float(rec.features["hr_bpm"])
            rows.append({"exam_id": int(ids[k]), "patient_id": pid, "age": int(age),
                         "is_male": bool(p.sex == 1),
                         "nn_predicted_age": round(age + float(rng.normal(0, 6)), 4),
                         **_flags(rec.labels, hr), "normal_ecg": rec.labels == ("NORM",),
                         "first": j == 0})
            traces.append(padded(rec.signal))
            if j == 0:
                truth.append({"exam_id": int(ids[k]), "patient_id": pid, "age": age,
                              "label": "+".join(rec.labels),
                              **{f: rec.features[f] for f in sorted(rec.features)}})
            k += 1
    truth_df = pd.DataFrame(truth)
    return pd.DataFrame(rows), traces, truth_df.assign(_date=pop["ecg_date"].to_numpy())


def _outcomes(truth: pd.DataFrame, seed: int, key: int, events: str, setting: str
              ) -> pd.DataFrame:
    ts = twin_setting(setting)
    lp = linear_predictor(truth, ts.coefs)
    ones = np.ones(len(truth), bool)
    out, _ = draw_outcomes(np.random.default_rng([seed, key, 3]), lp, ones, ~ones,
                           truth["_date"], events, coefs=ts.coefs)
    return pd.DataFrame({"exam_id": truth["exam_id"].to_numpy(),
                         "death": out["event"].to_numpy().astype(bool),
                         "timey": np.round(out["time_days"].to_numpy() / 365.25, 6),
                         "true_log_hazard": out["true_log_hazard"].to_numpy()})


def _fresh(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / "ground_truth.csv").is_file():
            raise FileExistsError(f"{out} exists and is not a synthetic twin; choose an "
                                  "empty output directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_code15(out: str | Path, n: int = 200, seed: int = 0, events: str = "dense",
                 setting: str = "standard", parts: int = 2,
                 shuffled_part: int | None = None) -> dict[str, Path]:
    """A CODE-15% twin of ``n`` patients in ``out`` (see the module docstring)."""
    if events not in EVENT_TARGETS:
        raise ValueError(f"events must be one of {sorted(EVENT_TARGETS)}, got {events!r}")
    out = Path(out)
    _fresh(out)
    exams, traces, truth = _exams(n, seed, setting, 20, multi=True)
    oc = _outcomes(truth, seed, 20, events, setting).set_index("exam_id")
    rng = np.random.default_rng([seed, 20, 4])
    part_of = rng.integers(0, parts, len(exams))
    names = [f"exams_part{i}.hdf5" for i in range(parts)]
    lead_order = list(rng.permutation(12))
    for i, name in enumerate(names):
        idx = np.flatnonzero(part_of == i)
        x = np.stack([traces[j] for j in idx] + [np.zeros((N_SAMPLES, 12))]).astype(np.float32)
        ids = np.append(exams["exam_id"].to_numpy()[idx], 0).astype(np.int64)
        with h5py.File(out / name, "w") as f:
            if i == shuffled_part:
                x = x[:, :, lead_order]
            ds = f.create_dataset("tracings", data=x, chunks=(1, N_SAMPLES, 12))
            if i == shuffled_part:
                ds.attrs["leads"] = [LEADS_CODE15[j] for j in lead_order]
            f.create_dataset("exam_id", data=ids)
    first = exams["first"].to_numpy()
    exams["death"] = [oc.at[e, "death"] if f else "" for e, f in zip(exams["exam_id"], first)]
    exams["timey"] = [oc.at[e, "timey"] if f else "" for e, f in zip(exams["exam_id"], first)]
    exams["trace_file"] = [names[p] if f else "" for p, f in zip(part_of, first)]
    table = exams.iloc[rng.permutation(len(exams))][list(CODE15_COLUMNS)]
    table.to_csv(out / "exams.csv", index=False)
    truth = truth.drop(columns="_date").merge(oc.reset_index(), on="exam_id")
    truth.to_csv(out / "ground_truth.csv", index=False)
    return {"code15": out, "exams": out / "exams.csv", "parts": out / names[0],
            "ground_truth": out / "ground_truth.csv"}


def write_samitrop(out: str | Path, n: int = 100, seed: int = 0, events: str = "dense",
                   setting: str = "standard") -> dict[str, Path]:
    """A SaMi-Trop twin of ``n`` patients (one exam each) in ``out``."""
    if events not in EVENT_TARGETS:
        raise ValueError(f"events must be one of {sorted(EVENT_TARGETS)}, got {events!r}")
    out = Path(out)
    _fresh(out)
    exams, traces, truth = _exams(n, seed, setting, 30, multi=False)
    oc = _outcomes(truth, seed, 30, events, setting)
    table = exams.merge(oc[["exam_id", "death", "timey"]], on="exam_id")
    table[list(SAMITROP_COLUMNS)].to_csv(out / "exams.csv", index=False)
    with h5py.File(out / "exams.hdf5", "w") as f:
        f.create_dataset("tracings", data=np.stack(traces).astype(np.float64),
                         chunks=(1, N_SAMPLES, 12))
    truth.drop(columns="_date").merge(oc, on="exam_id").to_csv(out / "ground_truth.csv",
                                                                index=False)
    return {"samitrop": out, "exams": out / "exams.csv", "tracings": out / "exams.hdf5",
            "ground_truth": out / "ground_truth.csv"}


def code15_format(out: Path, n: int, seed: int, events: str, setting: str,
                  **kw: Any) -> dict[str, Any]:
    """``ecg-dan synth --format code15``: ``<out>/code15/``."""
    return write_code15(Path(out) / "code15", n=n, seed=seed, events=events, setting=setting)


def samitrop_format(out: Path, n: int, seed: int, events: str, setting: str,
                    **kw: Any) -> dict[str, Any]:
    """``ecg-dan synth --format samitrop``: ``<out>/samitrop/``."""
    return write_samitrop(Path(out) / "samitrop", n=n, seed=seed, events=events,
                          setting=setting)

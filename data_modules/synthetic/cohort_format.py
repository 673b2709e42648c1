"""The ``cohort`` twin of ``ecg-dan synth``: a hospital's own cohort as
``ecg-dan cache cohort`` reads it (docs/data_formats.md, "Your own cohort").

``out/cohort/ecgs/`` holds one ECG per participant in mixed formats, in turn: WFDB records at
250, 500 and 1000 Hz (leads sometimes listed in another order, upper- or lower-case names),
CardioSoft XML (:mod:`.ukb_format`) and GE MUSE XML (:mod:`.muse_format`);
``out/cohort/cohort.csv`` names per participant ``id``, ``ecg_file``, ``time`` +
``time_unit`` (days), ``event``, ``age``, ``sex`` (M/F), a numeric covariate ``bmi``, a text
column ``site`` (not a covariate) and ``true_log_hazard``; ``out/cohort/ground_truth.csv``
the generating label and ECG features. Hearts and outcomes come from the same models as the
UK Biobank twin (:mod:`.beat_model`, :mod:`.outcomes`: Weibull hazards of ECG features
visible in the median beat), so a model can learn the risk from the ECGs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from data_modules.signal.leads import LEADS
from data_modules.synthetic.beat_model import sample_beat_params, simulate_record
from data_modules.synthetic.muse_format import muse_variant, muse_xml
from data_modules.synthetic.outcomes import draw_outcomes, linear_predictor, sample_population
from data_modules.synthetic.ptbxl_format import write_wfdb
from data_modules.synthetic.settings import draw_severity, twin_setting
from data_modules.synthetic.ukb_format import cardiology_xml

# ECG file formats, given to participants in turn
ECG_FORMATS = ("wfdb250", "wfdb500", "wfdb1000", "cardiosoft", "muse")
MARKER = "twin.json"


def _wfdb(stem: Path, rec, rng: np.random.Generator) -> None:
    names = list(LEADS) if rng.random() < 0.5 else [n.lower() for n in LEADS]
    order = rng.permutation(12) if rng.random() < 0.3 else np.arange(12)
    write_wfdb(stem, rec.signal[order], rec.fs, tuple(names[i] for i in order))


def write_cohort(out: str | Path, n: int, seed: int = 0, events: str = "dense",
                 setting: str = "standard") -> dict[str, Path]:
    """Write the cohort twin of ``n`` participants under ``out/cohort`` (replacing a previous
    twin there, refusing foreign data); returns the paths it wrote."""
    ts = twin_setting(setting)
    if n < 1:
        raise ValueError("n must be positive")
    root = Path(out) / "cohort"
    if root.exists():
        if not (root / MARKER).is_file():
            raise FileExistsError(f"{root} exists and was not written by ecg-dan synth; "
                                  "choose an empty output directory")
        shutil.rmtree(root)
    ecgs = root / "ecgs"
    for d in ("wfdb", "cardiosoft", "muse"):
        (ecgs / d).mkdir(parents=True)
    pop = sample_population(np.random.default_rng([seed, 7]), n)
    rows, truth = [], []
    for i, row in enumerate(pop.itertuples(index=False)):
        eid = int(row.eid)
        rng = np.random.default_rng([seed, 7, eid])
        params = sample_beat_params(rng, row.label, age=row.age, female=row.sex == 0,
                                    severity=draw_severity(ts, seed, 7, eid))
        fmt = ECG_FORMATS[i % len(ECG_FORMATS)]
        fs = int(fmt[4:]) if fmt.startswith("wfdb") else 500
        rec = simulate_record(rng, params=params, fs=fs, seconds=10.0,
                              noise="ptbxl" if fmt.startswith("wfdb") else "ukb")
        when = pd.Timestamp(row.ecg_date) + pd.Timedelta(hours=9)
        name = f"ecg_{i:05d}"
        if fmt.startswith("wfdb"):
            rel = f"wfdb/{name}.hea"
            _wfdb(ecgs / "wfdb" / name, rec, rng)
        elif fmt == "cardiosoft":
            rel = f"cardiosoft/{name}.xml"
            (ecgs / rel).write_bytes(cardiology_xml(eid, row.age, bool(row.sex), when, rec,
                                                    rec.beat, rng))
        else:
            rel = f"muse/{name}.xml"
            leads, wrap = muse_variant(rng)
            (ecgs / rel).write_bytes(muse_xml(str(eid), row.age, bool(row.sex), when, rec,
                                              leads, wrap))
        rows.append({"id": eid, "ecg_file": rel, "age": row.age,
                     "sex": "M" if row.sex else "F",
                     "bmi": round(float(rng.normal(27.0, 4.0)), 1),
                     "site": f"site{1 + i % 3}"})
        truth.append({"id": eid, "ecg_file": rel, "format": fmt, "fs": fs,
                      "label": "+".join(rec.labels), "age": row.age, **rec.features})
    truth_df = pd.DataFrame(truth)
    lp = linear_predictor(truth_df, ts.coefs)
    outcomes, info = draw_outcomes(np.random.default_rng([seed, 8]), lp, np.ones(n, bool),
                                   np.zeros(n, bool), pop["ecg_date"], events, coefs=ts.coefs)
    table = pd.DataFrame(rows)
    table["time"] = outcomes["time_days"].to_numpy()
    table["time_unit"] = "days"
    table["event"] = outcomes["event"].to_numpy()
    table["true_log_hazard"] = outcomes["true_log_hazard"].to_numpy()
    table = table[["id", "ecg_file", "time", "time_unit", "event", "age", "sex", "bmi", "site",
                   "true_log_hazard"]]
    table.to_csv(root / "cohort.csv", index=False)
    truth_df["linear_predictor"] = np.round(lp, 6)
    truth_df.to_csv(root / "ground_truth.csv", index=False)
    (root / MARKER).write_text(json.dumps({"generator": "ecg-dan synthetic cohort twin",
                                           "seed": seed, "n": n, "setting": ts.name,
                                           "outcomes": info}, indent=2, default=str) + "\n")
    return {"cohort_ecgs": ecgs, "cohort_table": root / "cohort.csv",
            "cohort_truth": root / "ground_truth.csv"}

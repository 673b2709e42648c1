"""Synthetic twin of the project's data sources (PTB-XL and UK Biobank), in their real formats.

`make_synthetic` writes
    out_dir/ptbxl/   ptbxl_database.csv, scp_statements.csv, records500/..., records100/...
    out_dir/ukb/xml/<eid>_20205_2_0.xml   CardioSoft CardiologyXML resting ECGs
    out_dir/ukb/outcomes.csv              eid, ecg_date, event, time_days, end_date, hyp, mi,
                                          true_log_hazard
    out_dir/ground_truth/{ptbxl,ukb}.csv  generating labels and ECG features (not read by loaders)
    out_dir/synthetic_manifest.json       settings, hazard coefficients, calibrated baselines
so tests and the embedded default run through the same loaders as real data. Everything is
deterministic in `seed` (each record has its own seeded generator).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from data_modules.synthetic.beat_model import (
    INDEPENDENT_INDEX,
    LABELS,
    BeatParams,
    SyntheticRecord,
    expand_leads,
    render_template,
    sample_beat_params,
    simulate_record,
    template_features,
)
from data_modules.synthetic.outcomes import (
    EVENT_TARGETS,
    HAZARD_COEFS,
    draw_outcomes,
    linear_predictor,
    sample_population,
)
from data_modules.synthetic.ptbxl_format import write_ptbxl, write_wfdb
from data_modules.synthetic.settings import SETTINGS, TwinSetting, draw_severity, twin_setting
from data_modules.synthetic.ukb_format import cardiology_xml, xml_name

__all__ = [
    "EVENT_TARGETS", "HAZARD_COEFS", "LABELS", "BeatParams", "SyntheticRecord", "expand_leads",
    "SETTINGS", "make_synthetic", "render_template", "sample_beat_params", "simulate_record",
    "ukb_feature_table", "write_wfdb",
]

MANIFEST = "synthetic_manifest.json"
OUTCOME_COLUMNS = ("eid", "ecg_date", "event", "time_days", "end_date", "hyp", "mi",
                   "true_log_hazard")
LEAD_ORDER_VARIANT_P = 0.15  # share of XML files listing the leads in another order


def _prepare(out: Path) -> None:
    """Refuse to write over foreign data; replace a previous synthetic twin completely."""
    parts = [out / "ptbxl", out / "ukb", out / "ground_truth"]
    used = [p for p in parts if p.exists() and any(p.iterdir())]
    if used and not (out / MANIFEST).is_file():
        raise FileExistsError(f"{used[0]} exists and was not written by make_synthetic; "
                              "choose an empty output directory")
    for p in used:
        shutil.rmtree(p)
    (out / MANIFEST).unlink(missing_ok=True)


def _ukb_subject(seed: int, row, setting: TwinSetting) -> tuple[np.random.Generator, BeatParams]:
    """The participant's own generator and heart (shared by the writer and the feature table)."""
    rng = np.random.default_rng([seed, 2, int(row.eid)])
    severity = draw_severity(setting, seed, 2, int(row.eid))
    return rng, sample_beat_params(rng, row.label, age=row.age, female=row.sex == 0,
                                   severity=severity)


def ukb_feature_table(n: int, seed: int = 0, setting: str = "standard") -> pd.DataFrame:
    """Population, cohort flags and hazard features of the UKB twin without writing any file.

    Same participants, features and `linear_predictor` as `make_synthetic(..., n_ukb=n,
    seed=seed)`; cheap enough (~1 ms per participant) for calibration checks and tests.
    """
    ts = twin_setting(setting)
    pop = sample_population(np.random.default_rng([seed, 2]), n)
    rows = []
    for row in pop.itertuples(index=False):
        _, params = _ukb_subject(seed, row, ts)
        rows.append(template_features(params, render_template(params)))
    table = pd.concat([pop.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    table["linear_predictor"] = linear_predictor(table, ts.coefs)
    return table


def _write_ukb(out: Path, n: int, seed: int, events: str, tick, setting: TwinSetting
               ) -> tuple[pd.DataFrame, dict]:
    xml_dir = out / "ukb" / "xml"
    xml_dir.mkdir(parents=True, exist_ok=True)
    pop = sample_population(np.random.default_rng([seed, 2]), n)
    feats: list[dict] = []
    for row in pop.itertuples(index=False):
        eid = int(row.eid)
        rng, params = _ukb_subject(seed, row, setting)
        rec = simulate_record(rng, params=params, fs=500, seconds=10.0, noise="ukb")
        # device median: the clean beat plus a little residual noise, added at the electrodes
        ind = rec.beat[list(INDEPENDENT_INDEX)]
        median = expand_leads(ind + rng.normal(0.0, setting.median_noise_mv, ind.shape))
        order = list(rng.permutation(12)) if rng.random() < LEAD_ORDER_VARIANT_P else None
        when = pd.Timestamp(row.ecg_date) + pd.Timedelta(seconds=int(rng.integers(8 * 3600,
                                                                                    19 * 3600)))
        xml = cardiology_xml(eid, row.age, bool(row.sex), when, rec, median, rng,
                             lead_order=order, wrap_waveforms=order is not None)
        (xml_dir / xml_name(eid)).write_bytes(xml)
        feats.append({"eid": eid, "label": "+".join(rec.labels), "age": row.age,
                      **{k: rec.features[k] for k in sorted(rec.features)}})
        if tick is not None:
            tick()
    truth = pd.DataFrame(feats)
    lp = linear_predictor(truth, setting.coefs)
    outcomes, info = draw_outcomes(np.random.default_rng([seed, 3]), lp, pop["hyp"], pop["mi"],
                                   pop["ecg_date"], events, coefs=setting.coefs)
    outcomes.insert(0, "eid", pop["eid"].to_numpy())
    outcomes["hyp"] = pop["hyp"].to_numpy()
    outcomes["mi"] = pop["mi"].to_numpy()
    outcomes = outcomes[list(OUTCOME_COLUMNS)]
    outcomes.to_csv(out / "ukb" / "outcomes.csv", index=False)
    truth["linear_predictor"] = np.round(lp, 6)
    for coh in ("hyp", "mi"):
        m = outcomes[coh].to_numpy() == 1
        info[f"n_{coh}"] = int(m.sum())
        info[f"n_events_{coh}"] = int(outcomes["event"][m].sum())
    return truth, info


def make_synthetic(out_dir: str | Path, n: int = 2000, seed: int = 0, events: str = "paper",
                   n_ukb: int | None = None, progress: bool = True,
                   setting: str = "standard") -> dict[str, Path]:
    """Write a PTB-XL twin (`n` records) and a UK Biobank twin (`n_ukb`, default `n`).

    events: 'paper' (~1.5 % HF events in the hyp cohort, ~4 % in the mi cohort, as in the
    paper's cohorts) or 'dense' (~30 % in both, for fast tests). setting: 'standard' or
    'hard' (data_modules/synthetic/settings.py). Returns the paths
    {'ptbxl', 'ukb_xml', 'ukb_outcomes', 'manifest'}.
    """
    ts = twin_setting(setting)
    if events not in EVENT_TARGETS:
        raise ValueError(f"events must be one of {sorted(EVENT_TARGETS)}, got {events!r}")
    n_ukb = n if n_ukb is None else int(n_ukb)
    if n < 1 or n_ukb < 1:
        raise ValueError("n and n_ukb must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _prepare(out)

    from tqdm.auto import tqdm

    with tqdm(total=n + n_ukb, desc="synthetic ECGs", unit="rec", disable=not progress) as bar:
        ptbxl_dir, ptbxl_truth = write_ptbxl(out / "ptbxl", n, seed, tick=bar.update, setting=ts)
        ukb_truth, info = _write_ukb(out, n_ukb, seed, events, tick=bar.update, setting=ts)

    truth_dir = out / "ground_truth"
    truth_dir.mkdir(exist_ok=True)
    ptbxl_truth.to_csv(truth_dir / "ptbxl.csv", index=False)
    ukb_truth.to_csv(truth_dir / "ukb.csv", index=False)
    manifest = {
        "generator": "ecg-dan synthetic twin", "schema": 1, "seed": seed, "n_ptbxl": n,
        "n_ukb": n_ukb, "outcomes": info,
        **({"setting": asdict(ts)} if ts.name != "standard" else {}),
        "ptbxl_labels": ptbxl_truth["label"].value_counts().sort_index().to_dict(),
        "ukb_labels": ukb_truth["label"].value_counts().sort_index().to_dict(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return {"ptbxl": ptbxl_dir, "ukb_xml": out / "ukb" / "xml",
            "ukb_outcomes": out / "ukb" / "outcomes.csv", "manifest": out / MANIFEST}

"""``ecg-dan export`` / ``ecg-dan predict`` and the calibration of ``evaluate finetune``, on tiny
runs (``+tiny``, from scratch, a few steps): the model file reproduces the run's own
out-of-fold risks fold model by fold model, absolute risks match lifelines' Breslow-based
survival function on the validation rows that recalibrate each fold model, ``predict`` of
the run's own cohort from the run directory reproduces its out-of-fold calibration,
percentiles match scipy, every bad input is a recorded skip, every bad model file is
refused (a pickle without being unpickled)."""

from __future__ import annotations

import glob
import json
import os
import pickle
import signal
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from data_modules.errors import DataError, RecordSkip
from data_modules.sources.cohort_table import build_cohort_cache
from data_modules.sources.files import discover, load_beat
from data_modules.synthetic.cohort_format import write_cohort
from data_modules.synthetic.ptbxl_format import write_wfdb
from ecg_dan.cli import main as cli
from ecg_dan.config import load_config, save_config
from ecg_dan.model_file import FORMAT_VERSION, ModelFileError, export_run, read_model
from ecg_dan.predict import load_model
from ecg_dan.reporting.risk_ranks import RANK_TOLERANCE

HZ = (12.0, 24.0)  # months, the tiny run's unit: inside every fold model's follow-up


@pytest.fixture(scope="module")
def cox_run(tiny_cox_run) -> Path:
    return tiny_cox_run  # tests/conftest.py: one step per fold, from scratch


@pytest.fixture(scope="module")
def lh_run(tiny_lh_run) -> Path:
    return tiny_lh_run


@pytest.fixture(scope="module")
def cox_file(cox_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "model.safetensors"
    export_run(cox_run, out)
    return out


def _cache(data_root: Path) -> tuple[np.ndarray, dict[int, int]]:
    with h5py.File(next(data_root.glob("*ukb*.h5")), "r") as f:
        return f["median"][...], {int(e): i for i, e in enumerate(f["eid"][...])}


def _folds(run: Path) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    return [(pd.read_csv(p), pd.read_csv(p.with_name(p.stem + "_train.csv")))
            for p in sorted((run / "predictions").glob("seed*_fold?.csv"))]


def _breslow_by_hand(train: pd.DataFrame):
    """H0(t) = sum over event times s <= t of d_s / sum_{T_j >= s} exp(r_j), written out."""
    ev_t = np.unique(train.time[train.event == 1])
    d = np.array([((train.time == s) & (train.event == 1)).sum() for s in ev_t])
    at_risk = np.array([np.exp(train.risk[train.time >= s]).sum() for s in ev_t])
    return lambda t: float((d / at_risk)[ev_t <= t].sum())


# ----------------------------------------------------------------------------- same risks
def test_model_file_reproduces_each_fold_models_predictions(cox_run, cox_file, tiny_data_root):
    from ecg_dan.checkpoints import finetune_module_from_checkpoint

    model = load_model(cox_file)
    medians, pos = _cache(tiny_data_root)
    folds = _folds(cox_run)
    assert [(m.seed, m.fold) for m in model.members] == [(int(t.seed[0]), int(t.fold[0]))
                                                         for t, _ in folds]
    every = model.member_risks(medians)  # (fold models, cache rows)
    for i, (test, train) in enumerate(folds):
        for part in (test, train):  # held-out and training rows, as the run scored them
            risks = every[i, [pos[e] for e in part.eid]]
            np.testing.assert_allclose(risks, part.risk, atol=2e-6, rtol=0)
    # the ensemble: every fold checkpoint read directly, centred on its training rows' mean
    # and scaled by its recalibration slope (held at 1: the tiny run's validation rows have
    # fewer events than a slope needs)
    assert all(m.slope == 1.0 for m in model.members)
    assert [m.offset for m in model.members] == pytest.approx([tr.risk.mean()
                                                               for _, tr in folds], abs=1e-12)
    beats = medians[:40]
    x = model.prepare(beats)
    direct = []
    for test, train in folds:
        module = finetune_module_from_checkpoint(cox_run / json.loads(
            (cox_run / "predictions" / f"seed{test.seed[0]}_fold{test.fold[0]}.json")
            .read_text())["checkpoint"])  # relative to the run
        with torch.no_grad():
            direct.append(module(x)["log_risk"].double().numpy() - train.risk.mean())
    np.testing.assert_allclose(model.risk(beats), np.mean(direct, axis=0), atol=1e-6)
    np.testing.assert_allclose(model.score(beats)["log_risk_std"], np.std(direct, axis=0),
                               atol=1e-6)
    # the run directory itself is the same model (exported in memory): same id and scores
    from_dir = load_model(cox_run)
    assert from_dir.model_id == model.model_id == read_model(cox_file).model_id
    np.testing.assert_array_equal(from_dir.risk(beats), model.risk(beats))


def test_absolute_risk_matches_lifelines_breslow_survival(cox_run, cox_file, tiny_data_root):
    """Each fold model's absolute risk: lifelines' Cox survival function of its training
    rows' centred log-risk, the coefficient held at the recalibration slope (fitted on
    validation rows; 1 here: too few events for one)."""
    from lifelines import CoxPHFitter

    model = load_model(cox_file)
    medians, _ = _cache(tiny_data_root)
    beats = medians[:25]
    member = model.member_risks(beats)
    expected = []
    for i, (_, train) in enumerate(_folds(cox_run)):
        own = train.assign(risk=train.risk - train.risk.mean())
        assert model.members[i].max_time == pytest.approx(own.time.max())
        df = pd.DataFrame({"risk": own.risk, "T": own.time, "E": own.event})
        cph = CoxPHFitter()
        with warnings.catch_warnings():  # the coefficient is held at 1: "not converged"
            warnings.simplefilter("ignore")  # (lifelines starts from beta * std of x)
            cph.fit(df, "T", "E", initial_point=np.array([df.risk.std()]),
                    fit_options={"max_steps": 1})
        assert cph.params_["risk"] == pytest.approx(1.0, abs=1e-12)
        # lifelines' survival function at its own time grid (a step function; with
        # ``times=`` it would interpolate linearly between event times)
        sf = cph.predict_survival_function(pd.DataFrame({"risk": member[i]
                                                         - model.members[i].offset}))
        at = [sf.loc[:t].iloc[-1].to_numpy() for t in HZ]
        expected.append(1.0 - np.stack(at, axis=1))
    got = model.score(beats, HZ)["risk"]
    np.testing.assert_allclose(got, np.mean(expected, axis=0), rtol=1e-6, atol=1e-9)
    assert (np.diff(got, axis=1) >= 0).all()  # risk grows with the horizon
    assert model.horizons == [12.0, 24.0, 36.0, 48.0, 60.0]  # the run's, in its unit
    # past every fold model's follow-up the risk is not estimable: NaN, and said so
    assert model.past_follow_up([500.0]) == [500.0]
    assert np.isnan(model.score(beats, [500.0])["risk"]).all()


def test_predict_of_the_runs_own_cohort_from_the_run_reproduces_its_calibration(
        cox_run, tiny_data_root, tmp_path):
    """Given the run directory and its own cache, each cohort participant is scored by the
    fold model that held them out only: the run's out-of-fold risks, calibration table and
    top-2% group, to float precision; everyone else in the cache by every fold model."""
    from ecg_dan.metrics.calibration import calibration_table

    cache = next(tiny_data_root.glob("*ukb*.h5"))
    out = tmp_path / "own.csv"
    assert cli(["predict", "--model", str(cox_run), str(cache), "--out", str(out),
                "--workers", "1", "--no-progress"]) == 0
    pred = pd.read_csv(out).set_index("id")
    oof = pd.read_csv(cox_run / "oof_predictions.csv")
    cohort = pred.loc[oof.eid]
    assert cohort.out_of_fold.all() and cohort.n_models.eq(1).all()
    others = pred.drop(index=oof.eid)
    assert len(others) > 0 and (~others.out_of_fold).all() and others.n_models.eq(2).all()
    np.testing.assert_allclose(cohort.log_risk, oof.risk_cal, atol=2e-6)
    assert set(cohort.high_risk_share) <= {0.0, 1.0}
    cal = pd.read_csv(cox_run / "calibration.csv")
    assert len(cal)
    for h, want in cal.groupby("horizon"):
        got = calibration_table(cohort[f"risk@{h:g}"], oof.time, oof.event, h)
        np.testing.assert_allclose(got.predicted, want.predicted, rtol=1e-5)
        np.testing.assert_allclose(got.observed, want.observed, rtol=1e-12)
    # the flag is the run's top-2% group (its Kaplan-Meier figure's): risks within
    # RANK_TOLERANCE are tied, so recomputed risks rank as the saved ones
    top = (oof.risk_rank >= np.percentile(oof.risk_rank, 98)).to_numpy()
    assert cohort.high_risk.sum() > 0
    np.testing.assert_array_equal(cohort.high_risk.to_numpy(), top)


def test_percentiles_and_high_risk_flag_follow_the_out_of_fold_reference(cox_run, cox_file,
                                                                         tiny_data_root):
    """The reference: per participant, the normal score of their risk's mid-rank among the
    held-out risks of the fold model that held them out. A new person gets one such score
    per choice of one fold model per seed (here: either fold model): the percentile is the
    mean over the choices, the flag share the fraction at or above the threshold."""
    from scipy.stats import norm, percentileofscore

    model = load_model(cox_file)
    cfg_top = 0.02  # finetune_hyp's top_fraction (the paper's HYP high-risk group)
    assert model.top_fraction == cfg_top
    folds = _folds(cox_run)
    held = [np.sort(t.risk) for t, _ in folds]  # each fold model's held-out risks

    def z(h, v, tol=RANK_TOLERANCE):  # mid-rank, risks within tol tied
        n = len(h)
        return norm.ppf(np.clip([((h < x - tol).sum() + 0.5 * (np.abs(h - x) <= tol).sum())
                                 / n for x in v], 0.5 / n, 1 - 0.5 / n))

    oof = pd.concat([t.assign(z=z(h, t.risk)) for (t, _), h in zip(folds, held)])
    reference = np.sort(oof.groupby("eid").z.mean().to_numpy())
    np.testing.assert_allclose(model.reference, reference, atol=1e-9)
    assert model.threshold == pytest.approx(np.percentile(reference, 98))
    medians, _ = _cache(tiny_data_root)
    s = model.score(medians)
    assert not s["out_of_fold"].any()
    zs = [z(h, v) for h, v in zip(held, model.member_risks(medians))]
    want = np.mean([[percentileofscore(reference, x, kind="weak") for x in zm] for zm in zs],
                   axis=0)
    np.testing.assert_allclose(s["percentile"], want, atol=1e-6)
    share = np.mean([zm >= model.threshold for zm in zs], axis=0)
    np.testing.assert_array_equal(s["high_risk_share"], share)
    np.testing.assert_array_equal(s["high_risk"], share >= 0.5)
    assert 0 < s["high_risk"].sum() < len(s["high_risk"])


def test_logistic_hazard_run_reproduces_its_head_and_its_recalibrated_risk(lh_run, tmp_path,
                                                                           tiny_data_root):
    """A logistic-hazard model file reproduces the run's scalar risks and curves, and its
    absolute risk is the run's out-of-fold recalibration of that scalar risk (the Breslow
    baseline of its centred training-fold risks; slope 1 here), written out by hand."""
    out = tmp_path / "lh.safetensors"
    model = load_model(export_run(lh_run, out).source)
    assert model.objective == "logistic_hazard"
    medians, pos = _cache(tiny_data_root)
    t = 25.35  # months
    for i, (test, train) in enumerate(_folds(lh_run)):
        beats = medians[[pos[e] for e in test.eid]]
        np.testing.assert_allclose(model.member_risks(beats)[i], test.risk, atol=2e-6)
        with np.load(lh_run / "predictions" / f"seed{test.seed[0]}_fold{test.fold[0]}"
                     "_surv.npz") as z:
            surv, cuts = z["surv"], z["cuts"]
        risks, survs = model.member_outputs(beats)
        np.testing.assert_allclose(survs[i], surv, atol=1e-5)  # the run's own curves
        np.testing.assert_array_equal(model.members[i].cuts, cuts)
        assert model.members[i].slope == 1.0
        h0 = _breslow_by_hand(train.assign(risk=train.risk - train.risk.mean()))(t)
        want = 1 - np.exp(-h0 * np.exp(test.risk - train.risk.mean()))
        only = np.zeros((len(test), len(model.members)), dtype=bool)
        only[:, i] = True
        got = model.absolute_risk(risks, [t], only)[:, 0]
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_cox_baseline_runs_are_refused_clearly(tmp_path, tiny_data_root):
    run = tmp_path / "cox_baseline"
    run.mkdir()
    save_config(load_config("baselines/biomarker_cox", ["+tiny", f"run_dir={run}"]),
                run / "config.yaml")
    with pytest.raises(ModelFileError, match="task=cox_baseline.*nothing to export"):
        export_run(run, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# ----------------------------------------------------------------------------- bad model files
def _rewrite(src: Path, dst: Path, edit_manifest=None, metadata_version: str | None = None):
    """A copy of a model file with its manifest edited and the content hash redone, so
    only the check under test can refuse it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ecg_dan.model_file import _content_digest

    with safe_open(src, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    manifest = json.loads(meta["manifest"])
    if edit_manifest:
        edit_manifest(manifest)
        manifest["content_sha256"] = _content_digest(tensors, manifest)
    meta["manifest"] = json.dumps(manifest)
    if metadata_version is not None:
        meta["format_version"] = metadata_version
    save_file(tensors, dst, metadata=meta)
    return dst


def test_bad_model_files_are_refused_naming_the_problem(cox_file, tmp_path, capsys):
    data = cox_file.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "truncated"),
        "header_cut": (data[:100], "truncated"),
        "empty": (b"", "empty or truncated"),
        "tampered": (data[:-10] + bytes(b ^ 0xFF for b in data[-10:]), "tampered"),
        "text": (b"hello, I am not a model\n" * 10, "not a safetensors file"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        with pytest.raises(ModelFileError, match=message):
            read_model(p)
    v2 = _rewrite(cox_file, tmp_path / "v2.safetensors",
                  metadata_version=str(FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}.*reads "
                                             f"version {FORMAT_VERSION}"):
        read_model(v2)
    arch = _rewrite(cox_file, tmp_path / "arch.safetensors",
                    lambda m: m["model_config"].update(wavelet_levels=3))
    with pytest.raises(ModelFileError, match="another architecture: model.wavelet_levels"):
        read_model(arch)
    shapes = _rewrite(cox_file, tmp_path / "shapes.safetensors",
                      lambda m: m["model_config"].update(latent_dim=64))
    with pytest.raises(ModelFileError, match=r"another architecture.*: file \(.*vs this code"):
        load_model(shapes)
    prep = _rewrite(cox_file, tmp_path / "prep.safetensors",
                    lambda m: m["preprocessing"].update(sample_rate_hz=250))
    with pytest.raises(ModelFileError, match="preprocessing.sample_rate_hz: file 250 vs "
                                             "this code 500"):
        read_model(prep)
    # the CLI: one line, exit 2
    assert cli(["predict", "--model", str(tmp_path / "truncated.safetensors"),
                str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecg-dan: model file error:"), err


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_renamed_as_model_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    for name, writer in (("pickle", lambda p: p.write_bytes(pickle.dumps(_Payload(str(marker))))),
                         ("torch", lambda p: torch.save({"x": _Payload(str(marker))}, p))):
        p = tmp_path / f"{name}.safetensors"
        writer(p)
        assert not marker.exists()
        with pytest.raises(ModelFileError, match="refused without being unpickled"):
            load_model(p)
        assert not marker.exists(), "the payload ran"
    assert pickle.loads(pickle.dumps(_Payload(str(marker)))) is not None  # it would have run
    assert marker.exists()


# ----------------------------------------------------------------------------- inputs
def _synthetic_record(data_root: Path) -> tuple[np.ndarray, Path]:
    """(signal (12, 5000) mV at 500 Hz, the record's stem) of the first synthetic record."""
    from data_modules.sources.wfdb_record import read_wfdb_12lead

    stem = Path(sorted(glob.glob(str(data_root / "*/ptbxl/records500/*/*_hr.hea")))[0])
    stem = stem.with_suffix("")
    return read_wfdb_12lead(stem, stem.name)[0], stem


def _xml(data_root: Path) -> Path:
    return Path(sorted(glob.glob(str(data_root / "*/ukb/xml/*.xml")))[0])


def _edit_xml(src: Path, dst: Path, edit) -> Path:
    import xml.etree.ElementTree as ET

    tree = ET.parse(src)
    edit(tree.getroot())
    tree.write(dst, encoding="ISO-8859-1", xml_declaration=True)
    return dst


def _median_lead(root, lead: str):
    return next(w for w in root.find("RestingECGMeasurements/MedianSamples")
                .findall("WaveformData") if w.get("lead") == lead)


def _bad_inputs(data_root: Path, d: Path) -> dict[str, str]:
    """Bad input files in ``d``, mapped to the reason each must be skipped with."""
    from data_modules.signal.leads import LEADS
    from data_modules.synthetic.ptbxl_format import PTBXL_SIG_NAMES

    x, _ = _synthetic_record(data_root)
    xml = _xml(data_root)
    bad: dict[str, str] = {}
    write_wfdb(d / "missing_lead", x[:11], 500, PTBXL_SIG_NAMES[:11])
    bad["missing_lead.hea"] = "wrong lead count: 11 leads"
    flat = x.copy()
    flat[7] = 0.0
    write_wfdb(d / "flat_lead", flat, 500)
    bad["flat_lead.hea"] = f"flat lead(s) {LEADS[7]}"
    write_wfdb(d / "amplitude", x * 30.0, 500)  # a wrong gain: tens of mV
    bad["amplitude.hea"] = "implausible amplitude"
    write_wfdb(d / "short_data", x, 500)
    dat = (d / "short_data.dat").read_bytes()
    (d / "short_data.dat").write_bytes(dat[: len(dat) // 2])  # fewer samples than the header
    bad["short_data.hea"] = "unreadable WFDB record"
    write_wfdb(d / "too_short", x[:, :600], 500)  # 1.2 s: not enough beats
    bad["too_short.hea"] = "record too short"
    _edit_xml(xml, d / "xml_missing_lead.xml", lambda r: r.find(
        "RestingECGMeasurements/MedianSamples").remove(_median_lead(r, "V3")))

    def flat_xml(r):
        w = _median_lead(r, "V2")
        w.text = ",".join(["0"] * 600)

    _edit_xml(xml, d / "xml_flat.xml", flat_xml)
    bad["xml_missing_lead.xml"] = "MedianSamples/WaveformData[lead=V3] missing"
    bad["xml_flat.xml"] = "flat lead: xml_flat.xml: MedianSamples: flat lead(s) V2"

    def loud(r):
        r.find("RestingECGMeasurements/MedianSamples/Resolution").text = "5000"

    _edit_xml(xml, d / "xml_amplitude.xml", loud)
    bad["xml_amplitude.xml"] = "implausible amplitude"

    def count(r):
        w = _median_lead(r, "I")
        w.text = ",".join(w.text.split(",")[:500])

    _edit_xml(xml, d / "xml_count.xml", count)
    bad["xml_count.xml"] = "WaveformData[lead=I] has 500 values, expected 600"
    (d / "notes.xml").write_text("this is a shopping list, not an ECG\n")
    bad["notes.xml"] = "unusable XML: notes.xml: not well-formed XML"
    (d / "garbage.hea").write_text("no header here\n")
    bad["garbage.hea"] = "unreadable WFDB record"
    # issue 21: refused by the input limits before reading (sparse files: no disk used)
    (d / "many.hea").write_text("many 100000 500 5000\n")
    bad["many.hea"] = "over limit: many.hea: 100000 signals"
    with open(d / "comment.xml", "wb") as f:
        f.truncate(200 * 2**20)
    bad["comment.xml"] = "over limit: comment.xml: 200.0 MiB"
    return bad


def test_predict_batch_scores_good_files_and_records_every_bad_one(cox_file, tiny_data_root,
                                                                   tmp_path, capsys):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = _bad_inputs(tiny_data_root, bad_dir)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    xmls = sorted(glob.glob(str(tiny_data_root / "*/ukb/xml/*.xml")))[:3]
    _, stem = _synthetic_record(tiny_data_root)
    cache = next(tiny_data_root.glob("*ukb*.h5"))
    out = tmp_path / "res" / "predictions.csv"
    code = cli(["predict", "--model", str(cox_file), *xmls, str(stem), str(bad_dir),
                str(tmp_path / "photo.jpg"), str(tmp_path / "absent.xml"), str(cache),
                "--out", str(out), "--horizons", "12", "24", "--workers", "2",
                "--no-progress"])
    assert code == 0
    pred = pd.read_csv(out)
    skipped = pd.read_csv(out.with_name("predictions_skipped.csv"))
    with h5py.File(cache, "r") as f:
        n_cache = f["eid"].shape[0]
    assert len(pred) == 3 + 1 + n_cache
    assert list(pred.columns) == ["id", "source", "log_risk", "log_risk_std", "n_models",
                                  "out_of_fold", "percentile", "high_risk_share", "risk@12",
                                  "risk@24", "high_risk", "model_id"]
    assert (pred.model_id == read_model(cox_file).model_id).all()
    assert pred.n_models.eq(2).all() and pred[["risk@12", "risk@24"]].notna().all().all()
    assert not pred.out_of_fold.any()  # a model file scores everyone as a new person
    # the XML file and its cache row are the same ECG: the same scores
    eid = Path(xmls[0]).name.split("_")[0]
    a = pred[pred.source == xmls[0]].iloc[0]
    b = pred[(pred.source == str(cache)) & (pred.id.astype(str) == eid)].iloc[0]
    assert a.log_risk == pytest.approx(b.log_risk, abs=1e-5)
    reasons = dict(zip(skipped.source.map(lambda s: Path(s).name), skipped.reason))
    for name, why in bad.items():
        assert why in reasons[name], (name, reasons.get(name))
    assert "not an ECG file: photo.jpg" in reasons["photo.jpg"]
    assert reasons["absent.xml"].startswith("not found")
    assert len(skipped) == len(bad) + 2
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["model"]["id"] == pred.model_id[0] and doc["horizons"] == [12, 24]
    assert doc["time_unit"] == "months"
    assert len(doc["predictions"]) == len(pred) and len(doc["skipped"]) == len(skipped)
    err = capsys.readouterr().err
    assert f"scored {len(pred)} ECG(s), skipped {len(skipped)}" in err and "files/s" in err


def _load_or_die(item, cardiosoft="device"):
    """predict's worker, killed by signal 9 on the file named victim (the OOM killer)."""
    import ecg_dan.jobs.predict as job

    if "victim" in item.id:
        os.kill(os.getpid(), signal.SIGKILL)
    return job._load_real(item, cardiosoft)


def test_a_killed_predict_worker_costs_its_file_only(cox_file, tiny_data_root, tmp_path,
                                                      monkeypatch, capsys):
    """Issue 21: kill -9 of one worker ended the run with BrokenProcessPool and no output."""
    import shutil

    import ecg_dan.jobs.predict as job

    xmls = sorted(glob.glob(str(tiny_data_root / "*/ukb/xml/*.xml")))[:3]
    d = tmp_path / "in"
    d.mkdir()
    for i, x in enumerate(xmls):
        shutil.copy(x, d / f"ecg{i}.xml")
    shutil.copy(xmls[0], d / "victim.xml")
    monkeypatch.setattr(job, "_load_real", job._load, raising=False)
    monkeypatch.setattr(job, "_load", _load_or_die)
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(cox_file), str(d), "--out", str(out),
                "--workers", "2", "--no-progress"]) == 0
    pred = pd.read_csv(out)
    skipped = pd.read_csv(out.with_name("p_skipped.csv"))
    assert sorted(pred.id) == ["ecg0", "ecg1", "ecg2"] and pred.log_risk.notna().all()
    assert list(skipped.id) == ["victim"]
    assert skipped.reason[0].startswith("worker died: killed by signal 9 (SIGKILL")
    assert "skipped     1 x worker died" in capsys.readouterr().err


def test_predict_scores_a_muse_file_and_a_cohort_cache(cox_file, tmp_path):
    paths = write_cohort(tmp_path, n=5, seed=2)  # WFDB 250/500/1000 Hz, CardioSoft, MUSE
    cache = tmp_path / "cohort.h5"
    build_cohort_cache(paths["cohort_ecgs"], paths["cohort_table"], cache, workers=1,
                       progress=False)
    muse = paths["cohort_ecgs"] / "muse" / "ecg_00004.xml"
    out = tmp_path / "pred.csv"
    assert cli(["predict", "--model", str(cox_file), str(muse), str(cache), "--out", str(out),
                "--workers", "1", "--no-progress"]) == 0
    pred = pd.read_csv(out)
    with h5py.File(cache, "r") as f:
        eid, files = f["eid"][...], f["ecg_file"].asstr()[...].tolist()
    assert len(pred) == 1 + 5 == 1 + len(eid) and pred.log_risk.notna().all()
    # the MUSE file and its cache row are the same ECG: the same score
    a = pred[pred.source == str(muse)].iloc[0]
    row = str(eid[files.index("muse/ecg_00004.xml")])
    b = pred[(pred.source == str(cache)) & (pred.id.astype(str) == row)].iloc[0]
    assert a.id == "ecg_00004" and a.log_risk == pytest.approx(b.log_risk, abs=1e-5)


def test_a_cardiosoft_beat_follows_the_models_rule(tmp_path):
    """A model trained on a cohort cache saw CardioSoft beats derived from the strip; predict
    makes the same beat for it (``strip``), and the device median for UK Biobank models."""
    from data_modules.sources.files import ECGItem, load_beat

    paths = write_cohort(tmp_path, n=5, seed=2)
    cache = tmp_path / "cohort.h5"
    build_cohort_cache(paths["cohort_ecgs"], paths["cohort_table"], cache, workers=1,
                       progress=False)
    with h5py.File(cache, "r") as f:
        files = f["ecg_file"].asstr()[...].tolist()
        rel = next(x for x in files if x.startswith("cardiosoft/"))
        row = f["median"][files.index(rel)]
    path = str(paths["cohort_ecgs"] / rel)
    item = ECGItem("x", path, "xml", path)
    np.testing.assert_array_equal(load_beat(item, cardiosoft="strip"), row)
    assert np.abs(load_beat(item) - row).max() > 1e-3  # the device median is another beat


def test_predict_explain_draws_each_ecg_with_the_model_that_scored_it(cox_file, tiny_data_root,
                                                                       tmp_path):
    from ecg_dan.interpretation import explain_ecg

    xmls = sorted(glob.glob(str(tiny_data_root / "*/ukb/xml/*.xml")))[:2]
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(cox_file), *xmls, "--out", str(out), "--explain",
                "--workers", "1", "--no-progress"]) == 0
    pred = pd.read_csv(out)
    pngs = sorted((tmp_path / "p_explain").glob("*.png"))
    assert len(pngs) == 2 and sorted(pred.explain_png) == [str(p) for p in pngs]
    assert all(p.stat().st_size > 10_000 for p in pngs)
    # the figure's model is the ensemble's first fold model, on the beat that was scored
    model = load_model(cox_file)
    beat = load_beat(discover([xmls[0]])[0][0])
    res = explain_ecg(model.members[0].module, beat)
    assert res["risk"] == pytest.approx(float(model.member_outputs(beat[None])[0][0, 0]),
                                        abs=1e-5)
    assert np.allclose(res["cross_lead"].sum(-1), 1, atol=1e-5)
    assert res["temporal_map"].min() >= 0 and res["temporal_map"].max() == pytest.approx(1)


def test_wfdb_at_another_rate_is_resampled_to_the_same_beat(tiny_data_root, tmp_path):
    from data_modules.signal.median_beat import resample_to

    x, stem = _synthetic_record(tiny_data_root)
    write_wfdb(tmp_path / "rec250", resample_to(x, 500, 250), 250)
    items, skipped = discover([stem, tmp_path / "rec250.hea"])
    assert not skipped and [i.kind for i in items] == ["wfdb", "wfdb"]
    b500, b250 = (load_beat(i) for i in items)
    assert b250.shape == (12, 600)
    assert np.corrcoef(b500.ravel(), b250.ravel())[0, 1] > 0.98


def test_real_ptbxl_100hz_record_is_resampled(ptbxl_dir):
    items, skipped = discover([ptbxl_dir / "records100/00000/00001_lr.hea",
                               ptbxl_dir / "records500/00000/00001_hr.hea"])
    assert not skipped
    lr, hr = (load_beat(i) for i in items)
    # the 100 Hz record's beat, resampled to 500 Hz, is the 500 Hz record's beat
    assert np.corrcoef(lr.ravel(), hr.ravel())[0, 1] > 0.9


def test_ptbxl_cache_rows_are_inputs_named_by_ecg_id(tiny_data_root):
    cache = next(tiny_data_root.glob("*ptbxl.h5"))
    items, skipped = discover([cache])
    with h5py.File(cache, "r") as f:
        ids, first = f["ecg_id"][...], f["median"][0]
    assert not skipped and [i.id for i in items] == [str(i) for i in ids]
    np.testing.assert_array_equal(load_beat(items[0]), first)


def _tree(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x\n")  # discovery reads names only (caches aside)
    return root


def test_a_folder_lists_every_file_that_is_not_an_ecg_and_ids_are_relative_paths(tmp_path):
    d = _tree(tmp_path / "in", ["site1/123_20205_2_0.xml", "site2/123_20205_2_0.xml",
                                "site2/rec.hea", "site2/rec.dat", "orphan.dat", "README.md",
                                "photo.JPG", ".DS_Store"])
    items, skipped = discover([d])
    assert [(i.id, i.kind) for i in items] == [("site1/123_20205_2_0", "xml"),
                                               ("site2/123_20205_2_0", "xml"),
                                               ("site2/rec", "wfdb")]
    reasons = {sid: why for sid, _, why in skipped}
    assert set(reasons) == {"orphan", "README", "photo", ".DS_Store"}  # not rec.dat
    assert reasons["orphan"] == ("not an ECG file: orphan.dat is a WFDB signal file without "
                                 "its header (orphan.hea)")
    assert reasons["README"].startswith("not an ECG file: README.md is neither a WFDB record")
    # a file given on its own keeps its name as id; given again inside the folder, it is once
    items, _ = discover([d / "site1/123_20205_2_0.xml", d])
    assert [i.id for i in items][:2] == ["123_20205_2_0", "site2/123_20205_2_0"]


def test_an_unusable_cache_has_one_reason_whether_named_or_found_in_a_folder(tmp_path):
    d = _tree(tmp_path / "in", ["sub/broken.h5"])  # not HDF5
    _, in_folder = discover([d])
    _, named = discover([d / "sub/broken.h5"])
    assert [(i, w) for i, _, w in in_folder] == [("sub/broken", named[0][2])]
    assert named[0][2].startswith("unusable cache: ") and "not a readable HDF5 file" in named[0][2]


def test_two_ecgs_with_one_id_are_refused(tmp_path):
    d = _tree(tmp_path / "in", ["a/123_20205_2_0.xml", "b/123_20205_2_0.xml", "c/rec.hea",
                                "e/rec.xml"])
    with pytest.raises(DataError, match=r"two inputs have the id '123_20205_2_0': "
                                        r".*a/123_20205_2_0.xml and .*b/123_20205_2_0.xml"):
        discover([d / "a", d / "b"])
    with pytest.raises(DataError, match="two inputs have the id 'rec'"):
        discover([d / "c/rec.hea", d / "e"])  # a WFDB record and an XML file
    # their common parent: ids a/123_20205_2_0, b/123_20205_2_0, c/rec, e/rec
    assert len(discover([d])[0]) == 4


def test_a_bad_record_raises_a_skip_with_its_reason(tiny_data_root, tmp_path):
    x, _ = _synthetic_record(tiny_data_root)
    flat = x.copy()
    flat[0] = 0.0
    write_wfdb(tmp_path / "flat", flat, 500)
    with pytest.raises(RecordSkip, match=r"median beat: flat lead\(s\) I"):
        load_beat(discover([tmp_path / "flat"])[0][0])


# ----------------------------------------------------------------------------- calibration
def test_evaluate_writes_calibration_that_matches_a_direct_computation(cox_run):
    from lifelines import KaplanMeierFitter

    res = json.loads((cox_run / "results.json").read_text())["calibration"]
    cal = pd.read_csv(cox_run / "calibration.csv")
    assert (cox_run / "calibration.png").stat().st_size > 1000
    assert (cox_run / "decision_curve.png").stat().st_size > 1000
    dca = pd.read_csv(cox_run / "decision_curve.csv")
    assert set(dca.horizon) == set(map(float, res))
    assert "Calibration at the horizons" in (cox_run / "results.md").read_text()
    rows = []
    for test, train in _folds(cox_run):
        # the Breslow baseline of the training rows' centred log-risk (slope 1: too few
        # validation events for one)
        h0_of = _breslow_by_hand(train.assign(risk=train.risk - train.risk.mean()))
        for h in map(float, res):
            h0 = h0_of(h)
            rows.append(pd.DataFrame({"eid": test.eid, "h": h, "time": test.time,
                                      "event": test.event,
                                      "p": 1 - np.exp(-h0 * np.exp(test.risk
                                                                   - train.risk.mean()))}))
    direct = pd.concat(rows)
    for h, got in res.items():
        sub = direct[direct.h == float(h)]
        per = sub.groupby("eid").agg(p=("p", "mean"), time=("time", "first"),
                                     event=("event", "first"))
        kmf = KaplanMeierFitter().fit(per.time, per.event)
        assert got["predicted"] == pytest.approx(per.p.mean(), rel=1e-9)
        assert got["observed"] == pytest.approx(1 - kmf.predict(float(h)), rel=1e-9)
        # deciles: ten groups by predicted risk, KM per group
        tab = cal[cal.horizon == float(h)]
        order = per.sort_values("p", kind="stable").index.to_numpy()
        assert len(tab) == 10
        for (_, r), idx in zip(tab.iterrows(), np.array_split(order, 10)):
            g = per.loc[idx]
            assert r.n == len(g) and r.predicted == pytest.approx(g.p.mean(), rel=1e-9)
            assert r.observed == pytest.approx(
                1 - KaplanMeierFitter().fit(g.time, g.event).predict(float(h)), abs=1e-12)

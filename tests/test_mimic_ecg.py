"""MIMIC-IV-ECG as a pretraining corpus (issue 17): the twin's layout, the reader (leads by
name, text join, patient-level folds, recorded skips), the cache through the CLI and a
shard split, and PTB-XL + MIMIC-IV-ECG twins pretraining together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.signal import resample_poly

from data_modules.cache import open_cache, read_skipped
from data_modules.sources.mimic_ecg import patient_fold, report_text
from data_modules.sources.wfdb_record import read_wfdb, read_wfdb_12lead
from data_modules.synthetic.mimic_format import MIMIC_LEADS, write_mimic, write_mimic_wfdb
from ecg_dan.cli import main as cli


def test_lead_order_by_name_and_text_join(tmp_path):
    # MIMIC lists aVF before aVL: the reader must map by the header's names
    x = np.arange(12, dtype=float)[:, None] * 0.1 + np.zeros((12, 50))
    write_mimic_wfdb(tmp_path / "40000001", x, pd.Timestamp("2180-07-23 08:44").to_pydatetime(),
                     10000032)
    got, fs = read_wfdb_12lead(tmp_path / "40000001", "40000001")
    assert fs == 500
    want = [MIMIC_LEADS.index(n) * 0.1 for n in ("I", "II", "III", "aVR", "aVL", "aVF",
                                                 "V1", "V2", "V3", "V4", "V5", "V6")]
    assert np.allclose(got[:, 0], want)
    assert report_text(["Sinus rhythm", " Normal ECG. ", "", float("nan")]) == \
        "Sinus rhythm. Normal ECG."
    assert report_text(["", ""]) == ""
    assert all(1 <= patient_fold(s) <= 10 for s in range(10_000_000, 10_000_050))


def _break(root, rl: pd.DataFrame) -> dict[int, str]:
    """Damage a few studies of the twin; returns study_id -> expected reason category."""
    ids = rl["study_id"].tolist()
    stem = {s: root / p for s, p in zip(ids, rl["path"])}
    stem[ids[0]].with_suffix(".dat").unlink()  # a record_list row without its WFDB
    hea = stem[ids[1]].with_suffix(".hea")  # an unknown lead name
    hea.write_text(hea.read_text().replace(" V6\n", " V7\n"))
    raw = np.fromfile(stem[ids[2]].with_suffix(".dat"), dtype="<i2")  # NaN samples
    raw[100:400] = -32768
    raw.tofile(stem[ids[2]].with_suffix(".dat"))
    rec = read_wfdb(stem[ids[4]])  # another sampling rate: resampled, kept
    write_mimic_wfdb(stem[ids[4]], resample_poly(rec.signal, 2, 1, axis=1),
                     pd.Timestamp("2180-07-23").to_pydatetime(), 1, rec.leads, fs=1000)
    mm = pd.read_csv(root / "machine_measurements.csv")  # a study without its report
    mm[mm["study_id"] != ids[3]].to_csv(root / "machine_measurements.csv", index=False)
    return {ids[0]: "record files not found", ids[1]: "unknown lead name 'V7' in",
            ids[2]: "median beat", ids[3]: "no machine report"}


def test_cache_cli_skips_folds_and_shards(tmp_path, capsys):
    root, _ = write_mimic(tmp_path / "mimic", n=10, seed=3)
    rl = pd.read_csv(root / "record_list.csv")
    assert rl["subject_id"].nunique() < len(rl)  # several studies per subject
    expect = _break(root, rl)
    out = tmp_path / "m.h5"
    assert cli(["cache", "mimic", "--root", str(root), "--out", str(out), "--workers", "1"]) == 0
    assert "6 records written" in capsys.readouterr().out
    with open_cache(out, "corpus") as f:
        ids, pid, fold = f["record_id"][...], f["patient_id"][...], f["fold"][...]
        reports = f["report"].asstr()[...]
        skipped = dict(read_skipped(f))
    assert list(ids) == sorted(ids) and len(ids) == 6 and rl["study_id"][4] in ids
    for s, why in expect.items():
        assert skipped[str(s)].startswith(why), skipped[str(s)]
    assert list(skipped) == sorted(skipped, key=int)
    assert all(r.endswith(".") and "ECG" in r for r in reports)
    for p in np.unique(pid):  # a patient never spans folds
        assert len(set(fold[pid == p])) == 1 and fold[pid == p][0] == patient_fold(p)
    parts = []
    for k in range(2):
        part = tmp_path / f"part{k}.h5"
        assert cli(["cache", "mimic", "--root", str(root), "--out", str(part), "--workers", "1",
                    "--shard", f"{k}/2"]) == 0
        with open_cache(part, "corpus") as f:
            parts.append((set(f["record_id"][...]), set(f["patient_id"][...]),
                          {i for i, _ in read_skipped(f)}))
    assert parts[0][0] | parts[1][0] == set(ids) and not parts[0][1] & parts[1][1]
    assert parts[0][2] | parts[1][2] == set(skipped)


def test_classification_loss_only_on_labelled_rows():
    from ecg_dan.lit.pretrain import classification_bce  # deferred: torch, Lightning

    logits = torch.tensor([[2.0, -1.0], [5.0, 5.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    only_first = classification_bce(logits[:1], {"superclass": y[:1]})
    mixed = classification_bce(logits, {"superclass": y, "labelled": torch.tensor([True, False])})
    assert torch.isclose(mixed, only_first)
    none = classification_bce(logits, {"superclass": y, "labelled": torch.tensor([False, False])})
    assert none.item() == 0.0


def test_corpus_make_variables_and_config_checks():
    from ecg_dan.config import ConfigError, load_config
    from ecg_dan.make_targets import pretrain_config

    cfg = pretrain_config({"DATA": "synthetic", "CORPUS": "ptbxl,mimic_ecg"}, [])
    assert list(cfg.pretrain.corpora) == ["ptbxl", "mimic_ecg"]
    assert cfg.name == "pretrain_ptbxl_mimic_ecg_synthetic"
    with pytest.raises(ConfigError, match="MIMIC"):
        pretrain_config({"CORPUS": "mimic_ecg"}, [])
    with pytest.raises(ConfigError, match="CORPUS=mimic"):
        pretrain_config({"CORPUS": "mimic"}, [])
    with pytest.raises(ConfigError, match="w_cls"):
        load_config("pretrain_mimic", ["pretrain.w_cls=1"])


def test_ptbxl_and_mimic_twins_pretrain_together(tmp_path, tiny_data_root):
    from ecg_dan.checkpoints import read_checkpoint  # deferred: torch
    from ecg_dan.config import load_config
    from ecg_dan.jobs.data import corpus_caches, pretrain_datamodule
    from ecg_dan.jobs.pretrain import run_pretrain

    cfg = load_config("demo_pretrain", [
        "+tiny", f"data.root={tiny_data_root}", f"run_dir={tmp_path / 'run'}",
        "pretrain.corpora=[ptbxl,mimic_ecg]", "data.synthetic_n_mimic=40", "pretrain.w_cls=1",
        "trainer.limit_val_batches=1", "trainer.limit_train_batches=2", "pretrain.batch_size=16"])
    out = run_pretrain(cfg)
    assert out["checkpoint"].is_file()
    meta = read_checkpoint(out["checkpoint"], "pretrain")["ecg_dan"]
    assert meta["objective"]["corpora"] == ["ptbxl", "mimic_ecg"]
    dm = pretrain_datamodule(cfg, corpus_caches(cfg), None)
    seen = torch.cat([b["corpus"] for b in dm.train_dataloader()])
    assert set(seen.tolist()) == {0, 1}  # rows of both corpora were trained on
    for k, c in enumerate(dm.corpora):
        with open_cache(c.cache_path) as f:
            pid = f["patient_id"][...]
        train, val = (set(pid[r]) for r in (dm.splits[k]["train"], dm.splits[k]["val"]))
        assert train and not train & val, c.name  # no patient in both train and val

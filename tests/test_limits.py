"""Every input has bounded cost (data_modules/limits.py): each limit refuses a file just over
it before reading it, and passes one just at it; the hostile cases of issue 21 (a header
declaring 100,000 signals or 40 M samples, a 200 MB XML, an 8 GiB model file, a manifest
declaring latent_dim 2e6) are refused in milliseconds without allocating. Large files are
sparse: nothing here writes or allocates more than a few hundred KB."""

from __future__ import annotations

import dataclasses
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from data_modules.errors import DataError, RecordSkip
from data_modules.limits import LimitExceeded, check_file_size, limit
from data_modules.sources.wfdb_record import check_wfdb_limits, read_wfdb, read_wfdb_12lead
from data_modules.sources.xml_format import parse_xml, xml_format
from data_modules.synthetic.ptbxl_format import write_wfdb

GIB = 2**30


def _record(d: Path, n: int = 5000, n_sig: int = 12) -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(exist_ok=True)
    stem = d / "rec"
    write_wfdb(stem, rng.normal(0, 0.2, (n_sig, n)), 500,
               tuple(f"s{i}" for i in range(n_sig)))
    return stem


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _exact(monkeypatch, name: str, value: float) -> None:
    monkeypatch.setenv(f"ECG_DAN_MAX_{name}", repr(value))


@pytest.mark.parametrize("name, value, unit", [("WFDB_SAMPLES", 5000, 1),
                                               ("WFDB_DAT_MB", 12 * 5000 * 2, 2**20)])
def test_wfdb_limits_pass_at_the_limit_and_refuse_just_over(tmp_path, monkeypatch, name,
                                                            value, unit):
    stem = _record(tmp_path)
    _exact(monkeypatch, name, value / unit)
    assert read_wfdb(stem).signal.shape == (12, 5000)
    _exact(monkeypatch, name, (value - 1) / unit)
    with pytest.raises(LimitExceeded, match=f"over limit: .*ECG_DAN_MAX_{name}"):
        read_wfdb(stem)


def test_wfdb_header_size_and_signal_count(tmp_path, monkeypatch):
    stem = _record(tmp_path, n_sig=24)
    size = stem.with_suffix(".hea").stat().st_size
    _exact(monkeypatch, "WFDB_HEADER_KB", size / 1024)
    assert read_wfdb(stem).signal.shape == (24, 5000)  # 24 signals: the default limit
    _exact(monkeypatch, "WFDB_HEADER_KB", (size - 1) / 1024)
    with pytest.raises(LimitExceeded, match="size of a WFDB header"):
        read_wfdb(stem)
    monkeypatch.delenv("ECG_DAN_MAX_WFDB_HEADER_KB")
    stem = _record(tmp_path, n_sig=25)
    with pytest.raises(LimitExceeded, match="25 signals, over the limit of 24"):
        read_wfdb(stem)


def test_hostile_wfdb_headers_are_skipped_before_reading(tmp_path):
    """Issue 21: 100,000 declared signals (256 s in the WFDB reader before), 40 M samples
    with a sparse .dat (an 8 GB peak before), an 8 GiB sparse signal file, a .dat shorter
    than its header says: skips with the reason, in milliseconds."""
    many = tmp_path / "many"
    lines = ["many 100000 500 5000"] + [f"many.dat 16 1000/mV 16 0 0 0 0 s{i}"
                                        for i in range(100)]
    many.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    huge = tmp_path / "huge"
    huge.with_suffix(".hea").write_text("huge 12 500 40000000\n" + "".join(
        f"huge.dat 16 1000/mV 16 0 0 0 0 s{i}\n" for i in range(12)))
    _sparse(huge.with_suffix(".dat"), 12 * 40_000_000 * 2)
    big_dat = _record(tmp_path)
    _sparse(big_dat.with_suffix(".dat"), 8 * GIB)
    t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for stem, why in ((many, "100000 signals, over the limit of 24"),
                      (huge, "40000000 samples, over the limit of 1000000"),
                      (big_dat, "8192.0 MiB, over the limit of 128 MiB")):
        with pytest.raises(RecordSkip, match=why) as e:
            read_wfdb_12lead(stem, stem.name)
        assert e.value.reason.startswith("over limit: ")
    assert time.perf_counter() - t0 < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000  # KiB
    short = _record(tmp_path / "short")
    dat = short.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(RecordSkip, match="unreadable WFDB record rec: .*truncated: rec.dat "
                                         "holds 1000 bytes, the header declares 120000"):
        read_wfdb_12lead(short, "rec")
    check_wfdb_limits(_record(tmp_path / "ok"))  # a normal record passes


def test_xml_size_limit_before_parsing(tmp_path, monkeypatch):
    ok = tmp_path / "ok.xml"
    ok.write_text("<RestingECG><PatientDemographics/></RestingECG>\n")
    _exact(monkeypatch, "XML_MB", ok.stat().st_size / 2**20)
    assert xml_format(ok, "ok.xml") == "muse"
    assert parse_xml(ok).tag == "RestingECG"
    _exact(monkeypatch, "XML_MB", (ok.stat().st_size - 1) / 2**20)
    with pytest.raises(RecordSkip, match="over limit: ok.xml"):
        xml_format(ok, "ok.xml")
    with pytest.raises(LimitExceeded):
        parse_xml(ok)
    monkeypatch.delenv("ECG_DAN_MAX_XML_MB")
    big = _sparse(tmp_path / "comment.xml", 200 * 2**20)  # issue 21: 357 s in the parser
    t0 = time.perf_counter()
    with pytest.raises(RecordSkip, match="200.0 MiB, over the limit of 16 MiB"):
        xml_format(big, "comment.xml")
    from data_modules.sources.cardiosoft_xml import checked_median
    from data_modules.sources.muse_xml import muse_median

    for read in (checked_median, muse_median):
        with pytest.raises(RecordSkip, match=r"^over limit: comment.xml: 200.0 MiB"):
            read(big, "comment.xml")
    assert time.perf_counter() - t0 < 1.0


def test_xml_entity_expansion_is_bounded(tmp_path):
    """A billion-laughs file (a few hundred bytes declaring 10^9 'lol's) is refused by expat's
    amplification limit at once, not expanded."""
    ents = ['<!ENTITY lol0 "lolololololololololo">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(f"<?xml version='1.0'?><!DOCTYPE RestingECG [{''.join(ents)}]>"
                    "<RestingECG>&lol9;</RestingECG>")
    from data_modules.sources.muse_xml import muse_median

    t0 = time.perf_counter()
    with pytest.raises(RecordSkip, match="unusable XML: bomb.xml: not well-formed XML"):
        muse_median(bomb, "bomb.xml")
    assert time.perf_counter() - t0 < 1.0


def test_limits_come_from_the_environment_and_bad_values_are_one_line(tmp_path, monkeypatch):
    assert limit("WFDB_SIGNALS") == 24
    monkeypatch.setenv("ECG_DAN_MAX_WFDB_SIGNALS", "32")
    assert limit("WFDB_SIGNALS") == 32
    for bad in ("abc", "0", "-1", "inf", "nan"):
        monkeypatch.setenv("ECG_DAN_MAX_WFDB_SIGNALS", bad)
        with pytest.raises(DataError, match="ECG_DAN_MAX_WFDB_SIGNALS=.*positive number"):
            limit("WFDB_SIGNALS")
    assert check_file_size(tmp_path / "absent", "XML_MB") == 0  # left to the reader


# ----------------------------------------------------------------------------- model files
def test_model_file_size_is_checked_before_reading(tmp_path, monkeypatch, capsys):
    from ecg_dan.cli import main as cli
    from ecg_dan.model_file import ModelFileError, read_model

    small = tmp_path / "small.safetensors"
    small.write_bytes(b"x" * 4096)
    _exact(monkeypatch, "MODEL_MB", 4096 / 2**20)
    with pytest.raises(ModelFileError, match="not a safetensors file"):  # read: under
        read_model(small)
    _exact(monkeypatch, "MODEL_MB", 4095 / 2**20)
    with pytest.raises(ModelFileError, match="over limit: .*ECG_DAN_MAX_MODEL_MB"):
        read_model(small)
    monkeypatch.delenv("ECG_DAN_MAX_MODEL_MB")
    huge = _sparse(tmp_path / "huge.safetensors", 8 * GIB)  # issue 21: read whole (9 GB)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert cli(["predict", "--model", str(huge), str(tmp_path), "--out",
                str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "over limit" in err[0] and "8192.0 MiB" in err[0], err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000


def test_manifest_shapes_are_compared_before_the_model_is_built():
    """A manifest declaring latent_dim 2e6 (2.8 GB before) or 4096 base features (48 GB)
    is refused from shapes computed on the meta device: nothing of that size is allocated."""
    import torch

    from ecg_dan.config import ModelConfig, load_config
    from ecg_dan.model_file import ModelContents, ModelFileError
    from ecg_dan.models.registry import build_model
    from ecg_dan.predict import _build_members

    cfg = load_config(overrides=["name=t"])
    container = {"finetune": dict(cfg.finetune), "optim": dict(cfg.optim)}
    mc = {f.name: getattr(ModelConfig(), f.name) for f in dataclasses.fields(ModelConfig)}
    from ecg_dan.lit.finetune import SurvivalFinetuneModule

    state = SurvivalFinetuneModule(build_model(mc), finetune=container["finetune"],
                                   optim=container["optim"]).state_dict()
    tensors = {f"m0.state.{k}": v for k, v in state.items()}
    tensors.update({"m0.heldout_risk": torch.zeros(3), "m0.baseline_times": torch.ones(2),
                    "m0.baseline_cumhaz": torch.ones(2)})
    member = {"seed": 0, "fold": 0, "offset": 0.0, "slope": 1.0}
    for edit in ({"latent_dim": 2_000_000}, {"base_features": 4096}):
        manifest = {"config": container, "model_config": {**mc, **edit}, "members": [member]}
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(ModelFileError, match="another architecture"):
            _build_members(ModelContents(manifest, tensors, "id", "crafted.safetensors"))
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 300_000
    manifest = {"config": container, "model_config": mc, "members": [member]}
    (m,) = _build_members(ModelContents(manifest, tensors, "id", "ok.safetensors"))
    assert next(m.module.parameters()).device.type == "cpu"

"""``ecg-dan export --format onnx`` / ``ecg-dan predict --model x.onnx`` on the tiny Cox run
(tests/conftest.py): ONNX Runtime gives the PyTorch path's columns (risks within 1e-5) on
every input kind predict reads, for any batch size; a logistic-hazard head's graph too; a
corrupt, truncated, tampered or foreign ONNX file is refused in one line naming it."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from data_modules.synthetic.beat_model import simulate_record
from data_modules.synthetic.muse_format import muse_xml
from ecg_dan.cli import main as cli
from ecg_dan.model_file import ModelFileError, export_run
from ecg_dan.onnx_model import TAIL_LEN, OnnxRunner, read_onnx
from ecg_dan.predict import load_model

TOL = 1e-5
CACHE_ROWS = 40


@pytest.fixture(scope="module")
def files(tiny_cox_run, tmp_path_factory) -> tuple[Path, Path]:
    """(safetensors file, ONNX file) of the tiny Cox run, the ONNX one through the CLI."""
    d = tmp_path_factory.mktemp("onnx")
    export_run(tiny_cox_run, d / "model.safetensors")
    assert cli(["export", str(tiny_cox_run), "--format", "onnx", "--out",
                str(d / "model.onnx")]) == 0
    return d / "model.safetensors", d / "model.onnx"


def _inputs(data_root: Path, d: Path) -> list[str]:
    """One of each input kind: a WFDB record, CardioSoft XML files, a MUSE XML file, a
    folder (of a WFDB record and a CardioSoft file), a cache (its rows)."""
    hea = sorted(glob.glob(str(data_root / "*/ptbxl/records500/*/*_hr.hea")))
    xmls = sorted(glob.glob(str(data_root / "*/ukb/xml/*.xml")))
    rec = simulate_record(np.random.default_rng(3), "NORM", fs=500, noise="ukb")
    muse = d / "muse.xml"
    muse.write_bytes(muse_xml("123", 61, True, pd.Timestamp("2019-03-14 08:12"), rec))
    folder = d / "folder"
    folder.mkdir()
    for f in (Path(hea[1]), Path(hea[1]).with_suffix(".dat"), Path(xmls[2])):
        shutil.copy(f, folder / f.name)
    return [hea[0].removesuffix(".hea"), *xmls[:2], str(muse), str(folder),
            str(_first_rows(next(data_root.glob("*ukb*.h5")), d / "ukb.h5", CACHE_ROWS))]


def _first_rows(src: Path, dst: Path, n: int) -> Path:
    """A copy of a cache with its first ``n`` rows (scoring all of it only takes longer)."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        g.attrs.update(f.attrs)
        g.attrs["n_records"] = n
        total = int(f.attrs["n_records"])

        def copy(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                g.create_dataset(name, data=obj[:n] if obj.shape[:1] == (total,) else obj[...])

        f.visititems(copy)
    return dst


def test_onnx_predict_gives_the_pytorch_columns_on_every_input_kind(files, tiny_data_root,
                                                                    tmp_path, capsys):
    st, onnx_file = files
    inputs = _inputs(tiny_data_root, tmp_path)
    out = {}
    for name, model in (("torch", st), ("onnx", onnx_file)):
        out[name] = tmp_path / f"{name}.csv"
        assert cli(["predict", "--model", str(model), *inputs, "--out", str(out[name]),
                    "--workers", "1", "--batch-size", "100", "--no-progress"]) == 0
    a, b = (pd.read_csv(out[k]) for k in ("torch", "onnx"))
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 6 + CACHE_ROWS
    kinds = a.source.map(lambda s: "folder" if "/folder/" in s else Path(s).suffix)
    assert set(kinds) == {".hea", ".xml", "folder", ".h5"} and (kinds == "folder").sum() == 2
    assert (a.source == inputs[3]).sum() == 1  # the MUSE file
    assert "C-index against the outcomes" in capsys.readouterr().err  # a survival cache
    assert not pd.read_csv(tmp_path / "onnx_skipped.csv").shape[0]
    num = ["log_risk", "log_risk_std", *[c for c in a.columns if c.startswith("risk@")]]
    np.testing.assert_allclose(b[num].to_numpy(), a[num].to_numpy(), rtol=0, atol=TOL)
    same = ["id", "source", "n_models", "out_of_fold", "high_risk", "model_id",
            "high_risk_share"]
    pd.testing.assert_frame_equal(b[same], a[same])
    # a risk within float32 noise of a reference held-out risk (here: the run's own cohort,
    # whose risks are those) ranks tied in one runtime and just below or above in the other:
    # its percentile moves by at most one reference step (docs/deployment.md)
    step = 100.0 / load_model(st).reference.size
    assert (b.percentile - a.percentile).abs().max() <= step + 1e-9
    assert not b.out_of_fold.any()  # a model file, either kind, scores everyone as new


def test_any_batch_size_and_a_logistic_hazard_head(files, tiny_data_root):
    """The graph's batch axis is dynamic (1 and 3 rows give the PyTorch risks); a
    logistic-hazard head (its survival curve and risk inside the graph) exports too."""
    from ecg_dan.config import load_config, model_config
    from ecg_dan.lit.finetune import SurvivalFinetuneModule
    from ecg_dan.models.registry import build_model
    from ecg_dan.onnx_export import FoldRisks, module_to_onnx
    from ecg_dan.onnx_model import ort_session

    st, onnx_file = files
    torch_model, onnx_model = load_model(st), load_model(onnx_file)
    assert onnx_model.model_id == torch_model.model_id and onnx_model.runner is not None
    beats = np.random.default_rng(0).normal(0.0, 0.3, (3, 12, 600)).astype(np.float32)
    for n in (1, 3):
        np.testing.assert_allclose(onnx_model.member_risks(beats[:n]),
                                   torch_model.member_risks(beats[:n]), rtol=0, atol=TOL)
    cfg = load_config("demo_finetune", ["+tiny", "finetune.objective=logistic_hazard"])
    lh = SurvivalFinetuneModule(build_model(model_config(cfg)), finetune=cfg.finetune,
                                optim=cfg.optim, config=None, cuts=[0.0, 12.0, 24.0, 60.0])
    graph = FoldRisks([lh]).eval()
    x = torch_model.prepare(beats)
    session = ort_session(module_to_onnx(graph, x[:2]), threads=1)
    with torch.no_grad():
        want = graph(x).numpy()
    for n in (1, 3):
        got = session.run(None, {"beats": x[:n].numpy()})[0]
        np.testing.assert_allclose(got, want[:n], rtol=0, atol=TOL)


def _strip_manifest(src: Path, dst: Path) -> None:
    import onnx

    m = onnx.load_from_string(src.read_bytes())
    del m.metadata_props[:]
    dst.write_bytes(m.SerializeToString())


def test_a_bad_onnx_file_is_refused_in_one_line_naming_it(files, tiny_data_root, tmp_path,
                                                          capsys):
    st, onnx_file = files
    data = onnx_file.read_bytes()
    read_onnx(onnx_file)  # the good one reads
    middle = len(data) // 2
    bad = {"truncated": (data[:middle], "truncated"),
           "last_byte_cut": (data[:-1], "truncated"),
           "appended": (data + b"\0", "corrupt"),
           "weight_flipped": (data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:],
                              "tampered"),
           "hash_edited": (data[:-1] + (b"0" if data[-1:] != b"0" else b"1"), "tampered"),
           "manifest_edited": (data.replace(b'"objective": "cox"', b'"objective": "xoc"', 1),
                               "tampered"),
           "empty": (b"", "empty or truncated"),
           "text": (b"a shopping list, not a model\n" * 10, "not an ONNX file"),
           "safetensors": (st.read_bytes(), "is a safetensors file")}
    assert bad["manifest_edited"][0] != data
    for name, (content, _) in bad.items():
        (tmp_path / f"{name}.onnx").write_bytes(content)
    _strip_manifest(onnx_file, tmp_path / "foreign.onnx")
    bad["foreign"] = (b"", "without an ecg-dan manifest")
    xml = sorted(glob.glob(str(tiny_data_root / "*/ukb/xml/*.xml")))[0]
    for name, (_, why) in bad.items():
        path = tmp_path / f"{name}.onnx"
        assert cli(["predict", "--model", str(path), xml, "--out", str(tmp_path / "p.csv"),
                    "--workers", "1", "--no-progress"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(path) in err and why in err, (name, err)
        assert err.startswith("ecg-dan: model file error:"), err
    assert TAIL_LEN == 84 and not (tmp_path / "p.csv").exists()
    # predict tells the formats by the suffix: export refuses an ONNX file named otherwise
    assert cli(["export", str(tmp_path), "--format", "onnx", "--out",
                str(tmp_path / "m.safetensors")]) == 2
    assert "must be named *.onnx" in capsys.readouterr().err
    # --explain needs the PyTorch modules
    assert cli(["predict", "--model", str(onnx_file), xml, "--explain", "--out",
                str(tmp_path / "p.csv"), "--no-progress"]) == 2
    assert "--explain needs the PyTorch modules" in capsys.readouterr().err


def test_the_runner_refuses_a_graph_of_another_shape(files, tmp_path):
    """A graph whose output is not one log-risk per fold model is not run."""
    checked = read_onnx(files[1])
    checked.contents.manifest["members"].append(checked.contents.manifest["members"][0])
    with pytest.raises(ModelFileError, match="expected beats"):
        OnnxRunner(checked)

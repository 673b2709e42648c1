"""``ecg-dan import-weights authors``: a checkpoint in the authors' layout (their key names,
made from our seeded weights by the mapping tests/reference/make_authors_fixtures.py checks
against their code) imports into ECG-DAN with the z THEIR model computed (stored fixtures),
without building any object of the file but tensors and plain data, and finetuning starts
from it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_dan.checkpoints import (
    CheckpointError,
    load_pretrained_backbone,
    pretrain_module_from_checkpoint,
    read_checkpoint,
)
from ecg_dan.cli import main as cli
from ecg_dan.config import load_config
from ecg_dan.import_weights import import_authors
from ecg_dan.jobs.finetune import build_finetune_module
from ecg_dan.models import ECGDAN, ModelConfig
from ecg_dan.models.authors_keys import to_authors

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import make_authors_fixtures as fx  # noqa: E402

TRAP_CALLS: list[str] = []


def _trap(what: str) -> None:
    TRAP_CALLS.append(what)


class Trap:
    """Unpickling this runs ``_trap``: a stand-in for code a crafted file would run."""

    def __reduce__(self):
        return (_trap, ("a pickled object was built",))


def _authors_file(path: Path, variant: str, prefix: str, raw_text: bool = False
                  ) -> tuple[ECGDAN, dict]:
    """A Lightning checkpoint as their pretraining writes it: the encoder of ``variant`` from
    the fixture's seed (whose z their code computed) and a decoder, under their names, with
    their ECG projector, an argparse Namespace and a Trap among the hyper-parameters."""
    fixture = json.loads(fx.fixture_path(variant).read_text())
    encoder = fx.build_ours(variant, fixture["seed"])
    net = ECGDAN(encoder.cfg)
    net.encoder = encoder
    state = {f"{prefix}{part}.{k}": v for part in ("encoder", "decoder")
             for k, v in to_authors(getattr(net, part).state_dict(), part).items()}
    state["ecg_projector.0.weight"] = torch.zeros(256, 512)
    torch.save({"epoch": 299, "global_step": 12345, "pytorch-lightning_version": "1.9.4",
                "state_dict": state, "optimizer_states": [{"state": {}, "param_groups": []}],
                "hyper_parameters": {"task_name": "ECG2Text", "lr": 1e-3, "trap": Trap(),
                                     "args": argparse.Namespace(ECG2Text=True,
                                                                ECG2RawText=raw_text)}}, path)
    return net, fixture


def _z(backbone: ECGDAN) -> np.ndarray:
    with torch.no_grad():
        return backbone.encoder.double().eval()(fx.fixed_input()).numpy()


def test_import_gives_their_z_builds_nothing_and_finetuning_starts(tmp_path):
    src, out = tmp_path / "checkpoint_best_loss-v2.ckpt", tmp_path / "authors.ckpt"
    net, fixture = _authors_file(src, "full", "network.")
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(src)  # the project's weights-only reader would not take it
    assert cli(["import-weights", "authors", str(src), "--out", str(out)]) == 0
    assert TRAP_CALLS == []  # nothing of the file ran
    meta = read_checkpoint(out, kind="pretrain")["ecg_dan"]
    assert meta["imported"]["dropped"] == sorted(["argparse.Namespace", f"{__name__}._trap"])
    assert meta["imported"]["epoch"] == 299 and len(meta["imported"]["sha256"]) == 64
    assert meta["objective"] == {"w_recon": 1.0, "w_cls": 0.0, "alignment": "cosine",
                                 "w_align": 1.0, "text_recipe": "scp_structured"}
    # finetuning's loader (architecture and objective checked) takes it; z = THEIR z
    cfg = load_config("finetune_hyp", [f"finetune.ckpt={out}"])
    module = build_finetune_module(cfg, str(out))
    err = np.abs(_z(module.backbone) - fx.decode_z(fixture["z_authors"])).max()
    assert err < 1e-10, f"max |z - z_authors| = {err:.3g}"
    for k, v in net.decoder.state_dict().items():
        assert torch.equal(module.backbone.decoder.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="backbone's weights only"):
        pretrain_module_from_checkpoint(out)  # no projectors: one clear error


def test_ablation_layout_without_network_prefix(tmp_path):
    src, out = tmp_path / "theirs.ckpt", tmp_path / "ours.ckpt"
    _, fixture = _authors_file(src, "no_cross_lead", "", raw_text=True)
    meta = import_authors(src, out)
    assert meta["model_config"]["cross_lead_attention"] is False
    assert meta["objective"]["text_recipe"] == "report_raw"  # their --ECG2RawText
    backbone = ECGDAN(ModelConfig(**meta["model_config"]))
    load_pretrained_backbone(backbone, out)
    assert np.abs(_z(backbone) - fx.decode_z(fixture["z_authors"])).max() < 1e-10


def test_not_the_authors_checkpoint_is_one_error(tmp_path):
    src = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(2)}}, src)
    with pytest.raises(CheckpointError, match="no network.encoder"):
        import_authors(src, tmp_path / "out.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        import_authors(tmp_path / "junk.ckpt", tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()

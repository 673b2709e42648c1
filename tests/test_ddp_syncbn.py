"""Synchronised batch norm under DDP: conversion, Trainer wiring, 2-process equivalence."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ecg_dan.config import load_config
from ecg_dan.models import ECGDAN, ModelConfig, RiskHead
from ecg_dan.models.batchnorm import (
    ChannelsLastBatchNorm2d,
    SyncBatchNorm,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
)
from ecg_dan.trainer import EcgDanSyncBatchNorm, build_trainer

SMALL = ModelConfig(seq_len=64, n_down=2, latent_dim=16, temporal_heads=2, lead_heads=2)


def _model() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({"backbone": ECGDAN(SMALL), "head": RiskHead(SMALL.latent_dim)})


def test_convert_keeps_state_and_is_plain_batchnorm_without_distributed():
    model = _model().train()
    ref = copy.deepcopy(model)
    keys = list(model.state_dict())
    conv = convert_sync_batchnorm(model)
    channels_last = [m for m in conv.modules() if isinstance(m, ChannelsLastBatchNorm2d)]
    assert channels_last and all(m.sync for m in channels_last)
    head_bns = [m for m in conv["head"].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(head_bns) == 2 and all(type(m) is SyncBatchNorm for m in head_bns)
    assert list(conv.state_dict()) == keys  # checkpoints load either way
    # outside torch.distributed: bitwise the single-process computation
    x = torch.randn(4, 12, 64)
    torch.manual_seed(1)
    out = conv["head"](conv["backbone"](x)["z"])
    torch.manual_seed(1)
    want = ref["head"](ref["backbone"](x)["z"])
    assert torch.equal(out, want)
    for a, b in zip(conv.buffers(), ref.buffers()):
        assert torch.equal(a, b)
    back = revert_sync_batchnorm(conv)
    assert not any(isinstance(m, SyncBatchNorm) for m in back.modules())
    assert all(not m.sync for m in back.modules() if isinstance(m, ChannelsLastBatchNorm2d))
    assert [type(m) for m in back.modules()] == [type(m) for m in ref.modules()]
    assert list(back.state_dict()) == keys


def test_convert_shares_parameters_and_replaces_torch_syncbatchnorm():
    head = RiskHead(8).eval()
    params = [id(p) for p in head.parameters()]
    conv = convert_sync_batchnorm(head)
    assert [id(p) for p in conv.parameters()] == params  # optimisers keep working
    assert not conv[0].training  # mode carried over
    torch_sync = convert_sync_batchnorm(nn.Sequential(nn.SyncBatchNorm(3)))
    assert type(torch_sync[0]) is SyncBatchNorm  # torch's has no CPU path
    assert type(revert_sync_batchnorm(torch_sync)[0]) is nn.SyncBatchNorm


def test_trainer_synchronises_batchnorm_exactly_when_ddp(tmp_path):
    ddp = build_trainer(load_config(None, ["name=t", "trainer.accelerator=cpu",
                                           "trainer.devices=2"]), tmp_path / "ddp")
    layer_sync = ddp.strategy._layer_sync
    assert isinstance(layer_sync, EcgDanSyncBatchNorm)
    assert type(layer_sync.apply(RiskHead(8))[0]) is SyncBatchNorm
    single = build_trainer(load_config(None, ["name=t", "trainer.accelerator=cpu"]),
                           tmp_path / "single")
    assert getattr(single.strategy, "_layer_sync", None) is None


def test_two_process_ddp_network_matches_single_process(ddp_checks) -> None:
    out = ddp_checks.passed("ddp_network")
    assert "ddp_network: all checks passed" in out
    assert "unsynchronised: worst relative gradient difference" in out

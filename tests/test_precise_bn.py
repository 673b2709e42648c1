"""Regression: pretraining validates the network it trained (batch-norm statistics
re-estimated before validation), not one whose running statistics trail the weights."""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from omegaconf import OmegaConf

from data_modules.loading.transforms import finish_batch
from ecg_dan.config import PretrainConfig, load_config
from ecg_dan.lit.pretrain import AlignmentPretrainModule
from ecg_dan.models import ECGDAN, ModelConfig
from ecg_dan.models.dropout import BatchwiseDropout


def _batch_statistics_output(module: AlignmentPretrainModule, x: torch.Tensor) -> torch.Tensor:
    """What training computes without dropout: batch norms on the batch's statistics."""
    m = copy.deepcopy(module)
    for sub in m.modules():
        sub.training = not isinstance(sub, (torch.nn.Dropout, BatchwiseDropout))
    with torch.no_grad():
        return m.backbone(x)["recon"]


def test_validation_uses_the_statistics_of_the_current_weights():
    torch.manual_seed(0)
    pretrain = {**asdict(PretrainConfig()), "w_align": 0.0, "w_cls": 1.0}
    module = AlignmentPretrainModule(ECGDAN(ModelConfig()), pretrain=pretrain,
                                     optim=OmegaConf.to_container(load_config("pretrain_short").optim))
    t = torch.linspace(0, 6.28, 600)
    raw = torch.sin(t[None, None] * torch.arange(1, 13)[None, :, None]) \
        + 0.1 * torch.randn(4, 12, 600)
    x = finish_batch({"median": raw})["x"]
    want = _batch_statistics_output(module, x)
    module.eval()
    with torch.no_grad():
        stale = module.backbone(x)["recon"]
    # the bug: fresh running statistics (0, 1) make the eval decoder another function
    assert (stale - want).square().mean() > 0.1
    module.train()
    module._bn_inputs = [x]
    rng = torch.get_rng_state()
    module.on_validation_epoch_start()
    assert torch.equal(torch.get_rng_state(), rng)  # the training stream is untouched
    assert module.training and module._bn_inputs == []
    assert all(bn.momentum == 0.1 for bn in module.modules()
               if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm))
    module.eval()
    with torch.no_grad():
        got = module.backbone(x)["recon"]
    assert (got - want).square().mean() < 1e-4  # (n-1)/n variance rounding only

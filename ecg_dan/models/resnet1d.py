"""ResNet1d101 autoencoder baseline (docs/method.md section 7), ``model.name=resnet1d101_ae``.

Re-implemented from the architecture of the authors' ``ECGAE(encoder_type="resnet1d101",
decoder_type="attention_decoder", latent_code_dim=512)``, the configuration their survival
script builds and loads pretrained weights into:

- encoder: a 1-D "xresnet" (bag-of-tricks ResNet) 101: a stem of three conv(k=5)-BN-ReLU
  layers 12 -> 32 -> 32 -> 64 channels (the first with stride 2) and a max-pool (k=3, s=2),
  then bottleneck stages of [3, 4, 23, 3] blocks, all 64 -> 256 channels wide (1x1 reduce,
  k=5 conv, 1x1 expand), stride 2 at the start of stages 2-4 with an average-pool shortcut;
  608 samples -> 19. z = [global average pool, global max pool] of the 256 channels: 512,
  with no linear layer (``latent_dim`` other than 512 adds one linear map 512 -> latent);
- decoder: the same decoder as ECG-DAN (their ``ECGDecoder``; :class:`ECGDANDecoder`).

Initialisation follows theirs: Kaiming-normal convolutions, Xavier linears, batch norms with
weight 1 and bias 0 (their ``ECGAE.init_weights`` runs last and overrides fastai's).
Parameter counts (encoder 1,804,672 + decoder 110,570) are asserted in tests/test_baselines.py.
"""

from __future__ import annotations

import torch
from torch import nn

from ecg_dan.config import ModelConfig
from ecg_dan.models.ecgdan import ECGDANDecoder, init_encoder_weights
from ecg_dan.models.registry import register_model

STEM = (32, 32, 64)
STAGES = (3, 4, 23, 3)  # bottleneck blocks per stage: ResNet-101
MID, EXPANSION, KERNEL = 64, 4, 5
POOLED = 2 * MID * EXPANSION  # avg + max pool of the 256 output channels


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, k, stride, (k - 1) // 2, bias=False),
                               nn.BatchNorm1d(c_out)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Bottleneck1d(nn.Module):
    """1x1 reduce -> k conv (strided) -> 1x1 expand, + shortcut (avg-pool, then 1x1 conv if the
    width changes), ReLU."""

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, mid, 1), conv_bn(mid, mid, KERNEL, stride),
                                  conv_bn(mid, c_out, 1, act=False))
        short: list[nn.Module] = []
        if stride != 1:
            short.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            short.append(conv_bn(c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*short)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet1d101Encoder(nn.Module):
    """(B, 12, 608) -> z (B, latent_dim)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = (cfg.n_leads, *STEM)
        self.stem = nn.Sequential(
            *[conv_bn(widths[i], widths[i + 1], KERNEL, stride=2 if i == 0 else 1)
              for i in range(len(STEM))],
            nn.MaxPool1d(3, 2, 1))
        out = MID * EXPANSION
        stages, c_in = [], STEM[-1]
        for s, n in enumerate(STAGES):
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck1d(c_in, MID, out, 2 if (s > 0 and b == 0) else 1))
                c_in = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.linear = (nn.Identity() if cfg.latent_dim == POOLED
                       else nn.Linear(POOLED, cfg.latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.cfg.n_leads:
            raise ValueError(f"expected input (B, {self.cfg.n_leads}, T), got {tuple(x.shape)}")
        h = self.stages(self.stem(x))
        return self.linear(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


class ResNet1d101AE(nn.Module):
    """ResNet1d101 encoder + ECG-DAN decoder; the backbone contract of the registry."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig(name="resnet1d101_ae")
        self.encoder = ResNet1d101Encoder(self.cfg)
        self.decoder = ECGDANDecoder(self.cfg)
        init_encoder_weights(self)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        return {"z": z, "recon": self.decoder(z)}


register_model("resnet1d101_ae")(ResNet1d101AE)

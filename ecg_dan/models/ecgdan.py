"""ECG-DAN encoder and decoder (docs/method.md sections 2-3), built from ``ModelConfig``.

The paper configuration (the defaults) has exactly the parameter counts of docs/method.md:
encoder 1,274,536 and decoder 110,570; ``tests/test_models.py`` asserts every count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecg_dan.config import ModelConfig
from ecg_dan.models.attention import CrossLeadAttention, LeadwiseTemporalAttention
from ecg_dan.models.blocks import ChannelsLastConv1d, ResBlock2d
from ecg_dan.models.dropout import make_dropout
from ecg_dan.models.kernels import fast_kernels


def _channels_last(h: torch.Tensor) -> torch.Tensor:
    return h.contiguous(memory_format=torch.channels_last) if fast_kernels() else h.contiguous()


def init_encoder_weights(module: nn.Module) -> None:
    """Reference initialisation: Kaiming convs, Xavier linears, unit norms, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ECGDANEncoder(nn.Module):
    """(B, 12, 608) median beat -> z (B, latent_dim), optionally with attention maps."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        L, f = cfg.n_leads, cfg.base_features
        ch = L * f
        self.input_conv = nn.Sequential(
            ChannelsLastConv1d(L, ch, 5, padding=2, groups=L), nn.GroupNorm(L, ch), nn.GELU(),
            ChannelsLastConv1d(ch, ch, 5, padding=2), nn.GroupNorm(L, ch), nn.GELU(),
        )
        w = cfg.widths()
        self.blocks = nn.Sequential(*[ResBlock2d(w[i], w[i + 1], "down")
                                      for i in range(cfg.n_down)])
        feat, T = w[-1], cfg.latent_len
        self.temporal = (LeadwiseTemporalAttention(L, feat, cfg.temporal_heads, T, cfg.mlp_ratio,
                                                   cfg.attn_dropout, cfg.batchwise_dropout)
                         if cfg.temporal_attention else None)
        self.cross_lead = (CrossLeadAttention(L, feat * T, cfg.lead_heads, cfg.mlp_ratio,
                                              cfg.attn_dropout, cfg.batchwise_dropout)
                           if cfg.cross_lead_attention else None)
        if self.cross_lead is None:
            # The reference builds the cross-lead pre-norm even when the branch is off; the
            # published ablation parameter counts include it. Frozen and unused here, it is
            # kept only so those counts (and checkpoints) match.
            self.unused_lead_norm = nn.LayerNorm(feat * T)
            self.unused_lead_norm.requires_grad_(False)
        pooled = feat * L
        no_attention = self.temporal is None and self.cross_lead is None
        self.pool_drop_avg = (make_dropout(0.2, cfg.batchwise_dropout) if no_attention
                              else nn.Identity())
        self.pool_drop_max = (make_dropout(0.2, cfg.batchwise_dropout) if no_attention
                              else nn.Identity())
        if cfg.latent_dim % 2:
            raise ValueError(f"latent_dim must be even, got {cfg.latent_dim}")
        self.pool_avg = nn.Conv1d(pooled, cfg.latent_dim // 2, 1)
        self.pool_max = nn.Conv1d(pooled, cfg.latent_dim // 2, 1)
        init_encoder_weights(self)
        if self.temporal is not None:
            self.temporal.reset_parameters()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input convs + residual blocks: h of shape (B, feat, leads, T)."""
        if x.dim() != 3 or x.shape[1] != self.cfg.n_leads or x.shape[2] != self.cfg.seq_len:
            raise ValueError(f"expected input (B, {self.cfg.n_leads}, {self.cfg.seq_len}), "
                             f"got {tuple(x.shape)}")
        B, L, T = x.shape
        f = self.cfg.base_features
        if not fast_kernels() or x.device.type != "cpu":
            h = self.input_conv(x).view(B, f, L, T)
            return self.blocks(_channels_last(h))
        # Fast CPU path: the input stage as (B, C, 1, T) channels-last 2-D ops, then one
        # copy into the (B, f, leads, T) channels-last layout of the residual blocks, where
        # oneDNN's (1x5) convolutions on 4-16 channels run ~10x faster than in NCHW.
        h = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        for m in self.input_conv:
            h = m.forward_2d(h) if isinstance(m, ChannelsLastConv1d) else m(h)
        h = h.permute(0, 2, 3, 1).reshape(B, T, f, L).permute(0, 2, 3, 1)
        return self.blocks(h.contiguous(memory_format=torch.channels_last))

    def attend(self, h: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The pooling stage's input, (B, feat*leads, T) with channel index c*L + l.

        Wired as the authors' code wires it (docs/method.md section 2): each branch's output
        is t = temporal(h) or h without temporal attention, and c = crosslead(h) or t
        without cross-lead attention; the sum t + c is pooled. So the full model pools
        temporal(h) + crosslead(h); without cross-lead, temporal(h) + temporal(h); without
        temporal, crosslead(h) + h; without either, h + h.
        """
        B, C, L, T = h.shape
        maps: dict[str, torch.Tensor] = {}
        if self.temporal is not None:
            t_out, t_w = self.temporal(h.permute(2, 0, 3, 1), need_weights)  # (L, B, T, C)
            t = t_out.permute(1, 3, 0, 2).reshape(B, C * L, T)
            if t_w is not None:
                maps["temporal"] = t_w
        else:
            t = h.reshape(B, C * L, T)
        if self.cross_lead is not None:
            tokens = h.permute(0, 2, 1, 3).reshape(B, L, C * T)  # lead tokens, channel-major
            c_out, c_w = self.cross_lead(tokens, need_weights)
            c = c_out.view(B, L, C, T).permute(0, 2, 1, 3).reshape(B, C * L, T)
            if c_w is not None:
                maps["cross_lead"] = c_w
        else:
            c = t
        return t + c, maps

    def pool(self, a: torch.Tensor) -> torch.Tensor:
        # Without either attention branch each pooling path has its own Dropout(0.2), as in
        # the authors' code (one in each of their two pooling nn.Sequential); identity else.
        a_avg, a_max = self.pool_drop_avg(a), self.pool_drop_max(a)
        if not fast_kernels():
            return torch.cat([self.pool_avg(a_avg).mean(-1), self.pool_max(a_max).amax(-1)], 1)
        # The 1x1 convolutions as GEMMs (oneDNN ran them ~5x below the GEMM rate); the mean
        # commutes with the linear map, so the average path maps the mean of a over time.
        avg = F.linear(a_avg.mean(-1), self.pool_avg.weight.squeeze(-1), self.pool_avg.bias)
        mx = F.linear(a_max.transpose(1, 2), self.pool_max.weight.squeeze(-1),
                      self.pool_max.bias).amax(1)
        return torch.cat([avg, mx], dim=1)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """z (B, latent_dim); with ``return_attention`` also a dict of head-averaged maps:
        ``cross_lead`` (B, 12, 12) and ``temporal`` (B, 12, T, T), rows summing to 1."""
        a, maps = self.attend(self.features(x), need_weights=return_attention)
        z = self.pool(a)
        return (z, maps) if return_attention else z


class ECGDANDecoder(nn.Module):
    """z -> per-lead normalised reconstruction (B, 12, 608) (docs/method.md section 3)."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        f, T, L = cfg.base_features, cfg.latent_len, cfg.n_leads
        self.linear = nn.Sequential(nn.Linear(cfg.latent_dim, f * T), nn.Linear(f * T, f * L * T))
        self.blocks = nn.Sequential(*[ResBlock2d(f, f, "up") for _ in range(cfg.n_down)],
                                    ResBlock2d(f, 1, "same"))
        self.final = nn.Sequential(nn.Conv1d(L, L, 1, groups=L), nn.InstanceNorm1d(L))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B = z.shape[0]
        h = self.linear(z).view(B, self.cfg.base_features, self.cfg.n_leads, self.cfg.latent_len)
        h = self.blocks(_channels_last(h)).squeeze(1).contiguous()
        conv, norm = self.final
        if not fast_kernels():
            return norm(conv(h))
        # The grouped 1x1 convolution is a per-lead scale and shift: one elementwise pass.
        return norm(torch.addcmul(conv.bias.view(-1, 1), h, conv.weight.view(-1, 1)))


class ECGDAN(nn.Module):
    """Encoder + decoder: the backbone shared by pretraining and survival finetuning."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.encoder = ECGDANEncoder(self.cfg)
        self.decoder = ECGDANDecoder(self.cfg)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> dict[str, torch.Tensor]:
        if return_attention:
            z, maps = self.encoder(x, return_attention=True)
        else:
            z, maps = self.encoder(x), {}
        return {"z": z, "recon": self.decoder(z), **maps}

"""Beetz-style ECG VAE baseline (docs/method.md section 7), ``model.name=vae``.

Re-implemented from the architecture of the authors' ``ECGMarcelVAE(num_leads=12,
time_steps=608, z_dims=512)``:

- encoder: the beat as a (1, leads, time) image; conv (1 x 40, "same": 19 left / 20 right
  zero padding, no bias) 1 -> 5 channels, BN, ELU; conv (leads x 1, valid, no bias) 5 -> 5,
  BN, ELU (leads collapse to 1); average pool (1 x 2); flatten (5 * 304 = 1520); two linear
  maps to mu and log-variance (latent_dim each);
- decoder: linear latent -> 1520, linear 1520 -> 5 * 608 (no activation between, as theirs),
  reshaped to (5, 1, 608); transposed conv (leads x 1, no bias) 5 -> 5, BN, ELU; transposed
  conv (1 x 41, padding 20, no bias) 5 -> 1, BN, ELU -> (B, leads, 608). As in their code the
  output passes a final ELU, so reconstructions are bounded below by -1.

z for the heads is mu; the decoder gets a reparameterised sample of N(mu, exp(logvar)) in
training and mu in eval. ``kl`` is the KL divergence to N(0, I), summed over latent
dimensions and averaged over the batch (their ``beta * mean(-0.5 * sum(1 + logvar - mu^2 -
exp(logvar)))``); the LightningModules add ``model.kl_weight * kl`` (beta = 1e-4;
``model.kl_weight=0`` is the VAE without the KL term). Default PyTorch initialisation, as
theirs. Parameter counts (encoder 1,558,024 + decoder 5,404,117) are asserted in
tests/test_baselines.py.
"""

from __future__ import annotations

import torch
from torch import nn

from ecg_dan.config import ModelConfig
from ecg_dan.models.registry import register_model

CHANNELS = 5
KERNEL = 40  # encoder time kernel; the decoder's is KERNEL + 1 (odd, centred)


class VAEEncoder(nn.Module):
    """(B, leads, T) -> (mu, logvar), each (B, latent_dim)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.seq_len % 2:
            raise ValueError(f"the VAE needs an even seq_len, got {cfg.seq_len}")
        c, L = CHANNELS, cfg.n_leads
        self.conv_time = nn.Sequential(
            nn.ZeroPad2d(((KERNEL - 1) // 2, KERNEL // 2, 0, 0)),
            nn.Conv2d(1, c, (1, KERNEL), bias=False), nn.BatchNorm2d(c), nn.ELU())
        self.conv_lead = nn.Sequential(nn.Conv2d(c, c, (L, 1), bias=False), nn.BatchNorm2d(c),
                                       nn.ELU())
        self.pool = nn.AvgPool2d((1, 2))
        flat = c * cfg.seq_len // 2
        self.mu = nn.Linear(flat, cfg.latent_dim)
        self.logvar = nn.Linear(flat, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[1] != self.cfg.n_leads or x.shape[2] != self.cfg.seq_len:
            raise ValueError(f"expected input (B, {self.cfg.n_leads}, {self.cfg.seq_len}), "
                             f"got {tuple(x.shape)}")
        h = self.pool(self.conv_lead(self.conv_time(x.unsqueeze(1)))).flatten(1)
        return self.mu(h), self.logvar(h)


class VAEDecoder(nn.Module):
    """z (B, latent_dim) -> (B, leads, T)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, L, T = CHANNELS, cfg.n_leads, cfg.seq_len
        self.linear = nn.Sequential(nn.Linear(cfg.latent_dim, c * T // 2),
                                    nn.Linear(c * T // 2, c * T))
        self.deconv_lead = nn.Sequential(nn.ConvTranspose2d(c, c, (L, 1), bias=False),
                                         nn.BatchNorm2d(c), nn.ELU())
        self.deconv_time = nn.Sequential(
            nn.ConvTranspose2d(c, 1, (1, KERNEL + 1), padding=(0, KERNEL // 2), bias=False),
            nn.BatchNorm2d(1), nn.ELU())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(z.shape[0], CHANNELS, 1, self.cfg.seq_len)
        return self.deconv_time(self.deconv_lead(h)).squeeze(1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over dimensions, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


class ECGVAE(nn.Module):
    """Encoder + decoder; the backbone contract of the registry, plus ``kl``."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig(name="vae")
        self.encoder = VAEEncoder(self.cfg)
        self.decoder = VAEDecoder(self.cfg)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> dict[str, torch.Tensor]:
        mu, logvar = self.encoder(x)
        if self.training:
            sample = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            sample = mu
        return {"z": mu, "recon": self.decoder(sample), "kl": kl_to_standard_normal(mu, logvar)}


register_model("vae")(ECGVAE)

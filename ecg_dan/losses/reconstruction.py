"""Reconstruction loss on the unpadded samples (docs/method.md section 1).

The network sees the padded beat; the target is the unpadded one. The crop is taken from the
lengths (centred), so the padding is defined once, in the data layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def center_crop(x: Tensor, length: int) -> Tensor:
    """The central ``length`` samples of the last axis."""
    extra = x.shape[-1] - length
    if extra < 0 or extra % 2:
        raise ValueError(f"cannot crop {x.shape[-1]} samples to {length} symmetrically")
    return x[..., extra // 2: x.shape[-1] - extra // 2]


def reconstruction_mse(recon: Tensor, target: Tensor) -> Tensor:
    """MSE between the reconstruction, cropped to the target's length, and the target."""
    return F.mse_loss(center_crop(recon, target.shape[-1]).float(), target.float())

"""ECG-DAN backbone: exact parameter counts, shapes, attention maps, batched == per-lead."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ecg_dan.models import (
    ECGDAN,
    BatchwiseDropout,
    ECGDANDecoder,
    ECGDANEncoder,
    ModelConfig,
    Projector,
    RiskHead,
    count_parameters,
)
from ecg_dan.models.attention import LeadwiseTemporalAttention, per_lead_reference

PAPER = ModelConfig()


@pytest.mark.parametrize("module, expected", [
    (lambda: ECGDANEncoder(PAPER), 1_274_536),
    (lambda: ECGDANDecoder(PAPER), 110_570),
    (lambda: ECGDANEncoder(replace(PAPER, cross_lead_attention=False)), 162_200),
    (lambda: ECGDANEncoder(replace(PAPER, temporal_attention=False)), 1_235_176),
    (lambda: ECGDANEncoder(replace(PAPER, cross_lead_attention=False,
                                   temporal_attention=False)), 122_840),
    (lambda: Projector(512), 164_224),
    (lambda: RiskHead(512), 2_573),
    (lambda: Projector(768), 229_760),
    (lambda: Projector(512, 512), 164_224),
    (lambda: Projector(64, 64), 64 * 32 + 32 + 32 * 32 + 32),  # authors: 64 -> 32 -> 32
    (lambda: Projector(768, 64), 768 * 32 + 32 + 32 * 32 + 32),  # 768 -> 32 -> 32
], ids=["encoder", "decoder", "no_cross_lead", "no_temporal", "no_attention", "ecg_projector",
        "risk_head", "text_projector_768", "ecg_projector_512", "ecg_projector_latent64",
        "text_projector_latent64"])
def test_parameter_counts_match_method(module, expected):
    assert count_parameters(module()) == expected


def test_forward_shapes_and_attention_maps():
    torch.manual_seed(0)
    model = ECGDAN(PAPER).eval()
    x = torch.randn(3, 12, 608)
    out = model(x, return_attention=True)
    assert out["z"].shape == (3, 512)
    assert out["recon"].shape == (3, 12, 608)
    assert out["cross_lead"].shape == (3, 12, 12)
    assert out["temporal"].shape == (3, 12, 19, 19)
    for key in ("cross_lead", "temporal"):
        rows = out[key].sum(-1)
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
        assert (out[key] >= 0).all()
    # the decoder ends in InstanceNorm: each reconstructed lead is normalised
    assert torch.allclose(out["recon"].mean(-1), torch.zeros(3, 12), atol=1e-4)
    assert "cross_lead" not in model(x)


def test_embedding_depends_on_input_and_not_on_request_for_maps():
    model = ECGDANEncoder(PAPER).eval()
    x = torch.randn(2, 12, 608)
    z1 = model(x)
    z2, _ = model(x, return_attention=True)
    assert torch.allclose(z1, z2, atol=1e-5)
    assert not torch.allclose(model(x + 1.0 * torch.randn_like(x)), z1, atol=1e-3)


def test_batched_temporal_attention_equals_per_lead_reference():
    torch.manual_seed(1)
    mod = LeadwiseTemporalAttention(n_leads=12, dim=16, heads=8, seq_len=19).eval()
    # non-trivial norms so every weight set matters and differs between leads
    with torch.no_grad():
        for p in (mod.ln1_weight, mod.ln1_bias, mod.ln2_weight, mod.ln2_bias,
                  mod.in_proj_bias, mod.fc1_bias):
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(12, 5, 19, 16)
    out, maps = mod(x, need_weights=True)
    ref_out, ref_maps = per_lead_reference(mod, x)
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert maps.shape == ref_maps.shape == (5, 12, 19, 19)
    assert torch.allclose(maps, ref_maps, atol=1e-5)
    # twelve independent weight sets: permuting the leads' weights changes the output
    with torch.no_grad():
        mod.in_proj_weight.copy_(mod.in_proj_weight.roll(1, dims=0))
    assert not torch.allclose(mod(x)[0], out, atol=1e-3)


def test_encoder_has_no_python_loop_over_leads_in_temporal_branch():
    """The twelve lead modules run as one batched computation: one attention kernel and one
    batched matmul per projection for all leads, where a per-lead loop would run 12 each."""
    from collections import Counter

    enc = ECGDANEncoder(PAPER).eval()
    assert isinstance(enc.temporal, LeadwiseTemporalAttention)
    assert enc.temporal.in_proj_weight.shape == (12, 48, 16)  # stacked per-lead weights
    h = torch.randn(12, 2, 19, 16)
    with torch.no_grad(), torch.profiler.profile() as prof:
        enc.temporal(h, False)
    ops = Counter(e.name for e in prof.events())
    assert ops["aten::scaled_dot_product_attention"] == 1
    assert ops["aten::baddbmm"] == 4  # in-projection, out-projection, MLP in and out
    assert ops["aten::layer_norm"] == 2


@pytest.mark.parametrize("cross, temporal", [(False, True), (True, False), (False, False)])
def test_ablations_forward(cross, temporal):
    cfg = replace(PAPER, cross_lead_attention=cross, temporal_attention=temporal)
    enc = ECGDANEncoder(cfg).eval()
    z, maps = enc(torch.randn(2, 12, 608), return_attention=True)
    assert z.shape == (2, 512)
    assert ("cross_lead" in maps) == cross and ("temporal" in maps) == temporal
    if not cross:  # the reference's unused pre-norm is frozen, so DDP sees no unused grads
        assert not any(p.requires_grad for p in enc.unused_lead_norm.parameters())


def test_latent_64_and_fewer_blocks_are_one_config_line():
    enc = ECGDANEncoder(replace(PAPER, latent_dim=64))
    assert enc(torch.randn(2, 12, 608)).shape == (2, 64)
    model = ECGDAN(replace(PAPER, n_down=4))  # 608 -> 38 time steps
    out = model(torch.randn(2, 12, 608), return_attention=True)
    assert out["temporal"].shape == (2, 12, 38, 38)
    assert out["recon"].shape == (2, 12, 608)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected input \(B, 12, 608\)"):
        ECGDANEncoder(PAPER)(torch.randn(2, 8, 608))


def test_backward_reaches_every_trainable_parameter():
    model = ECGDAN(PAPER)
    out = model(torch.randn(4, 12, 608))
    (out["recon"].pow(2).mean() + out["z"].pow(2).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_batchwise_dropout_shares_mask_across_batch_and_redraws():
    torch.manual_seed(0)
    drop = BatchwiseDropout(0.5, batch_dim=0).train()
    x = torch.ones(16, 300)
    a, b = drop(x), drop(x)
    assert torch.equal(a, a[:1].expand_as(a))  # one mask for the whole batch
    assert not torch.equal(a, b)  # a new mask per call
    kept = (a[0] > 0).float().mean().item()
    assert 0.35 < kept < 0.65 and torch.allclose(a[a > 0], torch.full_like(a[a > 0], 2.0))
    assert torch.equal(drop.eval()(x), x)


def test_batchwise_dropout_other_batch_dim():
    drop = BatchwiseDropout(0.5, batch_dim=1).train()
    y = drop(torch.ones(4, 8, 10))
    assert torch.equal(y, y[:, :1].expand_as(y))


def test_risk_head_uses_batchwise_dropout():
    head = RiskHead().train()
    assert any(isinstance(m, BatchwiseDropout) for m in head.modules())
    assert head(torch.randn(8, 512)).shape == (8, 1)


def test_fast_cpu_kernels_match_the_reference_path_in_training():
    """Channels-last BN/convs and fused attention give the reference path's outputs and
    gradients (train mode, float64 so rounding cannot hide a wrong formula; dropout off so
    both paths run the same network)."""
    from ecg_dan.models.kernels import reference_kernels

    torch.manual_seed(0)
    model = ECGDAN(replace(PAPER, attn_dropout=0.0)).train().double()
    x = torch.randn(6, 12, 608, dtype=torch.float64)

    def run():
        model.zero_grad()
        out = model(x)
        (out["recon"].pow(3).mean() + out["z"].pow(2).mean()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast_out, fast_grad = run()
    with reference_kernels():
        ref_out, ref_grad = run()
    for key in ("z", "recon"):
        assert torch.allclose(fast_out[key], ref_out[key], rtol=1e-9, atol=1e-9), key
    assert fast_grad.keys() == ref_grad.keys()
    for name, ref in ref_grad.items():
        # biases feeding an InstanceNorm have a true gradient of 0: compare absolutely
        assert torch.allclose(fast_grad[name], ref, rtol=1e-7, atol=1e-10), name


def test_channels_last_batchnorm_against_float64():
    from ecg_dan.models.batchnorm import ChannelsLastBatchNorm2d, _ChannelsLastBatchNorm

    x = torch.randn(3, 4, 2, 8, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _ChannelsLastBatchNorm.apply(*a, 1e-5)[0],
                                    (x, w, b))
    bn, ref = ChannelsLastBatchNorm2d(8), torch.nn.BatchNorm2d(8)
    data = (3 * torch.randn(16, 8, 12, 64) + 2).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(bn(data), ref(data), atol=1e-4)
    assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, ref.running_var, rtol=1e-4)
    assert bn.num_batches_tracked == ref.num_batches_tracked == 1


@pytest.mark.parametrize("mode, in_ch, out_ch", [("up", 4, 4), ("same", 4, 1), ("down", 4, 8)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_block_fast_paths_equal_the_plain_computation(mode, in_ch, out_ch, training):
    """The folded up-sampling convolution, the unfolded 1 -> 1 convolution and the eval-mode
    conv + batch-norm folding give the plain modules' outputs and gradients (float64)."""
    from ecg_dan.models.blocks import ResBlock2d
    from ecg_dan.models.kernels import reference_kernels

    torch.manual_seed(3)
    block = ResBlock2d(in_ch, out_ch, mode).double().train(training)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in (block.bn1, block.bn2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
    x = torch.randn(3, in_ch, 12, 40, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()

    def run():
        for p in (x, *block.parameters()):
            p.grad = None
        out = block(x)
        out.pow(3).sum().backward()
        return out.detach(), [p.grad.clone() for p in (x, *block.parameters())]

    fast_out, fast_grads = run()
    with reference_kernels():
        ref_out, ref_grads = run()
    torch.testing.assert_close(fast_out, ref_out, rtol=1e-12, atol=1e-12)
    for fast, ref in zip(fast_grads, ref_grads):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)

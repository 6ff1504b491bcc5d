"""MT-UNet (baselines/mt_unet.py): the official size less its idle parameters, the mixed transformer's local-global
Gaussian-weighted attention and external attention, and the method interface."""
from __future__ import annotations

import pytest
import torch

from baselines.mt_unet import ExternalAttention, LocalGlobalAttention, MixedTransformer, MTUNet
from tests.baselines.segmenter_checks import check_trains_and_predicts, data_size, n_parameters, section

# one encoder stage and window 2 at 64 px: token grids 8 and 4, pooled to 4 and 2 (more than one window each)
TINY = dict(img_size=64, stem_channels=(4, 8, 8), dim=16, encoder_stages=1, heads=2, window=2, ea_memory=8)


def test_the_paper_configuration_has_the_official_parameter_count_less_the_idle_parameters():
    # 79,075,389: the official MTUNet(out_ch=9) counted from its code. Left out: each module's axial-attention output
    # projection (C^2 + C; built, never called) and Gaussian bias (1; a constant under a softmax), in the 10
    # modules at 256 (2), 512 (2 encoder + 4 decoder) and 1024 (2 bottleneck) channels
    idle = sum(n * (c * c + c + 1) for n, c in ((2, 256), (6, 512), (2, 1024)))
    assert idle == 3_806_730
    assert n_parameters(MTUNet(1, 9, img_size=224)) == 79_075_389 - idle == 75_268_659
    # at 256 px the position embedding has 32 x 32 instead of 28 x 28 tokens of 256, and 4 classes on 64 channels
    paper = MTUNet(1, 4, **section("paper", "mt-unet"))
    assert n_parameters(paper) == 75_268_659 + (32 ** 2 - 28 ** 2) * 256 - 5 * 65 == 75_329_774


def test_the_mixed_transformer_keeps_the_token_shape_through_both_attentions():
    x = torch.randn(2, 8 * 8, 16)
    local_global = LocalGlobalAttention(16, heads=2, window=4)
    windows = local_global.windows(x.transpose(1, 2).reshape(2, 16, 8, 8))
    assert windows.shape == (2, 2, 2, 16, 16)  # (B, windows per side, windows per side, tokens per window, C)
    assert local_global.window_attention(windows).shape == windows.shape
    assert local_global.gaussian_axial(torch.randn(2, 2, 2, 16)).shape == (2, 2, 2, 16)
    assert local_global(x).shape == x.shape
    assert ExternalAttention(16, heads=2, expansion=4, memory=8)(x).shape == x.shape
    assert MixedTransformer(16, 2, 4, 4, 8)(x).shape == x.shape
    # 7 x 7 tokens (224 px's bottleneck) pad to 8 x 8 as the official code pads: zeros, and the corner block
    # copied from the last row and column
    grid = torch.randn(1, 16, 7, 7)
    padded = local_global.windows(grid).view(1, 2, 2, 4, 4, 16).permute(0, 5, 1, 3, 2, 4).reshape(1, 16, 8, 8)
    assert torch.equal(padded[..., :7, :7], grid) and torch.equal(padded[..., 7:, 7:], grid[..., 6:, 6:])
    assert padded[..., :7, 7].abs().sum() == 0 and padded[..., 7, :7].abs().sum() == 0
    assert local_global(tokens := torch.randn(1, 49, 16)).shape == tokens.shape


def test_the_gaussian_axial_attention_is_the_official_per_position_loop():
    torch.manual_seed(0)
    attention = LocalGlobalAttention(8, heads=2, window=4)
    x = torch.randn(2, 3, 5, 8)
    q, k, v = attention.axial_query(x), attention.axial_key(x), attention.axial_value(x)
    shift = attention.shift
    expected = torch.zeros_like(v)
    for r in range(3):   # the official GaussianTrans (MTUNet.py:278-297) on the row and column scores
        for c in range(5):
            row = (q[:, r, c, None] * k[:, r]).sum(-1)
            col = (q[:, r, c, None] * k[:, :, c]).sum(-1)
            a_row = (row - shift * (torch.arange(5) - c) ** 2).softmax(-1)
            a_col = (col - shift * (torch.arange(3) - r) ** 2).softmax(-1)
            expected[:, r, c] = (a_row[..., None] * v[:, r]).sum(1) + (a_col[..., None] * v[:, :, c]).sum(1)
    torch.testing.assert_close(attention.gaussian_axial(x), expected)
    # a steep Gaussian leaves each position its own value, once from its row and once from its column
    with torch.no_grad():
        attention.shift.fill_(1e4)
    torch.testing.assert_close(attention.gaussian_axial(x), 2 * v)


def test_external_attention_reads_memory_with_weights_normalised_over_tokens_then_units():
    torch.manual_seed(0)
    attention = ExternalAttention(8, heads=2, expansion=4, memory=6)
    seen = []
    attention.memory_value.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    assert attention(torch.randn(1, 10, 8)).shape == (1, 10, 8)
    weights = seen[0]
    assert weights.shape == (1, 8, 10, 6)   # (B, heads x expansion, tokens, memory units)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 8, 10))
    # a softmax over tokens first: the weights are not a softmax over units of the keys' logits
    logits = attention.memory_key(attention.query(torch.randn(1, 10, 8)).view(1, 10, 8, -1).transpose(1, 2))
    assert not torch.allclose(weights, logits.softmax(-1), atol=1e-3)


def test_trains_and_predicts_with_every_parameter_reached():
    check_trains_and_predicts(MTUNet(1, 3, **TINY), 1, 3)


# At 64 px, as cpu-64 runs it: at the 32 px of the default and cpu-full its last stage is one window, whose
# relative-position (Swin-Unet) or attention (MT-UNet) parameters get no gradient (profiles/cpu-full.yaml says so).
@pytest.mark.parametrize("profile", ["cpu-64"])
def test_the_cpu_profiles_sections_build_a_network_at_their_size(profile):
    # at 64 px the bottleneck's 2 x 2 tokens are one window: its axial attention sees one pooled position, where a
    # softmax over one logit leaves the query, the key and the Gaussian's width without effect
    idle = tuple(f"bottleneck.{i}.local_global.{p}" for i in (0, 1) for p in ("shift", "axial_query", "axial_key"))
    check_trains_and_predicts(MTUNet(2, 4, **section(profile, "mt-unet")), 2, 4, size=data_size(profile), idle=idle)

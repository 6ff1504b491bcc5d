"""The shared UNet: shapes, the two hooks, and the structural hook's output as the level-0 skip."""
from __future__ import annotations

import torch

from medflowseg.unet import UNet


def unet(time_dim=None) -> UNet:
    torch.manual_seed(0)
    return UNet(in_channels=2, channels=(8, 16, 16), num_res_blocks=2, time_dim=time_dim, norm_groups=4)


def test_shapes_for_non_square_inputs():
    net = unet(time_dim=12)
    feats = net(torch.randn(3, 2, 16, 24), torch.randn(3, 12))
    assert net.downsampling == 4
    assert feats.bottleneck.shape == (3, 16, 4, 6) and feats.decoder.shape == (3, 8, 16, 24)
    assert net(torch.randn(1, 2, 16, 24), torch.randn(1, 12), decode=False).decoder is None


def test_first_stage_hook_output_is_both_the_skip_and_the_next_input():
    net = unet()
    x = torch.randn(2, 2, 16, 16)
    returned, seen = {}, {}

    def first_stage(f0):
        returned["f0"] = f0 * 3.0
        return returned["f0"]

    net.decoder[-1].register_forward_pre_hook(lambda mod, args: seen.setdefault("last", args[0]))
    net.downsample[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("down", args[0]))
    net(x, first_stage=first_stage)
    skip = seen["last"][:, -8:]                 # the decoder concatenates [h, skip_0]
    assert torch.equal(skip, returned["f0"]) and torch.equal(seen["down"], returned["f0"])


def test_bottleneck_hook_feeds_the_decoder():
    net = unet()
    x = torch.randn(1, 2, 16, 16)
    plain = net(x)
    zeroed = net(x, bottleneck=torch.zeros_like)
    assert torch.equal(zeroed.bottleneck, torch.zeros_like(plain.bottleneck))
    assert not torch.allclose(zeroed.decoder, plain.decoder)

"""guided-diffusion's denoiser as MONAI builds it, the network of SegDiff (``baselines/segdiff.py``) and EnsemDiff
(``baselines/ensemdiff.py``). The diffusion they share with MedSegDiff, ``MaskDDPM``, is
``baselines/medsegdiff/base.py``.
"""
from __future__ import annotations

from monai.networks.nets import DiffusionModelUNet


def guided_unet(in_channels: int, out_channels: int, channels, num_res_blocks: int, attention_levels,
                attention_heads: int, norm_groups: int) -> DiffusionModelUNet:
    """guided-diffusion's denoiser (``unet.py`` ``UNetModel``) as MONAI builds it: a time-conditioned UNet, one
    level per entry of ``channels`` (a strided-convolution downsample between levels, nearest upsample and a
    convolution on the way up, ``num_res_blocks`` residual blocks down and one more up), self-attention with
    ``attention_heads`` heads after each residual block of the levels ``attention_levels`` marks and in the middle
    (residual, attention, residual), GroupNorm (``norm_groups``, eps 1e-5 as guided-diffusion's ``GroupNorm32``),
    the time embedding a sinusoid of width ``channels[0]`` through a two-layer MLP to ``4 * channels[0]``, the
    output convolution zero-initialised. ``(B, in_channels, H, W)``, t ``(B,)`` -> ``(B, out_channels, H, W)``,
    H and W divisible by ``2**(len(channels) - 1)``."""
    channels, attention_levels = tuple(channels), tuple(bool(a) for a in attention_levels)
    if len(attention_levels) != len(channels):
        raise ValueError(f"attention_levels needs one flag per level: {len(channels)} levels, got {attention_levels}")
    if attention_heads < 1 or any(c % attention_heads for c in channels):
        raise ValueError(f"attention_heads {attention_heads} must divide every width of {channels}")
    return DiffusionModelUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                              num_res_blocks=num_res_blocks, channels=channels, attention_levels=attention_levels,
                              norm_num_groups=norm_groups, norm_eps=1e-5,
                              num_head_channels=[c // attention_heads for c in channels])

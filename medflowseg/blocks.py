"""The UNet building blocks shared by both streams: time embedding and residual blocks.

Both the Flow Network and the Condition Network are built from ``ResBlock``; the flow
stream's blocks take a time embedding, the condition stream's do not (it sees a clean
image whose features do not depend on t).
"""
from __future__ import annotations

import torch
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn


def group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class TimeEmbedding(nn.Module):
    """t in [0, 1] ``(B,)`` -> ``(B, dim)``: sinusoidal features of ``t * time_scale``, then an MLP.

    The sinusoid (MONAI's, as in DDPM) was designed for integer steps in [0, 1000), hence
    the scale.
    """

    def __init__(self, dim: int, time_scale: float = 1000.0):
        super().__init__()
        self.dim, self.time_scale = dim, time_scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(get_timestep_embedding(t * self.time_scale, self.dim).to(t.dtype))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual path; the time embedding, when given,
    is added as a per-channel bias between the two convolutions (DDPM style).

    x ``(B, C_in, H, W)``, temb ``(B, T)`` or None -> ``(B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int | None, norm_groups: int):
        super().__init__()
        self.norm1, self.norm2 = group_norm(in_channels, norm_groups), group_norm(out_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels) if time_dim else None
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        if self.time is not None:
            h = h + self.time(self.act(temb))[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class ResStage(nn.Module):
    """``n`` ResBlocks at one resolution: ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, n: int, time_dim: int | None, norm_groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, time_dim, norm_groups) for i in range(n))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, temb)
        return x

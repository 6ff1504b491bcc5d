"""The four-level UNet both streams share (paper section 4.2: channels {64, 128, 256, 256},
two residual blocks per level).

Level ``i`` runs at ``H / 2**i``; the bottleneck (two more blocks at the last width) runs at
``H / 2**(L-1)``. The decoder concatenates one skip per level. Hooks let a model inject its
conditions without a second copy of this loop:

- ``stem(h) -> h'``: after the first convolution (FlowSDF's additive image features, SegDiff-style);
- ``first_stage(f0) -> f0'``: after encoder level 0 (DB-SA, Eq. 9); ``f0'`` replaces ``f0``
  both as the skip and as the input to level 1;
- ``bottleneck(f) -> f'``: after the bottleneck blocks (FA-Attention's merge).

``checkpointing=True`` recomputes each level's residual blocks in the backward pass instead of keeping
their activations (``torch.utils.checkpoint``): less memory per image for one more forward of the blocks.
It acts only while gradients are recorded; the outputs and gradients are those of the plain UNet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from medflowseg.blocks import ResStage

Hook = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class UNetFeatures:
    """Attributes:
        bottleneck: ``(B, C_last, H / 2**(L-1), W / 2**(L-1))`` after the bottleneck blocks and hook.
        decoder: ``(B, C_0, H, W)`` the last (highest-resolution) decoder feature; None when the
            decoder was skipped (``decode=False``).
    """
    bottleneck: torch.Tensor
    decoder: torch.Tensor | None


class UNet(nn.Module):
    def __init__(self, in_channels: int, channels: tuple[int, ...], num_res_blocks: int,
                 time_dim: int | None, norm_groups: int, checkpointing: bool = False):
        super().__init__()
        self.channels = tuple(channels)
        self.checkpointing = checkpointing
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            self.encoder.append(ResStage(prev, ch, num_res_blocks, time_dim, norm_groups))
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.mid = ResStage(prev, prev, num_res_blocks, time_dim, norm_groups)
        self.decoder = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(channels))):
            self.decoder.append(ResStage(prev + channels[i], channels[i], num_res_blocks, time_dim, norm_groups))
            if i > 0:
                self.upsample.append(nn.Conv2d(channels[i], channels[i - 1], 3, padding=1))
            prev = channels[i] if i == 0 else channels[i - 1]

    def run_stage(self, stage: ResStage, h: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """One level's residual blocks, recomputed in the backward pass when ``checkpointing`` is on."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, h, temb, use_reentrant=False)
        return stage(h, temb)

    @property
    def downsampling(self) -> int:
        """The bottleneck's stride relative to the input: ``2**(L-1)``."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None, first_stage: Hook | None = None,
                bottleneck: Hook | None = None, decode: bool = True, stem: Hook | None = None) -> UNetFeatures:
        """x ``(B, C_in, H, W)`` with H, W divisible by ``downsampling``; temb ``(B, T)`` or None.
        ``decode=False`` stops after the bottleneck (for a consumer that needs only that)."""
        h = self.stem(x)
        if stem is not None:
            h = stem(h)
        skips = []
        for i, stage in enumerate(self.encoder):
            h = self.run_stage(stage, h, temb)
            if i == 0 and first_stage is not None:
                h = first_stage(h)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.run_stage(self.mid, h, temb)
        if bottleneck is not None:
            h = bottleneck(h)
        mid = h
        if not decode:
            return UNetFeatures(bottleneck=mid, decoder=None)
        return UNetFeatures(bottleneck=mid, decoder=self.decode(h, skips, temb))

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor | None) -> torch.Tensor:
        """The decoder from the bottleneck feature ``h``; ``skips`` holds one feature per encoder level,
        level 0 first, and is consumed. Returns ``(B, C_0, H, W)``."""
        for j, stage in enumerate(self.decoder):
            h = self.run_stage(stage, torch.cat([h, skips.pop()], dim=1), temb)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return h

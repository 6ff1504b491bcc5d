"""The two streams of MedFlowSeg (paper section 3.2, Fig. 2a).

``ConditionNetwork``: a plain UNet on the image with an auxiliary segmentation head (a 1x1
convolution) on its last decoder feature. It does not see x_t or t, so at sampling time it runs
once per image and its features are reused for every ODE step and every sample; a variant with
no structural module needs only its bottleneck then, and skips the decoder.

``FlowNetwork``: a time-conditioned UNet on x_t. The structural condition (DB-SA, or the
ablations' SA / nothing) gates its first encoder feature; the semantic condition (FA-Attention
refining the condition bottleneck c0 into c1, or c0 itself in the ablations) is merged into its
bottleneck.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medflowseg.blocks import TimeEmbedding, group_norm
from medflowseg.config import MedFlowSegConfig
from medflowseg.semantic import FAAttentionStack
from medflowseg.structural import DBSA, SpatialAttention
from medflowseg.unet import UNet


@dataclass
class ConditionFeatures:
    """Attributes:
        bottleneck: ``(B, C_last, h, w)`` c0, the bottleneck feature (FA-Attention's input).
        decoder: ``(B, C_0, H, W)`` the last high-resolution decoder feature (DB-SA's input), or None.
        aux_logits: ``(B, K, H, W)`` the auxiliary head's class logits, or None (with the decoder).
    """
    bottleneck: torch.Tensor
    decoder: torch.Tensor | None
    aux_logits: torch.Tensor | None


class ConditionNetwork(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, cfg: MedFlowSegConfig):
        super().__init__()
        self.unet = UNet(in_channels, cfg.channels, cfg.num_res_blocks, time_dim=None, norm_groups=cfg.norm_groups,
                         checkpointing=cfg.checkpointing)
        self.aux_head = nn.Conv2d(cfg.channels[0], num_classes, 1)

    def forward(self, images: torch.Tensor, decode: bool = True) -> ConditionFeatures:
        """images ``(B, C, H, W)``; ``decode=False``: the bottleneck only."""
        feats = self.unet(images, decode=decode)
        aux = self.aux_head(feats.decoder) if decode else None
        return ConditionFeatures(bottleneck=feats.bottleneck, decoder=feats.decoder, aux_logits=aux)


def structural_condition(cfg: MedFlowSegConfig) -> nn.Module | None:
    c0 = cfg.channels[0]
    if cfg.structural == "dbsa":
        return DBSA(c0, c0, cfg.dbsa_low_kernel, cfg.dbsa_high_kernel, cfg.dbsa_low_sigma, cfg.dbsa_high_sigma)
    if cfg.structural == "sa":
        return SpatialAttention(cfg.sa_kernel)
    return None


class FlowNetwork(nn.Module):
    def __init__(self, num_classes: int, cfg: MedFlowSegConfig):
        super().__init__()
        cb = cfg.channels[-1]
        self.time_embed = TimeEmbedding(cfg.time_embed_dim, cfg.time_scale)
        self.unet = UNet(num_classes, cfg.channels, cfg.num_res_blocks, cfg.time_embed_dim, cfg.norm_groups,
                         checkpointing=cfg.checkpointing)
        self.structural = structural_condition(cfg)
        self.semantic = None if cfg.semantic == "add" else FAAttentionStack(
            cfg.fa_depth, channels=cb, time_dim=cfg.time_embed_dim, dim=cfg.fa_dim, heads=cfg.fa_heads,
            patch=cfg.fa_patch, modulator_blocks=cfg.fa_modulator_blocks, modulator=cfg.semantic == "fa",
            film=cfg.fa_film, recalibration=cfg.fa_recalibration, mlp_ratio=cfg.fa_mlp_ratio)
        self.concat_merge = cfg.bottleneck_merge == "concat"
        self.merge = nn.Conv2d(2 * cb if self.concat_merge else cb, cb, 1)
        self.out = nn.Sequential(group_norm(cfg.channels[0], cfg.norm_groups), nn.SiLU(),
                                 nn.Conv2d(cfg.channels[0], num_classes, 3, padding=1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: ConditionFeatures) -> torch.Tensor:
        """x_t ``(B, K, H, W)``, t ``(B,)`` in [0, 1] -> the velocity ``(B, K, H, W)``."""
        temb = self.time_embed(t)

        def first_stage(f0: torch.Tensor) -> torch.Tensor:
            return f0 if self.structural is None else self.structural(f0, cond.decoder)

        def bottleneck(f: torch.Tensor) -> torch.Tensor:
            c = cond.bottleneck if self.semantic is None else self.semantic(f, cond.bottleneck, temb)
            return self.merge(torch.cat([f, c], dim=1)) if self.concat_merge else f + self.merge(c)

        return self.out(self.unet(x_t, temb, first_stage, bottleneck).decoder)

"""``unetr`` and ``swin-unetr``: MONAI's UNETR (Hatamizadeh et al., WACV 2022) and Swin UNETR
(Hatamizadeh et al., BrainLes 2021) in 2D, trained with Dice + cross-entropy.

They stand for the MedFlowSeg paper's "UNetr" and "Swin-UNetr" rows (Table 2). They are not TransUNet
or Swin-Unet, which are different networks. The MONAI defaults are the papers' widths (UNETR: ViT-Base,
hidden 768, 12 heads, feature size 16; Swin UNETR: feature size 24 here, 48 in its paper); the CPU profile
narrows them in ``params.yaml``.
"""
from __future__ import annotations

import torch
from monai.networks.nets import UNETR, SwinUNETR

from baselines.supervised import FixedSizeSegmenter, SupervisedSegmenter


class UNETRMethod(FixedSizeSegmenter):
    """Args: in_channels C, num_classes K, ``img_size`` (the square input side UNETR's patch grid is built
    for; must equal ``data.size``) and MONAI ``UNETR``'s widths."""

    def __init__(self, in_channels: int, num_classes: int, img_size: int = 256, feature_size: int = 16,
                 hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12, dropout_rate: float = 0.0):
        net = UNETR(in_channels, num_classes, img_size=(img_size, img_size), feature_size=feature_size,
                    hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, dropout_rate=dropout_rate,
                    spatial_dims=2)
        # MONAI builds a cross-attention LayerNorm in every block even without cross-attention, where it is
        # never called; dropped so that parameter counts cover only the network that runs.
        for block in net.vit.blocks:
            if not block.with_cross_attention:
                block.norm_cross_attn = torch.nn.Identity()
        super().__init__(net, "unetr", img_size)


NORMS = ("instance", "batch")   # the norms of MONAI SwinUNETR's convolutional encoder and decoder blocks


class SwinUNETRMethod(SupervisedSegmenter):
    """Args: in_channels C, num_classes K and MONAI ``SwinUNETR``'s widths; inputs divisible by 32.

    ``norm_name``: the norm of the convolutional blocks, MONAI's and the paper's "instance" by default. Instance
    norm needs more than one pixel per channel, so inputs of 32 px (a 1 x 1 bottleneck) train only with "batch"."""

    def __init__(self, in_channels: int, num_classes: int, feature_size: int = 24, depths=(2, 2, 2, 2),
                 num_heads=(3, 6, 12, 24), window_size: int = 7, drop_rate: float = 0.0, norm_name: str = "instance"):
        if norm_name not in NORMS:
            raise ValueError(f"swin-unetr: norm_name must be one of {', '.join(NORMS)}, got {norm_name!r}")
        super().__init__(SwinUNETR(in_channels, num_classes, feature_size=feature_size, depths=tuple(depths),
                                   num_heads=tuple(num_heads), window_size=window_size, drop_rate=drop_rate,
                                   norm_name=norm_name, spatial_dims=2))

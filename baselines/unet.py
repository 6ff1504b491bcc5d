"""``unet``: MONAI's residual UNet trained with Dice + cross-entropy; a deterministic baseline."""
from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn


class UNetMethod(nn.Module):
    """Args: in_channels C, num_classes K, and MONAI ``UNet`` widths/strides/residual units."""

    def __init__(self, in_channels: int, num_classes: int, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                 num_res_units: int = 1, dropout: float = 0.0):
        super().__init__()
        self.net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
                        channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units,
                        dropout=dropout)
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)
        self.nfe = 1

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.criterion(self.net(images), labels.unsqueeze(1))

    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.net(images).argmax(dim=1).unsqueeze(0)

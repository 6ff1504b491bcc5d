"""``unet``: MONAI's residual UNet trained with Dice + cross-entropy; a deterministic baseline."""
from __future__ import annotations

from monai.networks.nets import UNet

from baselines.supervised import SupervisedSegmenter


class UNetMethod(SupervisedSegmenter):
    """Args: in_channels C, num_classes K, and MONAI ``UNet`` widths/strides/residual units."""

    def __init__(self, in_channels: int, num_classes: int, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                 num_res_units: int = 1, dropout: float = 0.0):
        super().__init__(UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
                              channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units,
                              dropout=dropout))

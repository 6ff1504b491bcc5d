"""The deterministic baselines' shared training and inference: a network trained with Dice + cross-entropy,
predicting the argmax over classes (one sample whatever ``n`` is, one network evaluation)."""
from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn


class SupervisedSegmenter(nn.Module):
    """``net``: ``(B, C, H, W)`` -> class logits ``(B, K, H, W)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)
        self.nfe = 1

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.criterion(self.net(images), labels.unsqueeze(1))

    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.net(images).argmax(dim=1).unsqueeze(0)

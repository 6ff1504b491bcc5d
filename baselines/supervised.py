"""The deterministic baselines' shared training and inference: a network trained with Dice + cross-entropy,
predicting the argmax over classes (one sample whatever ``n`` is, one network evaluation, no sampler)."""
from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from medflowseg.sampling import Samples


def official_dice_ce(ce_weight: float, dice_weight: float) -> DiceCELoss:
    """The loss of TransUNet's and Swin-Unet's official code: ``ce_weight`` x cross-entropy + ``dice_weight`` x a
    soft Dice per class taken over the whole batch, with squared terms in its denominator, background included,
    smooth 1e-5, averaged over the classes (TransUNet utils.py:22-45, the same file in Swin-Unet)."""
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, squared_pred=True, batch=True,
                      smooth_nr=1e-5, smooth_dr=1e-5, lambda_ce=ce_weight, lambda_dice=dice_weight)


class SupervisedSegmenter(nn.Module):
    """``net``: ``(B, C, H, W)`` -> class logits ``(B, K, H, W)``; ``criterion``: the training loss of logits and
    ``(B, 1, H, W)`` labels (default: MONAI's Dice + cross-entropy, Dice per image, each weighted 1)."""

    default_sampler = None
    """A deterministic network has no step rule."""

    def __init__(self, net: nn.Module, criterion: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.criterion = criterion or DiceCELoss(to_onehot_y=True, softmax=True)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.criterion(self.net(images), labels.unsqueeze(1))

    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator, sampler: None = None) -> Samples:
        """images ``(B, C, H, W)`` -> one sample ``(1, B, H, W)``, one network evaluation."""
        if sampler is not None:
            raise ValueError(f"{type(self).__name__} is a deterministic network and takes no sampler, got {sampler!r}")
        return Samples(self.net(images).argmax(dim=1).unsqueeze(0), (1,))


class FixedSizeSegmenter(SupervisedSegmenter):
    """A supervised network built for one square input side ``img_size`` (its position embeddings or window
    masks are sized by it); any other size is a ``ValueError`` that names the setting."""

    def __init__(self, net: nn.Module, name: str, img_size: int, criterion: nn.Module | None = None):
        super().__init__(net, criterion)
        self.name, self.img_size = name, img_size

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self._check(images)
        return super().loss(images, labels, generator)

    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator, sampler: None = None) -> Samples:
        self._check(images)
        return super().sample(images, n, generator, sampler)

    def _check(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"{self.name} was built for {self.img_size}x{self.img_size} images (model.img_size) "
                             f"but got {tuple(images.shape[-2:])}: set method.{self.name}.model.img_size to "
                             f"data.size")

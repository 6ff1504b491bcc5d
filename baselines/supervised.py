"""The deterministic baselines' shared training and inference: a network trained with Dice + cross-entropy,
predicting the argmax over classes (one sample whatever ``n`` is, one network evaluation, no sampler)."""
from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from medflowseg.sampling import Samples


class SupervisedSegmenter(nn.Module):
    """``net``: ``(B, C, H, W)`` -> class logits ``(B, K, H, W)``."""

    default_sampler = None
    """A deterministic network has no step rule."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)

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

    def __init__(self, net: nn.Module, name: str, img_size: int):
        super().__init__(net)
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

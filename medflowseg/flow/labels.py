"""How integer labels become the flow's end point x1, and back.

The paper does not say how labels become x1. Default: one-hot over all K classes
(background included) scaled to {-1, +1} ("pm1"), which keeps x1 centred like the
N(0, I) start; "01" keeps {0, 1}. Decoding is argmax over the K channels, which is
the same for both scalings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LABEL_SCALES = ("pm1", "01")


def encode_labels(labels: torch.Tensor, num_classes: int, scale: str = "pm1") -> torch.Tensor:
    """int64 ``(B, H, W)`` -> float ``(B, K, H, W)``."""
    if scale not in LABEL_SCALES:
        raise ValueError(f"label scale {scale!r} not in {LABEL_SCALES}")
    x1 = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    return 2 * x1 - 1 if scale == "pm1" else x1


def decode_labels(x1: torch.Tensor) -> torch.Tensor:
    """float ``(B, K, H, W)`` -> int64 ``(B, H, W)`` by argmax."""
    return x1.argmax(dim=1)

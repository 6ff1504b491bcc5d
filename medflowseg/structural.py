"""The structural condition at the Flow Network's first encoder stage (paper section 3.3).

``DBSA`` is Dual-Branch Spatial Attention, Eqs. (6)-(9); ``SpatialAttention`` is the plain
spatial attention of the ablation's "SA" row (Table 3), fed the same condition feature and
applied the same way. Both map the Condition Network's last decoder feature
``(B, C_cond, H, W)`` to a gate ``g`` in (0, 1) of shape ``(B, C_flow, H, W)`` (``(B, 1, H, W)``
for SA) and return ``f0 + g * f0``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LearnableGaussian(nn.Module):
    """Depthwise Gaussian blur with a learnable standard deviation per channel.

    The kernel is renormalised to sum to one on every call, so the filter stays a
    weighted average (a low-pass) whatever sigma is learned; sigma is kept positive by
    learning its logarithm. ``(B, C, H, W)`` -> ``(B, C, H, W)``, reflect-padded.
    """

    def __init__(self, channels: int, kernel_size: int, sigma: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"Gaussian kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.log_sigma = nn.Parameter(torch.full((channels,), math.log(sigma)))

    def kernel(self) -> torch.Tensor:
        """``(C, 1, k, k)``, each channel's kernel summing to 1."""
        r = self.kernel_size // 2
        x = torch.arange(-r, r + 1, dtype=self.log_sigma.dtype, device=self.log_sigma.device)
        g1 = torch.exp(-0.5 * (x[None, :] / self.log_sigma.exp()[:, None]) ** 2)   # (C, k)
        g2 = g1[:, :, None] * g1[:, None, :]                                          # (C, k, k)
        return (g2 / g2.sum(dim=(1, 2), keepdim=True))[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.kernel_size // 2
        return F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), self.kernel().to(x.dtype), groups=x.shape[1])


class DBSA(nn.Module):
    """Dual-Branch Spatial Attention.

    f_str = conv3x3(f_cond)                              (Eq. 6)
    f_low = conv3x3(Gauss_l * f_str)                     (Eq. 7, kernel ``low_kernel``)
    f_high = conv3x3(f_str - Gauss_h * f_str)            (Eq. 7, kernel ``high_kernel``)
    g = sigmoid(conv1x1(concat(f_high, f_low)))          (Eq. 8)
    f0' = f0 + g * f0                                    (Eq. 9)
    """

    def __init__(self, cond_channels: int, flow_channels: int, low_kernel: int = 3, high_kernel: int = 5,
                 low_sigma: float = 1.0, high_sigma: float = 1.0):
        super().__init__()
        c = flow_channels
        self.structure = nn.Conv2d(cond_channels, c, 3, padding=1)
        self.gauss_low = LearnableGaussian(c, low_kernel, low_sigma)
        self.gauss_high = LearnableGaussian(c, high_kernel, high_sigma)
        self.conv_low = nn.Conv2d(c, c, 3, padding=1)
        self.conv_high = nn.Conv2d(c, c, 3, padding=1)
        self.gate = nn.Conv2d(2 * c, c, 1)

    def attention(self, f_cond: torch.Tensor) -> torch.Tensor:
        """The gate g: ``(B, C_cond, H, W)`` -> ``(B, C_flow, H, W)`` in (0, 1)."""
        f_str = self.structure(f_cond)
        f_low = self.conv_low(self.gauss_low(f_str))
        f_high = self.conv_high(f_str - self.gauss_high(f_str))
        return torch.sigmoid(self.gate(torch.cat([f_high, f_low], dim=1)))

    def forward(self, f0: torch.Tensor, f_cond: torch.Tensor) -> torch.Tensor:
        return f0 + self.attention(f_cond) * f0


class SpatialAttention(nn.Module):
    """Plain spatial attention (CBAM's spatial gate: Woo et al., ECCV 2018) for the "SA" ablation:
    g = sigmoid(conv7x7(concat(mean_c(f_cond), max_c(f_cond)))), one gate shared by all channels.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention(self, f_cond: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([f_cond.mean(dim=1, keepdim=True), f_cond.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, f0: torch.Tensor, f_cond: torch.Tensor) -> torch.Tensor:
        return f0 + self.attention(f_cond) * f0

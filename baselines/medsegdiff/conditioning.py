"""MedSegDiff's conditioning pieces (official code: ``guided_diffusion/unet.py`` of
github.com/KidsWithTokens/MedSegDiff): the FF-Parser and the dynamic conditional encoding that modulates a
condition feature by the noisy-mask feature at the same scale."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FF_INITS = ("randn", "ones")


class FFParser(nn.Module):
    """Learnable filter in the frequency domain: irfft2(W * rfft2(x)), orthonormal FFTs (unet.py:467-484).

    W is complex, one value per channel and frequency of a ``(height, width)`` map: ``(C, height, width//2 + 1)``
    stored as real pairs. At another spatial size W is resampled bilinearly to that size's frequency grid.
    ``init``: 'randn' (official, unet.py:463: real and imaginary parts N(0, 0.02^2)) or 'ones' (the identity).
    ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, height: int, width: int, init: str = "randn"):
        super().__init__()
        shape = (channels, height, width // 2 + 1, 2)
        if init == "randn":
            weight = torch.randn(shape) * 0.02
        elif init == "ones":
            weight = torch.stack([torch.ones(shape[:-1]), torch.zeros(shape[:-1])], dim=-1)
        else:
            raise ValueError(f"FF-Parser init {init!r} not in {FF_INITS}")
        self.weight = nn.Parameter(weight)

    def complex_weight(self, height: int, width: int) -> torch.Tensor:
        """W on the frequency grid of an ``(height, width)`` map: complex ``(C, height, width//2 + 1)``."""
        w = self.weight
        size = (height, width // 2 + 1)
        if tuple(w.shape[1:3]) != size:
            w = F.interpolate(w.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True)
            w = w.permute(0, 2, 3, 1).contiguous()
        return torch.view_as_complex(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")
        out = torch.fft.irfft2(spectrum * self.complex_weight(h, w), s=(h, w), norm="ortho")
        return out.to(x.dtype)


class DynamicConditionalEncoding(nn.Module):
    """Condition feature c ``(B, C_c, h, w)`` modulated by the noisy-mask feature m ``(B, C_m, h, w)`` at the
    same scale (unet.py:2469-2477): a = FFParser(conv1x1(m)); c * conv1x1(a) (one channel: where) * mean_hw(a)
    (per channel: what)."""

    def __init__(self, mask_channels: int, cond_channels: int, height: int, width: int, ff_init: str):
        super().__init__()
        self.project = nn.Conv2d(mask_channels, cond_channels, 1)
        self.ff_parser = FFParser(cond_channels, height, width, ff_init)
        self.spatial = nn.Conv2d(cond_channels, 1, 1)

    def forward(self, c: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        a = self.ff_parser(self.project(m))
        return c * self.spatial(a) * a.mean(dim=(2, 3), keepdim=True)

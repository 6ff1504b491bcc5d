"""MedSegDiff-V2's two conditions (Wu et al., AAAI 2024, arXiv 2301.11798, section "Method"), as we read the paper
(``v2.py``'s docstring: from which sources, and that the official code runs neither). What is open is ours, named.

- ``GaussianKernel`` and ``UncertainSpatialAttention`` (U-SA, the anchor condition): the condition model's anchor
  feature f_anc is smoothed by a Gaussian kernel of learnable mean and variance, the larger of the smoothed and the
  original kept, a 1x1 convolution and a sigmoid make it a spatial attention on the diffusion model's first-level
  feature f_d: f_d' = sigmoid(conv1x1(max(k_Gauss * f_anc, f_anc))) . f_d + f_d.
- ``NBPFilter``, ``SpectrumCrossAttention``, ``SSFormer`` (the semantic condition): cross-attention between the
  noise embedding and the semantic (condition) embedding computed between their Fourier spectra, the attention map
  passed through a neural band-pass filter that depends on the diffusion step; each SS-Former block attends from
  the semantic embedding to the noise one, then from the noise embedding to the result.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medflowseg.blocks import group_norm


class GaussianKernel(nn.Module):
    """A normalised 2D Gaussian ``(k, k)`` with a learnable mean (an offset from the centre, pixels, ``(2,)`` as
    (dy, dx), initially 0) and a learnable isotropic standard deviation (stored as its log, initially ``sigma``
    pixels). ``forward`` smooths every channel with it (depthwise, zero padding): ``(B, C, H, W)`` -> same."""

    def __init__(self, size: int, sigma: float):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"the Gaussian kernel's size must be odd and >= 1, got {size}")
        if sigma <= 0:
            raise ValueError(f"the Gaussian's initial sigma must be > 0, got {sigma}")
        self.size = size
        self.mean = nn.Parameter(torch.zeros(2))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def kernel(self) -> torch.Tensor:
        """w(i, j) = exp(-((i - c - dy)^2 + (j - c - dx)^2) / (2 sigma^2)) / sum, i, j in [0, k), c = (k - 1) / 2."""
        offsets = torch.arange(self.size, dtype=self.mean.dtype, device=self.mean.device) - (self.size - 1) / 2
        dy, dx = offsets[:, None] - self.mean[0], offsets[None, :] - self.mean[1]
        w = torch.exp(-(dy ** 2 + dx ** 2) / (2 * self.log_sigma.exp() ** 2))
        return w / w.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight = self.kernel().to(x.dtype).expand(c, 1, self.size, self.size)
        return F.conv2d(x, weight, padding=self.size // 2, groups=c)


class UncertainSpatialAttention(nn.Module):
    """U-SA: the anchor ``(B, C_anc, H, W)`` as a spatial attention on the feature ``(B, C, H, W)`` it returns."""

    def __init__(self, anchor_channels: int, channels: int, kernel_size: int, sigma: float):
        super().__init__()
        self.gauss = GaussianKernel(kernel_size, sigma)
        self.project = nn.Conv2d(anchor_channels, channels, 1)

    def relaxed(self, anchor: torch.Tensor) -> torch.Tensor:
        """max(k_Gauss * f_anc, f_anc): the anchor widened where the smoothing raises it, kept where it does not."""
        return torch.maximum(self.gauss(anchor), anchor)

    def forward(self, f: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.project(self.relaxed(anchor))) * f + f


def frequency_grid(height: int, width: int, device=None) -> torch.Tensor:
    """The (vertical, horizontal) frequencies, cycles per pixel, of ``rfft2`` on an ``(height, width)`` map, one row
    per coefficient in its row-major order: ``(height * (width // 2 + 1), 2)``."""
    fy = torch.fft.fftfreq(height, device=device)
    fx = torch.fft.rfftfreq(width, device=device)
    return torch.stack(torch.meshgrid(fy, fx, indexing="ij"), dim=-1).reshape(-1, 2)


class NBPFilter(nn.Module):
    """The neural band-pass filter: a weight in (0, 1) for every pair (query frequency, key frequency) of the
    spectrum-space attention map, given the diffusion step.

    An MLP of the four frequencies: ``blocks`` hidden layers of width ``hidden`` (Linear, LayerNorm, plus a
    projection of the step embedding, ReLU), then Linear and a sigmoid. ``forward(n_q, n_k frequencies ``(n, 2)``,
    temb ``(B, T)``) -> ``(B, n_q, n_k)``.
    """

    def __init__(self, hidden: int, blocks: int, time_dim: int):
        super().__init__()
        if hidden < 1 or blocks < 1:
            raise ValueError(f"the NBP-Filter needs hidden >= 1 and blocks >= 1, got {hidden} and {blocks}")
        self.inp = nn.Linear(4, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.times = nn.ModuleList(nn.Linear(time_dim, hidden) for _ in range(blocks))
        self.out = nn.Linear(hidden, 1)

    def forward(self, freq_q: torch.Tensor, freq_k: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        n_q, n_k = freq_q.shape[0], freq_k.shape[0]
        pairs = torch.cat([freq_q[:, None].expand(n_q, n_k, 2), freq_k[None].expand(n_q, n_k, 2)], dim=-1)
        h = self.inp(pairs.to(temb.dtype))[None]                                   # (1, n_q, n_k, hidden)
        for layer, norm, time in zip(self.layers, self.norms, self.times):
            h = F.relu(norm(layer(h)) + time(temb)[:, None, None])                  # (B, n_q, n_k, hidden)
        return torch.sigmoid(self.out(h)).squeeze(-1)


class SpectrumCrossAttention(nn.Module):
    """Multi-head cross-attention between spectra, x ``(B, C, h, w)`` attending to y ``(B, C, h, w)``.

    q, k, v = 1x1 projections of the normalised x, y, y; their orthonormal ``rfft2`` over (h, w) make n = h (w//2 + 1)
    frequency tokens per head. The attention map between them, ``attention_map`` ``(B, heads, n, n)``, is
    softmax(Re(q^ conj(k^)^T) / sqrt(d)) times the NBP-Filter; it mixes v's spectrum, ``irfft2`` brings that back
    to space, and a 1x1 projection is added to x.
    """

    def __init__(self, channels: int, heads: int, nbp_hidden: int, nbp_blocks: int, time_dim: int,
                 norm_groups: int):
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm_x, self.norm_y = group_norm(channels, norm_groups), group_norm(channels, norm_groups)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj = nn.Conv2d(channels, channels, 1)
        self.nbp = NBPFilter(nbp_hidden, nbp_blocks, time_dim)

    def _spectrum(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> complex ``(B, heads, C / heads, n)``."""
        b, c = x.shape[:2]
        return torch.fft.rfft2(conv(x).float(), norm="ortho").reshape(b, self.heads, c // self.heads, -1)

    def attention_map(self, x: torch.Tensor, y: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """The filtered attention between x's and y's frequency tokens: ``(B, heads, n, n)``, rows over x's."""
        q, k = self._spectrum(self.q, self.norm_x(x)), self._spectrum(self.k, self.norm_y(y))
        logits = torch.einsum("bhdi,bhdj->bhij", q, k.conj()).real / math.sqrt(q.shape[2])
        h, w = x.shape[-2:]
        freq = frequency_grid(h, w, device=x.device)
        return logits.softmax(dim=-1) * self.nbp(freq, freq, temb)[:, None]

    def forward(self, x: torch.Tensor, y: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.attention_map(x, y, temb)
        v = self._spectrum(self.v, self.norm_y(y))
        mixed = torch.einsum("bhij,bhdj->bhdi", attn.to(v.dtype), v).reshape(b, c, h, w // 2 + 1)
        out = torch.fft.irfft2(mixed, s=(h, w), norm="ortho").to(x.dtype)
        return x + self.proj(out)


class FeedForward(nn.Module):
    """x + conv1x1(GELU(conv1x1(GroupNorm(x)))), hidden width ``ratio`` x channels: ``(B, C, h, w)`` -> same."""

    def __init__(self, channels: int, ratio: int, norm_groups: int):
        super().__init__()
        if ratio < 1:
            raise ValueError(f"the feed-forward ratio must be >= 1, got {ratio}")
        self.net = nn.Sequential(group_norm(channels, norm_groups), nn.Conv2d(channels, ratio * channels, 1),
                                 nn.GELU(), nn.Conv2d(ratio * channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class SSFormerBlock(nn.Module):
    """One block: the semantic embedding c attends to the noise embedding e (c' = FF(SA(c, e))), then e to c'
    (e' = FF(SA(e, c'))). ``(e, c)`` ``(B, C, h, w)`` each -> ``(e', c')``."""

    def __init__(self, channels: int, heads: int, mlp_ratio: int, nbp_hidden: int, nbp_blocks: int, time_dim: int,
                 norm_groups: int):
        super().__init__()
        self.to_semantic = SpectrumCrossAttention(channels, heads, nbp_hidden, nbp_blocks, time_dim, norm_groups)
        self.ff_semantic = FeedForward(channels, mlp_ratio, norm_groups)
        self.to_noise = SpectrumCrossAttention(channels, heads, nbp_hidden, nbp_blocks, time_dim, norm_groups)
        self.ff_noise = FeedForward(channels, mlp_ratio, norm_groups)

    def forward(self, e: torch.Tensor, c: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.ff_semantic(self.to_semantic(c, e, temb))
        e = self.ff_noise(self.to_noise(e, c, temb))
        return e, c


class SSFormer(nn.Module):
    """``depth`` SS-Former blocks: the noise embedding e ``(B, C, h, w)`` conditioned on the semantic embedding c
    ``(B, C, h, w)`` at the step embedding temb ``(B, T)`` -> e' ``(B, C, h, w)``."""

    def __init__(self, channels: int, depth: int, heads: int, mlp_ratio: int, nbp_hidden: int, nbp_blocks: int,
                 time_dim: int, norm_groups: int):
        super().__init__()
        if depth < 1:
            raise ValueError(f"the SS-Former needs depth >= 1, got {depth}")
        self.blocks = nn.ModuleList(SSFormerBlock(channels, heads, mlp_ratio, nbp_hidden, nbp_blocks, time_dim,
                                                  norm_groups) for _ in range(depth))

    def forward(self, e: torch.Tensor, c: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            e, c = block(e, c, temb)
        return e

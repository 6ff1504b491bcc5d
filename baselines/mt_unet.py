"""``mt-unet``: MT-UNet, the Mixed Transformer U-Net (Wang et al., ICASSP 2022), written from its official code
(github.com/Dootmaan/MT-UNet at fd3707b; ``MTUNet.py:N`` below is ``model/MTUNet.py``).

The network (the ``configs`` of MTUNet.py:508-516): a convolutional stem of three residual double convolutions
(64, 128, 256 channels, max-pooled after each, MTUNet.py:37-81) and a 1x1 conv-BN-ReLU to the model width 256
with a learned position embedding (MTUNet.py:379-393); two encoder stages of two mixed-transformer modules
(256, 512 channels) each followed by a 2x2 stride-2 conv-BN-ReLU doubling the width (MTUNet.py:396-414); two
modules at 1024 in the bottleneck; two decoder stages (transposed conv x2, the encoder's tokens concatenated,
two modules, MTUNet.py:417-461) and the stem's mirror (transposed convs and residual double convolutions back to
64 channels, MTUNet.py:84-105), then a 1x1 convolution to the K classes.

A mixed-transformer module (MTUNet.py:345-366) is LayerNorm + local-global Gaussian-weighted self-attention +
residual, then LayerNorm + external attention + residual. The local-global attention (MTUNet.py:301-342):
8-head self-attention inside 4x4 windows; each window pooled to one token by a learned softmax over its 16 tokens
(MTUNet.py:250-264); single-head axial attention over the pooled grid whose row and column logits get a learned
Gaussian distance penalty -(shift x d^2) before their softmaxes (MTUNet.py:267-298), upsampled x4 (bilinear,
corners aligned), concatenated with the window attention's output and fused by a 1x1 convolution. The external
attention (MTUNet.py:108-136): a linear expansion x4 split into 32 heads, a shared memory of 64 units read with a
softmax over tokens then a normalisation over units, and a linear projection back.

At 256 px (the paper profile) the token grids are 32, 16, 8, all divisible by the window 4 (at 224 px they are 28,
14, 7 and the official code pads 14 and 7, MTUNet.py:230-238; that padding is kept for such sizes), and the position
embedding has 32 x 32 tokens (official: 28 x 28 for 224 px). A token grid of one window (the 2 x 2 bottleneck
of the CPU profile's 64 px) pools to one position, where the axial attention's softmax has one logit: its query,
key and Gaussian width then have no effect, in the official network as here.

Parameters: 75,268,659 at 224 px with 9 classes; the official network has 79,075,389 (counted from the official
code). The difference is the official network's parameters that never act, left out here: the output projection
of each axial attention (``Attention.out``, built in MTUNet.py:152 but unused when ``axial``, MTUNet.py:162-187),
10 modules x (C^2 + C) = 3,806,720, and the Gaussian's ``bias`` (MTUNet.py:270), which adds one constant to every
logit of a softmax and so changes neither output nor gradient (10 parameters). Pinned in
tests/baselines/test_mt_unet.py.

Deviations from the official code:
- any input channels C (C = 1 is repeated to 3 as the official forward does);
- the widths, window, heads and external-attention sizes are fields (defaults: the official values), so the CPU
  profile can narrow them; the x4 upsampling of the pooled grid is x window (4 in the official network);
- the Gaussian-weighted axial attention is computed for all positions at once instead of the official per-pixel
  Python loop (the same arithmetic);
- the official code trains from scratch (ACDC: Adam, lr 1e-4, weight decay 1e-4, batch 12, train_mtunet_ACDC.py:
  24-25, 76) and has no ImageNet weights, so there is no ``pretrained`` field.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from baselines.official_weights import network_in_channels, repeat_grey
from baselines.supervised import FixedSizeSegmenter


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, relu: bool = True) -> nn.Sequential:
    """Convolution without bias + BatchNorm (+ ReLU) (MTUNet.py:10-34)."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class DoubleConv(nn.Module):
    """conv-BN-ReLU, conv-BN, then a 1x1 conv-BN branch added and ReLU (MTUNet.py:37-54):
    ``(B, cin, H, W)`` -> ``(B, cout, H, W)``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(conv_bn(cin, cout, 3, padding=1), conv_bn(cout, cout, 3, padding=1, relu=False))
        self.conv1, self.bn = nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x + self.bn(self.conv1(x)))


class LocalGlobalAttention(nn.Module):
    """The local-global Gaussian-weighted self-attention (CSAttention): ``(B, h*w, C)`` -> ``(B, h*w, C)`` on a
    square ``h x w`` token grid."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.pool = nn.Linear(dim, window * window)
        self.axial_query, self.axial_key, self.axial_value = (nn.Linear(dim, dim) for _ in range(3))
        self.shift = nn.Parameter(torch.randn(1).abs())
        self.fuse = nn.Conv2d(2 * dim, dim, 1)

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, p, p, window^2, C)`` with p = ceil(h / window): a side that the window does
        not divide is padded as the official code pads it (zeros, and the bottom-right corner block copied from
        the map's last rows and columns, MTUNet.py:230-238)."""
        b, c, h, w = x.shape
        if h % self.window:
            pad = self.window - h % self.window
            padded = F.pad(x, (0, pad, 0, pad))
            padded[:, :, h:, w:] = x[:, :, h - pad:, w - pad:]
            x, h, w = padded, h + pad, w + pad
        p, s = h // self.window, self.window
        return x.view(b, c, p, s, p, s).permute(0, 2, 4, 3, 5, 1).reshape(b, p, p, s * s, c)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention inside each window: ``(B, p, p, n, C)`` -> ``(B, p, p, n, C)``."""
        *lead, n, c = x.shape
        q, k, v = (f(x).view(*lead, n, self.heads, c // self.heads).transpose(-3, -2)
                   for f in (self.query, self.key, self.value))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(c // self.heads)).softmax(dim=-1)
        return self.out((attn @ v).transpose(-3, -2).reshape(*lead, n, c))

    def gaussian_axial(self, x: torch.Tensor) -> torch.Tensor:
        """Single-head axial attention on the pooled grid with the Gaussian distance penalty (MTUNet.py:160-187,
        267-298): ``(B, p, q, C)`` -> ``(B, p, q, C)``; each position sums its row's and its column's values."""
        _, p, q, _ = x.shape
        query, key, value = self.axial_query(x), self.axial_key(x), self.axial_value(x)
        rows = query @ key.transpose(-1, -2)                                          # (B, p, q, q)
        cols = query.transpose(1, 2) @ key.transpose(1, 2).transpose(-1, -2)          # (B, q, p, p)
        dq = (torch.arange(q, device=x.device)[:, None] - torch.arange(q, device=x.device)) ** 2
        dp = (torch.arange(p, device=x.device)[:, None] - torch.arange(p, device=x.device)) ** 2
        rows = (rows - self.shift * dq).softmax(dim=-1)
        cols = (cols - self.shift * dp).softmax(dim=-1)
        return rows @ value + (cols @ value.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side = math.isqrt(n)
        local = self.window_attention(self.windows(x.transpose(1, 2).reshape(b, c, side, side)))
        p, s = local.shape[1], self.window
        local_map = local.view(b, p, p, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, p * s, p * s)
        weights = self.pool(local.mean(dim=-2)).softmax(dim=-1)                       # (B, p, p, n)
        pooled = (local * weights.unsqueeze(-1)).sum(dim=-2)                           # (B, p, p, C)
        glob = self.gaussian_axial(pooled).permute(0, 3, 1, 2)
        glob = F.interpolate(glob, scale_factor=s, mode="bilinear", align_corners=True)
        y = self.fuse(torch.cat([glob, local_map], dim=1))[:, :, :side, :side]
        return y.flatten(2).transpose(1, 2)


class ExternalAttention(nn.Module):
    """Multi-head external attention (MEAttention, MTUNet.py:108-136): ``(B, N, C)`` -> ``(B, N, C)``."""

    def __init__(self, dim: int, heads: int, expansion: int, memory: int):
        super().__init__()
        self.heads = heads * expansion
        self.query = nn.Linear(dim, dim * expansion)
        self.memory_key = nn.Linear(dim * expansion // self.heads, memory)
        self.memory_value = nn.Linear(memory, dim * expansion // self.heads)
        self.proj = nn.Linear(dim * expansion, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.query(x).view(b, n, self.heads, -1).transpose(1, 2)
        attn = self.memory_key(x).softmax(dim=-2)
        attn = attn / (1e-9 + attn.sum(dim=-1, keepdim=True))
        return self.proj(self.memory_value(attn).transpose(1, 2).reshape(b, n, -1))


class MixedTransformer(nn.Module):
    """The mixed-transformer module (EAmodule, MTUNet.py:345-366): ``(B, N, C)`` -> ``(B, N, C)``."""

    def __init__(self, dim: int, heads: int, window: int, expansion: int, memory: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.local_global = LocalGlobalAttention(dim, heads, window)
        self.external = ExternalAttention(dim, heads, expansion, memory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.local_global(self.norm1(x))
        return x + self.external(self.norm2(x))


def tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``."""
    return x.flatten(2).transpose(1, 2)


def grid(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, C, sqrt N, sqrt N)``."""
    side = math.isqrt(x.shape[1])
    return x.transpose(1, 2).reshape(len(x), -1, side, side)


class MTUNetNet(nn.Module):
    """``(B, C, img_size, img_size)`` -> logits ``(B, K, img_size, img_size)``."""

    def __init__(self, in_channels: int, num_classes: int, img_size: int, stem_channels, dim: int,
                 encoder_stages: int, heads: int, window: int, ea_expansion: int, ea_memory: int):
        super().__init__()
        if len(stem_channels) != 3:
            raise ValueError(f"mt-unet: stem_channels must have 3 widths, got {list(stem_channels)}")
        if img_size % (8 * 2 ** encoder_stages) or encoder_stages < 1:
            raise ValueError(f"mt-unet: img_size {img_size} must be divisible by 8 x 2^encoder_stages "
                             f"(encoder_stages >= 1, got {encoder_stages})")
        if dim % heads:
            raise ValueError(f"mt-unet: dim {dim} must be divisible by heads {heads}")
        c1, c2, c3 = stem_channels
        self.in_channels = in_channels
        module = lambda d: MixedTransformer(d, heads, window, ea_expansion, ea_memory)
        self.stem = nn.ModuleList([DoubleConv(network_in_channels(in_channels), c1), DoubleConv(c1, c2),
                                   DoubleConv(c2, c3)])
        self.trans_dim = conv_bn(c3, dim, 1)
        self.position_embedding = nn.Parameter(torch.zeros(1, (img_size // 8) ** 2, dim))
        dims = [dim * 2 ** i for i in range(encoder_stages + 1)]
        self.encoder = nn.ModuleList(nn.ModuleList([module(d), module(d), conv_bn(d, 2 * d, 2, stride=2)])
                                     for d in dims[:-1])
        self.bottleneck = nn.Sequential(module(dims[-1]), module(dims[-1]))
        # Decoder stage i (deepest first) upsamples dims[i + 1] -> dims[i] and takes the skip of width dims[i];
        # all but the last reduce the concatenation back to dims[i] (MTUNet.py:417-461).
        self.decoder = nn.ModuleList()
        for i in reversed(range(encoder_stages)):
            width = dims[i] if i else dims[1]
            self.decoder.append(nn.ModuleList([nn.ConvTranspose2d(dims[i + 1], dims[i], 2, stride=2),
                                               nn.Conv2d(dims[i + 1], dims[i], 1) if i else nn.Identity(),
                                               module(width), module(width)]))
        self.up = nn.ModuleList([nn.ConvTranspose2d(dims[1], c3, 2, stride=2), nn.ConvTranspose2d(c3, c2, 2, stride=2),
                                 nn.ConvTranspose2d(c2, c1, 2, stride=2)])
        self.up_conv = nn.ModuleList([DoubleConv(2 * c3, c3), DoubleConv(2 * c2, c2), DoubleConv(2 * c1, c1)])
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = repeat_grey(x, self.in_channels)
        features = []
        for conv in self.stem:
            x = conv(x)
            features.append(x)
            x = F.max_pool2d(x, 2)
        x = tokens(self.trans_dim(x)) + self.position_embedding
        skips = []
        for first, second, down in self.encoder:
            x = grid(second(first(x)))
            skips.append(x)
            x = tokens(down(x))
        x = grid(self.bottleneck(x))
        for (upsample, reduce, first, second), skip in zip(self.decoder, reversed(skips)):
            x = grid(second(first(tokens(reduce(torch.cat([upsample(x), skip], dim=1))))))
        for upsample, conv, feature in zip(self.up, self.up_conv, reversed(features)):
            x = conv(torch.cat([feature, upsample(x)], dim=1))
        return self.head(x)


class MTUNet(FixedSizeSegmenter):
    """Args (defaults: the official configuration, MTUNet.py:508-516, at 256 px):
        in_channels, num_classes: C and K.
        img_size: the square input side (divisible by 8 x 2^encoder_stages; must equal ``data.size``).
        stem_channels: the convolutional stem's widths (official 64, 128, 256).
        dim, encoder_stages: the first transformer width and the number of encoder stages, each doubling it
            (official 256 and 2: 256, 512, bottleneck 1024).
        heads, window: the window attention's heads and window side (official 8 and 4).
        ea_expansion, ea_memory: the external attention's expansion and memory units (official 4 and
            256 // 4 = 64, MTUNet.py:112-117).
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: int = 256, stem_channels=(64, 128, 256),
                 dim: int = 256, encoder_stages: int = 2, heads: int = 8, window: int = 4, ea_expansion: int = 4,
                 ea_memory: int = 64):
        super().__init__(MTUNetNet(in_channels, num_classes, img_size, tuple(stem_channels), dim, encoder_stages,
                                   heads, window, ea_expansion, ea_memory), "mt-unet", img_size)

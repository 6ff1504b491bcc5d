"""``transunet``: TransUNet (Chen et al., arXiv 2102.04306, 2021), the R50-ViT-B/16 hybrid, written from its
official code (github.com/Beckschen/TransUNet at 02ef001; ``file:line`` below is in ``networks/``).

The network: a ResNet-50 v2 trunk with group norm and weight-standardised convolutions (root and 3 stages of 3, 4,
9 bottlenecks, vit_seg_configs.py:47), a 1x1 patch embedding of its stride-16 features (the grid is img_size / 16,
train.py:87-88), a ViT-B/16 encoder (12 pre-norm layers, hidden 768, MLP 3072, 12 heads, dropout 0.1,
vit_seg_configs.py:7-13) and the cascaded upsampler (CUP): a 3x3 convolution to 512 channels
(vit_seg_modeling.py:330), then 4 blocks of bilinear x2 + two 3x3 conv-BN-ReLU to (256, 128, 64, 16)
(vit_seg_configs.py:52) taking the trunk's skips at 1/8, 1/4, 1/2 (512, 256, 64 channels, n_skip 3,
vit_seg_configs.py:53-55), and a 3x3 convolution to the K classes.

At 256 px (the paper profile) the patch grid is 16 x 16 (224 px: 14 x 14), as the official train.py builds it for
any size; a 224-px checkpoint's 14 x 14 position embedding is resized bilinearly to the grid
(vit_seg_modeling.py:411-424). Parameters: 105,277,081 at 224 px with 9 classes, the official network's count
(counted from the official code; pinned in tests/baselines/test_transunet.py); 105,322,436 at 256 px with 4.

Deviations from the official code:
- any input channels C: C = 1 is repeated to 3 as the official forward does; other C build a C-channel root;
- ``pretrained``: null trains from scratch (the official code always loads the ImageNet-21k R50+ViT-B_16.npz,
  train.py:90; it cannot be downloaded here); a path loads that file (see :meth:`TransUNetNet.load_official`);
- the ResNet width, stage depths, group-norm groups and the transformer's sizes are fields, so the CPU profile can
  narrow them; their defaults are the official values;
- the 1/4 skip is zero-padded to img_size / 4 when max-pooling floors it (the official code pads the same way,
  vit_seg_modeling_resnet_skip.py:150-155), written with ``F.pad``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.official_weights import assign, network_in_channels, read_npz, repeat_grey
from baselines.supervised import FixedSizeSegmenter, official_dice_ce


class StdConv2d(nn.Conv2d):
    """A convolution with weight standardisation over each output filter (eps 1e-5,
    vit_seg_modeling_resnet_skip.py:18-25)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        return F.conv2d(x, (self.weight - mean) / torch.sqrt(var + 1e-5), self.bias, self.stride, self.padding)


class Bottleneck(nn.Module):
    """The pre-activation bottleneck as the official code writes it (conv-GN-ReLU, stride on the 3x3,
    vit_seg_modeling_resnet_skip.py:38-74): ``(B, cin, H, W)`` -> ``(B, cout, H / stride, W / stride)``."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int, groups: int):
        super().__init__()
        self.conv1, self.gn1 = StdConv2d(cin, cmid, 1, bias=False), nn.GroupNorm(groups, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(groups, cmid, eps=1e-6)
        self.conv3, self.gn3 = StdConv2d(cmid, cout, 1, bias=False), nn.GroupNorm(groups, cout, eps=1e-6)
        self.downsample = self.gn_proj = None
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, 1, stride=stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)  # one channel per group, default eps (official :58)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.gn_proj(self.downsample(x))
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(residual + self.gn3(self.conv3(y)))


class ResNetV2(nn.Module):
    """The hybrid encoder's CNN: ``(B, C, H, W)`` -> features ``(B, 16 w, H/16, W/16)`` and the skips
    ``[(B, 8 w, H/8, W/8), (B, 4 w, H/4, W/4), (B, w, H/2, W/2)]`` (w: ``width``)."""

    def __init__(self, in_channels: int, width: int, units: tuple[int, int, int], groups: int):
        super().__init__()
        self.root_conv = StdConv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.root_gn = nn.GroupNorm(groups, width, eps=1e-6)
        stages = []
        for i, n in enumerate(units):
            cin, cout, cmid = (width, 4 * width, width) if i == 0 else (2 ** (i + 1) * width, 2 ** (i + 2) * width,
                                                                       2 ** i * width)
            stages.append(nn.ModuleList([Bottleneck(cin if j == 0 else cout, cout, cmid, 2 if j == 0 and i else 1,
                                                    groups) for j in range(n)]))
        self.body = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        size = x.shape[-1]
        x = F.relu(self.root_gn(self.root_conv(x)))
        skips = [x]
        x = F.max_pool2d(x, 3, stride=2)
        for i, stage in enumerate(self.body):
            for unit in stage:
                x = unit(x)
            if i < len(self.body) - 1:
                right = size // (4 * 2 ** i)
                skips.append(F.pad(x, (0, right - x.shape[-1], 0, right - x.shape[-2])))
        return x, skips[::-1]


class Block(nn.Module):
    """A pre-norm ViT layer (LayerNorm eps 1e-6; vit_seg_modeling.py:168-187): ``(B, N, D)`` -> ``(B, N, D)``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.heads = heads
        self.attention_norm, self.ffn_norm = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.attn_dropout = nn.Dropout(attention_dropout)
        self.proj_dropout = nn.Dropout(attention_dropout)  # the official code uses the attention rate here (:64)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
        self.dropout = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):  # official :107-111
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.attention_norm(x)
        q, k, v = (f(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        attn = self.attn_dropout((q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)).softmax(dim=-1))
        x = x + self.proj_dropout(self.out((attn @ v).transpose(1, 2).reshape(b, n, d)))
        return x + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.ffn_norm(x))))))


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm + ReLU (vit_seg_modeling.py:259-281)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DecoderBlock(nn.Module):
    """Bilinear x2 (align_corners, ``UpsamplingBilinear2d``), the skip concatenated, two conv-BN-ReLU
    (vit_seg_modeling.py:284-315): ``(B, cin, h, w)`` (+ skip ``(B, cskip, 2h, 2w)``) -> ``(B, cout, 2h, 2w)``."""

    def __init__(self, cin: int, cout: int, cskip: int):
        super().__init__()
        self.conv1, self.conv2 = conv_bn_relu(cin + cskip, cout), conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class TransUNetNet(nn.Module):
    """``(B, C, img_size, img_size)`` -> logits ``(B, K, img_size, img_size)``."""

    def __init__(self, in_channels: int, num_classes: int, img_size: int, resnet_width: int, resnet_units,
                 norm_groups: int, hidden_size: int, num_layers: int, num_heads: int, mlp_dim: int,
                 dropout_rate: float, attention_dropout_rate: float, decoder_channels, head_channels: int,
                 n_skip: int):
        super().__init__()
        if img_size % 16:
            raise ValueError(f"transunet: img_size must be a multiple of 16 (the trunk's stride), got {img_size}")
        if len(resnet_units) != 3 or min(resnet_units) < 1:
            raise ValueError(f"transunet: resnet_units must be 3 stage depths >= 1, got {list(resnet_units)}")
        if hidden_size % num_heads:
            raise ValueError(f"transunet: hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        if len(decoder_channels) != 4 or not 0 <= n_skip <= 3:
            raise ValueError(f"transunet: decoder_channels must have 4 widths and n_skip be 0..3, got "
                             f"{list(decoder_channels)} and {n_skip}")
        self.in_channels, self.grid, self.n_skip = in_channels, img_size // 16, n_skip
        self.resnet = ResNetV2(network_in_channels(in_channels), resnet_width, tuple(resnet_units), norm_groups)
        self.patch_embeddings = nn.Conv2d(16 * resnet_width, hidden_size, 1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid ** 2, hidden_size))
        self.embed_dropout = nn.Dropout(dropout_rate)
        self.layers = nn.ModuleList(Block(hidden_size, num_heads, mlp_dim, dropout_rate, attention_dropout_rate)
                                    for _ in range(num_layers))
        self.encoder_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.conv_more = conv_bn_relu(hidden_size, head_channels)
        skips = [8 * resnet_width, 4 * resnet_width, resnet_width, 0][:n_skip] + [0] * (4 - n_skip)
        ins = [head_channels, *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, skips))
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C, H, W)`` -> the encoder's tokens ``(B, (H/16)^2, D)`` and the trunk's three skips."""
        x, skips = self.resnet(repeat_grey(x, self.in_channels))
        x = self.embed_dropout(self.patch_embeddings(x).flatten(2).transpose(1, 2) + self.position_embeddings)
        for layer in self.layers:
            x = layer(x)
        return self.encoder_norm(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, skips = self.encode(x)
        x = self.conv_more(tokens.transpose(1, 2).reshape(len(x), -1, self.grid, self.grid))
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < self.n_skip else None)
        return self.segmentation_head(x)

    def load_official(self, path: str | Path) -> None:
        """Load the encoder from Google's ``R50+ViT-B_16.npz`` key layout (vit_seg_modeling.py:393-440 and
        vit_seg_modeling_resnet_skip.py:76-110): Flax HWIO kernels transposed to OIHW, attention kernels
        ``(D, heads, D/heads)`` flattened and transposed, the position embedding's class token dropped and its grid
        resized bilinearly when the sizes differ. ``cls``, ``head/*`` and ``pre_logits/*`` (the classifier) are
        not part of the network; the decoder keeps its initialisation, as in the official code."""
        weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in read_npz(path).items()}
        vec, hwio, dense = (lambda t: t.reshape(-1)), (lambda t: t.permute(3, 2, 0, 1)), (lambda t: t.t())
        heads_in = lambda t: t.reshape(t.shape[0], -1).t()   # (D, heads, hd) -> (heads*hd, D)
        heads_out = lambda t: t.reshape(-1, t.shape[-1]).t()  # (heads, hd, D) -> (D, heads*hd)
        targets = {"embedding/kernel": [("patch_embeddings.weight", hwio)],
                   "embedding/bias": [("patch_embeddings.bias", vec)],
                   "Transformer/posembed_input/pos_embedding": [("position_embeddings", self._resize_posemb)],
                   "Transformer/encoder_norm/scale": [("encoder_norm.weight", vec)],
                   "Transformer/encoder_norm/bias": [("encoder_norm.bias", vec)],
                   "conv_root/kernel": [("resnet.root_conv.weight", hwio)],
                   "gn_root/scale": [("resnet.root_gn.weight", vec)], "gn_root/bias": [("resnet.root_gn.bias", vec)]}
        for i in range(len(self.layers)):
            src, dst = f"Transformer/encoderblock_{i}", f"layers.{i}"
            for name, mod in (("query", "query"), ("key", "key"), ("value", "value"), ("out", "out")):
                targets[f"{src}/MultiHeadDotProductAttention_1/{name}/kernel"] = [
                    (f"{dst}.{mod}.weight", heads_out if name == "out" else heads_in)]
                targets[f"{src}/MultiHeadDotProductAttention_1/{name}/bias"] = [(f"{dst}.{mod}.bias", vec)]
            for j, fc in ((0, "fc1"), (1, "fc2")):
                targets[f"{src}/MlpBlock_3/Dense_{j}/kernel"] = [(f"{dst}.{fc}.weight", dense)]
                targets[f"{src}/MlpBlock_3/Dense_{j}/bias"] = [(f"{dst}.{fc}.bias", vec)]
            for ln, norm in (("LayerNorm_0", "attention_norm"), ("LayerNorm_2", "ffn_norm")):
                targets[f"{src}/{ln}/scale"] = [(f"{dst}.{norm}.weight", vec)]
                targets[f"{src}/{ln}/bias"] = [(f"{dst}.{norm}.bias", vec)]
        for s, stage in enumerate(self.resnet.body):
            for u, unit in enumerate(stage):
                src, dst = f"block{s + 1}/unit{u + 1}", f"resnet.body.{s}.{u}"
                for k in (1, 2, 3):
                    targets[f"{src}/conv{k}/kernel"] = [(f"{dst}.conv{k}.weight", hwio)]
                    targets[f"{src}/gn{k}/scale"] = [(f"{dst}.gn{k}.weight", vec)]
                    targets[f"{src}/gn{k}/bias"] = [(f"{dst}.gn{k}.bias", vec)]
                if unit.downsample is not None:
                    targets[f"{src}/conv_proj/kernel"] = [(f"{dst}.downsample.weight", hwio)]
                    targets[f"{src}/gn_proj/scale"] = [(f"{dst}.gn_proj.weight", vec)]
                    targets[f"{src}/gn_proj/bias"] = [(f"{dst}.gn_proj.bias", vec)]
        assign(path, weights, targets, lambda k: k == "cls" or k.startswith(("head/", "pre_logits/")), self)

    def _resize_posemb(self, posemb: torch.Tensor) -> torch.Tensor:
        """``(1, N, D)`` -> ``(1, grid^2, D)``: as is when N is the grid's, the class token dropped when N is one
        more, else the class token dropped and the square grid resized bilinearly with corners aligned
        (scipy ``ndimage.zoom(order=1)`` in the official code, vit_seg_modeling.py:405-424)."""
        n = self.grid ** 2
        if posemb.shape[1] in (n, n + 1):
            return posemb[:, -n:]
        grid = posemb[0, 1:]
        old = math.isqrt(len(grid))
        grid = grid.reshape(old, old, -1).permute(2, 0, 1).unsqueeze(0)
        grid = F.interpolate(grid, size=(self.grid, self.grid), mode="bilinear", align_corners=True)
        return grid[0].permute(1, 2, 0).reshape(1, n, -1)


class TransUNet(FixedSizeSegmenter):
    """Args (defaults: the official R50-ViT-B_16 at 256 px):
        in_channels, num_classes: C and K.
        img_size: the square input side (a multiple of 16; must equal ``data.size``).
        resnet_width, resnet_units, norm_groups: the trunk (official 64, (3, 4, 9), 32).
        hidden_size, num_layers, num_heads, mlp_dim, dropout_rate, attention_dropout_rate: the ViT
            (official 768, 12, 12, 3072, 0.1, 0.0).
        decoder_channels, head_channels, n_skip: the CUP (official (256, 128, 64, 16), 512, 3).
        pretrained: null (from scratch) or the path of Google's R50+ViT-B_16.npz (ImageNet-21k).
        official_loss: train with the official loss, 0.5 CE + 0.5 batch-level Dice (trainer.py:56-58;
            :func:`~baselines.supervised.official_dice_ce`); false: the suite's Dice + CE, each weighted 1 (the
            CPU profiles' choice, shared with the other supervised baselines).
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: int = 256, resnet_width: int = 64,
                 resnet_units=(3, 4, 9), norm_groups: int = 32, hidden_size: int = 768, num_layers: int = 12,
                 num_heads: int = 12, mlp_dim: int = 3072, dropout_rate: float = 0.1,
                 attention_dropout_rate: float = 0.0, decoder_channels=(256, 128, 64, 16), head_channels: int = 512,
                 n_skip: int = 3, pretrained: str | None = None, official_loss: bool = False):
        net = TransUNetNet(in_channels, num_classes, img_size, resnet_width, resnet_units, norm_groups, hidden_size,
                           num_layers, num_heads, mlp_dim, dropout_rate, attention_dropout_rate,
                           tuple(decoder_channels), head_channels, n_skip)
        if pretrained is not None:
            net.load_official(pretrained)
        super().__init__(net, "transunet", img_size, official_dice_ce(0.5, 0.5) if official_loss else None)

"""``swin-unet``: Swin-Unet (Cao et al., ECCV Workshops 2022), written from its official code
(github.com/HuCaoFighting/Swin-Unet at f48f623; ``sys.py:N`` below is
``networks/swin_transformer_unet_skip_expand_decoder_sys.py``).

The network (configs/swin_tiny_patch4_window7_224_lite.yaml): 4x4 patch embedding to 96 channels with LayerNorm;
an encoder of 4 Swin stages, depths (2, 2, 2, 2), heads (3, 6, 12, 24), window 7, MLP ratio 4, blocks alternating
W-MSA and SW-MSA (shift = window // 2) with a relative position bias, patch merging (2x2 neighbours concatenated,
LayerNorm, linear 4C -> 2C) between stages, a LayerNorm at the bottleneck; a symmetric decoder of patch expanding
(linear C -> 2C, rearranged to 2x2 tokens of C/2, LayerNorm) and Swin stages of the encoder's depths, each stage
fed the encoder's tokens at its scale by concatenation and a linear 2C -> C; a final x4 patch expanding
(linear C -> 16C rearranged to 4x4 tokens, LayerNorm) and a 1x1 convolution without bias to the K classes
(sys.py:608-767). Stochastic depth 0.2 (the yaml's DROP_PATH_RATE), linearly rising over the encoder's blocks and
reused by the decoder stage of the same scale (sys.py:647, 690-691).

The yaml's DECODER_DEPTHS [2, 2, 2, 1] is never used: vision_transformer.py:30-45 does not pass it and
SwinTransformerSys builds each decoder stage with the encoder's depth at that scale (sys.py:684), so the decoder
depths here are the encoder's (2, 2, 2), as the official network runs.

At 256 px (the paper profile) the window is 8: the token grids are 64, 32, 16, 8, which 7 does not divide (the
official code requires it, sys.py:55), and window 8 gives each stage the same windows per side as window 7 at
224 px (8, 4, 2, 1), the last stage one unshifted window as in the official network (sys.py:204-207).
Parameters: 27,168,900 at 224 px, window 7, 9 classes, the official network's count (counted from the official
code; pinned in tests/baselines/test_swin_unet.py); 27,175,812 at 256 px, window 8, 4 classes.

Deviations from the official code:
- any input channels C (C = 1 is repeated to 3 as the official forward does);
- ``pretrained``: null trains from scratch (the official code loads Swin-T ImageNet weights); a path loads
  Microsoft's ``swin_tiny_patch4_window7_224.pth`` key layout into the encoder and, as the official ``load_from``
  does, each encoder stage's blocks into the decoder stage of the same scale (vision_transformer.py:69-85); a
  relative-position table of another window size is resized bicubically (Microsoft Swin's own fine-tuning rule),
  where the official Swin-Unet drops it and keeps the random initialisation;
- the relative-position index and the shift masks are rebuilt from the sizes (non-persistent buffers).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.official_weights import assign, network_in_channels, read_torch, repeat_grey
from baselines.supervised import FixedSizeSegmenter, official_dice_ce


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * H/w * W/w, w * w, C)``, windows in row-major order, tokens row-major in each."""
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def window_reverse(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: ``(B * h/w * wd/w, w * w, C)`` -> ``(B, h, wd, C)``."""
    c = windows.shape[-1]
    return windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, h, wd, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The SW-MSA mask ``(nW, window^2, window^2)``: 0 between tokens of the same region of the cyclically shifted
    map, -100 between tokens that were not neighbours before the shift (sys.py:220-239)."""
    regions = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(cuts):
        for j, cols in enumerate(cuts):
            regions[:, rows, cols, :] = 3 * i + j
    labels = window_partition(regions, window).squeeze(-1)
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differ.shape).masked_fill(differ, -100.0)


def relative_position_index(window: int) -> torch.Tensor:
    """``(window^2, window^2)``: the row of the bias table for each (query, key) pair in a window (sys.py:105-114)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's residual branch with probability ``p`` in training, scaling the kept ones
    by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias (sys.py:77-156):
    ``(nW * B, w^2, C)`` (+ mask ``(nW, w^2, w^2)``) -> ``(nW * B, w^2, C)``."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            attn = (attn.view(bw // len(mask), len(mask), self.heads, n, n) + mask[None, :, None]).view_as(attn)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """A Swin block on an ``(h, w)`` token grid (sys.py:175-282): ``(B, h*w, C)`` -> ``(B, h*w, C)``. A grid no
    larger than the window takes one unshifted window of the grid's size (sys.py:204-207)."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int,
                 mlp_ratio: float, drop_path: float):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        if resolution[0] % window or resolution[1] % window:
            raise ValueError(f"swin-unet: a {resolution[0]}x{resolution[1]} token grid is not divisible by window "
                             f"{window}: choose img_size / patch size divisible by window x 2^(stages - 1)")
        self.window, self.shift = window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.register_buffer("attn_mask", shifted_window_mask(*resolution, window, shift) if shift else None,
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (b, _, c) = self.resolution, x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window), self.attn_mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, linear 4C -> 2C (sys.py:303-340):
    ``(B, h*w, C)`` -> ``(B, h/2 * w/2, 2C)``."""

    def __init__(self, resolution: tuple[int, int], dim: int):
        super().__init__()
        self.resolution = resolution
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (b, _, c) = self.resolution, x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchExpand(nn.Module):
    """Linear C -> s^2 x ``out``, each token's channels split into an s x s block of tokens of ``out`` channels,
    LayerNorm (sys.py:352-402): ``(B, h*w, C)`` -> ``(B, sh * sw, out)``. The decoder's expands: s = 2,
    out = C/2; the final one: s = the patch size (4), out = C."""

    def __init__(self, resolution: tuple[int, int], dim: int, scale: int, out: int):
        super().__init__()
        self.resolution, self.scale = resolution, scale
        self.expand, self.norm = nn.Linear(dim, scale * scale * out, bias=False), nn.LayerNorm(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), s, b = self.resolution, self.scale, len(x)
        x = self.expand(x)
        c = x.shape[-1] // (s * s)
        x = x.view(b, h, w, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * s * w * s, c)
        return self.norm(x)


class Stage(nn.Module):
    """``depth`` Swin blocks, W-MSA then SW-MSA, then the encoder's patch merging (``downsample``) or the decoder's
    patch expanding (``upsample``), if any (the official BasicLayer and BasicLayer_up, sys.py:405-531)."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int,
                 mlp_ratio: float, drop_paths: list[float], downsample: nn.Module | None = None,
                 upsample: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2,
                                              mlp_ratio, drop_paths[i]) for i in range(depth))
        self.downsample, self.upsample = downsample, upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        for resample in (self.downsample, self.upsample):
            if resample is not None:
                x = resample(x)
        return x


class SwinUnetNet(nn.Module):
    """``(B, C, img_size, img_size)`` -> logits ``(B, K, img_size, img_size)``. Module names follow the official
    ``SwinTransformerSys`` so that its checkpoints' keys read directly."""

    def __init__(self, in_channels: int, num_classes: int, img_size: int, patch_size: int, embed_dim: int,
                 depths, num_heads, window_size: int, mlp_ratio: float, drop_path_rate: float):
        super().__init__()
        if len(depths) != len(num_heads) or len(depths) < 2 or min(depths) < 1:
            raise ValueError(f"swin-unet: depths and num_heads must name the same >= 2 stages, got {list(depths)} "
                             f"and {list(num_heads)}")
        if img_size % (patch_size * 2 ** (len(depths) - 1)):
            raise ValueError(f"swin-unet: img_size {img_size} must be divisible by patch_size x 2^(stages - 1)")
        self.in_channels, self.stages = in_channels, len(depths)
        self.grid = img_size // patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(network_in_channels(in_channels), embed_dim, patch_size, patch_size)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dims = [embed_dim * 2 ** i for i in range(self.stages)]
        res = [(self.grid // 2 ** i,) * 2 for i in range(self.stages)]
        drops = [rates[sum(depths[:i]):sum(depths[:i + 1])] for i in range(self.stages)]
        self.layers = nn.ModuleList(
            Stage(dims[i], res[i], depths[i], num_heads[i], window_size, mlp_ratio, drops[i],
                  downsample=PatchMerging(res[i], dims[i]) if i < self.stages - 1 else None)
            for i in range(self.stages))
        self.norm = nn.LayerNorm(dims[-1])
        last = self.stages - 1
        self.layers_up = nn.ModuleList([PatchExpand(res[last], dims[last], 2, dims[last] // 2)])
        self.concat_back_dim = nn.ModuleList([nn.Identity()])
        for i in reversed(range(last)):
            self.layers_up.append(Stage(dims[i], res[i], depths[i], num_heads[i], window_size, mlp_ratio, drops[i],
                                        upsample=PatchExpand(res[i], dims[i], 2, dims[i] // 2) if i > 0 else None))
            self.concat_back_dim.append(nn.Linear(2 * dims[i], dims[i]))
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = PatchExpand(res[0], embed_dim, patch_size, embed_dim)
        self.output = nn.Conv2d(embed_dim, num_classes, 1, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        """Truncated-normal linear weights, zero biases, unit LayerNorms (sys.py:709-716)."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        x = self.patch_embed.norm(self.patch_embed.proj(repeat_grey(x, self.in_channels)).flatten(2).transpose(1, 2))
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        x = self.layers_up[0](self.norm(x))
        for i in range(1, self.stages):
            x = self.layers_up[i](self.concat_back_dim[i](torch.cat([x, skips[self.stages - 1 - i]], dim=-1)))
        x = self.up(self.norm_up(x))
        side = self.grid * self.up.scale
        return self.output(x.view(b, side, side, -1).permute(0, 3, 1, 2))

    def load_official(self, path: str | Path) -> None:
        """Load Microsoft's Swin checkpoint (``{"model": state_dict}``, ``swin_tiny_patch4_window7_224.pth``
        layout): the encoder by name, and each encoder stage's blocks also into the decoder stage of the same
        scale (vision_transformer.py:72-78); the classifier ``head.*``, the derived buffers
        (``relative_position_index``, ``attn_mask``) and blocks beyond a stage's depth are not loaded."""
        weights = read_torch(path)
        own = self.state_dict()
        targets: dict[str, list] = {}
        for name in own:
            if name.startswith(("patch_embed.", "layers.", "norm.")):
                targets[name] = [(name, self._converter(own[name].shape, name))]
        for name in list(targets):
            parts = name.split(".")
            if parts[0] == "layers" and parts[2] == "blocks":
                up = ".".join(["layers_up", str(self.stages - 1 - int(parts[1]))] + parts[2:])
                if up in own:
                    targets[name].append((up, self._converter(own[up].shape, up)))
        assign(path, weights, targets, self._not_loaded, self)

    def _not_loaded(self, key: str) -> bool:
        """The checkpoint keys that are not this network's weights: the classifier, the derived buffers, and the
        blocks of a stage beyond its depth here (Swin-T's third stage has 6; the official loader's
        ``strict=False`` skips blocks 3-6 the same way)."""
        parts = key.split(".")
        deeper = (len(parts) > 3 and parts[0] == "layers" and parts[2] == "blocks" and parts[1].isdigit()
                  and int(parts[1]) < self.stages and parts[3].isdigit()
                  and int(parts[3]) >= len(self.layers[int(parts[1])].blocks))
        return deeper or key.startswith("head.") or key.endswith(("relative_position_index", "attn_mask"))

    @staticmethod
    def _converter(shape: torch.Size, name: str):
        if not name.endswith("relative_position_bias_table"):
            return lambda t: t
        return lambda t: resize_bias_table(t, shape[0])


def resize_bias_table(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``((2w-1)^2, heads)`` -> ``(rows, heads)``: the table as a (2w-1)^2 grid resized bicubically to
    sqrt(rows)^2 (as Microsoft's Swin fine-tunes to another window); unchanged when the sizes agree."""
    if table.shape[0] == rows or table.dim() != 2:
        return table
    old, new = math.isqrt(table.shape[0]), math.isqrt(rows)
    grid = table.t().reshape(1, -1, old, old)
    return F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False).reshape(-1, rows).t()


class SwinUnet(FixedSizeSegmenter):
    """Args (defaults: the official swin_tiny_patch4_window7_224_lite configuration at 256 px, window 8):
        in_channels, num_classes: C and K.
        img_size: the square input side (must equal ``data.size``).
        patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio: the Swin stages (official 4, 96,
            (2, 2, 2, 2), (3, 6, 12, 24), 7 at 224 px, 4.0); the decoder has the encoder's depths.
        drop_path_rate: stochastic depth at the last encoder block (official 0.2).
        pretrained: null (from scratch) or the path of Microsoft's swin_tiny_patch4_window7_224.pth.
        official_loss: train with the official loss, 0.4 CE + 0.6 batch-level Dice (trainer.py:66-69;
            :func:`~baselines.supervised.official_dice_ce`); false: the suite's Dice + CE, each weighted 1 (the
            CPU profiles' choice).
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: int = 256, patch_size: int = 4,
                 embed_dim: int = 96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size: int = 8,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.2, pretrained: str | None = None,
                 official_loss: bool = False):
        net = SwinUnetNet(in_channels, num_classes, img_size, patch_size, embed_dim, tuple(depths),
                          tuple(num_heads), window_size, mlp_ratio, drop_path_rate)
        if pretrained is not None:
            net.load_official(pretrained)
        super().__init__(net, "swin-unet", img_size, official_dice_ce(0.4, 0.6) if official_loss else None)

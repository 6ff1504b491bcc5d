"""``flowsdf``: FlowSDF (Bogensperger et al., IJCV 2025): image-guided flow matching on signed distance maps.

As the paper and its released code (github.com/leabogensperger/FlowSDF, commit ec3a53e) state it:
- the target is each foreground class's signed distance function, negative inside, truncated at
  +-``delta`` pixels and divided by ``delta`` (Eq. 5; the authors' preprocessing, generative-segmentation-sdf
  ``preprocess_data/precompute_sdf.ipynb`` cell 3: 15 px on 128 px images, range [-1, 1]); a mask is the SDF
  at or below ``threshold`` (Eq. 6: 0; the released sampler: 0.03), and with several classes each pixel takes
  the class of the most negative SDF among those at or below it;
- the optimal-transport path with ``sigma_min`` (``cfg/glas.yaml`` 1e-3, ``cfg/monuseg.yaml`` 1e-5) and the
  MSE loss (Algorithm 1; ``trainer.py`` 57-67);
- image features added to the velocity network's features after its first convolution (SegDiff-style;
  ``models/unet_segdiff.py`` 486-491) from the released RRDB encoder (``models/RRDB.py`` 52-71): a convolution
  to ``encoder_width`` channels, ``rrdb_blocks`` residual-in-residual dense blocks of growth ``rrdb_growth``,
  a trunk convolution added back to the first convolution's output, then two convolutions (LeakyReLU between)
  to the velocity network's first width;
- the velocity network's output convolution starts at zero (``unet_segdiff.py`` 438, ``zero_module``); time
  enters the sinusoid unscaled in [0, 1] (``unet_segdiff.py`` 481) where ``time_scale`` is 1;
- gradients clipped to infinity norm 1 (``trainer.py`` 72-73 with ``clip: 1.``): the method declares it as
  ``grad_clip`` (``benchmark.methods.interface.ClipsGradients``) for the trainer to apply;
- sampling by Algorithm 2: Euler steps of size 1 / ``steps`` from noise to t = 1, optionally restarted
  ``noise_injection_steps`` (T) times from t = k / T with fresh noise; T = 1 is plain ODE sampling. NFE is
  exact and stated: the paper's "NFE = 4" is 4 Euler steps here, where the released code's time grid
  (``torch.linspace(0, 1, ode_steps)``, ``sampler.py`` 112) gives 3;
- MMSE: ``mmse_samples`` (K) SDF samples averaged before thresholding form one returned sample.

Training and sampling are the suite's shared flow matching (``medflowseg.flow.matching``): the restarts
and the MMSE average are its ``restarts`` and ``draws``; the image encoder runs once per SDF draw.

Deviations:
- the velocity network is the suite's time-conditioned residual UNet (``medflowseg.unet``), not
  guided-diffusion's UNet: no attention (the released one attends at 1/8 and 1/16 resolution and in the
  middle), one skip connection per level rather than one per block, and residual blocks whose last
  convolutions are not zero-initialised. At the paper profile's widths it has 109.5 M parameters (118.8 M with
  the encoder) where the released network has 160.6 M (150.3 M without its attention; measured by building
  ``unet_segdiff.UNetModel`` as ``main.py`` does);
- the SDF is the distance to the other side's nearest pixel (inside edge -1 / delta, outside edge
  +1 / delta), where the authors' notebook measures to the object's inner boundary pixels (inside edge 0);
  so the paper profile thresholds at 0, the midpoint of the two edge values here, as 0.03 nearly is there;
- the released network recomputes the image encoder at every evaluation (``unet_segdiff.py`` 486); here it
  runs once per draw: the same velocities, fewer MACs (at the paper profile, 256 px: 575 GMACs for the
  encoder, 233 per velocity evaluation);
- the released sampler evaluates the network at (1 - (1 - sigma_min) t) x_0 + t x rather than at the ODE
  state x (``sampler.py`` 102-105); we follow Algorithm 2, the network at the state;
- widths, RRDB depth and ``delta`` are set per profile (the paper-scale configuration is ``method.flowsdf`` in
  ``profiles/paper.yaml``, with its per-dataset settings), the released ``in_nc = 3`` follows the dataset's
  channels, and the encoder's output width is the velocity network's first width, as released.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import nn

from medflowseg.blocks import TimeEmbedding, group_norm
from medflowseg.flow import FlowMatchingMethod, LinearPath, ODESolver, velocity_mse
from medflowseg.unet import UNet


def signed_distance(labels: torch.Tensor, num_classes: int, delta: float) -> torch.Tensor:
    """int labels ``(B, H, W)`` -> ``(B, K - 1, H, W)`` float: per foreground class, the distance (pixels)
    from a pixel outside the class to its nearest pixel inside (positive), minus the distance from a pixel
    inside to its nearest pixel outside (negative), clipped to [-delta, delta] and divided by delta.
    A class absent from an image is +1 everywhere; a class filling it, -1."""
    masks = labels.detach().cpu().numpy()[:, None] == np.arange(1, num_classes)[None, :, None, None]
    out = np.empty(masks.shape, dtype=np.float32)
    for idx in np.ndindex(masks.shape[:2]):
        m = masks[idx]
        if not m.any() or m.all():
            out[idx] = -1.0 if m.any() else 1.0
            continue
        out[idx] = np.clip(distance_transform_edt(~m) - distance_transform_edt(m), -delta, delta) / delta
    return torch.from_numpy(out).to(labels.device)


def sdf_to_labels(sdf: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``(B, K - 1, H, W)`` -> int64 ``(B, H, W)``: the class of the most negative SDF where it is at or below
    ``threshold``, else 0 (background)."""
    low, cls = sdf.min(dim=1)
    return torch.where(low <= threshold, cls + 1, torch.zeros_like(cls))


class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN; ``models/RRDB.py`` 14-50): three dense blocks of five
    convolutions, each block's output scaled by 0.2 and added to its input, and the whole scaled by 0.2 and
    added again. ``(B, C, H, W)`` -> ``(B, C, H, W)``."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5))
            for _ in range(3))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for convs in self.blocks:
            feats = [h]
            for i, conv in enumerate(convs):
                y = conv(torch.cat(feats, dim=1))
                feats.append(self.act(y) if i < 4 else y)
            h = h + 0.2 * feats[-1]
        return x + 0.2 * h


class RRDBEncoder(nn.Module):
    """The released image encoder (``RRDBNet``, ``models/RRDB.py`` 52-71). ``(B, C, H, W)`` -> ``(B, out, H, W)``:
    f = conv(x) to ``width``; f + conv(RRDB^blocks(f)); then conv, LeakyReLU(0.2), conv to ``out``."""

    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int, growth: int):
        super().__init__()
        self.first = nn.Conv2d(in_channels, width, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(width, growth) for _ in range(blocks)))
        self.trunk_conv = nn.Conv2d(width, width, 3, padding=1)
        self.hr_conv = nn.Conv2d(width, width, 3, padding=1)
        self.last = nn.Conv2d(width, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.first(x)
        f = f + self.trunk_conv(self.trunk(f))
        return self.last(self.act(self.hr_conv(f)))


class FlowSDF(FlowMatchingMethod):
    """Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        channels, num_res_blocks, time_embed_dim, norm_groups: the velocity UNet.
        time_scale: t in [0, 1] is multiplied by this before the sinusoid (released: 1; the suite's: 1000).
        encoder_width, rrdb_blocks, rrdb_growth: the image encoder (released: 64, 12, 32).
        delta: SDF truncation in pixels (released: 15 at 128 px).
        threshold: a pixel is foreground where its SDF is at or below this (Eq. 6: 0; released sampler: 0.03).
        sigma_min: the OT path's width at t = 1 (released: 1e-3 GlaS, 1e-5 MoNuSeg).
        steps: Euler steps from t = 0 to 1 (paper: 4); the ``default_sampler`` is Euler with these steps.
        noise_injection_steps: T of Algorithm 2 (1: plain ODE sampling; the paper's best rows: 100).
        mmse_samples: K SDF samples averaged into one returned sample (paper's table: 1 and 25).
        grad_clip: the largest infinity norm of the gradients (released: 1.0), or None: no clipping; exposed to
            the trainer as ``grad_clip`` = (norm type, max norm) (``ClipsGradients``).
    """
    condition_each_draw = True   # the encoder runs once per SDF draw, as the complexity records count it

    def __init__(self, in_channels: int, num_classes: int, channels=(32, 64, 128), num_res_blocks: int = 2,
                 time_embed_dim: int = 128, norm_groups: int = 8, time_scale: float = 1000.0,
                 encoder_width: int = 16, rrdb_blocks: int = 1, rrdb_growth: int = 16, delta: float = 15.0,
                 threshold: float = 0.0, sigma_min: float = 1e-3, steps: int = 4, noise_injection_steps: int = 1,
                 mmse_samples: int = 1, grad_clip: float | None = None):
        if noise_injection_steps < 1 or mmse_samples < 1:
            raise ValueError("noise_injection_steps and mmse_samples must be >= 1")
        if min(encoder_width, rrdb_blocks, rrdb_growth) < 1:
            raise ValueError(f"encoder_width, rrdb_blocks and rrdb_growth must be >= 1, got "
                             f"{encoder_width}, {rrdb_blocks}, {rrdb_growth}")
        if not delta > 0 or not time_scale > 0:
            raise ValueError(f"delta and time_scale must be > 0, got {delta}, {time_scale}")
        if not -1 < threshold < 1:
            raise ValueError(f"threshold is in units of delta, inside (-1, 1); got {threshold}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null (no clipping), got {grad_clip}")
        super().__init__(num_classes - 1, ODESolver("euler", steps), LinearPath(sigma_min))
        self.num_classes, self.delta, self.threshold = num_classes, delta, threshold
        self.restarts, self.draws = noise_injection_steps, mmse_samples
        self.grad_clip = None if grad_clip is None else (math.inf, float(grad_clip))
        self.time_embed = TimeEmbedding(time_embed_dim, time_scale)
        self.unet = UNet(num_classes - 1, tuple(channels), num_res_blocks, time_embed_dim, norm_groups)
        self.encoder = RRDBEncoder(in_channels, channels[0], encoder_width, rrdb_blocks, rrdb_growth)
        self.out = nn.Sequential(group_norm(channels[0], norm_groups), nn.SiLU(),
                                 nn.Conv2d(channels[0], num_classes - 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def condition(self, images: torch.Tensor, in_loss: bool) -> torch.Tensor:
        """images ``(B, C, H, W)`` -> the encoder's features ``(B, C_0, H, W)``."""
        return self.encoder(images)

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        return signed_distance(labels, self.num_classes, self.delta)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """x_t ``(B, K-1, H, W)``, t ``(B,)``, image features ``(B, C_0, H, W)`` -> ``(B, K-1, H, W)``."""
        h = self.unet(x_t, self.time_embed(t), stem=lambda f: f + features).decoder
        return self.out(h)

    def read_out(self, x1: torch.Tensor) -> torch.Tensor:
        return sdf_to_labels(x1, self.threshold)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        step = self.flow_step(images, labels, generator)
        return velocity_mse(step.velocity, step.u)

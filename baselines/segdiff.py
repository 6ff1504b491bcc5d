"""``segdiff``: SegDiff (Amit et al. 2021, arXiv 2112.00390), a DDPM on the mask whose denoiser adds the image's
RRDB features (G) to its own first convolution of the noisy mask (F) and runs the sum through a UNet.

Labelled "SegDiff (suite reimplementation)" in tables. Sources, file:line of the official code
(github.com/tomeramit/SegDiff at e6592c9, an improved-diffusion fork; its medical configuration, MoNuSeg):
``README.md``, ``image_train_diff_medical.py`` (train.py), ``image_sample_diff_medical.py`` (sample.py),
``improved_diffusion/`` files (su = ``script_util.py``, su.util = ``sampling_util.py``). What follows them:

- diffusion: T = 100 steps (README.md:110 ``--diffusion_steps 100``; the code's default too, su:30), the linear
  beta schedule scaled by 1000 / T (train.py:37; ``medsegdiff.beta_schedule``: beta from 1e-3 to 0.2), noise
  prediction with the MSE loss (``predict_xstart`` False, su:34; ``use_kl`` False and ``rescale_learned_sigmas``
  False, train.py:38, su:276-281), the step t itself the time input (train.py:39), t uniform (train.py:122);
- the variance is not learned (train.py:33): one output channel (su:137), the fixed-large ancestral variance
  (``sigma_small`` False, train.py:34; su:290-298);
- the mask diffused in {-1, 1} (``datasets/monu.py:140``; ``label_scale='pm1'``), read back as (x + 1) / 2
  clamped to [0, 1] (sampling_util.py:155, 160);
- the network (``SegDiffStem`` + ``maskddpm.guided_unet``): F, the UNet's first convolution of the noisy mask
  (unet.py:351), plus G, an RRDB network on the image: a convolution to 64 features, ``rrdb_blocks`` RRDBs of
  growth 32 (12 for MoNuSeg, README.md:110), a convolution added back to the first one, then a convolution, a
  LeakyReLU(0.2) and a convolution to the UNet's base width (RRDB.py:52-71; unet.py:347); their sum replaces the
  first convolution's output, as the first skip too (unet.py:485-491), and G runs at every network evaluation as
  there. The UNet: 256 px, 128 base channels, ``channel_mult`` (1, 1, 1, 2, 2, 4, 4) (``deeper_net``, train.py:41,
  su:116-118), three residual blocks per level (train.py:36), attention with 4 heads at the 16 and 8 px levels
  (su:19, 21, 130-132) and in the middle (unet.py:396), no scale-shift norm (train.py:40), dropout 0 (su:22);
- sampling: ancestral over all T steps (``p_sample_loop``, sampling_util.py:146-153; improved-diffusion's
  ``gaussian_diffusion.py``:356-386, 457), x0 not clipped (the training script's ``clip_denoised=False``,
  train.py:32, which the sampling script loads from the run's args.json, sample.py:33): ``clip_x0=False``;
- the multiple-generation averaging: 9 trajectories per image (``major_vote_number``, sampling_util.py:54) on the
  [0, 1] scale, clamped, averaged and rounded (sampling_util.py:155-163): ``mmse_samples=9``, one returned sample
  of 9 x 100 = 900 network evaluations. The FlowSDF paper's rows "SegDiff (K=1)" and "SegDiff - MMSE (K=25)" are
  ``mmse_samples`` 1 and 25.

Deviations, each a named field or stated here:

- training, not model fields (profiles/paper.yaml): AdamW (improved-diffusion ``train_util.py``:96), lr 1e-4 and
  batch 2 on each of 4 GPUs (README.md:110; the script's own default lr is 2e-5, train.py:123), EMA 0.9999
  (train.py:129), 300,000 steps (train.py:116), float16 (train.py:31) as Accelerate's fp16 mixed precision, not
  improved-diffusion's float16 weights with float32 master copies;
- the official MoNuSeg protocol samples 256 px patches of the 1000 px test images and averages the overlaps
  (sampling_util.py:89-138); the suite's images are ``data.size`` squares, sampled whole;
- several classes (K > 2, not in the official code): the one-hot map over K channels, read back by argmax;
- MONAI's UNet against improved-diffusion's: as ``baselines/ensemdiff.py`` states (attention projections, the
  sinusoid's order);
- the default profile (CPU): 64 px, widths and RRDBs cut, DDIM with 10 steps, 3 averaged trajectories
  (profiles/default.yaml).
"""
from __future__ import annotations

import torch
from torch import nn

from .flowsdf import RRDBEncoder
from .maskddpm import guided_unet
from .medsegdiff.base import MaskDDPM


class SegDiffStem(nn.Module):
    """F(x_t) + G(I), in place of the UNet's first convolution. Its input is ``cat(x_t, images)``
    ``(B, M + C, H, W)``; F is a 3x3 convolution of the M mask channels, G the released ``RRDBNet`` (FlowSDF's encoder, the same code) of the C image channels;
    output ``(B, width, H, W)``."""

    def __init__(self, mask_channels: int, in_channels: int, width: int, rrdb_blocks: int, rrdb_features: int,
                 rrdb_growth: int):
        super().__init__()
        self.mask_channels = mask_channels
        self.f = nn.Conv2d(mask_channels, width, 3, padding=1)
        self.g = RRDBEncoder(in_channels, out_channels=width, width=rrdb_features, blocks=rrdb_blocks,
                             growth=rrdb_growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x[:, :self.mask_channels]) + self.g(x[:, self.mask_channels:])


class SegDiff(MaskDDPM):
    """SegDiff (suite reimplementation). The defaults are the paper-scale values (above).

    Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        channels, num_res_blocks, attention_levels, attention_heads, norm_groups: the UNet after the stem
            (``guided_unet``; official: 128 x (1, 1, 1, 2, 2, 4, 4), 3 blocks, attention at the 16 and 8 px levels
            (indices 4 and 5 at 256 px), 4 heads, GroupNorm 32).
        rrdb_blocks, rrdb_features, rrdb_growth: G (official: 12 for MoNuSeg, 64 features, growth 32).
        num_timesteps, noise_schedule, label_scale, clip_x0, sampler, steps, eta: ``MaskDDPM``'s (official: 100,
            'linear', 'pm1', False, 'ddpm', 100, 0). The variance is fixed-large, as in the official code.
        mmse_samples: trajectories averaged into one returned sample (official: 9).
    """

    def __init__(self, in_channels: int, num_classes: int,
                 channels=(128, 128, 128, 256, 256, 512, 512), num_res_blocks: int = 3,
                 attention_levels=(False, False, False, False, True, True, False), attention_heads: int = 4,
                 norm_groups: int = 32, rrdb_blocks: int = 12, rrdb_features: int = 64, rrdb_growth: int = 32,
                 num_timesteps: int = 100, noise_schedule: str = "linear", label_scale: str = "pm1",
                 clip_x0: bool = False, sampler: str = "ddpm", steps: int = 100, eta: float = 0.0,
                 mmse_samples: int = 9):
        super().__init__(num_classes, num_timesteps, noise_schedule, label_scale, clip_x0, False, sampler, steps,
                         eta, mmse_samples)
        if rrdb_blocks < 1:
            raise ValueError(f"rrdb_blocks must be >= 1, got {rrdb_blocks}")
        m = self.mask_channels
        self.unet = guided_unet(m + in_channels, m, channels, num_res_blocks, attention_levels, attention_heads,
                                norm_groups)
        self.unet.conv_in = SegDiffStem(m, in_channels, tuple(channels)[0], rrdb_blocks, rrdb_features, rrdb_growth)

    def denoise(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet on ``cat(x_t, images)``, which its stem splits into F's and G's inputs."""
        return self.unet(torch.cat([x_t, images], dim=1), t)

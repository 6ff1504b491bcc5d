"""``medsegdiff-v2``: MedSegDiff-V2 (Wu et al., "MedSegDiff-V2: Diffusion-based medical image segmentation with
transformer", AAAI 2024, arXiv 2301.11798), a conditional DDPM on masks whose condition model steers the diffusion
model twice: an anchor (U-SA) on its first-level feature and a semantic condition (the SS-Former) at its bottleneck.

Labelled "MedSegDiff-V2 (suite reimplementation)" in tables: our code, built on V1's pieces (``base.MaskDDPM``:
the diffusion, the samplers, the training draw; ``medflowseg.unet.UNet`` for both networks).

Sources: the paper (section "Method"; "paper" below) and the official code, github.com/KidsWithTokens/MedSegDiff
at 60850bf (file:line; V2 is its default ``--version new``, script_util.py:65, the network
``UNetModel_newpreview``, unet.py:785-1094; gd = guided_diffusion/gaussian_diffusion.py).

What the official V2 code runs, and what it does not (read at 60850bf; ``git log -G`` finds no commit that ever
held an SS-Former, a Gaussian U-SA or an NBP-Filter): a guided-diffusion UNet on cat(image, x_t) (README's
MedSegDiff-B: 128 x (1, 1, 2, 2, 4, 4), 2 residual blocks, attention at 16 px and in the middle, learned sigma,
README.md:65, 105) plus a "highway" nnU-Net on the image (base 32, 5 poolings, no FF-Parser or dynamic
conditional encoding: V1's ``highway`` flag is off, unet.py:1017-1018) of which two decoder features (at 1/2 and
1/4 resolution, upsampled to full) are concatenated (32 + 32 + 64 channels) and ADDED, detached, to the diffusion
UNet's first feature (unet.py:1078-1084); its sigmoid output "cal" is trained by MSE x 10 at every step (gd:1039,
train_util.py:251). No cross-attention, no Fourier attention, no band-pass filter, no Gaussian: the official code
holds the anchor condition's location only, as a plain detached sum. Its V2 output is the final sample itself
(segmentation_sample.py:127-128: ``sample[:, -1]``, not V1's blend with "cal"), 5 samples (sample.py:177),
sampled ancestrally over all 1000 steps (sample.py:111-113; README.md:113 offers DPM-Solver at 50 steps "to
speed up"). Official parameter count of MedSegDiff-B V2 on a 3-channel image: 129,400,450
(113,673,218 diffusion UNet + 15,727,232 highway), counted by instantiating ``UNetModel_newpreview`` at 60850bf.

What follows the paper here. The paper's text was available to us only as its abstract (arXiv 2301.11798v2)
and summaries (emergentmind.com/topics/medsegdiff-v2, quoted below as "summary"); the equations below are our
reading of the paper's Method section, and every form the summaries do not fix is listed under the choices:

- anchor condition (``ssformer.UncertainSpatialAttention``): the condition model's last decoded feature f_anc
  (full resolution; summary: U-SA "fuses the last decoded feature" into the diffusion encoder) relaxed by a
  Gaussian kernel of learnable mean and variance, max(k_Gauss * f_anc, f_anc), then sigmoid(conv1x1(.)) . f_d +
  f_d on the diffusion model's first feature, where the official code adds its anchors (after the first
  convolution, unet.py:1084). The other reading, U-SA on the condition model's segmentation map rather than its
  feature, is not offered;
- anchor loss: Dice + cross-entropy on the condition model's segmentation (a sigmoid channel for K = 2, softmax
  over K channels otherwise), added unweighted to the noise loss on the draws whose diffusion step t is a
  multiple of alpha (``anchor_every``; summary: "anchor-loss (sum of Dice and Cross Entropy, CE) at intervals of
  alpha diffusion steps");
- semantic condition (``ssformer.SSFormer``): the condition model's deepest embedding (projected by a 1x1
  convolution to the diffusion width, as V1's merge) and the diffusion model's deepest one, after its middle
  blocks, through ``ssformer_depth`` SS-Former blocks (semantic <- noise, then noise <- semantic), attention in
  spectrum space with the NBP-Filter conditioned on the diffusion step; the result replaces the deepest feature;
- the diffusion as V1's and the official code's: T = 1000, linear betas, noise prediction, learned-range
  variance by the variational bound (gd:1005-1026), {0, 1} mask (gd:993-996), clipped x0 while sampling.

Deviations and choices, each a named field or stated here:

- the official code's anchor (detached sum) and its MSE x 10 "cal" loss are not offered: this is the paper's
  architecture. Gradients of the noise loss reach the condition model through both conditions (the official
  anchor is detached); the paper says neither;
- the paper's SS-Former equations leave open the projections, the head count, the normalisation and how the
  filter enters; ours: 1x1 projections of GroupNorm-ed maps, ``ssformer_heads`` heads, the attention over the
  rfft2 frequency tokens softmax(Re(q^ k^*) / sqrt(d)) multiplied (after the softmax, not renormalised) by the
  NBP-Filter, applied to v's spectrum, inverse FFT, residual, then a residual feed-forward of
  ``ssformer_mlp_ratio`` x width (ViT's 4);
- the NBP-Filter: an MLP of the query's and key's frequencies, ``nbp_blocks`` hidden layers of width
  ``nbp_hidden`` with the step embedding added, sigmoid output; sizes ours;
- U-SA's kernel size ``usa_kernel_size`` and initial sigma ``usa_sigma`` (1 px) are ours, one kernel for all
  channels, its mean initially centred;
- alpha: the paper's interval of the anchor loss; its value is not in the sources read here (the paper was
  available only in summaries), so ``anchor_every`` defaults to 1, the official cadence of its condition loss;
- networks: the suite's residual UNet (GroupNorm, SiLU, no self-attention) for both, where the official diffusion
  UNet has attention at 16 px and in the middle and a zero-initialised output (unet.py:1011-1013), and the
  condition model nnU-Net's (BatchNorm, LeakyReLU, max-pooling). At the official widths (3-channel image, K = 2)
  our diffusion UNet has 77.9 M parameters (official 113.7 M: its attention), our condition UNet 35.2 M (official
  15.7 M: residual blocks, a decoder as wide as the encoder), and the SS-Former adds 25.8 M the official code
  lacks: 139.7 M against the official 129.4 M (both pinned in ``tests/baselines/test_medsegdiff_v2.py``); that
  the MedFlowSeg paper's Table 4 gives 137 M is not evidence of fidelity;
- sampling: the MedFlowSeg paper (section 4.2) ran MedSegDiff-V2 with "100 sampling steps"; the paper profile
  takes them as guided-diffusion's respaced ancestral chain (``sampler='ddpm'``, ``steps=100``) since the
  official sampler is ancestral; the official run is 1000 steps. The CPU profile samples by DDIM (a deviation);
- several classes (K > 2, not in the official code), the label threshold, sample fusion: as V1 (``v1.py``);
- the condition model runs at every network evaluation although it sees only the image (as the official code
  reruns its highway network, unet.py:1078), so MACs per evaluation include it. The MAC counter counts one MAC
  per complex multiply-add of the SS-Former's two einsums (a real count is four), a small share of the total.

The defaults are the paper profile's values. Training (profiles/paper.yaml): as V1's, from the same repository
(AdamW 1e-4, batch 8, EMA 0.9999, about 100,000 steps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medflowseg.blocks import group_norm

from .base import MaskDDPM
from .v1 import two_unets
from .ssformer import SSFormer, UncertainSpatialAttention


class MedSegDiffV2(MaskDDPM):
    """MedSegDiff-V2 (suite reimplementation).

    Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        channels, num_res_blocks, time_embed_dim, norm_groups: the diffusion UNet (official MedSegDiff-B:
            128 x (1, 1, 2, 2, 4, 4), script_util.py:159-163; 2 residual blocks, README.md:105; embedding 4 x 128,
            unet.py:859).
        cond_channels, cond_res_blocks: the condition UNet (official highway nnU-Net: 32 doubling to at most 480
            over 6 levels, unet.py:1017-1018, 2233; two convolutions per stage = one residual block here).
        usa_kernel_size, usa_sigma: the U-SA Gaussian's side (odd) and initial sigma in pixels (ours).
        ssformer_depth, ssformer_heads, ssformer_mlp_ratio, nbp_hidden, nbp_blocks: the SS-Former (ours: the
            paper's N, the heads, the feed-forward width over the embedding's (ViT's 4), the NBP-Filter's sizes).
        anchor_every: alpha, the anchor loss on draws whose step t is a multiple of it (1: every draw).
        num_timesteps, noise_schedule, label_scale, clip_x0, learn_sigma, sampler, steps, eta: as V1's
            (``MaskDDPM``); defaults: 1000 linear steps, {0, 1} masks, clipping, the learned variance,
            ancestral sampling over 100 respaced steps (MedFlowSeg section 4.2).
    """

    def __init__(self, in_channels: int, num_classes: int, channels=(128, 128, 256, 256, 512, 512),
                 num_res_blocks: int = 2, time_embed_dim: int = 512, norm_groups: int = 32,
                 cond_channels=(32, 64, 128, 256, 480, 480), cond_res_blocks: int = 1, usa_kernel_size: int = 5,
                 usa_sigma: float = 1.0, ssformer_depth: int = 4, ssformer_heads: int = 8, ssformer_mlp_ratio: int = 4,
                 nbp_hidden: int = 64, nbp_blocks: int = 2,
                 anchor_every: int = 1, num_timesteps: int = 1000, noise_schedule: str = "linear",
                 label_scale: str = "01", clip_x0: bool = True, learn_sigma: bool = True, sampler: str = "ddpm",
                 steps: int = 100, eta: float = 0.0):
        super().__init__(num_classes, num_timesteps, noise_schedule, label_scale, clip_x0, learn_sigma, sampler,
                         steps, eta, mmse_samples=1)
        channels, cond_channels = tuple(channels), tuple(cond_channels)
        if len(channels) < 2 or len(cond_channels) != len(channels):
            raise ValueError(f"channels needs >= 2 levels and cond_channels as many: got {channels} and "
                             f"{cond_channels}")
        if anchor_every < 1:
            raise ValueError(f"anchor_every must be >= 1, got {anchor_every}")
        self.anchor_every = anchor_every
        self.downsampling = 2 ** (len(channels) - 1)
        m = self.mask_channels
        self.time_embed, self.unet, self.out, self.cond = two_unets(
            in_channels + m, self.output_channels, in_channels, channels, num_res_blocks, time_embed_dim, norm_groups,
            cond_channels, cond_res_blocks, num_timesteps)
        self.anchor_head = nn.Sequential(group_norm(cond_channels[0], norm_groups), nn.SiLU(),
                                         nn.Conv2d(cond_channels[0], m, 1))
        self.usa = UncertainSpatialAttention(cond_channels[0], channels[0], usa_kernel_size, usa_sigma)
        self.merge = nn.Conv2d(cond_channels[-1], channels[-1], 1)
        self.ssformer = SSFormer(channels[-1], ssformer_depth, ssformer_heads, ssformer_mlp_ratio, nbp_hidden,
                                 nbp_blocks, time_embed_dim, norm_groups)

    def evaluate(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor,
                 with_cal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One network evaluation. x_t ``(B, M, H, W)``, images ``(B, C, H, W)``, t int64 ``(B,)`` -> (the output:
        eps ``(B, M, H, W)``, with ``learn_sigma`` followed by the variance values ``(B, 2M, H, W)``; the condition
        model's segmentation logits ``(B, M, H, W)`` or None without ``with_cal``)."""
        if images.shape[-1] % self.downsampling or images.shape[-2] % self.downsampling:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not divisible by {self.downsampling}")
        temb = self.time_embed(t.to(x_t.dtype) / self.schedule.num_timesteps)
        cond = self.cond(images)                                   # anchor: (B, C_c0, H, W); c0 at the bottleneck
        anchor, semantic = cond.decoder, self.merge(cond.bottleneck)
        net = self.unet(torch.cat([images, x_t], dim=1), temb,
                        stem=lambda f: self.usa(f, anchor),
                        bottleneck=lambda e: self.ssformer(e, semantic, temb))
        return self.out(net.decoder), (self.anchor_head(anchor) if with_cal else None)

    @property
    def trains_condition(self) -> bool:
        return True

    def condition_loss(self, cal: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The anchor loss, Dice + cross-entropy of the condition model's logits ``cal`` ``(B, M, H, W)`` against
        the labels, on the draws whose t is a multiple of ``anchor_every`` (the others count 0), batch mean."""
        target = self.mask01(labels).to(cal)
        if self.num_classes == 2:
            prob = torch.sigmoid(cal)
            ce = F.binary_cross_entropy_with_logits(cal, target, reduction="none").flatten(1).mean(dim=1)
        else:
            prob = cal.softmax(dim=1)
            ce = F.cross_entropy(cal, labels, reduction="none").flatten(1).mean(dim=1)
        overlap, total = (prob * target).flatten(2).sum(-1), (prob + target).flatten(2).sum(-1)
        dice = 1 - ((2 * overlap + 1e-6) / (total + 1e-6)).mean(dim=1)   # 1e-6: an empty class both miss scores 1
        on = (t % self.anchor_every == 0).to(cal)
        return (on * (ce + dice)).mean()

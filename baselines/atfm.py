"""``atfm``: ATFM (Ambiguity-aware Truncated Flow Matching, AAAI 2026, arXiv 2511.06857; seed 002, SPEC 2.3).

Two networks trained one after the other, both inside this module:

- GTR, the "Gaussian truncation representation": a UNet whose last features feed three 1x1 heads (mean,
  log of the diagonal variance, and a rank-``rank`` covariance factor) that define a low-rank multivariate
  normal over the flattened logits of one image (``Kc * H * W`` dimensions), as in Stochastic Segmentation
  Networks (SSN). Its loss is the negative Monte-Carlo log-likelihood of the label with ``mc_samples``
  reparameterised logit draws: -(logsumexp_m log p(y | logits_m) - log M), log p summed over pixels;
  the SSN / public-code form, with antithetic pairs (mu + d, mu - d) as the public code draws them;
- SFM, "segmentation flow matching": a time-conditioned UNet that sees x_t beside the image and learns the
  straight path from x0 = sigmoid(one GTR logit draw) to the rater's mask x1: x_t = (1 - t) x0 + t x1,
  target x1 - x0, loss MSE + ``dice_weight`` * (1 - soft Dice) of the one-step prediction
  x_t + v (1 - t) (paper: alpha = 1e-3 LIDC, 1e-4 ISIC);
- sampling: the GTR once per image, then per returned sample one logit draw, x0 = sigmoid of it, ``steps``
  Euler steps (paper 25 LIDC / 50 ISIC) and a 0.5 threshold.

The two stages. The suite's trainer only calls ``loss`` (``train.steps`` times, one optimizer for every
parameter), so the schedule lives here: the first ``gtr_steps`` calls of ``loss`` in train mode train the
GTR alone; every later call trains the SFM alone on top of the frozen GTR. The count of calls is the
buffer ``trained_steps``, saved with the training checkpoint, so a resumed run carries on in its stage.
"Frozen" is made exact by a copy: ``gtr_frozen`` is a second GTR whose parameters do not require
gradients (so no optimizer step touches them, DDP does not track them and the complexity count skips
them). It is refreshed from the GTR at every stage-1 call and once more at the first stage-2 call, then
never again; stage 2 and ``sample`` read the GTR only through it, without gradient, so nothing an
optimizer does to the trained GTR's parameters after the switch can reach the model. The copy also stays in
eval mode whatever ``train()`` says (the public code's ``prior_model.eval()``), and since its parameters are the
model's only ones without ``requires_grad`` a trainer that copies such parameters into its EMA rather than
averaging them saves exactly the prior the SFM trained against.

Two batch sizes. The public code trains the GTR with a larger batch than the SFM (LIDC 256 vs 6, ISIC 8 vs 1).
The trainer hands every call of ``loss`` one batch of ``train.batch_size`` slices, so ``train.batch_size`` is
the GTR's batch and stage 2 trains on the first ``sfm_batch_size`` images of each batch it is handed (None:
all of them); the batch is a uniform draw with replacement, so its first n images are one too. Per call:
under gradient accumulation or several processes the SFM's batch per optimizer step is that many times
``sfm_batch_size``. The rest of a stage-2 batch is drawn and moved to the device unused (a copy, no compute).
The run's length in epochs is then counted at the GTR's batch: ``train.epochs`` = ``gtr_epochs`` + SFM
epochs x ``train.batch_size`` / ``sfm_batch_size`` (profiles/paper.yaml gives the figures).

Gradients and DDP. The trainer (``benchmark/training/trainer.py``) prepares the model with Accelerate's
default DDP settings, i.e. without ``find_unused_parameters``, and DDP then needs a gradient for every
trainable parameter at every step. When ``torch.distributed`` runs with more than one process, the idle
network's parameters are therefore added to the loss times zero, so they get zero gradients. On one
process (the CPU profile) they get none, and AdamW skips them entirely. On several processes zero
gradients are not quite "no gradient" for AdamW: it applies weight decay and advances its step count, so
(a) the trained GTR's parameters drift in stage 2 (harmless: stage 2 and sampling read the frozen copy) and
(b) the SFM's Adam moments start at the switch with a bias correction that believes ``gtr_steps`` steps
have passed, making its first few hundred updates up to a few times larger than the learning rate says.
Avoiding (b) would take ``find_unused_parameters=True`` in the trainer and no zero terms here.

What follows the paper (and the public code where the paper is silent): the GTR filters (32, 64, 128,
192) over 4 levels, rank 10, 20 MC samples, epsilon 1e-5 added to the diagonal; the SFM's straight path,
MSE + alpha Dice on the one-step prediction, the image concatenated to x_t at the input (public code), full
self-attention at the bottleneck (heads 4 x 32, public code), widths d x (1, 2, 4) with two residual
blocks per level and a time embedding of 4 d, where the public code sets d to its image size: 128 on LIDC,
256 on ISIC (public code: 15 residual blocks in all, the paper's count; ours has 14, no extra final
block; the paper's "4 levels" are the public code's 3 widths); on ISIC the SFM sees the image's luminance
(``sfm_luminance``), the GTR the RGB image; Euler sampling, threshold 0.5; one GTR draw per image and per
step in stage 2 (public code).

Deviations, all ours:
- the soft Dice is differentiable (the prediction clipped to [0, 1], no threshold). The public code
  thresholds the one-step prediction at 0.5 and detaches both tensors before its Dice, so its alpha term
  is a constant that gives no gradient; here it does reach the SFM. As in the public code it is one
  Dice over the whole batch (per class, then averaged over the foreground classes), not per image;
- raters: the paper averages the SFM loss over all raters of an image (4 for LIDC) with one shared x0 and t;
  the suite's trainer draws ONE random rater per image per step (``benchmark/training/data.py``), so the
  GTR likelihood and the SFM loss cover all raters in expectation only;
- more than two classes (ours; the paper is binary): for K > 2 the GTR models K logit channels with a
  categorical likelihood, x0 = softmax over the K channels of a draw, x1 = the one-hot label, the Dice
  is averaged over the K - 1 foreground channels and a sample is the argmax. For K = 2 it is the paper's
  single sigmoid channel with a Bernoulli likelihood;
- networks: both UNets are the suite's residual GroupNorm UNet (``medflowseg.unet``: nearest-neighbour
  upsampling + conv, strided-conv downsampling). The paper's GTR backbone is a plain conv UNet with
  transposed-conv upsampling (public: the Probabilistic U-Net's UNet); the paper's SFM has linear
  attention at every level (omitted here; full attention stays at the bottleneck), weight-standardised
  convs and scale-shift time conditioning; our time embedding is the suite's sinusoid of 1000 t + MLP.
  At the public widths our SFM has 42,082,433 parameters on LIDC (public: 38,547,585, +9.2%) and
  167,723,265 on ISIC (public: 152,133,889, +10.2%): our encoder runs at the level's full width where the
  public one widens only when it downsamples (tests/baselines/test_atfm_paper.py counts both);
- the SFM's output convolution starts at zero (not stated; guided-diffusion practice), so the untrained flow
  leaves x0 unchanged and stage 2 starts from the GTR's own samples rather than from noise on top of them;
- t ~ U[0, 1) continuous (public code: t in {0, 0.001, ..., 0.999});
- the GTR loss is divided by H * W (a per-pixel value for the loss log; Adam does not see the scale);
- one optimizer, learning-rate schedule and EMA for both stages (the trainer's). The paper trains the GTR
  with AdamW (lr 1e-4, weight decay 1e-4) and then the SFM with Adam (lr 1e-4). The EMA of the SFM starts
  from its initial weights at the switch, so stage 2 must be long against 1 / (1 - ema_decay) (the public
  code keeps no EMA). The EMA copy also averages the integer ``trained_steps`` buffer, which makes it
  meaningless in the EMA weights (``model.pt``): nothing at inference reads it; resuming reads the raw
  model's buffer;
- batches are uniform draws with replacement (the suite's trainer) where the public code passes over a
  shuffled loader: an epoch here is a count of slices drawn, not a pass that sees each slice once;
- NFE: ``Samples.nfe`` counts SFM evaluations per returned sample; the GTR forward (once per image per
  ``sample`` call) and the logit draw (once per sample) are not network evaluations of the flow and are not
  counted.

Paper-scale values, per dataset in profiles/paper.yaml (``method.atfm.datasets.isic``), each with its source
there: GTR 1000 epochs at batch 256 (LIDC) / 400 at batch 8 (ISIC), SFM 200 epochs at batch 6 / 120 at
batch 1, lr 1e-4, alpha 1e-3 / 1e-4, Euler 25 / 50 steps, SFM widths 128 / 256 x (1, 2, 4). Both lengths
can be given in epochs: ``gtr_epochs`` here and ``train.epochs`` for the whole run; the trainer converts both
with the training split's size, ceil(epochs x slices / global batch), and tells this module the epoch length
through :meth:`ATFM.set_epoch_length` before the first step.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medflowseg.blocks import TimeEmbedding, group_norm
from medflowseg.flow import FlowMatchingMethod, ODESolver, velocity_mse
from medflowseg.unet import UNet


LUMA = (0.299, 0.587, 0.114)   # RGB -> luminance weights (public code, train_prior_ISIC.py:143)


@dataclass
class LogitGaussian:
    """A low-rank multivariate normal over each image's flattened logits, D = Kc * H * W dimensions,
    flattened channel-major (index ``k * H * W + y * W + x``).

    Attributes:
        mean: ``(B, D)``.
        cov_factor: ``(B, D, R)``: covariance = cov_factor cov_factor^T + diag(cov_diag).
        cov_diag: ``(B, D)``, positive.
        shape: ``(Kc, H, W)``, the logits' shape per image.
    """
    mean: torch.Tensor
    cov_factor: torch.Tensor
    cov_diag: torch.Tensor
    shape: tuple[int, int, int]

    @classmethod
    def from_heads(cls, mean: torch.Tensor, log_diag: torch.Tensor, factor: torch.Tensor,
                   epsilon: float) -> "LogitGaussian":
        """Head maps -> distribution. mean, log_diag ``(B, Kc, H, W)``; factor ``(B, R * Kc, H, W)`` whose
        channel ``r * Kc + k`` is column r of the factor at class k (the public code's layout)."""
        b, kc, h, w = mean.shape
        rank = factor.shape[1] // kc
        cov_factor = factor.reshape(b, rank, kc * h * w).transpose(1, 2)
        return cls(mean.reshape(b, -1), cov_factor, log_diag.exp().reshape(b, -1) + epsilon, (kc, h, w))

    def distribution(self) -> torch.distributions.LowRankMultivariateNormal:
        """The same normal as a ``torch.distributions`` object (log-densities, covariance; it samples from
        the global RNG, so ``rsample`` below is what the method uses)."""
        return torch.distributions.LowRankMultivariateNormal(self.mean, self.cov_factor, self.cov_diag)

    def reparameterise(self, eps_factor: torch.Tensor, eps_diag: torch.Tensor) -> torch.Tensor:
        """mean + cov_factor eps_factor + sqrt(cov_diag) eps_diag, the standard normals ``(M, B, R)`` and
        ``(M, B, D)`` -> ``(M, B, D)`` (the formula of ``LowRankMultivariateNormal.rsample``)."""
        return (self.mean + torch.einsum("bdr,mbr->mbd", self.cov_factor, eps_factor)
                + self.cov_diag.sqrt() * eps_diag)

    def rsample(self, m: int, generator: torch.Generator, antithetic: bool = False) -> torch.Tensor:
        """``m`` reparameterised logit draws ``(m, B, Kc, H, W)`` with noise from ``generator``.
        ``antithetic``: m / 2 draws and their mirror images about the mean (m must be even)."""
        if antithetic and m % 2:
            raise ValueError(f"antithetic sampling needs an even number of samples, got {m}")
        half = m // 2 if antithetic else m
        b, d = self.mean.shape
        randn = lambda *s: torch.randn(s, generator=generator, device=generator.device).to(self.mean)  # noqa: E731
        x = self.reparameterise(randn(half, b, self.cov_factor.shape[-1]), randn(half, b, d))
        if antithetic:
            x = torch.cat([x, 2 * self.mean - x])
        return x.reshape(m, b, *self.shape)


def label_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels | logits) summed over pixels: logits ``(M, B, Kc, H, W)``, labels int64 ``(B, H, W)``
    -> ``(M, B)``. Kc = 1: Bernoulli on the foreground (label 1); Kc > 1: categorical over Kc classes."""
    m, b, kc, h, w = logits.shape
    y = labels.expand(m, b, h, w)
    if kc == 1:
        ll = -F.binary_cross_entropy_with_logits(logits[:, :, 0], (y == 1).to(logits), reduction="none")
    else:
        ll = -F.cross_entropy(logits.reshape(m * b, kc, h, w), y.reshape(m * b, h, w), reduction="none")
    return ll.reshape(m, b, -1).sum(-1)


def mc_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The Monte-Carlo estimate of log of the integral of p(y | l) N(l) dl from M draws ``(M, B, Kc, H, W)``:
    logsumexp_m log p(y | l_m) - log M, per image ``(B,)``."""
    return torch.logsumexp(label_log_likelihood(logits, labels), dim=0) - math.log(logits.shape[0])


def soft_dice(pred: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """Differentiable Dice, pred and target ``(B, C, H, W)`` in [0, 1]: one Dice per channel over the whole
    batch, averaged over channels."""
    inter = (pred * target).sum(dim=(0, 2, 3))
    total = pred.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return ((2 * inter + smooth) / (total + smooth)).mean()


class GTR(nn.Module):
    """The Gaussian truncation representation: images ``(B, C, H, W)`` -> ``LogitGaussian`` over
    ``logit_channels`` x H x W logits. H, W divisible by 2**(len(filters) - 1)."""

    def __init__(self, in_channels: int, logit_channels: int, filters: tuple[int, ...], res_blocks: int,
                 norm_groups: int, rank: int, epsilon: float):
        super().__init__()
        self.rank, self.epsilon = rank, epsilon
        self.unet = UNet(in_channels, tuple(filters), res_blocks, None, norm_groups)
        self.features = nn.Sequential(group_norm(filters[0], norm_groups), nn.SiLU())
        self.mean = nn.Conv2d(filters[0], logit_channels, 1)
        self.log_diag = nn.Conv2d(filters[0], logit_channels, 1)
        self.factor = nn.Conv2d(filters[0], logit_channels * rank, 1)

    def forward(self, images: torch.Tensor) -> LogitGaussian:
        z = self.features(self.unet(images).decoder)
        return LogitGaussian.from_heads(self.mean(z), self.log_diag(z), self.factor(z), self.epsilon)


class SelfAttention(nn.Module):
    """Full multi-head self-attention over all positions, pre-norm and residual:
    ``(B, C, H, W)`` -> ``(B, C, H, W)``."""

    def __init__(self, channels: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv2d(channels, 3 * heads * head_dim, 1, bias=False)
        self.out = nn.Conv2d(heads * head_dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_dim, h * w).transpose(-1, -2)
        o = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])   # (B, heads, HW, head_dim)
        return x + self.out(o.transpose(-1, -2).reshape(b, self.heads * self.head_dim, h, w))


def _every_parameter_needs_a_gradient() -> bool:
    """True under multi-process DDP, whose reducer (without find_unused_parameters) waits for every parameter."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


@dataclass(frozen=True)
class ATFMCondition:
    """What the SFM reads besides x_t and t: images ``(B, C, H, W)`` and the frozen GTR's prior over their logits."""
    images: torch.Tensor
    prior: LogitGaussian


class ATFM(FlowMatchingMethod):
    """Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        gtr_filters: GTR UNet widths per level (paper: 32, 64, 128, 192).
        gtr_res_blocks: residual blocks per GTR level (not stated; 1 block = 2 convs, near the public
            code's three plain convs per level).
        gtr_norm_groups: GroupNorm groups in the GTR (not stated; the public GTR has no normalisation).
        rank: rank of the covariance factor (paper: 10).
        epsilon: added to the diagonal variance (public code: 1e-5).
        mc_samples: Monte-Carlo draws in the GTR loss (paper: 20).
        antithetic: draw the MC samples in mirrored pairs (public code and SSN: yes).
        gtr_steps, gtr_epochs: the GTR stage's length, at most one of the two: calls of ``loss`` that train
            the GTR before the SFM takes over, or passes over the training slices (the paper's unit: GTR 1000
            LIDC / 400 ISIC; SFM 200 / 120), which the trainer converts (:meth:`set_epoch_length`). The run's
            length must exceed it or the SFM never trains. Neither given: 1000 steps, a placeholder of ours.
        channels, num_res_blocks, time_embed_dim, norm_groups: the SFM UNet (public code: widths
            d x (1, 2, 4) with d = 128 on LIDC and 256 on ISIC, two blocks per level, time embedding 4 d,
            GroupNorm with 1 group).
        attention_heads, attention_head_dim: full self-attention at the SFM bottleneck (public code: 4 x 32;
            0 heads: none).
        dice_weight: alpha, the weight of (1 - soft Dice) (paper: 1e-3 LIDC, 1e-4 ISIC).
        dice_smooth: the Dice's additive smoothing (not stated; the public code uses 1e-8 on hard masks).
        solver, steps: the ``default_sampler``, an ODE solver and its steps (paper: Euler, 25 LIDC / 50 ISIC).
        sfm_batch_size: how many images of each batch stage 2 trains on, the first ones (None: all). The
            batch handed to ``loss`` is the GTR's (``train.batch_size``); public code: GTR 256 / SFM 6 on
            LIDC, 8 / 1 on ISIC (module docstring, "Two batch sizes").
        sfm_luminance: the SFM reads the RGB image as one luminance channel 0.299 R + 0.587 G + 0.114 B
            (public code on ISIC); the GTR always reads the image as it is. Only for 3-channel images.

    Stage 2 and sampling are the shared flow matching (``medflowseg.flow.matching``) with the prior as the start.
    """

    def __init__(self, in_channels: int, num_classes: int, gtr_filters=(32, 64, 128, 192), gtr_res_blocks: int = 1,
                 gtr_norm_groups: int = 8, rank: int = 10, epsilon: float = 1e-5, mc_samples: int = 20,
                 antithetic: bool = True, gtr_steps: int | None = None,
                 gtr_epochs: float | None = None, channels=(128, 256, 512), num_res_blocks: int = 2,
                 time_embed_dim: int = 512, norm_groups: int = 1, attention_heads: int = 4,
                 attention_head_dim: int = 32, dice_weight: float = 1e-3, dice_smooth: float = 1e-6,
                 solver: str = "euler", steps: int = 25, sfm_batch_size: int | None = None,
                 sfm_luminance: bool = False):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        if antithetic and mc_samples % 2:
            raise ValueError(f"antithetic sampling needs an even mc_samples, got {mc_samples}")
        if sfm_batch_size is not None and (isinstance(sfm_batch_size, bool) or not isinstance(sfm_batch_size, int)
                                           or sfm_batch_size < 1):
            raise ValueError(f"sfm_batch_size must be a positive integer or None, got {sfm_batch_size!r}")
        if not isinstance(sfm_luminance, bool) or (sfm_luminance and in_channels != 3):
            raise ValueError(f"sfm_luminance must be a bool, and true only for 3-channel (RGB) images; got "
                             f"{sfm_luminance!r} with {in_channels} channel(s)")
        # the paper's sigmoid channel for K = 2
        super().__init__(1 if num_classes == 2 else num_classes, ODESolver(solver, steps))
        self.num_classes = num_classes
        if gtr_steps is not None and gtr_epochs is not None:
            raise ValueError(f"give the GTR stage's length as gtr_steps or gtr_epochs, not both "
                             f"(got {gtr_steps}, {gtr_epochs})")
        self.mc_samples, self.antithetic, self.gtr_epochs = mc_samples, antithetic, gtr_epochs
        # in epochs: unknown until the trainer gives the epoch length
        self.gtr_steps = None if gtr_epochs is not None else 1000 if gtr_steps is None else gtr_steps
        self.dice_weight, self.dice_smooth = dice_weight, dice_smooth
        self.sfm_batch_size, self.sfm_luminance = sfm_batch_size, sfm_luminance
        self.gtr = GTR(in_channels, self.state_channels, tuple(gtr_filters), gtr_res_blocks, gtr_norm_groups,
                       rank, epsilon)
        self.gtr_frozen = copy.deepcopy(self.gtr).requires_grad_(False)   # the frozen copy (module docstring)
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        self.time_embed = TimeEmbedding(time_embed_dim)
        self.unet = UNet(self.state_channels + (1 if sfm_luminance else in_channels), tuple(channels),
                         num_res_blocks, time_embed_dim, norm_groups)
        self.attention = (SelfAttention(channels[-1], attention_heads, attention_head_dim)
                          if attention_heads > 0 else None)
        self.out = nn.Sequential(group_norm(channels[0], norm_groups), nn.SiLU(),
                                 nn.Conv2d(channels[0], self.state_channels, 1))
        nn.init.zeros_(self.out[-1].weight)   # the untrained flow leaves x0 as it is (ours; module docstring)
        nn.init.zeros_(self.out[-1].bias)

    def set_epoch_length(self, to_steps: Callable[[float], int]) -> None:
        """``to_steps``: the trainer's conversion of epochs to steps for this run (``CountsInEpochs``);
        converts ``gtr_epochs``."""
        if self.gtr_epochs is not None:
            self.gtr_steps = to_steps(self.gtr_epochs)

    def train(self, mode: bool = True) -> "ATFM":
        """As ``nn.Module.train``, but the frozen GTR copy stays in eval mode (the public code's
        ``prior_model.eval()``, train_prior_LIDC.py:148)."""
        super().train(mode)
        self.gtr_frozen.eval()
        return self

    # ---- pieces -------------------------------------------------------------------------------------
    def sfm_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(("gtr.", "gtr_frozen."))]

    @torch.no_grad()
    def freeze_gtr(self) -> None:
        """Copy the trained GTR's weights into the frozen copy."""
        for frozen, trained in zip(self.gtr_frozen.parameters(), self.gtr.parameters(), strict=True):
            frozen.copy_(trained)

    def frozen_prior(self, images: torch.Tensor) -> LogitGaussian:
        """The GTR as frozen (the copy), without gradient."""
        with torch.no_grad():
            return self.gtr_frozen(images)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """GTR logits ``(B, Kc, H, W)`` -> the flow's start x0 in [0, 1]: sigmoid (K = 2) or softmax."""
        return torch.sigmoid(logits) if self.state_channels == 1 else torch.softmax(logits, dim=1)

    # ---- the flow-matching hooks --------------------------------------------------------------------
    def condition(self, images: torch.Tensor, in_loss: bool) -> ATFMCondition:
        """The frozen prior reads the images as they are; the SFM reads them, or their luminance
        ``(B, 1, H, W)`` with ``sfm_luminance`` (ISIC in the public code, train_prior_ISIC.py:143-145)."""
        seen = ((images * images.new_tensor(LUMA)[:, None, None]).sum(1, keepdim=True)
                if self.sfm_luminance else images)
        return ATFMCondition(seen, self.frozen_prior(images))

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, H, W)`` -> x1 ``(B, Kc, H, W)``: the foreground mask (K = 2) or the one-hot label."""
        if self.state_channels == 1:
            return (labels == 1).float()[:, None]
        return F.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()

    def start(self, cond: ATFMCondition, shape: tuple[int, ...], generator: torch.Generator,
              like: torch.Tensor) -> torch.Tensor:
        """x0 ``(B, Kc, H, W)``: the activation of one logit draw of the frozen prior."""
        return self.activate(cond.prior.rsample(1, generator)[0])

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: ATFMCondition) -> torch.Tensor:
        """x_t ``(B, Kc, H, W)``, t ``(B,)`` -> ``(B, Kc, H, W)``; the images are concatenated to x_t."""
        h = self.unet(torch.cat([x_t, cond.images], dim=1), self.time_embed(t), bottleneck=self.attention).decoder
        return self.out(h)

    def read_out(self, x1: torch.Tensor) -> torch.Tensor:
        """x1 ``(B, Kc, H, W)`` -> int64 labels: threshold 0.5 (K = 2) or argmax."""
        return (x1[:, 0] >= 0.5).long() if self.state_channels == 1 else x1.argmax(dim=1)

    # ---- the two losses -----------------------------------------------------------------------------
    def gtr_loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Stage 1: -(MC log-likelihood) per pixel, averaged over the batch (trains ``self.gtr``)."""
        logits = self.gtr(images).rsample(self.mc_samples, generator, self.antithetic)
        return -mc_log_likelihood(logits, labels).mean() / labels[0].numel()

    def sfm_terms(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        """Stage 2: (MSE of the velocity, soft Dice of the one-step prediction), from a frozen-GTR start, on the
        first ``sfm_batch_size`` images of the batch (all when None)."""
        step = self.flow_step(images[:self.sfm_batch_size], labels[:self.sfm_batch_size], generator)
        pred = (step.x_t + step.velocity * (1 - step.t[:, None, None, None])).clamp(0, 1)
        fg = slice(None) if self.state_channels == 1 else slice(1, None)   # foreground channels only
        return velocity_mse(step.velocity, step.u), soft_dice(pred[:, fg], step.x1[:, fg], self.dice_smooth)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.gtr_steps is None:
            raise RuntimeError("ATFM's GTR stage is given in epochs (gtr_epochs); the trainer converts it with "
                               "set_epoch_length before the first step")
        done = int(self.trained_steps)
        if self.training:
            if done <= self.gtr_steps:        # stage 1, and the first call of stage 2: the copy follows the GTR
                self.freeze_gtr()
            self.trained_steps += 1
        if done < self.gtr_steps:
            loss, idle = self.gtr_loss(images, labels, generator), self.sfm_parameters()
        else:
            mse, dice = self.sfm_terms(images, labels, generator)
            loss, idle = mse + self.dice_weight * (1 - dice), list(self.gtr.parameters())
        if _every_parameter_needs_a_gradient():   # DDP: zero gradients for the idle network (module docstring)
            loss = loss + 0.0 * sum(p.sum() for p in idle)
        return loss

"""``medsegdiff``: MedSegDiff-V1 (Wu et al., MIDL 2023, arXiv 2211.00611), a conditional DDPM on masks.

Labelled "MedSegDiff-V1 (suite reimplementation)" in tables: it is our own code, not the authors'.

Why our own code and not lucidrains' ``med-seg-diff-pytorch``: that package declares torchvision, wandb
and lion-pytorch as dependencies, which pull a CUDA build of torch onto our CPU machines; it has not been
maintained since December 2023; and it follows its own reading of the paper rather than the official
code. Written here, the networks are built from the suite's blocks (``medflowseg.unet``,
``medflowseg.blocks``) and every operator is seen by the suite's MAC counter (``benchmark.complexity``,
which has handles for the FF-Parser's FFTs).

What follows the official code (github.com/KidsWithTokens/MedSegDiff, a guided-diffusion fork, read as the
copy stored under MedicineToken/MedSegDiff; V1 is its ``version='v1'`` network ``UNetModel_v1preview``):

- diffusion: ``num_timesteps`` = 1000 and guided-diffusion's ``linear`` beta schedule (betas evenly spaced
  from 1e-4 to 0.02, both scaled by 1000 / T); ``cosine`` is the other named schedule. The network
  predicts the noise epsilon (``predict_xstart=False``) and the loss is the MSE to the drawn noise, with
  t uniform over the T steps;
- the mask: the official loader makes a {0, 1} foreground mask (several tumour classes merged) and
  diffuses it in that range (``label_scale='01'``); x0 predictions are clipped to [-1, 1] when sampling
  (``clip_denoised=True``). ``label_scale='pm1'`` (mask scaled to [-1, 1], threshold 0) is the DDPM image
  convention, kept as an option;
- the mask network (a time-conditioned UNet) sees the image concatenated to the noisy mask, as the
  official input ``cat(image, x_t)`` does;
- the condition network: a second UNet on the image alone (the official "highway" nnU-Net, base width
  32). Dynamic conditional encoding, as the official V1 forward pass executes it: at every condition-encoder
  scale below full resolution and above the bottleneck (the inputs of encoder stages 1 .. L-2; four scales
  in the official six-level network), the noisy-mask encoder's feature at that scale is projected by a
  1x1 convolution to the condition width, passed through the FF-Parser, and turned into a spatial map
  (a 1x1 convolution to one channel) and a channel vector (its spatial mean); the condition feature is
  multiplied by both. The condition bottleneck, projected by a 1x1 convolution, is added to the mask
  network's deepest feature before its middle blocks;
- FF-Parser: a learnable complex weight per channel and frequency of the real 2D FFT (orthonormal) of the
  feature, multiplied with the spectrum, then the inverse FFT; official initialisation N(0, 0.02^2) for
  the real and imaginary parts (``ff_init='randn'``; ``'ones'`` starts as the identity);
- auxiliary loss: the condition UNet's decoder ends in a sigmoid map ("cal") trained by MSE to the {0, 1}
  mask with weight 10 (``cal_loss_weight``; the official training loop adds ``10 * loss_cal``);
- ensemble of 5 samples per image: the suite's ``predict.n_samples`` (5 at both profiles), fused by the
  suite.

Deviations, each a named field or stated here:

- sampling is DDIM (``DDIMSampler``: ``steps`` timesteps evenly spaced over the T, ``eta`` = 0 by
  default); the official sampler is 1000-step ancestral DDPM with the learned variance of the README's
  ``learn_sigma=True`` (beta_t without it). eta = 1 here is ancestral sampling with the posterior variance;
- the README's recommended ``learn_sigma=True`` (a learned variance trained by the variational bound, the
  mean's gradient stopped) is left out: DDIM with eta = 0 never uses a variance;
- networks: the suite's residual UNet (GroupNorm, SiLU, no self-attention) for both branches, where the
  official mask network is guided-diffusion's UNet with attention at 16x16 and in the middle, and the
  condition network nnU-Net's (BatchNorm, LeakyReLU, max-pooling);
- the official code projects the condition bottleneck with a 1x1 convolution created anew (random,
  untrained) at every forward pass; here it is a learned layer. The paper's layer-norm product form of the
  fusion (the official ``enhance``, never called) is not used. FF-Parser weights are built for
  ``image_size`` (official: hard-coded for 256 px); at another input size they are resampled bilinearly;
- several classes (K > 2, not in the official code): the mask is the one-hot map over K channels, the
  label the argmax; K = 2 is the official single foreground channel, thresholded at the range's midpoint;
- output: as the official sampler, a blend of the condition branch's map and the sample (cal + 0.25 s when
  their Dice is below 0.65, else their mean, clipped to [0, 1]; per image here, with the sample's hard mask
  in the Dice), ``calibrated_output=True``. It pulls every sample toward the one deterministic condition
  map, so the samples' spread (GED, CI) is smaller than the diffusion samples' own; ``calibrated_output=False``
  returns each sample's final x0 instead;
- fusion of samples: the suite's (STAPLE by default). The official ensemble function called ``staple`` is
  not STAPLE (each sample multiplied by the samples' mean, then averaged: the mean squared) and is not
  reproduced.

The paper-scale values are the defaults (official README, "MedSegDiff-B": 256 px, 128 base channels,
``channel_mult`` (1, 1, 2, 2, 4, 4), two residual blocks per level, 1000 steps, 5 samples; training,
not model fields: AdamW 1e-4 (5e-5 in the README's MedSegDiff-B advice), weight decay 0, EMA 0.9999,
batch 32, "about 100,000 steps"). The paper's own text was not at hand when this was written: the
facts above are the official code's and README's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medflowseg.blocks import TimeEmbedding, group_norm
from medflowseg.sampling import Samples
from medflowseg.unet import UNet

SCHEDULES = ("linear", "cosine")
LABEL_SCALES = ("01", "pm1")


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """guided-diffusion's named schedules, float64 ``(T,)``.

    linear: evenly spaced from 1e-4 to 0.02, both scaled by 1000 / T (so T = 1000 is DDPM's schedule);
    cosine: beta_t = 1 - abar(t+1) / abar(t) with abar(s) = cos((s/T + 0.008) / 1.008 * pi / 2)^2, capped at 0.999.
    """
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), 0.999)
                         for i in range(num_timesteps)], dtype=np.float64)
    raise ValueError(f"noise schedule {name!r} not in {SCHEDULES}")


class NoiseSchedule:
    """The forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), t in [0, T), and the DDIM update.

    Attributes (float64 tensors ``(T,)``): betas, alphas = 1 - betas, alphas_cumprod = prod_{s <= t} alphas_s.
    """

    def __init__(self, num_timesteps: int = 1000, schedule: str = "linear"):
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps, self.schedule = num_timesteps, schedule
        self.betas = torch.from_numpy(beta_schedule(schedule, num_timesteps))
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """abar_t for t ``(B,)`` (or an int), shaped to broadcast over ``like`` ``(B, ...)``; abar_{-1} = 1."""
        if isinstance(t, int):
            value = 1.0 if t < 0 else float(self.alphas_cumprod[t])
            return torch.full((), value, dtype=like.dtype, device=like.device)
        a = self.alphas_cumprod.to(t.device)[t.clamp(min=0)]
        a = torch.where(t < 0, torch.ones_like(a), a)
        return a.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise ``(B, ...)``, t int64 ``(B,)``."""
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def ddim_step(self, x_t: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, eta: float = 0.0,
                  noise: torch.Tensor | None = None, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update (Song et al. 2021, Eq. 12) from step t to t_prev < t (-1: to x0).
        Returns (x_{t_prev}, x0_pred).

        x0_pred = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1] with ``clip`` (eps is then
        re-derived from the clipped x0, as guided-diffusion does); sigma = eta sqrt((1 - abar')/(1 - abar))
        sqrt(1 - abar/abar'); x_{t_prev} = sqrt(abar') x0_pred + sqrt(1 - abar' - sigma^2) eps + sigma noise.
        """
        a, a_prev = self.abar(t, x_t), self.abar(t_prev, x_t)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
        x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and t_prev >= 0:
            if noise is None:
                raise ValueError("eta > 0 needs noise")
            x_prev = x_prev + sigma * noise
        return x_prev, x0


@dataclass(frozen=True)
class DDIMSampler:
    """MedSegDiff's step rule, a value ``sample`` takes (``default_sampler`` when it is passed none).

    steps: network evaluations per sample, at timesteps evenly spaced from T - 1 down to 0;
    eta: 0 deterministic DDIM, 1 DDPM-like ancestral sampling.
    """
    steps: int = 1000
    eta: float = 0.0
    adaptive = False   # the evaluations are always ``steps`` (benchmark/methods/interface.py, Sampler)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")

    def timesteps(self, num_timesteps: int) -> list[int]:
        """``steps`` distinct integer timesteps, descending from T - 1 to 0 (one step: [T - 1])."""
        if self.steps > num_timesteps:
            raise ValueError(f"{self.steps} DDIM steps exceed the {num_timesteps} diffusion timesteps")
        return [int(v) for v in np.linspace(num_timesteps - 1, 0, self.steps).round()]


class FFParser(nn.Module):
    """Learnable filter in the frequency domain: irfft2(W * rfft2(x)), orthonormal FFTs.

    W is complex, one value per channel and frequency of a ``(height, width)`` map: ``(C, height, width//2 + 1)``
    stored as real pairs. At another spatial size W is resampled bilinearly to that size's frequency grid.
    ``init``: 'randn' (official: real and imaginary parts N(0, 0.02^2)) or 'ones' (the identity).
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
            raise ValueError(f"FF-Parser init {init!r} not in ('randn', 'ones')")
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
    same scale: a = FFParser(conv1x1(m)); c * conv1x1(a) (one channel: where) * mean_hw(a) (per channel: what)."""

    def __init__(self, mask_channels: int, cond_channels: int, height: int, width: int, ff_init: str):
        super().__init__()
        self.project = nn.Conv2d(mask_channels, cond_channels, 1)
        self.ff_parser = FFParser(cond_channels, height, width, ff_init)
        self.spatial = nn.Conv2d(cond_channels, 1, 1)

    def forward(self, c: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        a = self.ff_parser(self.project(m))
        return c * self.spatial(a) * a.mean(dim=(2, 3), keepdim=True)


class MedSegDiff(nn.Module):
    """MedSegDiff-V1 (suite reimplementation).

    Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        image_size: the square side the FF-Parser weights are built for (official: 256; set to ``data.size``).
        channels, num_res_blocks, time_embed_dim, norm_groups: the mask UNet (official: 128 x (1, 1, 2, 2, 4, 4),
            2 residual blocks, embedding 4 x 128, GroupNorm 32).
        cond_channels, cond_res_blocks: the condition UNet, as many levels as ``channels`` (official nnU-Net:
            32, 64, 128, 256, 480, 480; two convolutions per stage = one residual block).
        ff_init: FF-Parser initialisation, 'randn' (official) or 'ones'.
        num_timesteps, noise_schedule: T and the beta schedule (official: 1000, 'linear').
        label_scale: '01' (official) or 'pm1', the range the mask is diffused in.
        clip_x0: clip x0 predictions to [-1, 1] while sampling (official ``clip_denoised=True``).
        cal_loss_weight: weight of the condition branch's MSE to the mask (official: 10; 0 turns it off).
        calibrated_output: return the official blend of the condition map and the sample (default), or the sample.
        steps, eta: the ``default_sampler``, a ``DDIMSampler`` (official sampling: 1000 ancestral DDPM steps).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 256,
                 channels=(128, 128, 256, 256, 512, 512), num_res_blocks: int = 2, time_embed_dim: int = 512,
                 norm_groups: int = 32, cond_channels=(32, 64, 128, 256, 480, 480), cond_res_blocks: int = 1,
                 ff_init: str = "randn", num_timesteps: int = 1000, noise_schedule: str = "linear",
                 label_scale: str = "01", clip_x0: bool = True, cal_loss_weight: float = 10.0,
                 calibrated_output: bool = True, steps: int = 1000, eta: float = 0.0):
        super().__init__()
        channels, cond_channels = tuple(channels), tuple(cond_channels)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if len(channels) < 3 or len(cond_channels) != len(channels):
            raise ValueError("channels needs >= 3 levels (one fusion scale between full resolution and the "
                             f"bottleneck) and cond_channels as many: got {channels} and {cond_channels}")
        if label_scale not in LABEL_SCALES:
            raise ValueError(f"label_scale {label_scale!r} not in {LABEL_SCALES}")
        if image_size % 2 ** (len(channels) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(channels) - 1}")
        self.num_classes, self.image_size = num_classes, image_size
        self.mask_channels = 1 if num_classes == 2 else num_classes
        self.label_scale, self.clip_x0 = label_scale, clip_x0
        self.cal_loss_weight, self.calibrated_output = cal_loss_weight, calibrated_output
        self.schedule = NoiseSchedule(num_timesteps, noise_schedule)
        self._default_sampler = DDIMSampler(steps, eta)
        self._default_sampler.timesteps(num_timesteps)  # validates steps <= T

        m = self.mask_channels
        self.time_embed = TimeEmbedding(time_embed_dim, time_scale=float(num_timesteps))  # sinusoid of the step t
        self.unet = UNet(in_channels + m, channels, num_res_blocks, time_embed_dim, norm_groups)
        self.out = nn.Sequential(group_norm(channels[0], norm_groups), nn.SiLU(),
                                 nn.Conv2d(channels[0], m, 3, padding=1))
        self.cond = UNet(in_channels, cond_channels, cond_res_blocks, None, norm_groups)
        self.dce = nn.ModuleList(
            DynamicConditionalEncoding(channels[i - 1], cond_channels[i - 1], image_size // 2 ** i,
                                       image_size // 2 ** i, ff_init)
            for i in range(1, len(channels) - 1))
        self.merge = nn.Conv2d(cond_channels[-1], channels[-1], 1)
        self.cal_head = nn.Sequential(group_norm(cond_channels[0], norm_groups), nn.SiLU(),
                                      nn.Conv2d(cond_channels[0], m, 1))

    @property
    def default_sampler(self) -> DDIMSampler:
        """The DDIM schedule of the configuration (``steps``, ``eta``)."""
        return self._default_sampler

    # ---- masks <-> diffusion space -------------------------------------------------------------------------

    def mask01(self, labels: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, H, W)`` -> float {0, 1} ``(B, M, H, W)``: the foreground (K = 2) or the one-hot map."""
        if self.num_classes == 2:
            return (labels == 1).unsqueeze(1).float()
        return F.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels -> x0 in the diffusion range ({0, 1} or {-1, 1})."""
        x = self.mask01(labels)
        return x if self.label_scale == "01" else 2 * x - 1

    def to_unit(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 in the diffusion range -> the [0, 1] mask scale."""
        return x0 if self.label_scale == "01" else (x0 + 1) / 2

    def decode_unit(self, p: torch.Tensor) -> torch.Tensor:
        """``(B, M, H, W)`` on the [0, 1] scale -> int64 labels: threshold 0.5 (K = 2) or argmax over the K channels."""
        if self.num_classes == 2:
            return (p[:, 0] > 0.5).long()
        return p.argmax(dim=1)

    # ---- the network -----------------------------------------------------------------------------------------

    def denoise(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor,
                with_cal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One network evaluation. x_t ``(B, M, H, W)``, images ``(B, C, H, W)``, t int64 ``(B,)`` ->
        (eps ``(B, M, H, W)``, the condition branch's sigmoid map ``(B, M, H, W)`` or None without ``with_cal``)."""
        temb = self.time_embed(t.to(x_t.dtype) / self.schedule.num_timesteps)
        net, cond, last = self.unet, self.cond, len(self.unet.encoder) - 1
        # noisy-mask encoder; keep its features where they enter stages 1 .. L-2 (the fusion scales)
        h = net.stem(torch.cat([images, x_t], dim=1))
        skips, entries = [], []
        for i, stage in enumerate(net.encoder):
            if 1 <= i < last:
                entries.append(h)
            h = stage(h, temb)
            skips.append(h)
            if i < last:
                h = net.downsample[i](h)
        # condition encoder on the image, each fusion scale modulated by the noisy-mask feature there
        c, cond_skips = cond.stem(images), []
        for i, stage in enumerate(cond.encoder):
            if 1 <= i < last:
                c = self.dce[i - 1](c, entries[i - 1])
            c = stage(c)
            cond_skips.append(c)
            if i < last:
                c = cond.downsample[i](c)
        c = cond.mid(c)
        h = net.mid(h + self.merge(c), temb)
        eps = self.out(net.decode(h, skips, temb))
        cal = torch.sigmoid(self.cal_head(cond.decode(c, cond_skips, None))) if with_cal else None
        return eps, cal

    # ---- training --------------------------------------------------------------------------------------------

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x0 = self.encode(labels).to(images)
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=generator,
                          device=generator.device).to(images.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        eps, cal = self.denoise(self.schedule.q_sample(x0, t, noise), images, t, with_cal=self.cal_loss_weight > 0)
        loss = torch.mean((eps - noise) ** 2)
        if cal is not None:
            loss = loss + self.cal_loss_weight * torch.mean((cal - self.mask01(labels).to(cal)) ** 2)
        return loss

    # ---- sampling --------------------------------------------------------------------------------------------

    def sample_x0(self, images: torch.Tensor, generator: torch.Generator,
                  sampler: DDIMSampler) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One DDIM trajectory from pure noise, ``sampler.steps`` network evaluations: (x0 ``(B, M, H, W)`` in the
        diffusion range, the condition map at the last step or None unless ``calibrated_output``)."""
        b, _, h, w = images.shape
        shape = (b, self.mask_channels, h, w)
        steps = sampler.timesteps(self.schedule.num_timesteps)
        x = torch.randn(shape, generator=generator, device=generator.device).to(images)
        cal = None
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            last = t_prev < 0
            eps, cal = self.denoise(x, images, torch.full((b,), t, dtype=torch.long, device=images.device),
                                    with_cal=self.calibrated_output and last)
            noise = None
            if sampler.eta > 0 and not last:
                noise = torch.randn(shape, generator=generator, device=generator.device).to(images)
            x, _ = self.schedule.ddim_step(x, t, t_prev, eps, sampler.eta, noise, clip=self.clip_x0)
        return x, cal

    def calibrate(self, x0: torch.Tensor, cal: torch.Tensor) -> torch.Tensor:
        """The official output blend on the [0, 1] scale, per image: with s the sample and d the Dice of its hard
        mask against the condition map, clip(cal + 0.25 s) if d < 0.65 else clip((cal + s) / 2)."""
        s = self.to_unit(x0).clamp(0, 1)
        hard = (s > 0.5).to(s)
        dice = 2 * (hard * cal).sum(dim=(1, 2, 3)) / (hard + cal).sum(dim=(1, 2, 3)).clamp(min=1e-8)
        low = (dice < 0.65).reshape(-1, 1, 1, 1)
        return torch.where(low, cal + 0.25 * s, 0.5 * cal + 0.5 * s).clamp(0, 1)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator,
               sampler: DDIMSampler | None = None) -> Samples:
        if sampler is None:
            sampler = self.default_sampler
        elif not isinstance(sampler, DDIMSampler):
            raise TypeError(f"MedSegDiff samples with a baselines.medsegdiff.DDIMSampler, got {sampler!r}")
        out = []
        for _ in range(n):
            x0, cal = self.sample_x0(images, generator, sampler)
            p = self.calibrate(x0, cal) if cal is not None else self.to_unit(x0)
            out.append(self.decode_unit(p))
        return Samples(torch.stack(out), (sampler.steps,) * n)

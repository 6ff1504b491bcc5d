"""A conditional DDPM on segmentation masks: what SegDiff (``baselines/segdiff.py``) and EnsemDiff
(``baselines/ensemdiff.py``) share. Both official codes are forks of OpenAI's improved-/guided-diffusion, so both
train the network to predict the noise added to the mask (MSE, t uniform over the T steps), optionally with the
learned-range variance trained by the variational bound, and sample by guided-diffusion's ancestral chain.

The schedule, the ancestral step and the DDIM update are MedSegDiff's (``baselines/medsegdiff/diffusion.py``,
written against the same guided-diffusion code), as are the step rules (``DDPMSampler``, ``DDIMSampler``).
A subclass provides ``denoise``: how the image conditions the network.

Masks: K = 2 classes diffuse one foreground channel (as both official codes do); K > 2 (in neither official code)
the one-hot map over K channels, read back by argmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medflowseg.sampling import Samples

from .medsegdiff import DDIMSampler, DDPMSampler, NoiseSchedule
from .medsegdiff.samplers import SAMPLERS

LABEL_SCALES = ("01", "pm1")


def guided_unet(in_channels: int, out_channels: int, channels, num_res_blocks: int, attention_levels,
                attention_heads: int, norm_groups: int) -> DiffusionModelUNet:
    """guided-diffusion's denoiser (``unet.py`` ``UNetModel``) as MONAI builds it: a time-conditioned UNet, one
    level per entry of ``channels`` (a strided-convolution downsample between levels, nearest upsample and a
    convolution on the way up, ``num_res_blocks`` residual blocks down and one more up), self-attention with
    ``attention_heads`` heads after each residual block of the levels ``attention_levels`` marks and in the middle
    (residual, attention, residual), GroupNorm (``norm_groups``, eps 1e-5 as guided-diffusion's ``GroupNorm32``),
    the time embedding a sinusoid of width ``channels[0]`` through a two-layer MLP to ``4 * channels[0]``, the
    output convolution zero-initialised. ``(B, in_channels, H, W)``, t ``(B,)`` -> ``(B, out_channels, H, W)``,
    H and W divisible by ``2**(len(channels) - 1)``."""
    channels, attention_levels = tuple(channels), tuple(bool(a) for a in attention_levels)
    if len(attention_levels) != len(channels):
        raise ValueError(f"attention_levels needs one flag per level: {len(channels)} levels, got {attention_levels}")
    if attention_heads < 1 or any(c % attention_heads for c in channels):
        raise ValueError(f"attention_heads {attention_heads} must divide every width of {channels}")
    return DiffusionModelUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                              num_res_blocks=num_res_blocks, channels=channels, attention_levels=attention_levels,
                              norm_num_groups=norm_groups, norm_eps=1e-5,
                              num_head_channels=[c // attention_heads for c in channels])


class MaskDDPM(nn.Module):
    """Base of the mask DDPMs. Subclasses build their network and implement ``denoise``.

    Args:
        num_classes: label classes K (background included), >= 2.
        num_timesteps, noise_schedule: T and the beta schedule ('linear' or 'cosine').
        label_scale: '01' (mask diffused in {0, 1}) or 'pm1' ({-1, 1}).
        clip_x0: clip x0 predictions to [-1, 1] while sampling (guided-diffusion's ``clip_denoised``).
        learn_sigma: a second output per mask channel, the learned-range variance trained by the variational bound;
            without it the ancestral variance is fixed-large (beta).
        sampler, steps, eta: the ``default_sampler``: 'ddpm' (ancestral, ``DDPMSampler(steps)``, steps < T respaced)
            or 'ddim' (``DDIMSampler(steps, eta)``).
        mmse_samples: trajectories averaged (on the [0, 1] mask scale, clamped) into one returned sample before
            thresholding; each returned sample costs ``mmse_samples * steps`` network evaluations.
    """

    def __init__(self, num_classes: int, num_timesteps: int, noise_schedule: str, label_scale: str, clip_x0: bool,
                 learn_sigma: bool, sampler: str, steps: int, eta: float, mmse_samples: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if label_scale not in LABEL_SCALES:
            raise ValueError(f"label_scale {label_scale!r} not in {LABEL_SCALES}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r} not in {SAMPLERS}")
        if sampler == "ddpm" and eta != 0:
            raise ValueError(f"eta is the DDIM sampler's; sampler 'ddpm' takes none (got eta={eta})")
        if mmse_samples < 1:
            raise ValueError(f"mmse_samples must be >= 1, got {mmse_samples}")
        self.num_classes = num_classes
        self.mask_channels = 1 if num_classes == 2 else num_classes
        self.label_scale, self.clip_x0, self.learn_sigma = label_scale, clip_x0, learn_sigma
        self.mmse_samples = mmse_samples
        self.schedule = NoiseSchedule(num_timesteps, noise_schedule)
        self.chain = self.schedule.chain(range(num_timesteps))   # the full chain: the variational bound's
        self._default_sampler = DDPMSampler(steps) if sampler == "ddpm" else DDIMSampler(steps, eta)
        self._default_sampler.timesteps(num_timesteps)  # validates steps <= T

    @property
    def default_sampler(self) -> DDPMSampler | DDIMSampler:
        """The step rule of the configuration (``sampler``, ``steps``, ``eta``)."""
        return self._default_sampler

    @property
    def output_channels(self) -> int:
        """The network's output channels: eps ``M``, followed by the variance values ``M`` with ``learn_sigma``."""
        return 2 * self.mask_channels if self.learn_sigma else self.mask_channels

    def denoise(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One network evaluation: x_t ``(B, M, H, W)``, images ``(B, C, H, W)``, t int64 ``(B,)`` (the step
        itself, guided-diffusion's ``rescale_timesteps=False``) -> ``(B, output_channels, H, W)``."""
        raise NotImplementedError

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
        """x0 in the diffusion range -> the [0, 1] mask scale, clamped."""
        return (x0 if self.label_scale == "01" else (x0 + 1) / 2).clamp(0, 1)

    def decode_unit(self, p: torch.Tensor) -> torch.Tensor:
        """``(B, M, H, W)`` on the [0, 1] scale -> int64 labels: above 0.5 (K = 2) or the argmax over the K channels."""
        if self.num_classes == 2:
            return (p[:, 0] > 0.5).long()
        return p.argmax(dim=1)

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``denoise``'s output -> (eps ``(B, M, H, W)``, the variance values ``(B, M, H, W)`` or None)."""
        if not self.learn_sigma:
            return out, None
        return out[:, :self.mask_channels], out[:, self.mask_channels:]

    # ---- training --------------------------------------------------------------------------------------------

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MSE of the predicted noise (guided-diffusion ``LossType.MSE``), plus the variational bound in bits per
        pixel with the mean's gradient stopped when the variance is learned."""
        x0 = self.encode(labels).to(images)
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=generator,
                          device=generator.device).to(images.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        eps, var_values = self.split_output(self.denoise(x_t, images, t))
        loss = torch.mean((eps - noise) ** 2)
        if var_values is not None:
            loss = loss + self.chain.vb_bits(t, x0, x_t, eps.detach(), var_values).mean()
        return loss

    # ---- sampling --------------------------------------------------------------------------------------------

    def sample_x0(self, images: torch.Tensor, generator: torch.Generator,
                  sampler: DDPMSampler | DDIMSampler) -> torch.Tensor:
        """One trajectory from pure noise, ``sampler.steps`` network evaluations: x0 ``(B, M, H, W)`` in the
        diffusion range (the mean of the last ancestral step, or DDIM's last x0 prediction)."""
        b, _, h, w = images.shape
        shape = (b, self.mask_channels, h, w)
        steps = sampler.timesteps(self.schedule.num_timesteps)
        chain = self.schedule.chain(steps) if isinstance(sampler, DDPMSampler) else None
        x = torch.randn(shape, generator=generator, device=generator.device).to(images)
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            out = self.denoise(x, images, torch.full((b,), t, dtype=torch.long, device=images.device))
            eps, var_values = self.split_output(out)
            noise = None
            if t_prev >= 0 and (chain is not None or sampler.eta > 0):
                noise = torch.randn(shape, generator=generator, device=generator.device).to(images)
            if chain is None:
                x, _ = self.schedule.ddim_step(x, t, t_prev, eps, sampler.eta, noise, clip=self.clip_x0)
            else:   # the chain counts its positions upward from the last step
                x, _ = chain.step(len(steps) - 1 - i, x, eps, var_values, noise, clip=self.clip_x0)
        return x

    def _sampler(self, sampler) -> DDPMSampler | DDIMSampler:
        if sampler is None:
            return self.default_sampler
        if not isinstance(sampler, (DDPMSampler, DDIMSampler)):
            raise TypeError(f"{type(self).__name__} samples with a baselines.medsegdiff DDPMSampler or DDIMSampler, "
                            f"got {sampler!r}")
        return sampler

    @torch.no_grad()
    def sample_soft(self, images: torch.Tensor, n: int, generator: torch.Generator,
                    sampler: DDPMSampler | DDIMSampler | None = None) -> tuple[torch.Tensor, tuple[int, ...]]:
        """``n`` soft samples on the [0, 1] mask scale, each the mean of ``mmse_samples`` clamped trajectories:
        ``(n, B, M, H, W)``, and the network evaluations of each."""
        sampler = self._sampler(sampler)
        out = []
        for _ in range(n):
            draws = [self.to_unit(self.sample_x0(images, generator, sampler)) for _ in range(self.mmse_samples)]
            out.append(torch.stack(draws).mean(dim=0))
        return torch.stack(out), (self.mmse_samples * sampler.steps,) * n

    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator,
               sampler: DDPMSampler | DDIMSampler | None = None) -> Samples:
        soft, nfe = self.sample_soft(images, n, generator, sampler)
        return Samples(torch.stack([self.decode_unit(p) for p in soft]), nfe)

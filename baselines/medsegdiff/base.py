"""A conditional DDPM on segmentation masks: what MedSegDiff-V1 and -V2 (``v1.py``, ``v2.py``), SegDiff
(``baselines/segdiff.py``) and EnsemDiff (``baselines/ensemdiff.py``) share. Every official code among them is a fork
of OpenAI's improved-/guided-diffusion, so all train the network to predict the noise added to the mask (MSE, t
uniform over the T steps), optionally with the learned-range variance trained by the variational bound, and sample
by guided-diffusion's ancestral chain (or DDIM), over the schedule and steps of ``diffusion.py`` and ``samplers.py``.

A subclass provides the network: ``denoise`` (one evaluation), or, where a condition branch of the same pass has
an output of its own (MedSegDiff's), ``evaluate``, which also returns that output; it then sets
``trains_condition`` and ``condition_loss`` (that output's loss) and, to read it at the last sampling step,
``wants_last_cal`` and ``output_map``.

Masks: K = 2 classes diffuse one foreground channel (as every official code does); K > 2 (in none of them) the
one-hot map over K channels, read back by argmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medflowseg.sampling import Samples

from .diffusion import NoiseSchedule
from .samplers import SAMPLERS, DDIMSampler, DDPMSampler

LABEL_SCALES = ("01", "pm1")


class MaskDDPM(nn.Module):
    """Base of the mask DDPMs (no parameters of its own).

    Args:
        num_classes: label classes K (background included), >= 2.
        num_timesteps, noise_schedule: T and the beta schedule ('linear' or 'cosine').
        label_scale: '01' (mask diffused in {0, 1}) or 'pm1' ({-1, 1}).
        clip_x0: clip x0 predictions to [-1, 1] while sampling (guided-diffusion's ``clip_denoised``).
        learn_sigma: a second output per mask channel, the learned-range variance trained by the variational bound;
            without it the ancestral variance is fixed-large (beta).
        sampler, steps, eta: the ``default_sampler``: 'ddpm' (ancestral, ``DDPMSampler(steps)``, steps < T respaced)
            or 'ddim' (``DDIMSampler(steps, eta)``).
        mmse_samples: trajectories averaged (their ``output_map``s) into one returned sample before thresholding;
            each returned sample costs ``mmse_samples * steps`` network evaluations.
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

    # ---- the network: a subclass overrides ``denoise`` or ``evaluate`` -------------------------------------------

    def denoise(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One network evaluation: x_t ``(B, M, H, W)``, images ``(B, C, H, W)``, t int64 ``(B,)`` (the step
        itself, guided-diffusion's ``rescale_timesteps=False``) -> ``(B, output_channels, H, W)``."""
        return self.evaluate(x_t, images, t, with_cal=False)[0]

    def evaluate(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor,
                 with_cal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``denoise``'s output and, with ``with_cal``, the condition branch's output of the same pass (None
        without a condition branch)."""
        return self.denoise(x_t, images, t), None

    @property
    def trains_condition(self) -> bool:
        """Whether ``loss`` adds ``condition_loss`` of the condition branch's output."""
        return False

    def condition_loss(self, cal: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no condition branch")

    @property
    def wants_last_cal(self) -> bool:
        """Whether ``output_map`` reads the condition branch's output at a trajectory's last step."""
        return False

    def output_map(self, x0: torch.Tensor, cal: torch.Tensor | None) -> torch.Tensor:
        """A trajectory's final x0 (and the condition output of its last step, where ``wants_last_cal``) -> the
        ``(B, M, H, W)`` map on the [0, 1] scale that is averaged and decoded. Here: x0 on that scale, clamped."""
        return self.to_unit(x0).clamp(0, 1)

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
        """x0 in the diffusion range -> the [0, 1] mask scale (not clamped)."""
        return x0 if self.label_scale == "01" else (x0 + 1) / 2

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
        pixel with the mean's gradient stopped when the variance is learned, plus ``condition_loss`` where
        ``trains_condition``."""
        x0 = self.encode(labels).to(images)
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=generator,
                          device=generator.device).to(images.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        out, cal = self.evaluate(x_t, images, t, with_cal=self.trains_condition)
        eps, var_values = self.split_output(out)
        loss = torch.mean((eps - noise) ** 2)
        if var_values is not None:
            loss = loss + self.chain.vb_bits(t, x0, x_t, eps.detach(), var_values).mean()
        if cal is not None:
            loss = loss + self.condition_loss(cal, labels, t)
        return loss

    # ---- sampling --------------------------------------------------------------------------------------------

    def trajectory(self, images: torch.Tensor, generator: torch.Generator, sampler: DDPMSampler | DDIMSampler,
                   with_cal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One trajectory from pure noise, ``sampler.steps`` network evaluations: (x0 ``(B, M, H, W)`` in the
        diffusion range: the mean of the last ancestral step, or DDIM's last x0 prediction; the condition branch's
        output at the last step with ``with_cal``, else None)."""
        b, _, h, w = images.shape
        shape = (b, self.mask_channels, h, w)
        steps = sampler.timesteps(self.schedule.num_timesteps)
        chain = self.schedule.chain(steps) if isinstance(sampler, DDPMSampler) else None
        x = torch.randn(shape, generator=generator, device=generator.device).to(images)
        cal = None
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            out, cal = self.evaluate(x, images, torch.full((b,), t, dtype=torch.long, device=images.device),
                                     with_cal=with_cal and t_prev < 0)
            eps, var_values = self.split_output(out)
            noise = None
            if t_prev >= 0 and (chain is not None or sampler.eta > 0):
                noise = torch.randn(shape, generator=generator, device=generator.device).to(images)
            if chain is None:
                x, _ = self.schedule.ddim_step(x, t, t_prev, eps, sampler.eta, noise, clip=self.clip_x0)
            else:   # the chain counts its positions upward from the last step
                x, _ = chain.step(len(steps) - 1 - i, x, eps, var_values, noise, clip=self.clip_x0)
        return x, cal

    def sample_x0(self, images: torch.Tensor, generator: torch.Generator,
                  sampler: DDPMSampler | DDIMSampler) -> torch.Tensor:
        """x0 of one ``trajectory``, ``(B, M, H, W)`` in the diffusion range."""
        return self.trajectory(images, generator, sampler)[0]

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
        """``n`` soft samples on the [0, 1] mask scale, each the mean of ``mmse_samples`` trajectories'
        ``output_map``: ``(n, B, M, H, W)``, and the network evaluations of each."""
        sampler = self._sampler(sampler)
        out = []
        for _ in range(n):
            draws = [self.output_map(*self.trajectory(images, generator, sampler, self.wants_last_cal))
                     for _ in range(self.mmse_samples)]
            out.append(torch.stack(draws).mean(dim=0))
        return torch.stack(out), (self.mmse_samples * sampler.steps,) * n

    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator,
               sampler: DDPMSampler | DDIMSampler | None = None) -> Samples:
        soft, nfe = self.sample_soft(images, n, generator, sampler)
        return Samples(torch.stack([self.decode_unit(p) for p in soft]), nfe)

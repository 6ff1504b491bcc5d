"""What MedSegDiff-V1 and -V2 share (official code: github.com/KidsWithTokens/MedSegDiff, one guided-diffusion fork
for both versions): the diffusion of the mask, its encoding, the training draw and the sampling loop. A version
writes its networks (``denoise``) and the loss of its condition branch (``condition_loss``); sources of each step
are cited in ``v1.py``'s docstring, which also states the deviations both versions share.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medflowseg.sampling import Samples

from .diffusion import NoiseSchedule
from .samplers import SAMPLERS, DDIMSampler, DDPMSampler

LABEL_SCALES = ("01", "pm1")


class MaskDiffusion(nn.Module):
    """A conditional DDPM on segmentation masks (no parameters of its own).

    Args: ``num_classes`` K (background included); ``num_timesteps`` and ``noise_schedule`` T and the beta
    schedule; ``label_scale`` '01' or 'pm1', the range the mask is diffused in; ``clip_x0`` clip x0 predictions to
    [-1, 1] while sampling; ``learn_sigma`` a second output per mask channel for the learned-range variance;
    ``sampler``, ``steps``, ``eta`` the ``default_sampler`` ('ddpm' or 'ddim'; eta is DDIM's alone).

    A subclass provides ``denoise(x_t, images, t, with_cal=False) -> (out, cal)``: ``out`` the noise prediction
    ``(B, M, H, W)`` (with ``learn_sigma`` followed by the variance values, ``(B, 2M, H, W)``), ``cal`` the condition
    branch's output when ``with_cal``, else None; ``condition_loss(cal, labels, t)``, the scalar loss of that output,
    and ``trains_condition``, whether the loss asks for it.
    """

    def __init__(self, num_classes: int, num_timesteps: int, noise_schedule: str, label_scale: str, clip_x0: bool,
                 learn_sigma: bool, sampler: str, steps: int, eta: float):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if label_scale not in LABEL_SCALES:
            raise ValueError(f"label_scale {label_scale!r} not in {LABEL_SCALES}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r} not in {SAMPLERS}")
        if sampler == "ddpm" and eta != 0:
            raise ValueError(f"eta is the DDIM sampler's; sampler 'ddpm' takes none (got eta={eta})")
        self.num_classes = num_classes
        self.mask_channels = 1 if num_classes == 2 else num_classes
        self.label_scale, self.clip_x0, self.learn_sigma = label_scale, clip_x0, learn_sigma
        self.schedule = NoiseSchedule(num_timesteps, noise_schedule)
        self.chain = self.schedule.chain(range(num_timesteps))   # the full chain: the variational bound's
        self._default_sampler = DDPMSampler(steps) if sampler == "ddpm" else DDIMSampler(steps, eta)
        self._default_sampler.timesteps(num_timesteps)  # validates steps <= T

    @property
    def default_sampler(self) -> DDPMSampler | DDIMSampler:
        """The step rule of the configuration (``sampler``, ``steps``, ``eta``)."""
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

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``denoise``'s output -> (eps ``(B, M, H, W)``, the variance values ``(B, M, H, W)`` or None)."""
        if not self.learn_sigma:
            return out, None
        return out[:, :self.mask_channels], out[:, self.mask_channels:]

    # ---- the version's hooks ---------------------------------------------------------------------------------

    def denoise(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor,
                with_cal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    @property
    def trains_condition(self) -> bool:
        raise NotImplementedError

    def condition_loss(self, cal: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def output_map(self, x0: torch.Tensor, cal: torch.Tensor | None) -> torch.Tensor:
        """A trajectory's final x0 (and the condition output at its last step, where ``wants_last_cal``) -> the
        ``(B, M, H, W)`` map on the [0, 1] scale that is decoded to labels. Here: x0 on that scale."""
        return self.to_unit(x0)

    @property
    def wants_last_cal(self) -> bool:
        """Whether ``output_map`` reads the condition output of the last step."""
        return False

    # ---- training --------------------------------------------------------------------------------------------

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x0 = self.encode(labels).to(images)
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), generator=generator,
                          device=generator.device).to(images.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        out, cal = self.denoise(x_t, images, t, with_cal=self.trains_condition)
        eps, var_values = self.split_output(out)
        loss = torch.mean((eps - noise) ** 2)
        if var_values is not None:   # the bound trains the variance only: the mean's gradient is stopped
            loss = loss + self.chain.vb_bits(t, x0, x_t, eps.detach(), var_values).mean()
        if cal is not None:
            loss = loss + self.condition_loss(cal, labels, t)
        return loss

    # ---- sampling --------------------------------------------------------------------------------------------

    def sample_x0(self, images: torch.Tensor, generator: torch.Generator,
                  sampler: DDPMSampler | DDIMSampler) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One trajectory from pure noise, ``sampler.steps`` network evaluations: (x0 ``(B, M, H, W)`` in the
        diffusion range, the condition output at the last step or None unless ``wants_last_cal``)."""
        b, _, h, w = images.shape
        shape = (b, self.mask_channels, h, w)
        steps = sampler.timesteps(self.schedule.num_timesteps)
        chain = self.schedule.chain(steps) if isinstance(sampler, DDPMSampler) else None
        x = torch.randn(shape, generator=generator, device=generator.device).to(images)
        cal = None
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            last = t_prev < 0
            out, cal = self.denoise(x, images, torch.full((b,), t, dtype=torch.long, device=images.device),
                                    with_cal=self.wants_last_cal and last)
            eps, var_values = self.split_output(out)
            noise = None
            if not last and (chain is not None or sampler.eta > 0):
                noise = torch.randn(shape, generator=generator, device=generator.device).to(images)
            if chain is None:
                x, _ = self.schedule.ddim_step(x, t, t_prev, eps, sampler.eta, noise, clip=self.clip_x0)
            else:   # the chain counts its positions upward from the last step
                x, _ = chain.step(len(steps) - 1 - i, x, eps, var_values, noise, clip=self.clip_x0)
        return x, cal

    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator,
               sampler: DDPMSampler | DDIMSampler | None = None) -> Samples:
        if sampler is None:
            sampler = self.default_sampler
        elif not isinstance(sampler, (DDPMSampler, DDIMSampler)):
            raise TypeError(f"{type(self).__name__} samples with a baselines.medsegdiff DDPMSampler or "
                            f"DDIMSampler, got {sampler!r}")
        out = []
        for _ in range(n):
            x0, cal = self.sample_x0(images, generator, sampler)
            out.append(self.decode_unit(self.output_map(x0, cal)))
        return Samples(torch.stack(out), (sampler.steps,) * n)

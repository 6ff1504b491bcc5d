"""MedSegDiff's step rules, values ``sample`` takes (``benchmark/methods/interface.py``, Sampler): frozen
dataclasses with ``steps`` and ``adaptive``, so ``dataclasses.replace(sampler, steps=k)`` makes a variant."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLERS = ("ddpm", "ddim")


def spaced_timesteps(steps: int, num_timesteps: int) -> list[int]:
    """``steps`` distinct integer timesteps evenly spaced over [0, T), descending from T - 1 to 0 (one step:
    [T - 1]). For two steps or more these are guided-diffusion's respaced timesteps (``respace.py:39-60``, one
    section); ``steps`` = T is every timestep."""
    if steps > num_timesteps:
        raise ValueError(f"{steps} sampling steps exceed the {num_timesteps} diffusion timesteps")
    return [int(v) for v in np.linspace(num_timesteps - 1, 0, steps).round()]


@dataclass(frozen=True)
class DDPMSampler:
    """Ancestral DDPM sampling, the official sampler (``p_sample_loop_known``, gaussian_diffusion.py:505-596): from
    pure noise, one network evaluation and one draw of N(mean, variance) per step, the variance the model's
    (learned range, or fixed-large beta without a learned variance). steps = T: the official 1000-step chain;
    fewer: the chain respaced over ``spaced_timesteps`` (guided-diffusion's ``timestep_respacing``)."""
    steps: int = 1000
    adaptive = False   # the evaluations are always ``steps``
    name = "ddpm"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def timesteps(self, num_timesteps: int) -> list[int]:
        return spaced_timesteps(self.steps, num_timesteps)


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM (Song et al. 2021) over ``spaced_timesteps``: eta 0 deterministic (one answer per start noise),
    eta 1 ancestral with the posterior (fixed-small) variance."""
    steps: int = 1000
    eta: float = 0.0
    adaptive = False
    name = "ddim"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")

    def timesteps(self, num_timesteps: int) -> list[int]:
        return spaced_timesteps(self.steps, num_timesteps)

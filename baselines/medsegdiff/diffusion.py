"""Gaussian diffusion on masks as guided-diffusion defines it (the base of the official MedSegDiff code,
github.com/KidsWithTokens/MedSegDiff, ``guided_diffusion/gaussian_diffusion.py``, "gd" below).

``NoiseSchedule``: the T-step forward process and the DDIM update. ``Chain``: the reverse (ancestral) chain over
a subset of the T timesteps, guided-diffusion's respacing (``respace.py:72-85``); over all T it is the official
chain. Its ``step`` is the official ``p_sample`` (gd:417-456) and its ``vb_bits`` the variational-bound term the
official training adds when the variance is learned (gd:1005-1026, gd:940-971, ``losses.py:12-77``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

SCHEDULES = ("linear", "cosine")


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """guided-diffusion's named schedules (gd:36-59), float64 ``(T,)``.

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


def _at(values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for index int64 ``(B,)``, in ``like``'s dtype, shaped to broadcast over ``like``
    ``(B, ...)``."""
    return values.to(index.device)[index].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


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

    def chain(self, timesteps) -> Chain:
        """The reverse chain over ``timesteps`` (distinct, in [0, T)); all T of them: the full chain."""
        return Chain(self, timesteps)


class Chain:
    """The ancestral reverse chain over kept timesteps t_0 < t_1 < ... < t_{k-1} of a ``NoiseSchedule``.

    Step i goes from x at t_i to t_{i-1} (i = 0: to x0), with the chain's own beta_i = 1 - abar(t_i) / abar(t_{i-1})
    (abar(t_{-1}) = 1), as guided-diffusion's respacing builds it (respace.py:77-84); the kept timesteps are what
    the network is told (respace.py:121-130). Every index ``i`` below is an int64 ``(B,)`` of chain positions.
    Float64 attributes ``(k,)``: the posterior q(x_{i-1} | x_i, x0) = N(coef_x0 x0 + coef_xt x_i, posterior_variance)
    (gd:169-185) and the log-variances of the two fixed choices, each with its first entry replaced by the
    second's value, as gd:175-177 and gd:295-298 do (a chain of one step keeps log beta_0 there).
    """

    def __init__(self, schedule: NoiseSchedule, timesteps):
        ts = sorted(int(t) for t in timesteps)
        if not ts or len(set(ts)) != len(ts) or ts[0] < 0 or ts[-1] >= schedule.num_timesteps:
            raise ValueError(f"a chain needs distinct timesteps in [0, {schedule.num_timesteps}), got {timesteps}")
        self.timesteps = torch.tensor(ts, dtype=torch.long)
        abar = schedule.alphas_cumprod[self.timesteps]
        abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        self.abar, self.betas = abar, 1.0 - abar / abar_prev
        self.posterior_variance = self.betas * (1 - abar_prev) / (1 - abar)
        self.coef_x0 = self.betas * abar_prev.sqrt() / (1 - abar)
        self.coef_xt = (1 - abar_prev) * (1 - self.betas).sqrt() / (1 - abar)
        first = self.posterior_variance[1:2] if len(ts) > 1 else self.betas[:1]
        self.log_variance_small = torch.cat([first, self.posterior_variance[1:]]).log()   # gd:175-177
        self.log_variance_large = torch.cat([first, self.betas[1:]]).log()                # gd:295-298

    def __len__(self) -> int:
        return len(self.timesteps)

    def x0_from_eps(self, i: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) at chain position i (gd:345-350)."""
        a = _at(self.abar, i, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def posterior_mean(self, i: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """The mean of q(x_{i-1} | x_i, x0) (gd:221-230)."""
        return _at(self.coef_x0, i, x_t) * x0 + _at(self.coef_xt, i, x_t) * x_t

    def log_variance(self, i: torch.Tensor, like: torch.Tensor, var_values: torch.Tensor | None) -> torch.Tensor:
        """The reverse step's log-variance: learned range (gd:282-290: v in [-1, 1] interpolates the log-variance
        from the posterior's, v = -1, to beta's, v = 1; ``var_values`` ``(B, ...)`` the network's v) or, with
        None, fixed-large (beta, gd:295-298), which the official code selects when the variance is not learned."""
        if var_values is None:
            return _at(self.log_variance_large, i, like).expand_as(like)
        frac = (var_values + 1) / 2
        return frac * _at(self.betas.log(), i, like) + (1 - frac) * _at(self.log_variance_small, i, like)

    def p_mean_log_variance(self, i: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor,
                            var_values: torch.Tensor | None, clip: bool) -> tuple[torch.Tensor, ...]:
        """p(x_{i-1} | x_i) from the predicted noise (gd:244-341): (mean, log-variance, x0 prediction), each like
        x_t; the x0 prediction is clipped to [-1, 1] with ``clip`` before the mean is formed."""
        x0 = self.x0_from_eps(i, x_t, eps)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        return self.posterior_mean(i, x0, x_t), self.log_variance(i, x_t, var_values), x0

    def step(self, i: int, x_t: torch.Tensor, eps: torch.Tensor, var_values: torch.Tensor | None,
             noise: torch.Tensor | None, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step from chain position ``i`` (gd:442-454): (x_{i-1} = mean + exp(log-variance / 2) noise,
        x0 prediction); at i = 0 no noise is added and x_{-1} is the mean, the (clipped) x0 prediction itself."""
        index = torch.full((x_t.shape[0],), i, dtype=torch.long, device=x_t.device)
        mean, log_var, x0 = self.p_mean_log_variance(index, x_t, eps, var_values, clip)
        if i == 0:
            return mean, x0
        if noise is None:
            raise ValueError("an ancestral step above the last needs noise")
        return mean + (0.5 * log_var).exp() * noise, x0

    def vb_bits(self, i: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor,
                var_values: torch.Tensor) -> torch.Tensor:
        """The variational-bound term of the learned variance, in bits per pixel, ``(B,)`` (gd:940-971): KL of the
        true posterior to p(x_{i-1} | x_i) at i > 0, at i = 0 the negative log-likelihood of x0 under p
        discretised to 255 bins of [-1, 1]; the mean unclipped and formed from ``eps`` as given (the caller
        detaches it, gd:1013-1015, so that the term trains the variance only)."""
        true_mean = self.posterior_mean(i, x0, x_t)
        true_log_var = _at(self.log_variance_small, i, x_t)
        mean, log_var, _ = self.p_mean_log_variance(i, x_t, eps, var_values, clip=False)
        kl = 0.5 * (-1.0 + log_var - true_log_var + (true_log_var - log_var).exp()
                    + (true_mean - mean) ** 2 * (-log_var).exp())
        nll = -_discretised_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
        per_pixel = torch.where((i == 0).reshape(-1, *([1] * (x0.dim() - 1))), nll, kl)
        return per_pixel.flatten(1).mean(dim=1) / math.log(2.0)


def _discretised_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per element, in nats, for N(mean, exp(log_scale)^2) discretised to bins of width 2/255 in [-1, 1],
    the end bins open (losses.py:50-77, with its tanh approximation of the normal CDF, losses.py:42-47)."""
    def cdf(v):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))

    inv_std = (-log_scale).exp()
    upper, lower = cdf(inv_std * (x - mean + 1 / 255)), cdf(inv_std * (x - mean - 1 / 255))
    log_upper = upper.clamp(min=1e-12).log()
    log_one_minus_lower = (1.0 - lower).clamp(min=1e-12).log()
    log_delta = (upper - lower).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_upper, torch.where(x > 0.999, log_one_minus_lower, log_delta))

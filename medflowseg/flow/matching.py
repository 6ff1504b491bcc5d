"""A flow-matching method: the one training draw and the one sampling loop of every flow method in the suite.

MedFlowSeg, ``flowseg-plain``, FlowSDF and ATFM subclass :class:`FlowMatchingMethod` and differ only by
its hooks:

- ``condition(images, in_loss)``: what the velocity network reads besides x_t and t, computed once per
  batch (MedFlowSeg's Condition Network; the images themselves by default; ATFM adds its frozen prior).
  ``condition_each_draw`` recomputes it for every trajectory instead (FlowSDF's image encoder, whose cost
  the complexity records count per draw);
- ``target(labels)``: the label encoded as the flow's end point x1 (one-hot, signed distances, a mask);
- ``start(cond, shape, generator, like)``: the start x0; N(0, I) by default, ATFM's a draw of its prior;
- ``velocity(x_t, t, cond)``: one network evaluation;
- ``read_out(x1)``: the end state back to int64 labels;
- ``restarts``: Algorithm 2 of FlowSDF, T solves from t = k / T, each restarted from fresh start noise mixed
  with the last end state (1: plain ODE sampling);
- ``draws``: trajectories averaged, before the read-out, into one returned sample (FlowSDF's MMSE; 1: none);
- ``path``: the probability path (``LinearPath``, its ``sigma_min``).

The step rule is a value: ``sample(..., sampler)`` integrates with the ``ODESolver`` passed in, or with the
method's ``default_sampler`` (its configuration); nothing on the model changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medflowseg.flow.path import LinearPath
from medflowseg.flow.solver import ODESolver
from medflowseg.sampling import Samples


@dataclass(frozen=True)
class FlowStep:
    """One training draw: a point on the path and the network's velocity there.

    Attributes:
        x1: ``(B, S, H, W)`` the encoded label; t: ``(B,)`` the times; x_t: ``(B, S, H, W)`` the path point;
        u: ``(B, S, H, W)`` the target velocity; velocity: ``(B, S, H, W)`` the network's prediction;
        cond: the method's conditioning of the batch (``condition(images, in_loss=True)``).
    """
    x1: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    u: torch.Tensor
    velocity: torch.Tensor
    cond: Any


class FlowMatchingMethod(nn.Module, ABC):
    """Base of the flow methods: the hooks of the module docstring, ``flow_step`` for ``loss`` and ``sample``.

    Args:
        state_channels: S, the channels of the flow's state (K for one-hot labels, K - 1 for FlowSDF's SDFs).
        sampler: the ``default_sampler``.
        path: the probability path.
    """
    restarts: int = 1
    draws: int = 1
    condition_each_draw: bool = False

    def __init__(self, state_channels: int, sampler: ODESolver, path: LinearPath = LinearPath()):
        super().__init__()
        self.state_channels, self.path, self._default_sampler = state_channels, path, sampler

    @property
    def default_sampler(self) -> ODESolver:
        """The ODE solver ``sample`` uses when it is passed none (the method's configuration)."""
        return self._default_sampler

    # ---- hooks ------------------------------------------------------------------------------------------------
    def condition(self, images: torch.Tensor, in_loss: bool) -> Any:
        """images ``(B, C, H, W)`` -> what ``velocity`` and ``start`` read; the images by default."""
        return images

    @abstractmethod
    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, H, W)`` -> x1 float ``(B, S, H, W)``."""

    def start(self, cond: Any, shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        """x0 ``shape`` = ``(B, S, H, W)``: standard normal noise from ``generator``, as ``like``'s dtype and device."""
        return torch.randn(shape, generator=generator, device=generator.device).to(like)

    @abstractmethod
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """x_t ``(B, S, H, W)``, t ``(B,)`` -> ``(B, S, H, W)``: one network evaluation."""

    @abstractmethod
    def read_out(self, x1: torch.Tensor) -> torch.Tensor:
        """``(B, S, H, W)`` end state -> int64 labels ``(B, H, W)``."""

    # ---- training ---------------------------------------------------------------------------------------------
    def flow_step(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> FlowStep:
        """The training draw: x0 from ``start``, then t ~ U[0, 1) per image, both from ``generator``."""
        cond = self.condition(images, in_loss=True)
        x1 = self.target(labels)
        x0 = self.start(cond, tuple(x1.shape), generator, x1)
        x1 = x1.to(x0)
        t = torch.rand(x1.shape[0], generator=generator, device=generator.device).to(x0)
        p = self.path.sample(x0, x1, t)
        return FlowStep(x1=x1, t=t, x_t=p.x_t, u=p.u, velocity=self.velocity(p.x_t, t, cond), cond=cond)

    # ---- sampling ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator,
               sampler: ODESolver | None = None) -> Samples:
        """``n`` samples per image: images ``(B, C, H, W)`` -> ``Samples`` (labels ``(n, B, H, W)``, NFE of
        each). Per sample, in order: each draw's start noise, then its solves."""
        if sampler is None:
            sampler = self.default_sampler
        elif not isinstance(sampler, ODESolver):
            raise TypeError(f"{type(self).__name__} samples with a medflowseg.flow.ODESolver, got {sampler!r}")
        b, _, h, w = images.shape
        shape = (b, self.state_channels, h, w)
        cond = None if self.condition_each_draw else self.condition(images, in_loss=False)
        labels, nfe = [], []
        for _ in range(n):
            ends, count = [], 0
            for _ in range(self.draws):
                c = self.condition(images, in_loss=False) if self.condition_each_draw else cond
                x1, k = self._trajectory(c, shape, generator, sampler, images)
                ends.append(x1)
                count += k
            labels.append(self.read_out(ends[0] if self.draws == 1 else torch.stack(ends).mean(dim=0)))
            nfe.append(count)
        return Samples(torch.stack(labels), tuple(nfe))

    def _trajectory(self, cond: Any, shape: tuple[int, ...], generator: torch.Generator, sampler: ODESolver,
                    like: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One end state ``shape`` from a fresh start, with ``restarts`` solves; and its NFE."""
        b = shape[0]
        x, nfe = self.start(cond, shape, generator, like), 0
        for k in range(self.restarts):
            t0 = k / self.restarts
            steps = max(1, round((1 - t0) * sampler.steps))   # step size 1 / steps from t0 to 1
            res = sampler.solve(lambda t, x: self.velocity(x, t.expand(b), cond), x, t0=t0, steps=steps)
            nfe += res.nfe
            if k + 1 < self.restarts:
                t_next = (k + 1) / self.restarts
                x = t_next * res.x1 + (1 - t_next) * self.start(cond, shape, generator, like)
            else:
                x = res.x1
        return x, nfe

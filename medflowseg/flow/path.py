"""The straight-line (rectified-flow) probability path of MedFlowSeg, Eq. (1).

x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) at t = 0 and the label x1 at t = 1; the
conditional velocity is the constant u = x1 - x0. With ``sigma_min`` > 0 it is Lipman et
al.'s optimal-transport path, as FlowSDF trains it: x_t = t x1 + (1 - (1 - sigma_min) t) x0,
u = x1 - (1 - sigma_min) x0 (MedFlowSeg: sigma_min = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PathSample:
    """A point on the path.

    Attributes:
        x_t: ``(B, K, H, W)`` the interpolated state.
        u: ``(B, K, H, W)`` the target velocity d x_t / dt.
        t: ``(B,)`` the times.
    """
    x_t: torch.Tensor
    u: torch.Tensor
    t: torch.Tensor


@dataclass(frozen=True)
class LinearPath:
    sigma_min: float = 0.0   # the path's width at t = 1

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """Args: x0, x1 ``(B, ...)``; t ``(B,)`` in [0, 1]."""
        tb = t.view(-1, *([1] * (x0.dim() - 1)))
        keep = 1 - self.sigma_min
        return PathSample(x_t=tb * x1 + (1 - keep * tb) * x0, u=x1 - keep * x0, t=t)

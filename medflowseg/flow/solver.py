"""Integrate a learned velocity field from t = 0 to t = 1 with torchdiffeq.

The integration (here) is apart from the step rule (torchdiffeq's ``method``); a solver is a
value, which the caller of ``sample`` may pass in (``medflowseg.flow.matching``). Fixed-step
solvers take ``steps`` uniform steps; ``dopri5`` is adaptive with ``rtol``/``atol``. Every call
counts the network evaluations (NFE) actually made, rather than inferring them from the step count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torchdiffeq import odeint

FIXED_STEP_SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4}  # evaluations per step
ADAPTIVE_SOLVERS = ("dopri5",)


@dataclass
class SolveResult:
    """Attributes: x1 ``(B, ...)`` the state at t = 1; nfe the number of velocity evaluations."""
    x1: torch.Tensor
    nfe: int


@dataclass(frozen=True)
class ODESolver:
    method: str = "euler"
    steps: int = 50          # fixed-step solvers; the paper samples with 50 steps
    rtol: float = 1e-5       # dopri5 only
    atol: float = 1e-5

    def __post_init__(self):
        if self.method not in FIXED_STEP_SOLVERS and self.method not in ADAPTIVE_SOLVERS:
            raise ValueError(f"ODE solver {self.method!r} not in {sorted(FIXED_STEP_SOLVERS) + list(ADAPTIVE_SOLVERS)}")
        if self.method in FIXED_STEP_SOLVERS and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def adaptive(self) -> bool:
        """True for dopri5: its evaluations depend on the data and ``steps`` is not used."""
        return self.method in ADAPTIVE_SOLVERS

    def solve(self, velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
              t0: float = 0.0, steps: int | None = None) -> SolveResult:
        """Args: velocity(t, x) with t a 0-d tensor and x like ``x0``; x0 ``(B, ...)`` at ``t0``;
        ``steps`` overrides the fixed-step count for this call (FlowSDF's restarts from ``t0`` > 0)."""
        nfe = 0

        def counted(t, x):
            nonlocal nfe
            nfe += 1
            return velocity(t, x)

        if self.method in FIXED_STEP_SOLVERS:
            # An explicit uniform grid: torchdiffeq's step_size option rounds 1/steps and can add a step.
            grid = torch.linspace(t0, 1.0, (steps or self.steps) + 1, dtype=x0.dtype, device=x0.device)
            out = odeint(counted, x0, grid, method=self.method)
        else:
            times = torch.tensor([t0, 1.0], dtype=x0.dtype, device=x0.device)
            out = odeint(counted, x0, times, method=self.method, rtol=self.rtol, atol=self.atol)
        return SolveResult(x1=out[-1], nfe=nfe)

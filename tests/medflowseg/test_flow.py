"""Flow-matching parts against analytic results."""
import math

import numpy as np
import pytest
import torch

from medflowseg.flow import (FIXED_STEP_SOLVERS, LinearPath, ODESolver, decode_labels, encode_labels, velocity_l1,
                             velocity_mse)

EXACT = math.exp(math.sin(1.0))  # dx/dt = cos(t) x, x(0) = 1  =>  x(1) = exp(sin 1)


def _error(method: str, steps: int) -> float:
    x0 = torch.ones(4, dtype=torch.float64)
    res = ODESolver(method, steps).solve(lambda t, x: torch.cos(t) * x, x0)
    return abs(float(res.x1[0]) - EXACT)


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_solvers_converge_at_their_order(method, order):
    steps = [4, 8, 16, 32]
    errors = [_error(method, s) for s in steps]
    slopes = -np.diff(np.log(errors)) / np.log(2)  # error ~ h^p  =>  log2 ratio ~ p
    assert np.all(np.diff(errors) < 0)
    assert abs(slopes[-1] - order) < 0.25, (method, slopes)


@pytest.mark.parametrize("method", sorted(FIXED_STEP_SOLVERS))
@pytest.mark.parametrize("steps", [1, 3, 7, 50])
def test_nfe_is_counted_exactly(method, steps):
    res = ODESolver(method, steps).solve(lambda t, x: -x, torch.ones(2))
    assert res.nfe == steps * FIXED_STEP_SOLVERS[method]


def test_dopri5_is_adaptive_and_accurate():
    loose = ODESolver("dopri5", rtol=1e-3, atol=1e-3).solve(lambda t, x: torch.cos(t) * x, torch.ones(1, dtype=torch.float64))
    tight = ODESolver("dopri5", rtol=1e-9, atol=1e-9).solve(lambda t, x: torch.cos(t) * x, torch.ones(1, dtype=torch.float64))
    assert abs(float(tight.x1) - EXACT) < 1e-7
    assert tight.nfe > loose.nfe


def test_straight_path_is_integrated_exactly_by_one_euler_step():
    """The conditional field of the linear path is constant, so Euler with one step is exact."""
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    res = ODESolver("euler", 1).solve(lambda t, x: x1 - x0, x0)
    torch.testing.assert_close(res.x1, x1)


def test_linear_path_endpoints_and_velocity():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(3, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g)
    path = LinearPath()
    torch.testing.assert_close(path.sample(x0, x1, torch.zeros(3)).x_t, x0)
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(3)).x_t, x1)
    t = torch.tensor([0.25, 0.5, 0.9])
    p = path.sample(x0, x1, t)
    torch.testing.assert_close(p.x_t[1], 0.5 * (x0[1] + x1[1]))
    torch.testing.assert_close(p.u, x1 - x0)
    eps = 1e-3  # u is the time derivative of x_t
    dp = path.sample(x0, x1, t + eps)
    torch.testing.assert_close((dp.x_t - p.x_t) / eps, p.u, atol=1e-3, rtol=1e-3)


def test_velocity_loss_is_l1():
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 1.0]])
    assert float(velocity_l1(a, b)) == pytest.approx(2.0)  # (1 + 3) / 2, not the MSE 5
    assert float(velocity_mse(a, b)) == pytest.approx(5.0)  # (1 + 9) / 2


@pytest.mark.parametrize("scale,lo", [("pm1", -1.0), ("01", 0.0)])
def test_label_encoding_round_trips(scale, lo):
    labels = torch.randint(0, 4, (2, 6, 6), generator=torch.Generator().manual_seed(2))
    x1 = encode_labels(labels, 4, scale)
    assert x1.shape == (2, 4, 6, 6)
    assert set(x1.unique().tolist()) == {lo, 1.0}
    assert torch.equal(decode_labels(x1), labels)
    with pytest.raises(ValueError):
        encode_labels(labels, 4, "bad")

"""The shared flow-matching method on a toy with hand-checkable hooks: the order of the random draws in the
training step and in sampling, restarts and averaged draws, NFE per sample, and a sampler passed per call."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medflowseg.flow import FlowMatchingMethod, LinearPath, ODESolver


class Toy(FlowMatchingMethod):
    """One weight; velocity w * sin(10 x) (nonlinear, so dopri5's step count depends on the start)."""

    def __init__(self, sampler: ODESolver = ODESolver("euler", 4), restarts: int = 1, draws: int = 1,
                 each_draw: bool = False):
        super().__init__(2, sampler, LinearPath(0.1))
        self.w = torch.nn.Parameter(torch.tensor(5.0))
        self.restarts, self.draws, self.condition_each_draw = restarts, draws, each_draw
        self.conditions = 0

    def condition(self, images, in_loss):
        self.conditions += 1
        return images.mean()

    def target(self, labels):
        return F.one_hot(labels, 2).permute(0, 3, 1, 2).float()

    def velocity(self, x_t, t, cond):
        return self.w * torch.sin(10 * x_t) + cond

    def read_out(self, x1):
        return x1.argmax(dim=1)


def test_training_step_draws_x0_then_t_and_follows_the_path():
    labels = torch.tensor([[[0, 1], [1, 1]], [[1, 0], [0, 0]]])
    images = torch.ones(2, 1, 2, 2)
    step = Toy().flow_step(images, labels, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 2, 2, 2, generator=g)
    t = torch.rand(2, generator=g)
    x1 = F.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    p = LinearPath(0.1).sample(x0, x1, t)
    assert torch.equal(step.t, t) and torch.equal(step.x1, x1)
    assert torch.equal(step.x_t, p.x_t) and torch.equal(step.u, p.u)
    assert torch.equal(step.velocity, 5.0 * torch.sin(10 * p.x_t) + 1.0)


def test_sampling_draws_each_start_then_solves_it():
    m = Toy(ODESolver("euler", 3))
    images = torch.zeros(1, 1, 2, 2)
    out = m.sample(images, 2, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    expected = []
    for _ in range(2):
        x = torch.randn(1, 2, 2, 2, generator=g)
        expected.append(ODESolver("euler", 3).solve(lambda t, x: m.velocity(x, t, torch.tensor(0.0)), x).x1.argmax(1))
    assert torch.equal(out.labels, torch.stack(expected)) and out.nfe == (3, 3)
    assert m.conditions == 1, "the conditioning is computed once per batch"


def test_restarts_mix_fresh_noise_and_draws_are_averaged():
    m = Toy(ODESolver("euler", 4), restarts=2, draws=3, each_draw=True)
    images = torch.zeros(1, 1, 2, 2)
    out = m.sample(images, 2, torch.Generator().manual_seed(0))
    assert out.nfe == (3 * (4 + 2),) * 2 and m.conditions == 2 * 3

    g, solver = torch.Generator().manual_seed(0), ODESolver("euler", 4)
    v = lambda t, x: m.velocity(x, t, torch.tensor(0.0))  # noqa: E731
    labels = []
    for _ in range(2):
        ends = []
        for _ in range(3):
            x = solver.solve(v, torch.randn(1, 2, 2, 2, generator=g), t0=0.0, steps=4).x1
            x = 0.5 * x + 0.5 * torch.randn(1, 2, 2, 2, generator=g)
            ends.append(solver.solve(v, x, t0=0.5, steps=2).x1)
        labels.append(torch.stack(ends).mean(dim=0).argmax(1))
    assert torch.equal(out.labels, torch.stack(labels))


def test_dopri5_counts_each_sample_as_run():
    m = Toy(ODESolver("dopri5", rtol=1e-3, atol=1e-3))
    out = m.sample(torch.zeros(1, 1, 1, 1), 4, torch.Generator().manual_seed(0))
    assert len(set(out.nfe)) > 1, "an adaptive solver's evaluations differ from sample to sample"
    g = torch.Generator().manual_seed(0)
    assert out.nfe[0] == m.sample(torch.zeros(1, 1, 1, 1), 1, g).nfe[0]


def test_a_passed_solver_is_used_for_that_call_only():
    m = Toy(ODESolver("euler", 4))
    images = torch.zeros(1, 1, 2, 2)
    assert m.sample(images, 1, torch.Generator(), ODESolver("midpoint", 3)).nfe == (6,)
    assert m.default_sampler == ODESolver("euler", 4) and m.sample(images, 1, torch.Generator()).nfe == (4,)
    with pytest.raises(TypeError, match="samples with a medflowseg.flow.ODESolver"):
        m.sample(images, 1, torch.Generator(), sampler={"steps": 3})


def test_a_method_without_its_hooks_cannot_be_built():
    class NoReadOut(FlowMatchingMethod):
        def target(self, labels):
            return labels

        def velocity(self, x_t, t, cond):
            return x_t

    with pytest.raises(TypeError, match="read_out"):
        NoReadOut(2, ODESolver())

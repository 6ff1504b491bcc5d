"""The trainer's optimizers and learning-rate schedules: SGD with momentum and weight decay, the poly decay (resumed
with SGD: tests/training/test_resume.py)."""
from __future__ import annotations

import torch

from benchmark.config import TrainConfig
from benchmark.training.trainer import build_optimizer, lr_factor

SGD_POLY = {"optimizer": "sgd", "momentum": 0.9, "schedule": "poly", "poly_power": 0.9}


def test_sgd_steps_as_momentum_sgd_with_l2_weight_decay_by_hand():
    """Two steps: g' = g + wd p; b = g' at the first step, mu b + g' after; p <- p - lr b."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(lr=0.01, weight_decay=1e-4, optimizer="sgd", momentum=0.9)
    optimizer, notes = build_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD) and notes == []
    x = torch.randn(4, 3)
    initial = model.weight.detach().clone()
    expected = [p.detach().clone() for p in model.parameters()]
    buffers = [None] * len(expected)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).square().sum().backward()
        for i, p in enumerate(model.parameters()):
            g = p.grad + 1e-4 * expected[i]
            buffers[i] = g if buffers[i] is None else 0.9 * buffers[i] + g
            expected[i] = expected[i] - 0.01 * buffers[i]
        optimizer.step()
        for p, e in zip(model.parameters(), expected):
            torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-7)
    assert (model.weight.detach() - initial).abs().min() > 1e-4   # the steps moved every weight


def test_poly_decays_as_base_times_one_minus_t_over_t_to_the_power():
    T, base = 50, 0.01
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(steps=T, lr=base, warmup_steps=0, **SGD_POLY)
    optimizer, _ = build_optimizer(model, cfg, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, T))
    lrs = []
    for _ in range(T):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for t in (0, 1, 10, 25, 49):
        assert abs(lrs[t] - base * (1 - t / T) ** 0.9) < 1e-12, t
    assert lrs[-1] > 0 and optimizer.param_groups[0]["lr"] == 0.0   # zero only after the last step


def test_warm_up_then_poly_and_the_constant_schedule_as_before():
    warm = lr_factor(TrainConfig(steps=100, warmup_steps=10, **SGD_POLY), 100)
    assert abs(warm(4) - 0.5 * (1 - 4 / 100) ** 0.9) < 1e-12 and abs(warm(60) - 0.4 ** 0.9) < 1e-12
    constant = lr_factor(TrainConfig(steps=100, warmup_steps=10), 100)
    assert [constant(s) for s in range(30)] == [min(1.0, (s + 1) / 10) for s in range(30)]

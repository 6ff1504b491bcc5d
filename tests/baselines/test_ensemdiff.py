"""EnsemDiff: the 1000-step schedule and the learned-range ancestral step against closed forms, the image
concatenated to the noisy mask at every evaluation, the variational bound in the loss, gradients, NFE and the
ensemble's variance map."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from baselines.ensemdiff import EnsemDiff
from baselines.medsegdiff import DDIMSampler, DDPMSampler
from benchmark.complexity import method_complexity

TINY = {"channels": (8, 16, 16), "num_res_blocks": 1, "attention_levels": (False, True, False), "attention_heads": 1,
        "norm_groups": 4, "steps": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_classes: int = 2, in_channels: int = 4, **kw) -> EnsemDiff:
    """A tiny EnsemDiff with every parameter perturbed (no zero-initialised layer hides the others)."""
    torch.manual_seed(0)
    model = EnsemDiff(in_channels, num_classes, **{**TINY, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_the_paper_configuration_is_ddpm_with_1000_linear_steps_the_learned_variance_and_the_01_mask():
    defaults = {k: v.default for k, v in inspect.signature(EnsemDiff).parameters.items()}
    assert defaults["num_timesteps"] == defaults["steps"] == 1000 and defaults["sampler"] == "ddpm"
    assert defaults["learn_sigma"] is True and defaults["clip_x0"] is True and defaults["label_scale"] == "01"
    assert defaults["channels"] == (128, 128, 256, 256, 512, 512) and defaults["attention_heads"] == 1
    model = EnsemDiff(4, 2, **{**TINY, "steps": 1000})
    assert isinstance(model.default_sampler, DDPMSampler) and model.output_channels == 2
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(model.schedule.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-12)


def test_one_learned_range_step_by_hand():
    """p(x_{t-1} | x_t) at t = 400: the mean from the clipped x0, the log-variance v-interpolated between the
    posterior's (v = -1) and beta's (v = 1), gd:262-276."""
    model = EnsemDiff(4, 2, **TINY)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    t = 400
    x_t, eps = torch.tensor([[1.5, -0.2]], dtype=torch.float64), torch.tensor([[-0.6, 0.3]], dtype=torch.float64)
    v, noise = torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.tensor([[0.2, 1.0]], dtype=torch.float64)
    x_prev, x0 = model.chain.step(t, x_t, eps, v, noise, clip=True)
    x0_hand = np.clip((x_t.numpy() - np.sqrt(1 - abar[t]) * eps.numpy()) / np.sqrt(abar[t]), -1, 1)
    mean = betas[t] * np.sqrt(abar[t - 1]) / (1 - abar[t]) * x0_hand \
        + (1 - abar[t - 1]) * np.sqrt(1 - betas[t]) / (1 - abar[t]) * x_t.numpy()
    posterior = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
    frac = (v.numpy() + 1) / 2
    log_var = frac * np.log(betas[t]) + (1 - frac) * np.log(posterior)
    np.testing.assert_allclose(x0.numpy(), x0_hand, rtol=1e-12)
    np.testing.assert_allclose(x_prev.numpy(), mean + np.exp(0.5 * log_var) * noise.numpy(), rtol=1e-10)


def test_the_network_sees_the_image_channels_then_the_noisy_mask_at_every_evaluation():
    model = _model(num_classes=3, in_channels=2)
    images = torch.randn(1, 2, 16, 16)
    seen = []
    handle = model.unet.conv_in.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        out = model.sample(images, 1, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert out.nfe == (3,) and len(seen) == 3
    for x in seen:
        assert x.shape == (1, 2 + 3, 16, 16)   # C image channels, then the one-hot mask's K
        torch.testing.assert_close(x[:, :2], images, rtol=0, atol=0)
    assert not torch.allclose(seen[0][:, 2:], seen[1][:, 2:])   # the mask channels move along the chain
    x_t, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(model.denoise(x_t, images, t), model.unet(torch.cat([images, x_t], 1), t))


def test_the_loss_adds_the_variational_bound_and_gradients_reach_every_parameter():
    model = _model().train()
    images, labels = torch.randn(2, 4, 16, 16), torch.randint(0, 2, (2, 16, 16))
    loss = model.loss(images, labels, torch.Generator().manual_seed(3))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    # the same draw by hand: the noise MSE plus the bound, whose mean gradient is stopped
    g = torch.Generator().manual_seed(3)
    x0 = model.encode(labels)
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = model.schedule.q_sample(x0, t, noise)
    with torch.no_grad():
        out = model.denoise(x_t, images, t)
        eps, v = out[:, :1], out[:, 1:]
        mse = torch.mean((eps - noise) ** 2)
        vb = model.chain.vb_bits(t, x0, x_t, eps, v).mean()
    assert vb > 0 and loss.item() == pytest.approx((mse + vb).item(), rel=1e-5)


def test_samples_are_reproducible_and_report_their_evaluations():
    model = _model()
    images = torch.randn(2, 4, 16, 16)
    a = model.sample(images, 3, torch.Generator().manual_seed(9))
    b = model.sample(images, 3, torch.Generator().manual_seed(9))
    assert a.labels.shape == (3, 2, 16, 16) and a.nfe == (3, 3, 3)
    torch.testing.assert_close(a.labels, b.labels)
    assert model.sample(images, 1, torch.Generator(), DDIMSampler(steps=2)).nfe == (2,)


def test_the_uncertainty_map_is_the_per_pixel_variance_of_the_soft_ensemble():
    model = _model()
    images = torch.randn(1, 4, 16, 16)
    var = model.uncertainty(images, 4, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        soft = [model.sample_x0(images, g, model.default_sampler).clamp(0, 1)[:, 0] for _ in range(4)]
    stack = torch.stack(soft)
    by_hand = ((stack - stack.mean(0)) ** 2).mean(0)
    assert var.shape == (1, 16, 16)
    torch.testing.assert_close(var, by_hand)


def test_the_complexity_stage_counts_it():
    c = method_complexity(_model(), 4, 16, samples=5)
    assert c.evaluations_per_sample == 3 and c.samples == 5 and c.macs_per_evaluation > 0
    assert c.macs_protocol == pytest.approx(c.macs_fixed + 5 * (c.macs_per_sample + 3 * c.macs_per_evaluation))

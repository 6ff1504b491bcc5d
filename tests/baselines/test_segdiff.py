"""SegDiff: its 100-step schedule and the fixed-large ancestral step against closed forms, the F + G stem (the RRDB
features added to the noisy mask's first convolution), the multiple-generation averaging, NFE, gradients and the
complexity count."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from baselines.medsegdiff import DDIMSampler, DDPMSampler
from baselines.flowsdf import RRDBEncoder
from baselines.segdiff import SegDiff, SegDiffStem
from benchmark.complexity import count_macs, method_complexity

TINY = {"channels": (8, 16, 16), "num_res_blocks": 1, "attention_levels": (False, True, False), "attention_heads": 2,
        "norm_groups": 4, "rrdb_blocks": 1, "rrdb_features": 8, "rrdb_growth": 4, "num_timesteps": 100, "steps": 3,
        "mmse_samples": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_classes: int = 2, in_channels: int = 3, **kw) -> SegDiff:
    """A tiny SegDiff whose parameters are all perturbed, so that no zero-initialised layer (the UNet's output
    convolution) hides the others."""
    torch.manual_seed(0)
    model = SegDiff(in_channels, num_classes, **{**TINY, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _betas(T: int) -> np.ndarray:
    """The linear schedule by hand: 1000/T x (1e-4 ... 0.02), T points."""
    return np.array([1000 / T * (1e-4 + k * (0.02 - 1e-4) / (T - 1)) for k in range(T)])


def test_the_paper_schedule_is_100_linear_steps_from_1e3_to_0_2_and_its_posterior_is_the_closed_form():
    model = SegDiff(3, 2, **{**TINY, "steps": 100})
    betas = _betas(100)
    assert model.schedule.num_timesteps == 100
    assert model.schedule.betas[0].item() == pytest.approx(1e-3)
    assert model.schedule.betas[-1].item() == pytest.approx(0.2)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(model.schedule.alphas_cumprod.numpy(), abar, rtol=1e-12)
    t = 37   # posterior q(x_{t-1} | x_t, x0) at a hand-picked t, on the full chain
    x0, xt = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.3], dtype=torch.float64)
    index = torch.tensor([t])
    mean = betas[t] * np.sqrt(abar[t - 1]) / (1 - abar[t]) * 0.7 \
        + (1 - abar[t - 1]) * np.sqrt(1 - betas[t]) / (1 - abar[t]) * -0.3
    assert model.chain.posterior_mean(index, x0, xt).item() == pytest.approx(mean, rel=1e-12)
    assert model.chain.posterior_variance[t].item() == pytest.approx(betas[t] * (1 - abar[t - 1]) / (1 - abar[t]),
                                                                   rel=1e-12)


def test_one_ancestral_step_is_the_posterior_mean_of_the_unclipped_x0_plus_sqrt_beta_noise():
    """Fixed-large variance (the official sigma_small=False) and clip_x0=False, by hand at t = 50."""
    model = SegDiff(3, 2, **TINY)
    assert not model.learn_sigma and not model.clip_x0 and model.label_scale == "pm1"
    betas = _betas(100)
    abar = np.cumprod(1 - betas)
    t = 50
    x_t, eps, noise = torch.tensor([[0.9, -2.5]]), torch.tensor([[0.4, -0.1]]), torch.tensor([[1.0, -0.5]])
    x_prev, x0 = model.chain.step(t, x_t.double(), eps.double(), None, noise.double(), clip=model.clip_x0)
    x0_hand = (x_t.numpy() - np.sqrt(1 - abar[t]) * eps.numpy()) / np.sqrt(abar[t])
    assert np.abs(x0_hand).max() > 1   # unclipped: the official SegDiff samples with clip_denoised False
    mean = betas[t] * np.sqrt(abar[t - 1]) / (1 - abar[t]) * x0_hand \
        + (1 - abar[t - 1]) * np.sqrt(1 - betas[t]) / (1 - abar[t]) * x_t.numpy()
    np.testing.assert_allclose(x0.numpy(), x0_hand, rtol=1e-12)
    np.testing.assert_allclose(x_prev.numpy(), mean + np.sqrt(betas[t]) * noise.numpy(), rtol=1e-10)


def test_the_stem_adds_the_rrdb_features_of_the_image_to_the_first_convolution_of_the_noisy_mask():
    model = _model()
    stem = model.unet.conv_in
    assert isinstance(stem, SegDiffStem) and isinstance(stem.g, RRDBEncoder)
    x_t, images = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        f, g, out = stem.f(x_t), stem.g(images), stem(torch.cat([x_t, images], dim=1))
    assert f.shape == g.shape == out.shape == (2, 8, 16, 16)
    torch.testing.assert_close(out, f + g, rtol=0, atol=0)


def test_the_image_reaches_the_denoiser_only_through_the_sum():
    model = _model()
    x_t, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 70])
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model.denoise(x_t, a, t), model.denoise(x_t, b, t))
        handle = model.unet.conv_in.g.register_forward_hook(lambda mod, inp, out: torch.zeros_like(out))
        try:
            zeroed_a, zeroed_b = model.denoise(x_t, a, t), model.denoise(x_t, b, t)
            f_only = model.unet.conv_in.f(x_t)
        finally:
            handle.remove()
        torch.testing.assert_close(zeroed_a, zeroed_b, rtol=0, atol=0)
        # the same network fed F alone at the stem: what G adds is added there and nowhere else
        stem = model.unet.conv_in
        model.unet.conv_in = _Fixed(f_only)
        try:
            torch.testing.assert_close(model.denoise(x_t, a, t), zeroed_a, rtol=0, atol=0)
        finally:
            model.unet.conv_in = stem


class _Fixed(torch.nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value


def test_gradients_reach_every_parameter():
    model = _model(num_classes=3).train()
    loss = model.loss(torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16)), torch.Generator().manual_seed(1))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_one_returned_sample_averages_mmse_samples_trajectories_and_costs_their_evaluations():
    model = _model()
    images = torch.randn(1, 3, 16, 16)
    calls = []
    handle = model.unet.conv_in.g.register_forward_hook(lambda *a: calls.append(1))   # G runs at each evaluation
    try:
        out = model.sample(images, 2, torch.Generator().manual_seed(5))
    finally:
        handle.remove()
    assert out.labels.shape == (2, 1, 16, 16) and out.nfe == (6, 6) and len(calls) == 12
    # by hand: the same generator's trajectories, each clamped to [0, 1] on (x + 1) / 2, averaged, above 0.5
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        draws = [((model.sample_x0(images, g, model.default_sampler) + 1) / 2).clamp(0, 1) for _ in range(4)]
    first = (torch.stack(draws[:2]).mean(0)[:, 0] > 0.5).long()
    second = (torch.stack(draws[2:]).mean(0)[:, 0] > 0.5).long()
    torch.testing.assert_close(out.labels, torch.stack([first, second]))
    assert model.sample(images, 1, torch.Generator().manual_seed(5), DDIMSampler(steps=2)).nfe == (4,)


def test_the_paper_configuration_is_the_official_ddpm_over_all_100_steps_with_9_averaged_trajectories():
    defaults = {k: v.default for k, v in inspect.signature(SegDiff).parameters.items()}
    assert defaults["num_timesteps"] == defaults["steps"] == 100 and defaults["sampler"] == "ddpm"
    assert defaults["mmse_samples"] == 9 and defaults["label_scale"] == "pm1" and defaults["clip_x0"] is False
    assert defaults["channels"] == (128, 128, 128, 256, 256, 512, 512) and defaults["num_res_blocks"] == 3
    assert isinstance(SegDiff(3, 2, **{**TINY, "sampler": "ddpm"}).default_sampler, DDPMSampler)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        SegDiff(3, 2, **{**TINY, "mmse_samples": 0})
    with pytest.raises(ValueError):
        SegDiff(3, 2, **{**TINY, "attention_levels": (False, True)})
    with pytest.raises(ValueError):
        SegDiff(3, 2, **{**TINY, "sampler": "ddpm", "eta": 0.5})
    with pytest.raises(TypeError):
        _model().sample(torch.zeros(1, 3, 16, 16), 1, torch.Generator(), sampler=object())


def test_the_complexity_stage_counts_one_evaluation_as_one_denoiser_call_rrdb_included():
    model = _model()
    c = method_complexity(model, 3, 16, samples=2)
    assert c.evaluations_per_sample == 2 * 3
    one, _, _ = count_macs(_Denoise(model), (torch.zeros(1, 1, 16, 16), torch.zeros(1, 3, 16, 16),
                                             torch.zeros(1, dtype=torch.long)))
    g, _, _ = count_macs(model.unet.conv_in.g, (torch.zeros(1, 3, 16, 16),))
    assert c.macs_per_evaluation == pytest.approx(one, rel=1e-6) and g > 0
    assert c.params == sum(p.numel() for p in model.parameters())


class _Denoise(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x_t, images, t):
        return self.model.denoise(x_t, images, t)

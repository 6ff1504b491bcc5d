"""MedSegDiff-V1: the noise schedule against hand-computed values, the DDIM update, the FF-Parser, the output
blend, sampling shapes / NFE / reproducibility and the training loss's gradients (the ancestral DDPM sampler and
the learned variance: test_medsegdiff_ddpm.py)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from baselines.medsegdiff import DDIMSampler, FFParser, MedSegDiff, NoiseSchedule

TINY = {"image_size": 16, "channels": (8, 16, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
        "cond_channels": (4, 8, 8), "steps": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_classes: int, **kw) -> MedSegDiff:
    torch.manual_seed(0)
    return MedSegDiff(1, num_classes, **{**TINY, **kw})


# ---- schedule ---------------------------------------------------------------------------------------------------

def test_linear_schedule_is_ddpm_and_alphas_cumprod_is_the_running_product():
    s = NoiseSchedule(1000, "linear")
    betas = s.betas.numpy()
    assert betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15) and betas[-1] == pytest.approx(0.02, abs=1e-15)
    assert betas[500] == pytest.approx(1e-4 + 500 * (0.02 - 1e-4) / 999, rel=1e-12)
    for t in (0, 1, 250, 999):
        by_hand = np.prod([1.0 - (1e-4 + k * (0.02 - 1e-4) / 999) for k in range(t + 1)])
        assert s.alphas_cumprod[t].item() == pytest.approx(by_hand, rel=1e-10)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # DDPM's abar_T


def test_linear_schedule_scales_with_the_number_of_steps_and_cosine_telescopes():
    betas = NoiseSchedule(500, "linear").betas
    assert betas[0].item() == pytest.approx(2e-4) and betas[-1].item() == pytest.approx(0.04)
    cos = NoiseSchedule(1000, "cosine")
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 700):
        assert cos.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)
    with pytest.raises(ValueError):
        NoiseSchedule(1000, "sigmoid")


def test_q_sample_is_the_closed_form_and_has_its_mean_and_std():
    s = NoiseSchedule()
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 400, 999])
    abar = s.alphas_cumprod[t].float().reshape(3, 1, 1, 1)
    assert torch.allclose(s.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 1, 200, 200), 0.7)
    xt = s.q_sample(x0, torch.tensor([300]), torch.randn(x0.shape, generator=g))
    a = s.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=0.01)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - a), rel=0.01)


# ---- DDIM -------------------------------------------------------------------------------------------------------

def test_one_ddim_step_is_the_closed_form_update():
    s = NoiseSchedule()
    torch.manual_seed(1)
    x_t, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t, t_prev = 600, 300
    a, a_prev = s.alphas_cumprod[t].item(), s.alphas_cumprod[t_prev].item()
    x0 = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    x_prev, x0_pred = s.ddim_step(x_t, t, t_prev, eps, eta=0.0)
    assert torch.allclose(x0_pred, x0, atol=1e-5) and torch.allclose(x_prev, expected, atol=1e-5)
    # the last step (to t = -1) returns x0_pred; with eta > 0 noise is added with sigma of Eq. 16
    assert torch.allclose(s.ddim_step(x_t, t, -1, eps)[0], x0, atol=1e-5)
    noise = torch.randn(2, 1, 4, 4)
    sigma = math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
    ancestral = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma ** 2) * eps + sigma * noise
    assert torch.allclose(s.ddim_step(x_t, t, t_prev, eps, eta=1.0, noise=noise)[0], ancestral, atol=1e-5)


def test_ddim_timesteps_are_even_over_the_schedule():
    assert DDIMSampler(steps=1).timesteps(1000) == [999]
    assert DDIMSampler(steps=10).timesteps(1000) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert DDIMSampler(steps=1000).timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        DDIMSampler(steps=1001).timesteps(1000)
    with pytest.raises(ValueError):
        DDIMSampler(steps=0)
    with pytest.raises(ValueError):
        DDIMSampler(eta=-0.1)


def test_model_sampling_with_a_stub_network_follows_the_ddim_chain():
    model = _model(2, clip_x0=False, steps=2)
    eps = torch.randn(1, 1, 16, 16)
    model.evaluate = lambda x_t, images, t, with_cal: (eps, None)
    images = torch.zeros(1, 1, 16, 16)
    x0 = model.sample_x0(images, torch.Generator().manual_seed(5), model.default_sampler)
    x_T = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(5))
    s = model.schedule
    a999, a0 = s.alphas_cumprod[999].item(), s.alphas_cumprod[0].item()
    x0_pred = (x_T - math.sqrt(1 - a999) * eps) / math.sqrt(a999)
    x_0 = math.sqrt(a0) * x0_pred + math.sqrt(1 - a0) * eps  # the step 999 -> 0
    expected = (x_0 - math.sqrt(1 - a0) * eps) / math.sqrt(a0)  # the step 0 -> x0
    assert torch.allclose(x0, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("num_classes, label_scale, steps", [(2, "01", 1), (2, "pm1", 3), (4, "01", 10),
                                                            (4, "pm1", 2)])
def test_ddim_with_the_true_noise_recovers_the_mask_exactly(num_classes, label_scale, steps):
    model = _model(num_classes, label_scale=label_scale, steps=steps).eval()
    labels = torch.randint(0, num_classes, (2, 16, 16), generator=torch.Generator().manual_seed(3))
    x0 = model.encode(labels)
    s = model.schedule

    def oracle(x_t, images, t, with_cal):  # the noise that x_t carries relative to the true x0
        a = s.abar(t, x_t)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt(), None

    model.evaluate = oracle
    sample = model.sample(torch.zeros(2, 1, 16, 16), 2, torch.Generator().manual_seed(0))
    assert sample.nfe == (steps, steps) and torch.equal(sample.labels, labels.expand(2, -1, -1, -1))
    x0_sampled = model.sample_x0(torch.zeros(2, 1, 16, 16), torch.Generator(), model.default_sampler)
    assert torch.allclose(x0_sampled, x0, atol=1e-4)


# ---- FF-Parser --------------------------------------------------------------------------------------------------

def test_ff_parser_with_unit_weights_is_the_identity_at_any_size():
    parser = FFParser(3, 8, 8, init="ones")
    assert parser.weight.shape == (3, 8, 5, 2)
    for size in ((8, 8), (16, 16), (6, 10)):
        x = torch.randn(2, 3, *size)
        assert torch.allclose(parser(x), x, atol=1e-5)
    official = FFParser(3, 8, 8)  # N(0, 0.02^2): a random filter, not the identity
    assert official.weight.abs().max() < 0.2 and not torch.allclose(official(x), x, atol=1e-2)


def test_ff_parser_filters_in_frequency_and_trains():
    parser = FFParser(1, 8, 8, init="ones")
    with torch.no_grad():  # keep only the DC coefficient: the output is the channel mean everywhere
        parser.weight.zero_()
        parser.weight[0, 0, 0, 0] = 1.0
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(parser(x), x.mean().expand_as(x), atol=1e-5)
    parser = FFParser(2, 8, 8)
    loss = ((parser(torch.randn(2, 2, 8, 8)) - torch.randn(2, 2, 8, 8)) ** 2).mean()
    loss.backward()
    assert parser.weight.grad is not None and parser.weight.grad.abs().sum() > 0


# ---- sample() and loss() ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("calibrated", [False, True])
def test_sample_shapes_nfe_and_reproducibility(num_classes, calibrated):
    model = _model(num_classes, steps=4, calibrated_output=calibrated).eval()
    images = torch.randn(2, 1, 16, 16)
    drawn = model.sample(images, 3, torch.Generator().manual_seed(7))
    out = drawn.labels
    assert out.shape == (3, 2, 16, 16) and out.dtype == torch.int64
    assert 0 <= out.min() and out.max() < num_classes
    assert drawn.nfe == (4, 4, 4)
    assert torch.equal(out, model.sample(images, 3, torch.Generator().manual_seed(7)).labels)
    a = model.sample_x0(images, torch.Generator().manual_seed(7), model.default_sampler)
    b = model.sample_x0(images, torch.Generator().manual_seed(8), model.default_sampler)
    assert not torch.allclose(a, b)
    one = dataclasses.replace(model.default_sampler, steps=1)  # what the complexity counter passes
    assert model.sample(images, 1, torch.Generator().manual_seed(0), one).nfe == (1,)
    assert model.default_sampler == DDIMSampler(4)


def test_sample_refuses_an_ode_solver():
    from medflowseg.flow import ODESolver

    with pytest.raises(TypeError, match="DDPMSampler or DDIMSampler"):
        _model(2).sample(torch.zeros(1, 1, 16, 16), 1, torch.Generator(), ODESolver("euler", 2))


def test_ancestral_sampling_draws_from_the_generator_only():
    model = _model(2, steps=3, eta=1.0).eval()
    images = torch.randn(1, 1, 16, 16)
    torch.manual_seed(0)
    a = model.sample_x0(images, torch.Generator().manual_seed(1), model.default_sampler)
    torch.manual_seed(1)  # the global RNG must not matter
    assert torch.equal(a, model.sample_x0(images, torch.Generator().manual_seed(1), model.default_sampler))


def test_calibrated_output_is_the_official_blend():
    """gaussian_diffusion.py:590-593 with utils.py:67-69: the hard mask is the unclamped sample > 0, and the blend
    takes the sample as it is (negative values pull the map down) before clamping to [0, 1]."""
    model = _model(2)
    cal = torch.full((3, 1, 2, 2), 0.6)
    x0 = torch.tensor([[1.0, 1.0, -0.4, -1.0], [0.2, 0.2, 0.2, 0.2], [-1.0, -1.0, -1.0, -1.0]]).reshape(3, 1, 2, 2)
    # image 0: hard mask 1100 vs 0.6: Dice 2*1.2/(2+2.4) = 0.545 < 0.65 -> cal + 0.25 s = 0.85, 0.85, 0.5, 0.35
    # image 1: 0.2 > 0, so the hard mask is full: Dice 2*2.4/(4+2.4) = 0.75 -> (cal + s) / 2 = 0.4
    #          (a 0.5 threshold on the clamped sample would call it empty: Dice 0 -> cal + 0.05 = 0.65)
    # image 2: empty hard mask, Dice 0 -> cal + 0.25 s = 0.35: the sample at -1 lowers the map
    out = model.calibrate(x0, cal)
    assert torch.allclose(out[0].flatten(), torch.tensor([0.85, 0.85, 0.5, 0.35]))
    assert torch.allclose(out[1].flatten(), torch.full((4,), 0.4))
    assert torch.allclose(out[2].flatten(), torch.full((4,), 0.35))
    assert model.decode_unit(out).flatten().tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    high = model.calibrate(torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.9))  # Dice 0.947 -> mean
    assert torch.allclose(high, torch.full((1, 1, 2, 2), 0.95))
    clamped = model.calibrate(torch.full((1, 1, 2, 2), -1.0), torch.full((1, 1, 2, 2), 0.1))  # 0.1 - 0.25 -> 0
    assert torch.equal(clamped, torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_loss_is_finite_and_trains_both_branches(num_classes):
    images = torch.randn(2, 1, 16, 16)
    labels = torch.randint(0, num_classes, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    for weight in (10.0, 0.0):  # without the auxiliary loss, the condition UNet learns through the noise MSE
        model = _model(num_classes, cal_loss_weight=weight)
        loss = model.loss(images, labels, torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss)
        assert model.unet.stem.weight.grad.abs().sum() > 0
        assert model.cond.stem.weight.grad.abs().sum() > 0
        assert all(d.ff_parser.weight.grad.abs().sum() > 0 for d in model.dce)
        assert (model.cal_head[-1].weight.grad is not None) == (weight > 0)


def test_loss_draws_from_the_generator_only():
    model = _model(2)
    images, labels = torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16))
    torch.manual_seed(0)
    a = model.loss(images, labels, torch.Generator().manual_seed(4))
    torch.manual_seed(1)
    assert torch.equal(a, model.loss(images, labels, torch.Generator().manual_seed(4)))


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError):
        MedSegDiff(1, 2, **{**TINY, "channels": (8, 16), "cond_channels": (4, 8)})  # no fusion scale
    with pytest.raises(ValueError):
        MedSegDiff(1, 2, **{**TINY, "cond_channels": (4, 8)})
    with pytest.raises(ValueError):
        MedSegDiff(1, 2, **{**TINY, "label_scale": "logits"})
    with pytest.raises(ValueError):
        MedSegDiff(1, 2, **{**TINY, "steps": 0})

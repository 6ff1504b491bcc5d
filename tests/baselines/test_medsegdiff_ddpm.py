"""MedSegDiff's official sampler and variance: one ancestral step against the closed-form posterior, the respaced
chain, the learned-range variance and its variational bound on hand values, the NFE per sample, and the sampler
recorded with the predictions."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from baselines.medsegdiff import DDIMSampler, DDPMSampler, MedSegDiff, NoiseSchedule
from benchmark.complexity import method_complexity
from benchmark.inference import sampler_label
from benchmark.methods import build_method
from benchmark.records import PredictionRecord, Status, read_record, write_record

TINY = {"image_size": 16, "channels": (8, 16, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
        "cond_channels": (4, 8, 8), "sampler": "ddpm", "steps": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_classes: int = 2, **kw) -> MedSegDiff:
    torch.manual_seed(0)
    return MedSegDiff(1, num_classes, **{**TINY, **kw})


def _linear(t: int) -> tuple[float, float, float]:
    """beta_t, abar_t, abar_{t-1} of DDPM's 1000-step linear schedule, by hand in float64."""
    betas = [1e-4 + k * (0.02 - 1e-4) / 999 for k in range(t + 1)]
    abar_prev = float(np.prod([1 - b for b in betas[:-1]]))
    return betas[-1], abar_prev * (1 - betas[-1]), abar_prev


# ---- one ancestral step -----------------------------------------------------------------------------------------

def test_one_ancestral_step_is_the_closed_form_posterior():
    chain = NoiseSchedule(1000).chain(range(1000))
    t = 500
    beta, abar, abar_prev = _linear(t)
    x_t = torch.tensor([[[[0.3, -1.2], [2.0, 0.5]]]])
    eps = torch.tensor([[[[1.0, 0.4], [-0.7, 0.0]]]])
    noise = torch.tensor([[[[0.5, -0.5], [1.5, -2.0]]]])
    x0 = (x_t - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    mean = beta * math.sqrt(abar_prev) / (1 - abar) * x0 + (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar) * x_t
    # the same mean in DDPM's noise form (Ho et al. 2020, Eq. 11)
    assert torch.allclose(mean, (x_t - beta / math.sqrt(1 - abar) * eps) / math.sqrt(1 - beta), atol=1e-6)
    posterior_var = beta * (1 - abar_prev) / (1 - abar)
    # fixed-large (no learned variance): beta_t
    x_prev, x0_pred = chain.step(t, x_t, eps, None, noise, clip=False)
    assert torch.allclose(x0_pred, x0, atol=1e-5)
    assert torch.allclose(x_prev, mean + math.sqrt(beta) * noise, atol=1e-5)
    # learned range: v = -1 the posterior variance, v = 1 beta, v = 0 their geometric mean
    for v, var in ((-1.0, posterior_var), (1.0, beta), (0.0, math.sqrt(beta * posterior_var))):
        x_prev, _ = chain.step(t, x_t, eps, torch.full_like(x_t, v), noise, clip=False)
        assert torch.allclose(x_prev, mean + math.sqrt(var) * noise, atol=1e-5), v
    # clipping acts on the x0 prediction before the mean is formed
    x_prev, x0_pred = chain.step(t, x_t, eps, None, noise, clip=True)
    clipped = x0.clamp(-1, 1)
    assert torch.equal(x0_pred, clipped.to(x0_pred))
    expected = (beta * math.sqrt(abar_prev) / (1 - abar) * clipped
                + (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar) * x_t + math.sqrt(beta) * noise)
    assert torch.allclose(x_prev, expected, atol=1e-5)


def test_the_last_step_returns_the_x0_prediction_without_noise():
    chain = NoiseSchedule(1000).chain(range(1000))
    x_t, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    x_prev, x0 = chain.step(0, x_t, eps, None, None, clip=False)
    assert torch.equal(x_prev, x0)
    assert torch.allclose(x0, (x_t - math.sqrt(1e-4) * eps) / math.sqrt(1 - 1e-4), atol=1e-5)
    with pytest.raises(ValueError, match="needs noise"):
        chain.step(1, x_t, eps, None, None, clip=False)


def test_the_full_chain_is_the_schedule_and_a_respaced_one_has_its_own_betas():
    s = NoiseSchedule(1000)
    full = s.chain(range(1000))
    assert torch.allclose(full.betas, s.betas, rtol=1e-9)
    # gd:296: fixed-large's first variance is the posterior's second
    assert full.log_variance_large[0].item() == pytest.approx(math.log(full.posterior_variance[1].item()))
    assert full.log_variance_large[5].item() == pytest.approx(math.log(s.betas[5].item()))
    spaced = s.chain([999, 499, 0])
    a = s.alphas_cumprod
    assert spaced.timesteps.tolist() == [0, 499, 999]
    assert spaced.betas.tolist() == pytest.approx([1 - a[0].item(), 1 - (a[499] / a[0]).item(),
                                                   1 - (a[999] / a[499]).item()], rel=1e-12)
    one = s.chain([999])   # a chain of one step goes straight to x0
    x_t, eps = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    assert torch.allclose(one.step(0, x_t, eps, None, None, clip=False)[0],
                          (x_t - (1 - a[999]).sqrt().float() * eps) / a[999].sqrt().float(), atol=1e-4)
    with pytest.raises(ValueError):
        s.chain([3, 3])


# ---- the variational bound of the learned variance -------------------------------------------------------------

def test_vb_bits_is_the_gaussian_kl_and_at_t0_the_discretised_likelihood():
    chain = NoiseSchedule(1000).chain(range(1000))
    x0 = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    x_t = torch.tensor([[[[0.8, -0.3]]], [[[0.1, 0.9]]]])
    eps = torch.tensor([[[[0.2, -0.5]]], [[[0.3, 0.1]]]])
    v = torch.tensor([[[[0.5, -0.5]]], [[[0.0, 0.0]]]])
    bits = chain.vb_bits(torch.tensor([300, 0]), x0, x_t, eps, v)
    # image 0 at t = 300: KL(N(mu_q, s_q) || N(mu_p, s_p)) per pixel, averaged, in bits
    beta, abar, abar_prev = _linear(300)
    c0, ct = beta * math.sqrt(abar_prev) / (1 - abar), (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar)
    post = beta * (1 - abar_prev) / (1 - abar)
    kls = []
    for j in range(2):
        xt, e, vv, true_x0 = x_t[0, 0, 0, j].item(), eps[0, 0, 0, j].item(), v[0, 0, 0, j].item(), x0[0, 0, 0, j].item()
        mu_q = c0 * true_x0 + ct * xt
        mu_p = c0 * (xt - math.sqrt(1 - abar) * e) / math.sqrt(abar) + ct * xt
        var_p = math.exp((vv + 1) / 2 * math.log(beta) + (1 - vv) / 2 * math.log(post))
        kls.append(0.5 * (math.log(var_p / post) + post / var_p + (mu_q - mu_p) ** 2 / var_p - 1))
    assert bits[0].item() == pytest.approx(np.mean(kls) / math.log(2), rel=1e-4)
    # image 1 at t = 0: -log P(x0) of the Gaussian N(x0_pred, var) over the bin of x0 (x0 = 0: +-1/255; x0 = 1:
    # the open end bin above 1 - 1/255), v = 0: the geometric mean of beta_0 and the clipped posterior variance
    beta0, var_small = 1e-4, chain.posterior_variance[1].item()
    std = math.sqrt(math.sqrt(beta0 * var_small))
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731  (exact; the code uses tanh's approximation)
    nll = []
    for j, target in enumerate((0.0, 1.0)):
        mean = (x_t[1, 0, 0, j].item() - math.sqrt(beta0) * eps[1, 0, 0, j].item()) / math.sqrt(1 - beta0)
        if target == 0.0:
            p = cdf((target - mean + 1 / 255) / std) - cdf((target - mean - 1 / 255) / std)
        else:
            p = 1 - cdf((target - mean - 1 / 255) / std)
        nll.append(-math.log(max(p, 1e-12)))
    assert bits[1].item() == pytest.approx(np.mean(nll) / math.log(2), rel=2e-3)


def test_learned_variance_adds_an_output_the_bound_trains_alone():
    model = _model(2, learn_sigma=True, cal_loss_weight=0.0)
    assert model.out[-1].out_channels == 2
    images, labels = torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16))
    loss = model.loss(images, labels, torch.Generator().manual_seed(2))
    loss.backward()
    with_bound = model.out[-1].weight.grad.clone()
    assert torch.isfinite(loss) and with_bound[1].abs().sum() > 0
    model.zero_grad()
    model.chain.vb_bits = lambda i, x0, x_t, eps, v: 0.0 * v.flatten(1).mean(dim=1)
    without = model.loss(images, labels, torch.Generator().manual_seed(2))
    without.backward()
    assert without.item() < loss.item()
    # the noise channel's weights get the MSE's gradient only: the bound sees the mean detached (gd:1013-1015)
    assert torch.allclose(model.out[-1].weight.grad[0], with_bound[0], atol=1e-7)
    assert model.out[-1].weight.grad[1].abs().sum() == 0


# ---- sampling -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes, learn_sigma", [(2, False), (2, True), (4, True)])
def test_ddpm_with_the_true_noise_recovers_the_mask_and_counts_its_evaluations(num_classes, learn_sigma):
    model = _model(num_classes, steps=6, learn_sigma=learn_sigma).eval()
    assert model.default_sampler == DDPMSampler(6)
    labels = torch.randint(0, num_classes, (2, 16, 16), generator=torch.Generator().manual_seed(3))
    x0 = model.encode(labels)
    calls = []

    def oracle(x_t, images, t, with_cal):  # the noise x_t carries relative to the true x0; v = 0
        calls.append(int(t[0]))
        a = model.schedule.abar(t, x_t)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        out = torch.cat([eps, torch.zeros_like(eps)], dim=1) if learn_sigma else eps
        return out, (model.mask01(labels) if with_cal else None)

    model.evaluate = oracle
    drawn = model.sample(torch.zeros(2, 1, 16, 16), 3, torch.Generator().manual_seed(0))
    assert torch.equal(drawn.labels, labels.expand(3, -1, -1, -1))
    assert drawn.nfe == (6, 6, 6) and len(calls) == 18          # NFE per sample: the network calls that made it
    assert calls[:6] == [999, 799, 599, 400, 200, 0]
    one = dataclasses.replace(model.default_sampler, steps=1)      # what the complexity counter passes
    calls.clear()
    assert model.sample(torch.zeros(2, 1, 16, 16), 2, torch.Generator(), one).nfe == (1, 1) and calls == [999, 999]


def test_ddpm_sampling_is_stochastic_and_draws_from_the_generator_only():
    model = _model(2, steps=4).eval()
    images = torch.randn(1, 1, 16, 16)
    torch.manual_seed(0)
    a = model.sample_x0(images, torch.Generator().manual_seed(1), model.default_sampler)
    torch.manual_seed(1)   # the global RNG must not matter
    assert torch.equal(a, model.sample_x0(images, torch.Generator().manual_seed(1), model.default_sampler))
    assert not torch.equal(a, model.sample_x0(images, torch.Generator().manual_seed(2), model.default_sampler))


def test_the_sampler_field_chooses_the_default_sampler():
    assert _model(2, sampler="ddpm", steps=7).default_sampler == DDPMSampler(7)
    assert _model(2, sampler="ddim", steps=7, eta=0.5).default_sampler == DDIMSampler(7, 0.5)
    with pytest.raises(ValueError, match="eta is the DDIM sampler's"):
        _model(2, sampler="ddpm", eta=1.0)
    with pytest.raises(ValueError, match="sampler 'euler'"):
        _model(2, sampler="euler")
    with pytest.raises(ValueError):
        _model(2, steps=1001)
    with pytest.raises(ValueError):
        DDPMSampler(0)
    m = _model(2, num_timesteps=20, steps=5)
    c = method_complexity(m, 1, 16, samples=2)
    assert c.evaluations_per_sample == 5


def test_the_sampler_is_recorded_with_the_predictions(tmp_path):
    ddpm = build_method("medsegdiff", 1, 2, TINY)
    assert sampler_label(ddpm) == "DDPMSampler(steps=3)"
    assert sampler_label(build_method("medsegdiff", 1, 2, {**TINY, "sampler": "ddim"})) == \
        "DDIMSampler(steps=3, eta=0.0)"
    assert sampler_label(build_method("unet", 1, 2, {"channels": (4, 8), "strides": (2,)})) is None
    record = PredictionRecord(Status.OK, dataset="d", n_cases=1, n_samples_requested=5, n_samples=5,
                              nfe_per_sample=3, sampler=sampler_label(ddpm), seconds_per_case=1.0, seconds_total=1.0,
                              device="cpu", seed=0, uncertainty="u")
    write_record(tmp_path / "meta.json", record)
    assert read_record(tmp_path / "meta.json", PredictionRecord).sampler == "DDPMSampler(steps=3)"

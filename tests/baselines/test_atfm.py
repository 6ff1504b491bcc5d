"""ATFM: the GTR's low-rank normal and MC likelihood against torch.distributions, the two training stages,
the differentiable Dice, sampling (shapes, NFE, determinism) and a tiny overfit."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from baselines.atfm import ATFM, LogitGaussian, label_log_likelihood, mc_log_likelihood, soft_dice

TINY = {"gtr_filters": (4, 8, 8, 8), "gtr_norm_groups": 4, "rank": 3, "mc_samples": 4, "channels": (8, 16),
        "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "attention_heads": 2,
        "attention_head_dim": 4, "steps": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(k: int = 2, **kw) -> ATFM:
    torch.manual_seed(0)
    return ATFM(1, k, **{**TINY, **kw})


def _batch(k: int = 2, b: int = 2, size: int = 16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, size, size, generator=g), torch.randint(0, k, (b, size, size), generator=g)


def _grads(params) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


def test_heads_build_the_low_rank_covariance_in_the_public_layout():
    torch.manual_seed(0)
    b, kc, h, w, r, eps = 2, 2, 2, 3, 3, 1e-5
    mean, log_diag, factor = torch.randn(b, kc, h, w), torch.randn(b, kc, h, w), torch.randn(b, r * kc, h, w)
    gauss = LogitGaussian.from_heads(mean, log_diag, factor, eps)
    d = kc * h * w
    idx = [(k, y, x) for k in range(kc) for y in range(h) for x in range(w)]   # channel-major flattening
    cov = torch.zeros(b, d, d, dtype=torch.float64)
    for i, (k, y, x) in enumerate(idx):
        for j, (k2, y2, x2) in enumerate(idx):
            cov[:, i, j] = sum(factor[:, q * kc + k, y, x].double() * factor[:, q * kc + k2, y2, x2].double()
                               for q in range(r))
        cov[:, i, i] += log_diag[:, k, y, x].double().exp() + eps
    dist = gauss.distribution()
    assert torch.allclose(dist.covariance_matrix.double(), cov, atol=1e-4)
    assert torch.allclose(dist.mean, torch.stack([mean[:, k, y, x] for k, y, x in idx], dim=1))
    assert gauss.shape == (kc, h, w)


def test_reparameterised_draws_are_torch_rsample_and_antithetic_pairs_mirror():
    torch.manual_seed(0)
    b, d, r = 2, 12, 3
    gauss = LogitGaussian(torch.randn(b, d), torch.randn(b, d, r), torch.rand(b, d) + 0.1, (1, 3, 4))
    torch.manual_seed(5)
    ref = gauss.distribution().rsample((4,))                  # eps_W (4, B, R) then eps_D (4, B, D)
    torch.manual_seed(5)
    eps_w, eps_d = torch.randn(4, b, r), torch.randn(4, b, d)
    assert torch.allclose(gauss.reparameterise(eps_w, eps_d), ref, atol=1e-6)
    x = gauss.rsample(6, torch.Generator().manual_seed(0), antithetic=True)
    assert x.shape == (6, b, 1, 3, 4)
    assert torch.allclose((x[:3] + x[3:]) / 2, gauss.mean.view(1, b, 1, 3, 4).expand(3, -1, -1, -1, -1), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        gauss.rsample(3, torch.Generator(), antithetic=True)


@pytest.mark.parametrize("kc", [1, 3])
def test_mc_log_likelihood_matches_torch_distributions(kc):
    torch.manual_seed(0)
    m, b, h, w = 5, 2, 3, 3
    d = kc * h * w
    prior = torch.distributions.LowRankMultivariateNormal(torch.randn(b, d), torch.randn(b, d, 2),
                                                          torch.rand(b, d) + 0.1)
    logits = prior.sample((m,)).reshape(m, b, kc, h, w)
    labels = torch.randint(0, max(kc, 2), (b, h, w))
    if kc == 1:
        per_draw = torch.distributions.Bernoulli(logits=logits[:, :, 0]).log_prob(labels.float()).sum((-1, -2))
    else:
        per_draw = torch.distributions.Categorical(logits=logits.movedim(2, -1)).log_prob(labels).sum((-1, -2))
    assert torch.allclose(label_log_likelihood(logits, labels), per_draw, atol=1e-4)
    expected = torch.tensor([math.log(sum(math.exp(per_draw[i, j].item()) for i in range(m)) / m) for j in range(b)])
    assert torch.allclose(mc_log_likelihood(logits, labels), expected.float(), atol=1e-4)


def test_gtr_loss_is_finite_for_extreme_logits():
    model = _model()
    images, labels = _batch()
    with torch.no_grad():
        model.gtr.mean.bias.fill_(-60.0)     # confident and wrong on every foreground pixel
        model.gtr.log_diag.bias.fill_(-30.0)  # variance down to epsilon
    assert model.gtr(images).cov_diag.min() >= 1e-5   # the epsilon floor on the diagonal
    loss = model.gtr_loss(images, labels, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 10
    assert all(torch.isfinite(p.grad).all() for p in model.gtr.parameters())


def test_soft_dice_is_exact_on_masks_and_differentiable():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2] = 1
    assert soft_dice(target, target, 1e-6).item() == pytest.approx(1.0)
    half = torch.zeros_like(target)
    half[..., :1] = 1                          # 4 of 8 foreground pixels, no false positives
    assert soft_dice(half, target, 0.0).item() == pytest.approx(2 * 4 / (4 + 8))
    pred = torch.full_like(target, 0.5, requires_grad=True)
    soft_dice(pred, target, 1e-6).backward()
    assert (pred.grad[..., :2] > 0).all() and (pred.grad[..., 2:] < 0).all()


@pytest.mark.parametrize("k", [2, 4])
def test_dice_term_alone_trains_the_sfm(k):
    model = _model(k, gtr_steps=0)
    images, labels = _batch(k)
    _, dice = model.sfm_terms(images, labels, torch.Generator().manual_seed(0))
    (1 - dice).backward()
    assert all(_grads([model.out[-1].weight]))      # the zero-initialised output layer learns first
    torch.nn.init.normal_(model.out[-1].weight, std=0.1)
    model.zero_grad(set_to_none=True)
    _, dice = model.sfm_terms(images, labels, torch.Generator().manual_seed(0))
    (1 - dice).backward()
    assert all(_grads([model.unet.stem.weight, model.out[-1].weight, model.time_embed.mlp[0].weight]))
    assert all(p.grad is None for p in model.gtr.parameters())
    # the public code's Dice, on thresholded and detached masks, is a constant with nothing to differentiate
    model.zero_grad(set_to_none=True)
    _, dice = model.sfm_terms(images, labels, torch.Generator().manual_seed(0))
    assert dice.requires_grad
    x1 = model.target(labels)
    assert not soft_dice((x1.detach() >= 0.5).float(), x1, 1e-6).requires_grad


def test_stages_switch_after_gtr_steps_and_the_counter_survives_a_checkpoint():
    model = _model(gtr_steps=2).train()
    images, labels = _batch()
    g = torch.Generator().manual_seed(0)
    sfm = model.sfm_parameters()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):                               # stage 1: GTR only
        opt.zero_grad(set_to_none=True)
        model.loss(images, labels, g).backward()
        assert all(_grads(model.gtr.parameters())) and all(p.grad is None for p in sfm)
        opt.step()
    assert int(model.trained_steps) == 2
    model.zero_grad(set_to_none=True)
    model.loss(images, labels, g).backward()        # stage 2: SFM only
    assert all(p.grad is None for p in model.gtr.parameters()) and any(_grads(sfm))
    assert all(p.grad is None for p in model.gtr_frozen.parameters())
    # the frozen copy is the GTR at the switch, and later changes to the trained GTR do not reach it
    assert all(torch.equal(a, b) for a, b in zip(model.gtr_frozen.parameters(), model.gtr.parameters()))
    before = model.sample(images, 2, torch.Generator().manual_seed(3)).labels
    with torch.no_grad():
        for p in model.gtr.parameters():
            p.add_(1.0)
    model.loss(images, labels, g)
    assert torch.equal(model.sample(images, 2, torch.Generator().manual_seed(3)).labels, before)
    # the stage counter is in the state dict and restores the stage
    state = model.state_dict()
    assert int(state["trained_steps"]) == 4
    fresh = _model(gtr_steps=2).train()
    fresh.load_state_dict(state)
    fresh.loss(images, labels, g).backward()
    assert all(p.grad is None for p in fresh.gtr.parameters()) and any(_grads(fresh.sfm_parameters()))


def test_frozen_prior_is_the_only_untrainable_part_and_stays_in_eval_mode():
    """What a trainer's EMA needs to copy the prior instead of averaging it: requires_grad=False on exactly the
    frozen copy, before and after the switch, and the copy in eval mode whatever train() is given."""
    model = _model(gtr_steps=2).train()
    images, labels = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    for step in range(4):                            # two GTR steps, the switch, one SFM step
        opt.zero_grad(set_to_none=True)
        model.loss(images, labels, torch.Generator().manual_seed(step)).backward()
        opt.step()
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen == {f"gtr_frozen.{n}" for n, _ in model.gtr_frozen.named_parameters()}
        assert not model.gtr_frozen.training and model.training and model.gtr.training and model.unet.training
        if step == 2:
            at_switch = [p.clone() for p in model.gtr_frozen.parameters()]
    with torch.no_grad():                            # whatever happens to the trained GTR after the switch
        for p in model.gtr.parameters():
            p.add_(1.0)
    model.loss(images, labels, torch.Generator().manual_seed(4)).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(at_switch, model.gtr_frozen.parameters()))
    model.eval()
    assert not model.gtr_frozen.training and not model.unet.training


def test_stage_two_trains_on_the_first_sfm_batch_size_images_and_stage_one_on_all():
    images, labels = _batch(b=4)
    sub = _model(gtr_steps=0, sfm_batch_size=2).train()
    full = _model(gtr_steps=0).train()
    loss = sub.loss(images, labels, torch.Generator().manual_seed(5))
    assert loss == full.loss(images[:2], labels[:2], torch.Generator().manual_seed(5))
    assert loss != full.loss(images[2:], labels[2:], torch.Generator().manual_seed(5))
    sub, full = _model(gtr_steps=1, sfm_batch_size=2).train(), _model(gtr_steps=1).train()
    assert sub.loss(images, labels, torch.Generator().manual_seed(5)) == full.loss(
        images, labels, torch.Generator().manual_seed(5))
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="sfm_batch_size"):
            _model(sfm_batch_size=bad)


def test_sfm_luminance_feeds_the_flow_one_grey_channel_and_the_prior_the_rgb_image():
    torch.manual_seed(0)
    model = ATFM(3, 2, **TINY, sfm_luminance=True).eval()
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = model.condition(rgb, in_loss=False)
    grey = 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
    assert cond.images.shape == (2, 1, 16, 16) and torch.allclose(cond.images, grey)
    assert torch.equal(cond.prior.mean, model.gtr_frozen(rgb).mean)
    assert model.unet.stem.in_channels == 2 and model.gtr.unet.stem.in_channels == 3
    assert model.sample(rgb, 2, torch.Generator().manual_seed(0)).labels.shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match="sfm_luminance"):
        ATFM(1, 2, **TINY, sfm_luminance=True)


def test_eval_mode_does_not_advance_the_stage():
    model = _model(gtr_steps=1).eval()
    images, labels = _batch()
    model.loss(images, labels, torch.Generator().manual_seed(0))
    assert int(model.trained_steps) == 0


def test_under_ddp_every_trainable_parameter_gets_a_gradient(monkeypatch):
    monkeypatch.setattr("baselines.atfm._every_parameter_needs_a_gradient", lambda: True)
    model = _model(gtr_steps=1).train()
    images, labels = _batch()
    g = torch.Generator().manual_seed(0)
    for stage in range(2):
        model.zero_grad(set_to_none=True)
        model.loss(images, labels, g).backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert all(p.grad is not None for p in trainable)
        idle = model.sfm_parameters() if stage == 0 else list(model.gtr.parameters())
        assert all(p.grad.abs().sum() == 0 for p in idle)


@pytest.mark.parametrize("k", [2, 4])
def test_sample_shapes_nfe_and_determinism(k):
    model = _model(k).eval()
    images, _ = _batch(k, b=3)
    drawn = model.sample(images, 2, torch.Generator().manual_seed(0))
    out = drawn.labels
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.int64
    assert out.min() >= 0 and out.max() < k and drawn.nfe == (3, 3)
    assert torch.equal(model.sample(images, 2, torch.Generator().manual_seed(0)).labels, out)
    assert not torch.equal(model.sample(images, 2, torch.Generator().manual_seed(1)).labels, out)
    fewer = dataclasses.replace(model.default_sampler, steps=2)      # passed per call (complexity counter)
    assert model.sample(images, 1, torch.Generator().manual_seed(0), fewer).nfe == (2,)
    assert model.default_sampler.steps == 3


@pytest.mark.parametrize("k", [2, 4])
def test_untrained_flow_returns_the_thresholded_gtr_draw(k):
    model = _model(k).eval()
    images, _ = _batch(k)
    out = model.sample(images, 2, torch.Generator().manual_seed(4)).labels
    g = torch.Generator().manual_seed(4)
    prior = model.frozen_prior(images)
    draws = [model.read_out(model.activate(prior.rsample(1, g)[0])) for _ in range(2)]
    assert torch.equal(out, torch.stack(draws))
    assert not torch.equal(out[0], out[1])            # the GTR's draws differ


def test_complexity_counter_splits_gtr_draws_from_flow_evaluations():
    from benchmark.complexity import method_complexity

    c = method_complexity(_model(), 1, 16, samples=4)
    assert c.evaluations_per_sample == 3 and c.params == sum(p.numel() for p in _model().parameters()
                                                             if p.requires_grad)
    # the GTR forward is per image, one draw (cov_factor @ eps: D x rank MACs) per sample
    assert c.macs_fixed > 0 and c.macs_per_sample == pytest.approx(16 * 16 * TINY["rank"])
    assert c.macs_per_evaluation > c.macs_per_sample


def test_training_noise_comes_from_the_generator_only():
    images, labels = _batch()
    losses = []
    for _ in range(2):
        model = _model(gtr_steps=1).train()
        torch.manual_seed(123 + len(losses))        # the global RNG must not matter
        losses.append([model.loss(images, labels, torch.Generator().manual_seed(7)).item() for _ in range(2)])
    assert losses[0] == losses[1]


def test_tiny_overfit_learns_a_square():
    torch.manual_seed(0)
    images = torch.zeros(4, 1, 16, 16)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    for i, o in enumerate((2, 4, 6, 8)):
        images[i, 0, o:o + 6, o:o + 6] = 1.0
        labels[i, o:o + 6, o:o + 6] = 1
    model = ATFM(1, 2, **{**TINY, "gtr_steps": 40})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(100):
        loss = model.loss(images, labels, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.eval().sample(images, 2, torch.Generator().manual_seed(0)).labels.float()
    target = labels.float().expand_as(out)
    dice = 2 * (out * target).sum() / (out.sum() + target.sum())
    assert dice > 0.9

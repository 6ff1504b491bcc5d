"""MedSegDiff-V2 (``baselines.medsegdiff.v2``, ``.ssformer``): the SS-Former's attention and gradients, the U-SA's
Gaussian on hand values, the anchor path, the anchor loss, one sampler step, NFE and the paper-scale size."""
from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import pytest
import torch

from baselines.medsegdiff import DDIMSampler, DDPMSampler, MedSegDiffV2
from baselines.medsegdiff.ssformer import (GaussianKernel, NBPFilter, SpectrumCrossAttention, SSFormer,
                                           UncertainSpatialAttention, frequency_grid)
from benchmark.catalogue import load_catalogue
from benchmark.complexity import method_complexity
from benchmark.config import load_config

ROOT = Path(__file__).resolve().parents[2]

TINY = {"channels": (8, 16, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
        "cond_channels": (4, 8, 8), "ssformer_depth": 1, "ssformer_heads": 2, "nbp_hidden": 8, "nbp_blocks": 1,
        "usa_kernel_size": 3, "sampler": "ddim", "steps": 3, "learn_sigma": False}

# Official MedSegDiff-B V2 (github.com/KidsWithTokens/MedSegDiff at 60850bf, ``UNetModel_newpreview`` built as
# create_model builds it, script_util.py:177-194, with README.md:105's flags and a 3-channel image, in_ch 4):
# 113,673,218 in the diffusion UNet + 15,727,232 in the highway nnU-Net. Counted once by instantiating that code.
OFFICIAL_PARAMS = 129_400_450
# Ours at the paper configuration (the defaults; 3 image channels, K = 2): the diffusion UNet without its
# self-attention (77.9 M against 113.7 M), a residual condition UNet at nnU-Net's widths (35.2 M against 15.7 M:
# two 3x3 convolutions per block plus a time-free residual path per stage, and a decoder as wide as the encoder),
# and the SS-Former, which the official code lacks (25.8 M at depth 4 on 512 channels).
OURS_PARAMS = 139_670_830


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_classes: int = 2, **kw) -> MedSegDiffV2:
    torch.manual_seed(0)
    return MedSegDiffV2(1, num_classes, **{**TINY, **kw})


# ---- U-SA ---------------------------------------------------------------------------------------------------------

def test_the_gaussian_kernel_is_the_normalised_gaussian_of_its_mean_and_sigma():
    g = GaussianKernel(3, 1.0)
    with torch.no_grad():
        g.log_sigma.fill_(math.log(0.5))
        g.mean.copy_(torch.tensor([0.0, 1.0]))      # centred one pixel to the right
    # by hand: w(i, j) = exp(-(dy^2 + dx^2) / (2 * 0.25)) with dy = i - 1, dx = j - 2
    raw = [[math.exp(-((i - 1) ** 2 + (j - 2) ** 2) * 2.0) for j in range(3)] for i in range(3)]
    total = sum(map(sum, raw))
    expected = torch.tensor([[v / total for v in row] for row in raw])
    assert torch.allclose(g.kernel().detach(), expected, atol=1e-6)
    assert float(g.kernel().detach().sum()) == pytest.approx(1.0)


def test_u_sa_widens_the_anchor_keeps_its_peak_and_gates_the_feature():
    usa = UncertainSpatialAttention(1, 2, 3, 1.0)
    with torch.no_grad():
        usa.gauss.log_sigma.fill_(0.0)               # sigma 1, centred
        usa.project.weight.fill_(1.0)
        usa.project.bias.zero_()
    anchor = torch.zeros(1, 1, 5, 5)
    anchor[0, 0, 2, 2] = 1.0
    with torch.no_grad():
        relaxed = usa.relaxed(anchor)
    w_side, w_corner = math.exp(-0.5), math.exp(-1.0)
    z = 1 + 4 * w_side + 4 * w_corner
    assert float(relaxed[0, 0, 2, 2]) == pytest.approx(1.0)          # max keeps the peak (1 > 1/z)
    assert float(relaxed[0, 0, 1, 2]) == pytest.approx(w_side / z, abs=1e-6)
    assert float(relaxed[0, 0, 1, 1]) == pytest.approx(w_corner / z, abs=1e-6)
    assert float(relaxed[0, 0, 0, 0]) == 0.0                         # beyond the kernel's reach
    f = torch.ones(1, 2, 5, 5)
    out = usa(f, anchor)
    assert torch.allclose(out, f * torch.sigmoid(relaxed) + f)       # sigmoid(conv1x1) . f + f, per channel


# ---- SS-Former ----------------------------------------------------------------------------------------------------

def test_the_frequency_grid_is_rfft2s_layout():
    grid = frequency_grid(4, 6)
    assert grid.shape == (4 * 4, 2)
    assert grid[:4, 0].tolist() == [0.0] * 4 and grid[:4, 1].tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])
    assert grid[12:, 0].tolist() == [-0.25] * 4                       # fftfreq's negative half last


def test_spectrum_attention_map_shapes_rows_and_the_band_pass():
    torch.manual_seed(0)
    att = SpectrumCrossAttention(8, heads=2, nbp_hidden=4, nbp_blocks=1, time_dim=6, norm_groups=4)
    x, y, temb = torch.randn(3, 8, 4, 6), torch.randn(3, 8, 4, 6), torch.randn(3, 6)
    n = 4 * (6 // 2 + 1)
    a = att.attention_map(x, y, temb)
    assert a.shape == (3, 2, n, n) and a.dtype == torch.float32
    g = att.nbp(frequency_grid(4, 6), frequency_grid(4, 6), temb)
    assert g.shape == (3, n, n) and bool(((g > 0) & (g < 1)).all())
    # the softmax rows sum to 1 before the filter: dividing the filter back out recovers them
    assert torch.allclose((a / g[:, None]).sum(-1), torch.ones(3, 2, n), atol=1e-5)
    assert att(x, y, temb).shape == x.shape
    assert not torch.allclose(att.attention_map(x, y, torch.randn(3, 6)), a)   # the filter depends on the step


def test_the_attention_is_between_frequency_tokens_by_hand():
    torch.manual_seed(1)
    att = SpectrumCrossAttention(4, heads=1, nbp_hidden=4, nbp_blocks=1, time_dim=2, norm_groups=2)
    x, y, temb = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.randn(1, 2)
    with torch.no_grad():
        q = att.q(att.norm_x(x))[0].to(torch.float64)
        k = att.k(att.norm_y(y))[0].to(torch.float64)
        a = att.attention_map(x, y, temb)[0, 0].to(torch.float64)
        g = att.nbp(frequency_grid(2, 2), frequency_grid(2, 2), temb)[0].to(torch.float64)
    # rfft2 of a 2x2 map by hand: tokens (0,0), (0,1), (1,0), (1,1), each (x00 +- x01 +- x10 +- x11) / 2
    signs = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64)
    qh, kh = q.reshape(4, 4) @ signs.T / 2, k.reshape(4, 4) @ signs.T / 2     # (channel, token), real here
    expected = (qh.T @ kh / 2.0).softmax(dim=-1) * g                          # sqrt(d) = sqrt(4)
    assert torch.allclose(a, expected, atol=1e-5)


def test_the_nbp_filter_passes_each_pair_by_its_frequencies():
    torch.manual_seed(0)
    f = NBPFilter(hidden=8, blocks=2, time_dim=4)
    fq, fk, temb = frequency_grid(2, 4), frequency_grid(2, 4), torch.randn(2, 4)
    g = f(fq, fk, temb)
    assert g.shape == (2, 6, 6)
    swapped = f(fq.flip(0), fk, temb)
    assert torch.allclose(swapped, g.flip(1))                     # a row follows its query frequency


def test_the_ss_former_keeps_shapes_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    former = SSFormer(8, depth=2, heads=2, mlp_ratio=4, nbp_hidden=4, nbp_blocks=2, time_dim=6, norm_groups=4)
    e, c, temb = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    out = former(e, c, temb)
    assert out.shape == e.shape
    out.square().mean().backward()
    missing = [n for n, p in former.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_the_semantic_condition_reaches_the_noise_embedding():
    torch.manual_seed(0)
    former = SSFormer(8, depth=1, heads=2, mlp_ratio=2, nbp_hidden=4, nbp_blocks=1, time_dim=6, norm_groups=4)
    e, temb = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    assert not torch.allclose(former(e, torch.randn(2, 8, 4, 4), temb), former(e, torch.randn(2, 8, 4, 4), temb))


# ---- the model ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 4])
def test_loss_trains_every_parameter(num_classes):
    model = _model(num_classes, learn_sigma=True)
    images, labels = torch.randn(2, 1, 16, 16), torch.randint(0, num_classes, (2, 16, 16))
    loss = model.loss(images, labels, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_changing_the_anchor_changes_the_output_through_u_sa():
    model = _model(2).eval()
    x_t, images, t = torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16), torch.tensor([500])
    base = model.denoise(x_t, images, t)
    anchors = []
    model.usa.register_forward_pre_hook(lambda mod, args: (args[0], args[1] + 1.0))   # shift the anchor only
    model.usa.register_forward_hook(lambda mod, args, out: anchors.append(args[1]))
    shifted = model.denoise(x_t, images, t)
    assert anchors and not torch.allclose(shifted, base)


def test_the_anchor_loss_is_dice_plus_ce_on_the_draws_alpha_selects():
    model = _model(2, anchor_every=5)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, :2] = 1
    logits = torch.zeros(2, 1, 4, 4)                          # p = 0.5 everywhere
    ce = math.log(2.0)
    dice = 1 - 2 * (0.5 * 8) / (0.5 * 16 + 8)                  # 2 |p g| / (|p| + |g|), 8 foreground pixels
    both = model.condition_loss(logits, labels, torch.tensor([10, 995]))
    assert float(both) == pytest.approx(ce + dice, abs=1e-5)
    one = model.condition_loss(logits, labels, torch.tensor([10, 7]))
    assert float(one) == pytest.approx((ce + dice) / 2, abs=1e-5)
    assert float(model.condition_loss(logits, labels, torch.tensor([3, 7]))) == 0.0


def test_one_ddpm_step_and_nfe_per_sample():
    model = _model(2, sampler="ddpm", steps=4).eval()
    assert model.default_sampler == DDPMSampler(4)
    eps = torch.randn(1, 1, 16, 16)
    calls = []

    def stub(x_t, images, t, with_cal):
        calls.append(int(t[0]))
        return eps, None

    model.evaluate = stub
    images = torch.zeros(1, 1, 16, 16)
    one = dataclasses.replace(model.default_sampler, steps=1)
    x0, cal = model.trajectory(images, torch.Generator().manual_seed(3), one)
    x_T = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    abar = model.schedule.alphas_cumprod[999].item()
    assert cal is None and calls == [999]
    # the one (last) ancestral step returns the clipped x0 prediction, no noise added
    assert torch.allclose(x0, ((x_T - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1), atol=1e-5)
    calls.clear()
    drawn = model.sample(images, 3, torch.Generator().manual_seed(0))
    assert drawn.nfe == (4, 4, 4) and len(calls) == 12 and drawn.labels.shape == (3, 1, 16, 16)


def test_the_complexity_counter_sees_the_ss_former():
    model = _model(2, steps=2)
    c = method_complexity(model, 1, 16, samples=2)
    assert c.evaluations_per_sample == 2
    assert all(c.by_operator.get(op, 0) > 0 for op in ("fft_rfft2", "fft_irfft2", "einsum", "linear"))


def test_sampling_is_reproducible_and_refuses_other_samplers():
    model = _model(2).eval()
    images = torch.randn(1, 1, 16, 16)
    a = model.sample(images, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a.labels, model.sample(images, 2, torch.Generator().manual_seed(1)).labels)
    assert model.default_sampler == DDIMSampler(3)
    from medflowseg.flow import ODESolver
    with pytest.raises(TypeError, match="DDPMSampler or DDIMSampler"):
        model.sample(images, 1, torch.Generator(), ODESolver("euler", 2))


def test_invalid_configurations_are_refused():
    for bad in ({"cond_channels": (4, 8)}, {"anchor_every": 0}, {"usa_kernel_size": 4}, {"usa_sigma": 0.0},
                {"ssformer_heads": 3}, {"ssformer_depth": 0}, {"ssformer_mlp_ratio": 0}, {"nbp_blocks": 0},
                {"sampler": "ddpm", "eta": 0.5}):
        with pytest.raises(ValueError):
            _model(2, **bad)
    with pytest.raises(ValueError, match="divisible"):
        _model(2).denoise(torch.zeros(1, 1, 18, 18), torch.zeros(1, 1, 18, 18), torch.tensor([1]))


def test_the_paper_profile_is_the_defaults_and_samples_at_the_medflowseg_papers_100_steps():
    section = load_config(ROOT / "profiles/paper.yaml").method_config("medsegdiff-v2").model
    defaults = {k: p.default for k, p in inspect.signature(MedSegDiffV2).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()} == \
        {k: defaults[k] for k in section}
    assert section["sampler"] == "ddpm" and section["steps"] == 100
    catalogue = load_catalogue(ROOT / "paper/catalogue.yaml")
    assert catalogue.row_method("MedSegDiff-V2") == "medsegdiff-v2"
    assert catalogue.methods["medsegdiff-v2"].nfe == {"medflowseg": float(section["steps"])}   # NFE per sample


def test_parameter_count_at_the_paper_configuration_next_to_the_official_one():
    torch.manual_seed(0)
    model = MedSegDiffV2(3, 2)
    assert model.default_sampler == DDPMSampler(100)
    ours = sum(p.numel() for p in model.parameters())
    assert ours == OURS_PARAMS
    assert sum(p.numel() for p in model.ssformer.parameters()) == 25_824_264
    # within 8% of the official count; the MedFlowSeg paper's Table 4 states 137 M for MedSegDiff-V2
    assert abs(ours - OFFICIAL_PARAMS) / OFFICIAL_PARAMS < 0.08

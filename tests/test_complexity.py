"""MAC counting: fvcore with FFT and attention handles, and the split of a sampling protocol."""
from __future__ import annotations

import math

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from benchmark.complexity import _SampleLabels, count_macs, method_complexity
from benchmark.methods import build_method

TINY = {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "fa_depth": 1,
        "fa_dim": 16, "fa_heads": 2, "steps": 7}


class FFT2(torch.nn.Module):
    def forward(self, x):
        return torch.fft.ifft2(torch.fft.fft2(x)).real


def test_a_convolution_is_counted_by_formula():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    total, by_op, _ = count_macs(conv, (torch.zeros(2, 3, 8, 8),))
    assert total == 2 * 5 * 3 * 9 * 8 * 8


def test_ffts_are_counted_where_plain_fvcore_drops_them():
    x = torch.zeros(1, 2, 8, 8)
    assert FlopCountAnalysis(FFT2(), (x,)).unsupported_ops_warnings(False).total() == 0
    total, by_op, uncounted = count_macs(FFT2(), (x,))
    per_transform = 2.5 * 64 * math.log2(64) * 2          # two 8x8 signals
    assert by_op["fft_fft2"] == per_transform and by_op["fft_ifft2"] == per_transform
    assert total == 2 * per_transform
    assert "aten::fft_fft2" not in uncounted


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(16, 4, batch_first=True, bias=False)

    def forward(self, q):
        return self.mha(q, q, q, need_weights=False)[0]   # the fused kernel FA-Attention uses


def test_attention_products_are_counted():
    q = torch.zeros(1, 10, 16)
    total, by_op, _ = count_macs(Attention().eval(), (q,))
    # 4 heads of width 4: Q K^T and A V are 10 x 10 x 4 each; the four projections are 10 x 16 x 16
    assert by_op["scaled_dot_product_attention"] == 4 * 10 * 10 * (4 + 4)
    assert total == 4 * 10 * 10 * 8 + 4 * 10 * 16 * 16


def test_protocol_is_fixed_plus_samples_times_evaluations():
    torch.manual_seed(0)
    m = build_method("medflowseg", 1, 3, TINY)
    default = m.default_sampler
    c = method_complexity(m, in_channels=1, size=16, samples=5)
    assert c.evaluations_per_sample == 7 and m.default_sampler is default, "counted without touching the model"
    assert c.macs_fixed > 0 and c.macs_per_evaluation > 0
    assert c.macs_per_sample == 0, "the Condition Network runs once per image, not per sample"
    assert c.macs_protocol == c.macs_fixed + 5 * 7 * c.macs_per_evaluation
    assert c.by_operator["fft_fft2"] > 0 and c.by_operator["scaled_dot_product_attention"] > 0
    # one evaluation counted directly equals the difference of the two traced protocols
    with torch.no_grad():
        cond = m.condition(torch.zeros(1, 1, 16, 16), in_loss=False)

    class Velocity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x, t):
            return self.m.velocity(x, t, cond)

    direct, _, _ = count_macs(Velocity(), (torch.zeros(1, 3, 16, 16), torch.zeros(1)))
    assert math.isclose(direct, c.macs_per_evaluation, rel_tol=1e-9)


def test_midpoint_has_two_evaluations_per_step():
    torch.manual_seed(0)
    euler = method_complexity(build_method("medflowseg", 1, 3, TINY), 1, 16, 1)
    mid = method_complexity(build_method("medflowseg", 1, 3, {**TINY, "solver": "midpoint"}), 1, 16, 1)
    assert mid.evaluations_per_sample == 14
    assert math.isclose(mid.macs_per_evaluation, euler.macs_per_evaluation, rel_tol=1e-9)


def test_a_deterministic_method_is_one_evaluation():
    m = build_method("unet", 1, 3, {"channels": (4, 8), "strides": (2,)})
    c = method_complexity(m, 1, 16, samples=10)
    assert c.macs_fixed == c.macs_per_sample == 0 and c.samples == 1 and c.macs_protocol == c.macs_per_evaluation > 0


def test_flowsdf_protocol_counts_restarts_and_mmse_draws_as_run():
    """Noise injection (T = 3) and MMSE over 2 draws: the split protocol equals a direct count of the
    whole sampling call, and the evaluations per sample are the NFE sampling reports."""
    torch.manual_seed(0)
    m = build_method("flowsdf", 1, 3, {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16,
                                       "norm_groups": 4, "rrdb_blocks": 1, "rrdb_growth": 4, "steps": 6,
                                       "noise_injection_steps": 3, "mmse_samples": 2})
    c = method_complexity(m, in_channels=1, size=16, samples=3)
    with torch.no_grad():
        out = m.sample(torch.zeros(1, 1, 16, 16), 1, torch.Generator().manual_seed(0))
    assert (c.evaluations_per_sample,) == out.nfe == (2 * (6 + 4 + 2),)
    assert c.macs_per_sample > 0, "the image encoder runs once per MMSE draw"
    direct, _, _ = count_macs(_SampleLabels(m.eval(), 3), (torch.zeros(1, 1, 16, 16),))
    assert math.isclose(c.macs_protocol, direct, rel_tol=1e-9)


def test_medsegdiff_is_split_by_its_own_ddim_sampler():
    torch.manual_seed(0)
    m = build_method("medsegdiff", 1, 2, {"image_size": 16, "channels": (8, 16, 16), "num_res_blocks": 1,
                                          "time_embed_dim": 16, "norm_groups": 4, "cond_channels": (4, 8, 8),
                                          "num_timesteps": 20, "steps": 5})
    c = method_complexity(m, 1, 16, samples=2)
    assert c.evaluations_per_sample == 5 and m.default_sampler.steps == 5
    direct, _, _ = count_macs(_SampleLabels(m.eval(), 2), (torch.zeros(1, 1, 16, 16),))
    assert math.isclose(c.macs_protocol, direct, rel_tol=1e-9)


def test_an_adaptive_default_sampler_is_refused():
    m = build_method("medflowseg", 1, 3, {**TINY, "solver": "dopri5"})
    with pytest.raises(ValueError, match="fixed-step sampler"):
        method_complexity(m, 1, 16, 1)

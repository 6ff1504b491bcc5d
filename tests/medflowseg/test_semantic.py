"""FA-Attention (paper section 3.4): FFT round trip, identity-safe initialisation, time dependence."""
from __future__ import annotations

import pytest
import torch

from medflowseg.semantic import (TDX, FAAttention, FAAttentionStack, NeuralModulator, from_spectrum,
                                 sincos_positions, to_spectrum)

C, T, D = 8, 16, 16


def gen(seed):
    return torch.Generator().manual_seed(seed)


def block(**kw) -> FAAttention:
    torch.manual_seed(0)
    return FAAttention(channels=C, time_dim=T, dim=D, heads=2, patch=2, **kw)


def inputs(seed=0):
    g = gen(seed)
    return torch.randn(2, C, 8, 8, generator=g), torch.randn(2, C, 8, 8, generator=g), torch.randn(2, T, generator=g)


def perturb_zero_init(m: torch.nn.Module, seed: int = 1) -> None:
    """Give the zero-initialised layers (FiLM, modulator output) random values."""
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.2, generator=gen(seed))


def test_fft_round_trip_is_exact():
    x = torch.randn(3, C, 8, 6, generator=gen(0))
    s = to_spectrum(x)
    assert s.shape == (3, 2 * C, 8, 6)
    dc = x.sum(dim=(-2, -1)) / (8 * 6) ** 0.5           # orthonormal zero frequency, shifted to (4, 3)
    torch.testing.assert_close(s[:, :C, 4, 3], dc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_spectrum(s), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.pow(2).sum(), x.pow(2).sum(), rtol=1e-5, atol=1e-4)  # orthonormal (Parseval)


def test_positions_are_distinct_per_token():
    p = sincos_positions(4, 3, 16)
    assert p.shape == (12, 16)
    assert torch.cdist(p, p).add(torch.eye(12)).min() > 1e-3
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_positions(2, 2, 6)


def test_modulator_starts_at_zero_and_blocks_start_as_the_identity():
    m = block()
    f, c, temb = inputs()
    tokens = torch.randn(2, 16, D, generator=gen(2))
    torch.testing.assert_close(m.modulator(tokens, tokens, tokens, temb), torch.zeros(2, 16, D))
    torch.testing.assert_close(m(f, c, temb), c, rtol=0, atol=0)
    torch.manual_seed(0)
    stack = FAAttentionStack(4, channels=C, time_dim=T, dim=D, heads=2, patch=2)
    torch.testing.assert_close(stack(f, c, temb), c, rtol=0, atol=0)


def test_trained_weights_give_a_bounded_update():
    torch.manual_seed(0)
    stack = FAAttentionStack(4, channels=C, time_dim=T, dim=D, heads=2, patch=2)
    perturb_zero_init(stack)
    f, c, temb = inputs()
    out = stack(f, c, temb)
    assert torch.isfinite(out).all() and (out - c).norm() < 10 * c.norm()


def test_changing_t_changes_the_modulation():
    m = block()
    perturb_zero_init(m)
    f, c, temb = inputs()
    tokens = torch.randn(2, 16, D, generator=gen(2))
    other = torch.randn(2, T, generator=gen(3))
    assert not torch.allclose(m.modulator(tokens, tokens, tokens, temb), m.modulator(tokens, tokens, tokens, other))
    assert not torch.allclose(m(f, c, temb), m(f, c, other))


def test_refinement_depends_on_the_flow_feature():
    m = block()
    perturb_zero_init(m)
    f, c, temb = inputs()
    f2 = torch.randn_like(f)
    assert not torch.allclose(m(f, c, temb), m(f2, c, temb)), "c1 uses f through cross-attention"


def test_tdx_recalibrates_each_token_by_a_gate_in_one_to_two():
    torch.manual_seed(0)
    tdx = TDX(D)
    t_f, t_c = torch.randn(2, 4, D), torch.randn(2, 4, D)
    out_f, out_c = tdx(t_f, t_c)
    for out, t in ((out_f, t_f), (out_c, t_c)):
        ratio = out / t                                 # T~ = T + T * sigmoid(W T_z)
        assert (ratio > 1 - 1e-5).all() and (ratio < 2 + 1e-5).all()
    swapped_f, _ = tdx(t_f, t_c.flip(1))
    assert not torch.allclose(out_f, swapped_f), "the evidence depends on the other stream"


@pytest.mark.parametrize("modulator,film,recalibration", [(True, "time", "gate"), (False, "time", "gate"),
                                                          (True, "time_and_stream", "add")])
def test_gradients_reach_every_parameter(modulator, film, recalibration):
    m = block(modulator=modulator, film=film, recalibration=recalibration)
    perturb_zero_init(m)
    f, c, temb = inputs()
    f.requires_grad_(True)
    m(f, c, temb).pow(2).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    assert f.grad.abs().sum() > 0


def test_without_modulator_there_is_no_time_conditioned_mask():
    m = block(modulator=False)
    assert m.modulator is None and m.static_fusion is not None
    assert isinstance(block().modulator, NeuralModulator)


def test_tdx_additive_recalibration():
    torch.manual_seed(0)
    tdx = TDX(D, recalibration="add")
    t_f, t_c = torch.randn(2, 4, D), torch.randn(2, 4, D)
    out_f, _ = tdx(t_f, t_c)
    cues = (t_f * t_c, (t_f - t_c).abs(), t_f - t_c)
    t_z = tdx.fuse(torch.cat([enc(c) for enc, c in zip(tdx.encoders, cues)], dim=-1))
    torch.testing.assert_close(out_f, t_f + tdx.gate_f(t_z))


def test_film_driven_by_the_other_stream_sees_it():
    time_only, with_stream = block(film="time"), block(film="time_and_stream")
    for m in (time_only, with_stream):
        perturb_zero_init(m)
    f, c, temb = inputs()
    tok = lambda m, c_: m.embed_f(m.film_f(f, temb, c_.mean(dim=(-2, -1))))  # noqa: E731
    other_c = torch.randn_like(c)
    assert torch.equal(tok(time_only, c), tok(time_only, other_c))
    assert not torch.allclose(tok(with_stream, c), tok(with_stream, other_c))


def test_cross_attention_runs_through_fused_sdpa_and_equals_the_explicit_softmax():
    """FA-Attention's cross-attention is ``nn.MultiheadAttention`` called with ``need_weights=False``, which
    PyTorch computes with ``F.scaled_dot_product_attention`` (the fused kernels on a GPU). The result equals
    softmax(Q K^T / sqrt(d)) V written out per head."""
    from unittest import mock

    import torch.nn.functional as F
    m = block()
    f, c, temb = inputs()
    sdpa = F.scaled_dot_product_attention
    calls = []
    with mock.patch.object(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(a[0].shape) or sdpa(*a, **k)):
        fused = m.spectral_tokens(f, c, temb)
    assert calls == [(2, 2, 16, D // 2)]          # (B, heads, N tokens, D / heads), once per block call
    attn, heads = m.cross_attn, 2
    q_in = torch.randn(2, 16, D, generator=gen(4))
    kv_in = torch.randn(2, 16, D, generator=gen(5))
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)

    def split(x):
        return x.reshape(2, 16, heads, D // heads).transpose(1, 2)

    q, k, v = split(q_in @ wq.T + bq), split(kv_in @ wk.T + bk), split(kv_in @ wv.T + bv)
    weights = torch.softmax(q @ k.transpose(-1, -2) / (D // heads) ** 0.5, dim=-1)
    explicit = attn.out_proj((weights @ v).transpose(1, 2).reshape(2, 16, D))
    torch.testing.assert_close(attn(q_in, kv_in, kv_in, need_weights=False)[0], explicit, rtol=1e-5, atol=1e-6)
    assert fused.shape == (2, 16, D)

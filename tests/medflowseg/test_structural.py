"""DB-SA and the plain spatial attention of the ablation (paper section 3.3)."""
from __future__ import annotations

import torch

from medflowseg.structural import DBSA, LearnableGaussian, SpatialAttention


def test_gaussian_kernels_stay_normalised_while_sigma_learns():
    g = LearnableGaussian(channels=3, kernel_size=5, sigma=1.0)
    opt = torch.optim.SGD(g.parameters(), lr=0.5)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = g.log_sigma.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        g(x).pow(2).mean().backward()   # smoothing lowers the energy: sigma is pushed to grow
        opt.step()
    assert not torch.allclose(g.log_sigma, before), "sigma is learned"
    k = g.kernel()
    assert k.shape == (3, 1, 5, 5)
    torch.testing.assert_close(k.sum(dim=(1, 2, 3)), torch.ones(3))
    assert (k > 0).all()
    torch.testing.assert_close(k, k.flip(-1))          # symmetric
    torch.testing.assert_close(k, k.transpose(-1, -2))


def test_gaussian_is_a_low_pass():
    g = LearnableGaussian(channels=2, kernel_size=3, sigma=1.0)
    const = torch.full((1, 2, 8, 8), 3.0)
    torch.testing.assert_close(g(const), const)         # a constant passes unchanged, borders included
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    x = checker.expand(1, 2, 8, 8).float()
    assert g(x).abs().mean() < 0.5 * x.abs().mean()     # the highest frequency is damped


def test_wider_sigma_is_flatter():
    narrow, wide = LearnableGaussian(1, 5, 0.5).kernel(), LearnableGaussian(1, 5, 3.0).kernel()
    assert narrow[0, 0, 2, 2] > wide[0, 0, 2, 2]


def test_dbsa_gates_the_flow_feature():
    torch.manual_seed(0)
    m = DBSA(cond_channels=6, flow_channels=4, low_kernel=3, high_kernel=5)
    f0 = torch.rand(2, 4, 16, 16) + 0.1
    f_cond = torch.randn(2, 6, 16, 16)
    g = m.attention(f_cond)
    assert g.shape == (2, 4, 16, 16) and (g > 0).all() and (g < 1).all()
    out = m(f0, f_cond)
    torch.testing.assert_close(out, f0 + g * f0)        # Eq. (9)
    assert (out > f0).all() and (out < 2 * f0).all()


def test_dbsa_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = DBSA(4, 4)
    m(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_dbsa_depends_on_the_condition():
    torch.manual_seed(0)
    m = DBSA(4, 4)
    f0 = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(m(f0, torch.randn(1, 4, 8, 8)), m(f0, torch.randn(1, 4, 8, 8)))


def test_spatial_attention_is_one_gate_for_all_channels():
    torch.manual_seed(0)
    m = SpatialAttention(7)
    f0, f_cond = torch.randn(2, 5, 12, 12), torch.randn(2, 3, 12, 12)
    g = m.attention(f_cond)
    assert g.shape == (2, 1, 12, 12)
    torch.testing.assert_close(m(f0, f_cond), f0 + g * f0)

"""Every registered method, built small, honours the interface: a finite scalar loss that
reaches the parameters, reproducible for a generator seed, int64 samples of the right shape
and range, and an honest NFE count."""
from __future__ import annotations

import pytest
import torch

from benchmark.methods import SegmentationMethod, available_methods, build_method

K = 3  # classes
SMALL = {
    # name: (model params, samples returned for n=3)
    "unet": ({"channels": (4, 8, 16), "strides": (2, 2)}, 1),
    "flowseg-plain": ({"channels": (8, 16), "norm_num_groups": 4, "steps": 2}, 3),
}
MEDFLOWSEG_TINY = {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
                   "fa_depth": 1, "fa_dim": 16, "fa_heads": 2, "steps": 2}
for _name in ("medflowseg", "medflowseg-backbone", "medflowseg-sa", "medflowseg-dbsa", "medflowseg-fa",
              "medflowseg-nomod"):
    SMALL[_name] = (MEDFLOWSEG_TINY, 3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is faster than several, and immune to busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 1, 32, 32, generator=g)
    labels = torch.randint(0, K, (2, 32, 32), generator=g)
    return images, labels


def build(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(name, 1, K, {**SMALL[name][0], **overrides})


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_suite_method_is_covered():
    assert set(SMALL) <= set(available_methods())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_is_a_segmentation_method(name):
    m = build(name)
    assert isinstance(m, torch.nn.Module) and isinstance(m, SegmentationMethod)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_loss_is_finite_scalar_and_backpropagates(name, batch):
    images, labels = batch
    m = build(name)
    loss = m.loss(images, labels, gen(0))
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert params
    assert [n for n, p in params if p.grad is None] == [], "every trainable parameter is in the graph"
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    assert any(p.grad.abs().sum() > 0 for _, p in params)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradient_reaches_every_parameter(name, batch):
    """MONAI's DiffusionModelUNet zero-initialises its output and residual convolutions, so at
    initialisation most gradients are exactly zero; with those tensors perturbed, every trainable
    parameter must get a non-zero gradient."""
    images, labels = batch
    m = build(name)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(0.0, 0.05, generator=gen(1))
    m.loss(images, labels, gen(0)).backward()
    zero = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert zero == []


@pytest.mark.parametrize("name", sorted(SMALL))
def test_loss_reproducible_for_a_generator_seed(name, batch):
    images, labels = batch
    m = build(name)
    a = m.loss(images, labels, gen(123))
    b = m.loss(images, labels, gen(123))
    assert torch.equal(a, b)


def test_flow_loss_depends_on_the_generator(batch):
    images, labels = batch
    m = build("flowseg-plain")
    assert not torch.equal(m.loss(images, labels, gen(1)), m.loss(images, labels, gen(2)))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sample_shape_dtype_range(name, batch):
    images, _ = batch
    m = build(name).eval()
    out = m.sample(images, 3, gen(0))
    assert out.dtype == torch.int64
    assert out.shape == (SMALL[name][1], 2, 32, 32)
    assert out.min() >= 0 and out.max() < K
    assert not out.requires_grad
    assert torch.equal(out, m.sample(images, 3, gen(0))), "same generator seed, same samples"


@pytest.mark.parametrize("solver, steps, nfe", [("euler", 2, 2), ("midpoint", 2, 4), ("euler", 3, 3)])
def test_flow_nfe(batch, solver, steps, nfe):
    images, _ = batch
    m = build("flowseg-plain", solver=solver, steps=steps).eval()
    m.sample(images[:1], 1, gen(0))
    assert m.nfe == nfe


def test_unet_nfe_is_one(batch):
    m = build("unet").eval()
    m.sample(batch[0], 3, gen(0))
    assert m.nfe == 1

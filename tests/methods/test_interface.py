"""Every registered method, built small, honours the interface: a finite scalar loss that
reaches the parameters, reproducible for a generator seed, int64 samples of the right shape
and range with an honest NFE count per sample, and a sampler passed per call that leaves the model as it was."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from benchmark.config import load_config
from benchmark.methods import SegmentationMethod, available_methods, build_method
from benchmark.methods.registry import method_class
from tests.conftest import ROOT

K = 3  # classes
SMALL = {
    # name: (model params, samples returned for n=3)
    "unet": ({"channels": (4, 8, 16), "strides": (2, 2)}, 1),
    "flowseg-plain": ({"channels": (8, 16), "norm_groups": 4, "steps": 2}, 3),
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
    drawn = m.sample(images, 3, gen(0))
    out = drawn.labels
    assert out.dtype == torch.int64
    assert out.shape == (SMALL[name][1], 2, 32, 32)
    assert out.min() >= 0 and out.max() < K
    assert not out.requires_grad
    assert len(drawn.nfe) == SMALL[name][1]
    assert torch.equal(out, m.sample(images, 3, gen(0)).labels), "same generator seed, same samples"


@pytest.mark.parametrize("solver, steps, nfe", [("euler", 2, 2), ("midpoint", 2, 4), ("euler", 3, 3)])
def test_flow_nfe(batch, solver, steps, nfe):
    images, _ = batch
    m = build("flowseg-plain", solver=solver, steps=steps).eval()
    assert m.sample(images[:1], 2, gen(0)).nfe == (nfe, nfe)


@pytest.mark.parametrize("name", sorted(n for n in SMALL if n != "unet"))
def test_a_passed_sampler_sets_the_steps_and_leaves_the_model_as_it_was(name, batch):
    images, _ = batch
    m = build(name).eval()
    default = m.default_sampler
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.steps = 9
    with pytest.raises(AttributeError):
        m.default_sampler = dataclasses.replace(default, steps=9)
    assert m.sample(images, 2, gen(0), dataclasses.replace(default, steps=5)).nfe == (5, 5)
    assert m.default_sampler is default and m.sample(images, 1, gen(0)).nfe == (default.steps,)


def test_unet_is_one_evaluation_and_takes_no_sampler(batch):
    m = build("unet").eval()
    assert m.default_sampler is None
    assert m.sample(batch[0], 3, gen(0)).nfe == (1,)
    with pytest.raises(ValueError, match="UNetMethod is a deterministic network and takes no sampler"):
        m.sample(batch[0], 1, gen(0), build("flowseg-plain").default_sampler)


def test_a_flow_method_refuses_a_sampler_of_another_kind(batch):
    from baselines.medsegdiff import DDIMSampler

    with pytest.raises(TypeError, match=r"PlainFlowSeg samples with a medflowseg.flow.ODESolver, got DDIMSampler"):
        build("flowseg-plain").sample(batch[0], 1, gen(0), DDIMSampler(2))


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml", "profiles/cpu-full.yaml", "profiles/cpu-64.yaml"])
def test_every_shipped_method_section_names_parameters_the_method_takes(profile):
    """The same parameter has the same name in every method: ``steps`` for the sampler, ``norm_groups``."""
    cfg = load_config(ROOT / profile)
    for name in cfg.method:
        cls = method_class(name)
        if not hasattr(cls, "sample"):
            continue   # trains and predicts by itself (nnU-Net)
        model = cfg.method_config(name).model
        inspect.signature(cls).bind(in_channels=1, num_classes=2, **model)
        assert "nfe" not in model and not any(k.startswith("ddim") or k == "norm_num_groups" for k in model), name

"""MONAI's UNETR and Swin UNETR in 2D behind the method interface."""
from __future__ import annotations

import pytest
import torch

from benchmark.methods import build_method
from medflowseg.flow import ODESolver

TINY = {"unetr": {"img_size": 64, "feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4},
        "swin-unetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2)}}


@pytest.mark.parametrize("name", sorted(TINY))
def test_trains_and_predicts_one_sample(name):
    torch.manual_seed(0)
    method = build_method(name, 3, 4, TINY[name])
    # 64 px: Swin UNETR's bottleneck is 1/32 of the input, and instance norm needs more than one pixel there
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    g = torch.Generator().manual_seed(0)
    loss = method.loss(images, labels, g)
    loss.backward()
    unused = [n for n, p in method.named_parameters() if p.grad is None]
    assert torch.isfinite(loss) and not unused, "every counted parameter is one the network uses"
    out = method.sample(images, 5, g)
    assert out.labels.shape == (1, 2, 64, 64) and out.labels.dtype == torch.int64 and out.nfe == (1,)
    assert method.default_sampler is None
    with pytest.raises(ValueError, match="deterministic network and takes no sampler"):
        method.sample(images, 1, g, sampler=ODESolver("euler", 2))


def test_unetr_names_the_setting_when_the_image_size_differs():
    method = build_method("unetr", 1, 2, TINY["unetr"])
    with pytest.raises(ValueError, match=r"built for 64x64 images .* set method.unetr.model.img_size"):
        method.sample(torch.zeros(1, 1, 32, 32), 1, torch.Generator())


def test_swin_unetr_at_32_px_trains_with_batch_norm_only(one_thread):
    """At 32 px the bottleneck is 1 x 1: instance norm (the default) cannot normalise one pixel, batch norm over a
    batch of 8 can, and every parameter gets a gradient."""
    images, labels = torch.randn(8, 1, 32, 32), torch.randint(0, 3, (8, 32, 32))
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    instance = build_method("swin-unetr", 1, 3, TINY["swin-unetr"])
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in instance.modules())
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        instance.loss(images, labels, g)
    method = build_method("swin-unetr", 1, 3, {**TINY["swin-unetr"], "norm_name": "batch"})
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in method.modules())
    loss = method.loss(images, labels, g)
    loss.backward()
    no_grad = [n for n, p in method.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert torch.isfinite(loss) and not no_grad, no_grad
    assert method.sample(images, 1, g).labels.shape == (1, 8, 32, 32)


def test_swin_unetr_rejects_an_unknown_norm():
    with pytest.raises(ValueError, match="norm_name must be one of instance, batch, got 'group'"):
        build_method("swin-unetr", 1, 3, {**TINY["swin-unetr"], "norm_name": "group"})

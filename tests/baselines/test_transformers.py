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

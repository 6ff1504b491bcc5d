"""Checks shared by the tests of TransUNet, Swin-Unet and MT-UNet: the method interface on a 64 px batch, one
backward pass reaching every parameter, and the profiles' sections building the network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.config import load_config
from medflowseg.flow import ODESolver

ROOT = Path(__file__).resolve().parents[2]


def section(profile: str, name: str) -> dict:
    """The ``method.NAME.model`` section of ``profiles/PROFILE.yaml``."""
    return dict(load_config(ROOT / "profiles" / f"{profile}.yaml").method_config(name).model)


def data_size(profile: str) -> int:
    """``data.size`` of ``profiles/PROFILE.yaml``."""
    return load_config(ROOT / "profiles" / f"{profile}.yaml").data.size


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_trains_and_predicts(method, in_channels: int, num_classes: int, size: int = 64,
                              idle: tuple[str, ...] = ()) -> None:
    """One loss and backward on a ``(2, C, size, size)`` batch: finite, and a nonzero gradient on every parameter
    but exactly those whose names contain one of ``idle`` (a configuration's known dead ends); ``sample`` gives one
    int64 label map per image in [0, K) with one network evaluation and refuses a sampler."""
    torch.manual_seed(0)
    images, labels = torch.randn(2, in_channels, size, size), torch.randint(0, num_classes, (2, size, size))
    g = torch.Generator().manual_seed(0)
    method.train()
    assert method.net(images).shape == (2, num_classes, size, size)
    assert torch.isfinite(method.loss(images, labels, g))
    # the graph's reach in eval mode: in training, stochastic depth may drop a whole branch for both images
    method.eval()
    loss = method.loss(images, labels, g)
    loss.backward()
    no_grad = {n for n, p in method.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert no_grad == {n for n, _ in method.named_parameters() if any(i in n for i in idle)}, \
        f"parameters the loss does not reach: {sorted(no_grad)}"
    out = method.sample(images, 5, g)
    assert out.labels.shape == (1, 2, size, size) and out.labels.dtype == torch.int64 and out.nfe == (1,)
    assert 0 <= int(out.labels.min()) and int(out.labels.max()) < num_classes
    assert method.default_sampler is None
    with pytest.raises(ValueError, match="deterministic network and takes no sampler"):
        method.sample(images, 1, g, sampler=ODESolver("euler", 2))
    with pytest.raises(ValueError, match=rf"built for {size}x{size} images .* set method\.[a-z-]+\.model\.img_size "
                                         r"to data\.size"):
        method.sample(torch.zeros(1, in_channels, size // 2, size // 2), 1, g)

"""ATFM at the paper profile: its LIDC and ISIC settings give the public code's stage lengths in epochs at the
public batches, and the flow network's size beside the public one's (counted from its layer list)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baselines.atfm import ATFM
from benchmark.config import load_config
from benchmark.training.data import epoch_steps

PAPER = Path(__file__).resolve().parents[2] / "profiles" / "paper.yaml"
IN_CHANNELS = {"lidc": 1, "isic": 3}
# Public code (PerceptionComputingLab/ATFM at eeaa1b4): dataset -> (GTR epochs, GTR batch, SFM epochs, SFM batch,
# SFM base width d, Dice weight, Euler steps). readme.md:29-30; train_prior_LIDC.py:209-211, :187;
# train_prior_ISIC.py:197-198, :175; test_prior_LIDC.py:213, test_prior_ISIC.py:221; paper: SFM 200 / 120 epochs.
PUBLIC = {"lidc": (1000, 256, 200, 6, 128, 1e-3, 25), "isic": (400, 8, 120, 1, 256, 1e-4, 50)}
# The public SFM (models/Condition_Unet.py, Unet(channels=1, dim_mults=(1, 2, 4), dim=d, resnet_block_groups=1))
# counted by instantiating it: 38,547,585 at d = 128 (LIDC), 152,133,889 at d = 256 (ISIC).
PUBLIC_SFM_PARAMS = {128: 38_547_585, 256: 152_133_889}
OURS_SFM_PARAMS = {"lidc": 42_082_433, "isic": 167_723_265}


def public_sfm_parameters(d: int, mults=(1, 2, 4), heads: int = 4, head_dim: int = 32) -> int:
    """The public SFM's parameter count from its layers (models/Condition_Unet.py), for one mask channel and
    the image concatenated to it (self_condition: 2 input channels); GroupNorm with 1 group everywhere."""
    conv = lambda i, o, k, bias=True: i * o * k * k + (o if bias else 0)  # noqa: E731
    norm = lambda c: 2 * c  # noqa: E731
    time = 4 * d

    def resnet(i, o):          # time MLP to scale and shift, two weight-standardised conv blocks, 1x1 skip
        return time * 2 * o + 2 * o + conv(i, o, 3) + norm(o) + conv(o, o, 3) + norm(o) + (conv(i, o, 1) if i != o else 0)

    def linear_attention(c):   # pre-norm, qkv without bias, output conv + GroupNorm
        return norm(c) + conv(c, 3 * heads * head_dim, 1, False) + conv(heads * head_dim, c, 1) + norm(c)

    dims = [d] + [d * m for m in mults]
    pairs = list(zip(dims[:-1], dims[1:]))
    total = conv(2, d, 1) + d * time + time + time * time + time               # init conv, time MLP
    for i, (a, b) in enumerate(pairs):                                              # encoder
        last = i == len(pairs) - 1
        total += 2 * resnet(a, a) + linear_attention(a) + (conv(a, b, 3) if last else conv(4 * a, b, 1))
    mid = dims[-1]
    total += 2 * resnet(mid, mid) + norm(mid) + conv(mid, 3 * heads * head_dim, 1, False) + conv(heads * head_dim, mid, 1)
    for i, (a, b) in enumerate(reversed(pairs)):                                    # decoder: a skip per block
        total += 2 * resnet(b + a, b) + linear_attention(b) + conv(b, a, 3)
    return total + resnet(2 * d, d) + conv(d, 1, 1)                                 # final block and conv


@pytest.mark.parametrize("d", sorted(PUBLIC_SFM_PARAMS))
def test_the_layer_count_reproduces_the_public_networks_size(d):
    assert public_sfm_parameters(d) == PUBLIC_SFM_PARAMS[d]


def _paper_model(dataset: str) -> tuple[ATFM, object]:
    mc = load_config(PAPER).method_config("atfm", dataset)
    with torch.device("meta"):          # sizes only: no memory for 170 M parameters
        return ATFM(IN_CHANNELS[dataset], 2, **mc.model), mc


@pytest.mark.parametrize("dataset", sorted(PUBLIC))
def test_paper_profile_sfm_has_the_public_widths_and_its_size_is_pinned(dataset):
    model, mc = _paper_model(dataset)
    d = PUBLIC[dataset][4]
    assert model.unet.channels == (d, 2 * d, 4 * d) and model.time_embed.dim == 4 * d
    assert model.attention.heads == 4 and model.attention.head_dim == 32
    ours = sum(p.numel() for p in model.sfm_parameters())
    assert ours == OURS_SFM_PARAMS[dataset]
    # our residual UNet's encoder is wider than the public one's (module docstring): about 10% more
    assert 1.0 < ours / PUBLIC_SFM_PARAMS[d] < 1.11


@pytest.mark.parametrize("dataset", sorted(PUBLIC))
@pytest.mark.parametrize("slices", [97, 1_000, 12_077, 40_000])
def test_paper_profile_stage_lengths_are_the_public_epochs_at_the_public_batches(dataset, slices):
    gtr_epochs, gtr_batch, sfm_epochs, sfm_batch, _, dice_weight, steps = PUBLIC[dataset]
    model, mc = _paper_model(dataset)
    assert mc.train.batch_size == gtr_batch and model.sfm_batch_size == sfm_batch
    assert model.dice_weight == dice_weight and model.default_sampler.steps == steps
    assert model.sfm_luminance == (dataset == "isic")
    to_steps = lambda epochs: epoch_steps(epochs, slices, mc.train.batch_size)  # noqa: E731  (one process)
    model.set_epoch_length(to_steps)
    total = to_steps(mc.train.epochs)
    gtr_drawn, sfm_drawn = model.gtr_steps * gtr_batch, (total - model.gtr_steps) * sfm_batch
    assert gtr_epochs * slices <= gtr_drawn < gtr_epochs * slices + gtr_batch
    # within one SFM batch, plus LIDC's train.epochs rounded up to 0.01 (1000 + 8533.34 for 8533.33...)
    assert abs(sfm_drawn - sfm_epochs * slices) <= sfm_batch + 2e-4 * slices

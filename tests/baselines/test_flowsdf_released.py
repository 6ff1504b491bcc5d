"""FlowSDF as released (github.com/leabogensperger/FlowSDF): the RRDB encoder's structure, the zero output
convolution, unscaled time, the threshold, the gradient clipping it declares, and the paper profile's values."""
from __future__ import annotations

import math

import pytest
import torch

from baselines.flowsdf import FlowSDF, RRDBEncoder, sdf_to_labels
from benchmark.config import ConfigError, load_config
from benchmark.methods import build_method
from benchmark.methods.interface import ClipsGradients
from tests.conftest import ROOT

TINY = {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "encoder_width": 8,
        "rrdb_growth": 4}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(c_in: int, c_out: int) -> int:
    return c_in * c_out * 9 + c_out   # a 3 x 3 convolution with bias


def test_encoder_has_the_released_layers():
    """RRDBNet(in_nc=3, out_nc=128, nf=64, nb=12, gc=32), the encoder of main.py, counted layer by layer from
    models/RRDB.py: conv_first, 12 RRDBs of 3 dense blocks (5 convolutions each), trunk_conv, HRconv, conv_last."""
    dense_block = sum(_conv(64 + i * 32, 32) for i in range(4)) + _conv(64 + 4 * 32, 64)
    released = _conv(3, 64) + 12 * 3 * dense_block + 2 * _conv(64, 64) + _conv(64, 128)
    encoder = RRDBEncoder(3, 128, width=64, blocks=12, growth=32)
    assert _params(encoder) == released == 8_782_592
    assert len(encoder.trunk) == 12


def test_encoder_adds_its_trunk_to_the_first_convolution():
    """With the trunk convolution at zero, the encoder is conv_last(LeakyReLU(HRconv(conv_first(x)))): the long
    residual carries the first convolution past the RRDBs."""
    torch.manual_seed(0)
    encoder = RRDBEncoder(2, 6, width=8, blocks=2, growth=4)
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        full = encoder(x)
        torch.nn.init.zeros_(encoder.trunk_conv.weight)
        torch.nn.init.zeros_(encoder.trunk_conv.bias)
        short = encoder(x)
        by_hand = encoder.last(torch.nn.functional.leaky_relu(encoder.hr_conv(encoder.first(x)), 0.2))
    assert full.shape == (1, 6, 12, 12)
    assert torch.allclose(short, by_hand) and not torch.allclose(full, short)


def test_velocity_starts_at_zero():
    """The output convolution is zero-initialised (zero_module, unet_segdiff.py): a new model's velocity is 0."""
    torch.manual_seed(0)
    model = FlowSDF(1, 3, **TINY)
    v = model.velocity(torch.randn(2, 2, 16, 16), torch.rand(2), model.condition(torch.randn(2, 1, 16, 16), False))
    assert v.shape == (2, 2, 16, 16) and torch.count_nonzero(v) == 0


def test_time_enters_the_sinusoid_unscaled_at_time_scale_one():
    """timestep_embedding(t, dim) of the released models/nn.py: cos then sin of t * 10000^(-i / half)."""
    model = FlowSDF(1, 2, **{**TINY, "time_scale": 1.0})
    t = torch.tensor([0.0, 0.25, 0.9])
    half = 8
    args = t[:, None] * torch.exp(-math.log(10000) * torch.arange(half) / half)[None]
    expected = model.time_embed.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=1))
    assert torch.allclose(model.time_embed(t), expected)
    suite = FlowSDF(1, 2, **TINY)   # the suite's default scale, 1000
    suite.time_embed.mlp.load_state_dict(model.time_embed.mlp.state_dict())
    assert not torch.allclose(suite.time_embed(t), expected)


def test_threshold_moves_the_boundary():
    sdf = torch.tensor([-0.1, 0.0, 0.02, 0.04]).reshape(1, 1, 1, 4)
    assert sdf_to_labels(sdf)[0, 0].tolist() == [1, 1, 0, 0]            # Eq. 6: SDF <= 0
    assert sdf_to_labels(sdf, 0.03)[0, 0].tolist() == [1, 1, 1, 0]      # the released sampler: SDF <= 0.03
    model = FlowSDF(1, 2, **{**TINY, "threshold": 0.03})
    assert torch.equal(model.read_out(sdf), sdf_to_labels(sdf, 0.03))


def test_declares_infinity_norm_clipping_in_the_order_clip_grad_norm_takes():
    """What the trainer calls with ``grad_clip``: clip_grad_norm_(params, max_norm, norm_type), after which no
    gradient entry exceeds 1 in absolute value (the loss is scaled so that some did)."""
    torch.manual_seed(0)
    model = FlowSDF(1, 2, **{**TINY, "grad_clip": 1.0})
    assert isinstance(model, ClipsGradients) and model.grad_clip == (math.inf, 1.0)
    assert FlowSDF(1, 2, **TINY).grad_clip is None
    images, labels = torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16))
    (1e4 * model.loss(images, labels, torch.Generator().manual_seed(0))).backward()
    largest = lambda: max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)  # noqa: E731
    assert largest() > 1
    norm_type, max_norm = model.grad_clip
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)
    assert largest() <= 1 + 1e-6


@pytest.mark.parametrize("bad", [{"rrdb_blocks": 0}, {"encoder_width": 0}, {"threshold": 1.0}, {"delta": 0.0},
                                 {"time_scale": 0.0}, {"grad_clip": 0.0}])
def test_bad_values_are_config_errors(bad):
    with pytest.raises(ConfigError, match="method.flowsdf.model"):
        build_method("flowsdf", 1, 2, {**TINY, **bad})


def test_paper_profile_per_dataset_settings():
    """The paper profile: the released values everywhere, MoNuSeg's own sigma_min, EMA, truncation and NFE, and
    FlowSDF's training lengths in epochs on its two datasets; the others keep the profile's steps."""
    cfg = load_config(ROOT / "profiles" / "paper.yaml")
    base, glas, monuseg, acdc = (cfg.method_config("flowsdf", d) for d in (None, "glas", "monuseg", "acdc"))
    m = base.model
    assert (m["encoder_width"], m["rrdb_blocks"], m["rrdb_growth"], m["time_scale"]) == (64, 12, 32, 1.0)
    assert (m["delta"], m["threshold"], m["grad_clip"], m["sigma_min"], m["steps"]) == (30.0, 0.0, 1.0, 1e-3, 100)
    assert (base.train.batch_size, base.train.warmup_steps, base.train.ema_decay) == (16, 0, 0.9999)
    assert (glas.train.epochs, glas.train.steps, glas.model["sigma_min"], glas.train.ema_decay) == \
        (40000, None, 1e-3, 0.9999)
    assert (monuseg.train.epochs, monuseg.model["sigma_min"], monuseg.train.ema_decay) == (30000, 1e-5, 0.999)
    assert (monuseg.model["steps"], monuseg.model["delta"]) == (4, pytest.approx(15 * 256 / 500))
    # the other datasets: the profile's train.steps
    assert (acdc.train.steps, acdc.train.epochs, acdc.model) == (100_000, None, base.model)
    encoder = RRDBEncoder(3, m["channels"][0], m["encoder_width"], m["rrdb_blocks"], m["rrdb_growth"])
    assert _params(encoder) == 8_782_592   # the released encoder, as counted above

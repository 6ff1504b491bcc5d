"""FlowSDF: the SDF transform against hand-computed distances, its round trip, the path, Algorithm 2's NFE."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.flowsdf import FlowSDF, sdf_to_labels, signed_distance
from benchmark.methods import build_method
from medflowseg.flow import LinearPath, ODESolver

TINY = {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "encoder_width": 8,
        "rrdb_growth": 4}


def _labels(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)[None]  # (1, H, W)


def test_sdf_of_a_segment_is_the_signed_distance_in_pixels():
    sdf = signed_distance(_labels([[0, 0, 1, 1, 1, 0, 0]]), 2, delta=15.0)
    assert sdf.shape == (1, 1, 1, 7)
    assert sdf[0, 0, 0].tolist() == pytest.approx([v / 15 for v in (2, 1, -1, -2, -1, 1, 2)])


def test_sdf_is_euclidean_and_truncated_at_delta():
    labels = torch.zeros(1, 5, 5, dtype=torch.int64)
    labels[0, 2, 2] = 1
    sdf = signed_distance(labels, 2, delta=2.5)[0, 0] * 2.5
    assert sdf[2, 2] == pytest.approx(-1.0)
    assert sdf[2, 0] == pytest.approx(2.0) and sdf[1, 1] == pytest.approx(math.sqrt(2))
    assert sdf[0, 0] == pytest.approx(2.5)  # sqrt(8) = 2.83, truncated at delta


def test_touching_objects_and_touching_classes():
    # objects of one class that touch (pixels 1-2 and 3-4) form one region: no boundary between them
    touching = signed_distance(_labels([[0, 1, 1, 1, 1, 0]]), 2, delta=10.0) * 10
    assert touching[0, 0, 0].tolist() == pytest.approx([1, -1, -2, -2, -1, 1])
    # classes that touch: each is the other's outside; the image border is not a boundary
    labels = _labels([[1, 1, 1, 1, 2, 2],
                      [1, 1, 1, 1, 2, 2]])
    sdf = signed_distance(labels, 3, delta=10.0) * 10
    assert sdf[0, 0, 0].tolist() == pytest.approx([-4, -3, -2, -1, 1, 2])
    assert sdf[0, 1, 0].tolist() == pytest.approx([4, 3, 2, 1, -1, -2])
    assert torch.equal(sdf_to_labels(sdf / 10), labels)


def test_empty_and_full_masks():
    empty = signed_distance(torch.zeros(2, 4, 4, dtype=torch.int64), 3, delta=15.0)
    assert (empty == 1).all()
    full = signed_distance(torch.ones(1, 4, 4, dtype=torch.int64), 2, delta=15.0)
    assert (full == -1).all()
    assert (sdf_to_labels(empty) == 0).all() and (sdf_to_labels(full) == 1).all()


def test_mask_sdf_mask_round_trip_is_exact():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 4, size=(3, 16, 16))).long()
    for delta in (1.0, 15.0):
        assert torch.equal(sdf_to_labels(signed_distance(labels, 4, delta)), labels)


def test_ot_path_with_sigma_min():
    torch.manual_seed(0)
    x0, x1, sigma = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), 1e-3
    path = LinearPath(sigma)
    assert torch.allclose(path.sample(x0, x1, torch.zeros(3)).x_t, x0)
    assert torch.allclose(path.sample(x0, x1, torch.ones(3)).x_t, x1 + sigma * x0)
    t, eps = torch.full((3,), 0.3), 1e-3
    numeric = (path.sample(x0, x1, t + eps).x_t - path.sample(x0, x1, t - eps).x_t) / (2 * eps)
    assert torch.allclose(path.sample(x0, x1, t).u, numeric, atol=1e-3)


@pytest.mark.parametrize("steps, injections, mmse, expected", [(4, 1, 1, 4), (4, 2, 1, 4 + 2),
                                                               (4, 4, 1, 4 + 3 + 2 + 1), (4, 1, 3, 12),
                                                               (4, 2, 3, 3 * (4 + 2))])
def test_sampling_counts_network_evaluations_exactly(steps, injections, mmse, expected):
    """Per returned sample: every restart's Euler steps (step size 1 / steps from t = k / T) of every MMSE draw."""
    torch.manual_seed(0)
    model = FlowSDF(1, 3, steps=steps, noise_injection_steps=injections, mmse_samples=mmse, **TINY).eval()
    g = torch.Generator().manual_seed(0)
    out = model.sample(torch.randn(2, 1, 16, 16), 2, g)
    assert out.labels.shape == (2, 2, 16, 16) and out.labels.dtype == torch.int64
    assert 0 <= out.labels.min() and out.labels.max() < 3
    assert out.nfe == (expected, expected)


def test_a_passed_sampler_sets_the_steps_of_every_restart():
    torch.manual_seed(0)
    model = FlowSDF(1, 3, steps=4, noise_injection_steps=2, mmse_samples=2, **TINY).eval()
    out = model.sample(torch.randn(1, 1, 16, 16), 1, torch.Generator(), ODESolver("euler", 8))
    assert out.nfe == (2 * (8 + 4),) and model.default_sampler == ODESolver("euler", 4)


def test_loss_trains_the_image_encoder_and_is_registered():
    """The output convolution starts at zero (so the first step moves only it); after one step the image
    features reach the loss."""
    model = build_method("flowsdf", 3, 2, TINY)
    assert isinstance(model, FlowSDF)
    images, labels = torch.randn(2, 3, 16, 16), torch.randint(0, 2, (2, 16, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(2):
        optimizer.zero_grad()
        loss = model.loss(images, labels, torch.Generator().manual_seed(step))
        loss.backward()
        encoder_grad = model.encoder.first.weight.grad.abs().sum()
        assert torch.isfinite(loss) and (encoder_grad > 0) == (step == 1)
        optimizer.step()

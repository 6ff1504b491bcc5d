"""Fusion of samples or raters: majority vote (= the mean of hard samples), STAPLE, and the per-pixel sample spread."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from benchmark.config import ConfigError, EvalConfig, load_config
from benchmark.metrics.fusion import (FUSIONS, STAPLE_MAX_ITERATIONS, StapleNotConverged, fuse, majority_vote,
                                      sample_entropy, sample_spread, staple)
from tests.conftest import write_params


def disc_truth(size: int = 64) -> np.ndarray:
    """A 3-class ``(size, size)`` truth: background 0, a ring 1 around a disc 2."""
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - size // 2) ** 2 + (xx - size // 2 + 2) ** 2
    return np.where(r2 < 7 ** 2, 2, np.where(r2 < 14 ** 2, 1, 0)).astype(np.uint8)


def binary_raters(truth: np.ndarray, pq: list[tuple[float, float]], seed: int) -> np.ndarray:
    """``(len(pq), ...)`` masks: rater k keeps foreground with prob p_k and background with prob q_k."""
    rng = np.random.default_rng(seed)
    out = []
    for p, q in pq:
        u = rng.random(truth.shape)
        out.append(np.where(truth == 1, u < p, u >= q))
    return np.stack(out).astype(np.uint8)


def multilabel_raters(truth: np.ndarray, errors: list[float], num_classes: int, seed: int) -> np.ndarray:
    """``(len(errors), ...)`` maps: rater k replaces a pixel by a uniform random label with prob e_k."""
    rng = np.random.default_rng(seed)
    out = []
    for e in errors:
        noise = rng.integers(0, num_classes, truth.shape)
        out.append(np.where(rng.random(truth.shape) < e, noise, truth))
    return np.stack(out).astype(np.uint8)


def thin_copies(seed: int, n: int, keep: float, mark: float, num_classes: int = 2, size: int = 64) -> np.ndarray:
    """``(n, size, size)`` noisy copies of two one-pixel lines (labels 1 and ``num_classes - 1``): each copy keeps
    a line pixel with prob ``keep`` and marks a background pixel with a random foreground label with prob ``mark``."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.uint8)
    truth[size // 3, 4:-4] = 1
    truth[4:-4, size // 2] = num_classes - 1
    copies = []
    for _ in range(n):
        kept, marked = rng.random(truth.shape) < keep, rng.random(truth.shape) < mark
        noise = rng.integers(1, num_classes, truth.shape)
        copies.append(np.where(truth > 0, np.where(kept, truth, 0), np.where(marked, noise, 0)))
    return np.stack(copies).astype(np.uint8)


def sitk_binary(stack: np.ndarray, max_iterations: int | None = None) -> tuple[np.ndarray, int]:
    """SimpleITK's binary STAPLE with its defaults (no cap unless given): probability > 0.5, iterations run."""
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    if max_iterations is not None:
        f.SetMaximumIterations(max_iterations)
    probability = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in stack]))
    return probability > 0.5, f.GetElapsedIterations()


def sitk_multilabel(stack: np.ndarray, num_classes: int, max_iterations: int | None = None) -> tuple[np.ndarray, int]:
    """SimpleITK's multi-label STAPLE with its defaults, undecided pixels given the majority; iterations run."""
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(num_classes)
    if max_iterations is not None:
        f.SetMaximumNumberOfIterations(max_iterations)
    count = [0]
    f.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
    raw = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in stack]))
    return np.where(raw == num_classes, majority_vote(stack, num_classes), raw), count[0]


def dice(a: np.ndarray, b: np.ndarray, k: int = 1) -> float:
    return 2 * ((a == k) & (b == k)).sum() / ((a == k).sum() + (b == k).sum())


# --- STAPLE, two classes -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_staple_recovers_truth_from_good_raters(seed):
    truth = (disc_truth() > 0).astype(np.uint8)
    stack = binary_raters(truth, [(0.9, 0.95), (0.85, 0.97), (0.95, 0.9), (0.8, 0.95), (0.9, 0.98)], seed)
    fused = staple(stack, 2)
    assert fused.shape == truth.shape and fused.dtype == np.uint8
    assert dice(fused, truth) > 0.98


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_staple_beats_majority_when_two_of_five_raters_are_poor(seed):
    truth = (disc_truth() > 0).astype(np.uint8)
    stack = binary_raters(truth, [(0.95, 0.95), (0.9, 0.95), (0.95, 0.9), (0.5, 0.6), (0.4, 0.5)], seed)
    d_staple, d_majority = dice(staple(stack, 2), truth), dice(majority_vote(stack, 2), truth)
    assert d_staple > 0.95
    assert d_staple > d_majority + 0.05  # measured: about 0.96 against 0.86


def test_binary_staple_is_simpleitk_staple_probability_above_one_half():
    truth = (disc_truth() > 0).astype(np.uint8)
    stack = binary_raters(truth, [(0.95, 0.95), (0.9, 0.95), (0.95, 0.9), (0.5, 0.6), (0.4, 0.5)], 0)
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    probability = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in stack]))  # (H, W) float64
    np.testing.assert_array_equal(staple(stack, 2), probability > 0.5)


def test_binary_staple_on_3d_and_single_slice_volumes():
    truth = np.stack([(disc_truth() > 0)] * 4).astype(np.uint8)  # (Z, H, W)
    stack = binary_raters(truth, [(0.9, 0.95), (0.85, 0.97), (0.95, 0.9), (0.8, 0.95), (0.9, 0.98)], 0)
    fused = staple(stack, 2)
    assert fused.shape == (4, 64, 64) and dice(fused, truth) > 0.98
    assert staple(stack[:, :1], 2).shape == (1, 64, 64)


def test_binary_staple_of_one_map_and_its_complement_is_background():
    """Two raters in total disagreement: STAPLE's probability is 0.5, and 0.5 is background."""
    truth = (disc_truth() > 0).astype(np.uint8)
    assert not staple(np.stack([truth, 1 - truth]), 2).any()


# (seed, copies, keep, mark): noisy copies of thin lines on which SimpleITK converges after 834, 1,392 and
# 3,270 iterations, and where its map after 100 differs (9, 78 and 6 pixels)
SLOW_BINARY = [(2, 6, 0.25, 0.1), (9, 6, 0.25, 0.1), (3, 4, 0.2, 0.03)]


@pytest.mark.parametrize("case", SLOW_BINARY)
def test_binary_staple_is_simpleitk_staple_run_to_convergence(case):
    stack = thin_copies(*case)
    converged, iterations = sitk_binary(stack)
    assert 100 < iterations < STAPLE_MAX_ITERATIONS
    with warnings.catch_warnings():
        warnings.simplefilter("error", StapleNotConverged)
        np.testing.assert_array_equal(staple(stack, 2), converged)
    assert (sitk_binary(stack, 100)[0] != converged).any()  # what the former cap of 100 gave


def test_binary_guard_stops_warns_and_is_exact():
    """ITK stops at the guard only when not converged: one more iteration than it needs is silent."""
    stack = thin_copies(*SLOW_BINARY[1])
    _, iterations = sitk_binary(stack)  # the index of the iteration that converged: iterations + 1 were run
    with pytest.warns(StapleNotConverged, match=r"STAPLE of 6 maps \(64, 64\) stopped by its guard after 100 "):
        stopped = staple(stack, 2, max_iterations=100)
    np.testing.assert_array_equal(stopped, sitk_binary(stack, 100)[0])
    with pytest.warns(StapleNotConverged):
        staple(stack, 2, max_iterations=iterations)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StapleNotConverged)
        staple(stack, 2, max_iterations=iterations + 1)


def staple_by_numpy(stack: np.ndarray) -> tuple[np.ndarray, int]:
    """Binary STAPLE (Warfield et al. 2004) written out in numpy after ITK's STAPLEImageFilter: the prior is the
    mean vote, and the EM stops once no rater's sensitivity or specificity moves by more than 1e-7 between two
    iterations. ``(N, ...)`` masks -> the foreground probability ``(...)`` and the index of the last iteration."""
    d = stack.reshape(stack.shape[0], -1).astype(bool)
    w = d.mean(axis=0)
    prior = w.mean()
    last = None
    for iteration in range(1_000_000):
        p = (d * w).sum(axis=1) / w.sum()
        q = (~d * (1 - w)).sum(axis=1) / (1 - w).sum()
        a = np.where(d, p[:, None], 1 - p[:, None]).prod(axis=0)
        b = np.where(d, 1 - q[:, None], q[:, None]).prod(axis=0)
        w = prior * a / (prior * a + (1 - prior) * b)
        if last is not None and ((p - last[0]) ** 2 <= 1e-14).all() and ((q - last[1]) ** 2 <= 1e-14).all():
            break
        last = p, q
    return w.reshape(stack.shape[1:]), iteration


@pytest.mark.parametrize("case", [(10, 6, 0.25, 0.1), (5, 3, 0.3, 0.05), (11, 5, 0.3, 0.05)])
def test_binary_staple_equals_an_independent_numpy_staple(case):
    """Cases used nowhere else (1,013, 478 and 262 iterations): the same map as the EM written out, whose
    probabilities agree with SimpleITK's to 1e-6 and which stops on the same iteration."""
    stack = thin_copies(*case)
    probability, iteration = staple_by_numpy(stack)
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    theirs = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in stack]))
    assert iteration == f.GetElapsedIterations() > 100
    np.testing.assert_allclose(probability, theirs, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(staple(stack, 2), probability > 0.5)


# --- STAPLE, several classes ---------------------------------------------------------------


# (seed, copies, keep, mark): SimpleITK converges after 496 and 3,462 iterations; after 100 it differs by 3 and
# 100 pixels
SLOW_MULTILABEL = [(0, 3, 0.3, 0.05), (3, 3, 0.3, 0.05)]


@pytest.mark.parametrize("case", SLOW_MULTILABEL)
def test_multilabel_staple_is_simpleitk_staple_run_to_convergence(case):
    stack = thin_copies(*case, num_classes=3)
    converged, iterations = sitk_multilabel(stack, 3)
    assert 100 < iterations < STAPLE_MAX_ITERATIONS
    with warnings.catch_warnings():
        warnings.simplefilter("error", StapleNotConverged)
        np.testing.assert_array_equal(staple(stack, 3), converged)
    assert (sitk_multilabel(stack, 3, 100)[0] != converged).any()


def test_multilabel_guard_counts_iterations_by_itk_events():
    """SimpleITK gives no iteration count for the multi-label filter; the count of ITK's iteration events is it."""
    stack = thin_copies(*SLOW_MULTILABEL[0], num_classes=3)
    _, iterations = sitk_multilabel(stack, 3)
    with pytest.warns(StapleNotConverged, match="after 100 iterations"):
        stopped = staple(stack, 3, max_iterations=100)
    np.testing.assert_array_equal(stopped, sitk_multilabel(stack, 3, 100)[0])
    with pytest.warns(StapleNotConverged):
        staple(stack, 3, max_iterations=iterations - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StapleNotConverged)
        staple(stack, 3, max_iterations=iterations + 1)




@pytest.mark.parametrize("shape", ["2d", "3d"])
def test_multilabel_staple_recovers_three_class_truth(shape):
    truth = disc_truth() if shape == "2d" else np.stack([disc_truth()] * 3)
    stack = multilabel_raters(truth, [0.1, 0.15, 0.1, 0.05, 0.2], 3, seed=0)
    fused = staple(stack, 3)
    assert fused.shape == truth.shape and fused.dtype == np.uint8
    assert dice(fused, truth, 1) > 0.98 and dice(fused, truth, 2) > 0.98


def test_multilabel_undecided_pixels_are_resolved_by_majority_vote():
    stack = np.array([[[1, 2, 2, 0], [0, 2, 1, 0]],
                      [[1, 1, 1, 1], [0, 1, 1, 2]],
                      [[2, 2, 0, 0], [2, 0, 1, 2]]], np.uint8)  # (N=3, H=2, W=4)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(3)
    raw = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in stack]))
    np.testing.assert_array_equal(raw, [[1, 2, 3, 0], [0, 3, 1, 0]])  # 3: undecided
    fused = staple(stack, 3)
    # the undecided pixels hold 2-1-0 votes: a three-way tie, so majority vote gives the lowest label
    np.testing.assert_array_equal(fused, [[1, 2, 0, 0], [0, 0, 1, 0]])
    assert fused[1, 3] != majority_vote(stack, 3)[1, 3]  # elsewhere STAPLE, not the vote, decides


def test_multilabel_staple_never_returns_the_undecided_label():
    """50 random 3-rater stacks: small and noisy, so SimpleITK leaves about 100 pixels undecided."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(3, 6))
        assert staple(rng.integers(0, k, (3, 2, 4)).astype(np.uint8), k).max() < k


# --- STAPLE, degenerate stacks -------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3])
def test_staple_of_identical_maps_is_that_map(num_classes):
    truth = disc_truth() % num_classes
    np.testing.assert_array_equal(staple(np.stack([truth] * 5), num_classes), truth)
    np.testing.assert_array_equal(staple(truth[None], num_classes), truth)


@pytest.mark.parametrize("fill", [0, 1])
def test_staple_of_constant_binary_maps_is_not_nan(fill):
    """SimpleITK's binary STAPLE gives NaN on masks that are all background (or all foreground)."""
    stack = np.full((5, 8, 8), fill, np.uint8)
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    assert np.isnan(sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in stack]))).all()
    np.testing.assert_array_equal(staple(stack, 2), stack[0])


def test_staple_of_all_background_is_background():
    assert not staple(np.zeros((3, 2, 5, 5), np.uint8), 4).any()


# --- the registry and the configuration ----------------------------------------------------


def test_majority_is_the_argmax_of_the_mean_one_hot():
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 10):
        stack = rng.integers(0, 4, (n, 3, 9, 9))
        mean_one_hot = np.eye(4)[stack].mean(axis=0)  # (3, 9, 9, 4)
        np.testing.assert_array_equal(fuse(stack, 4, "majority"), mean_one_hot.argmax(axis=-1))


def test_fuse_dispatches_staple_and_rejects_unknown_names():
    stack = binary_raters((disc_truth() > 0).astype(np.uint8), [(0.9, 0.9)] * 3, 0)
    np.testing.assert_array_equal(fuse(stack, 2, "staple"), staple(stack, 2))
    slow = thin_copies(*SLOW_BINARY[0])
    with pytest.warns(StapleNotConverged, match="after 50 iterations"):
        np.testing.assert_array_equal(fuse(slow, 2, "staple", staple_max_iterations=50), sitk_binary(slow, 50)[0])
    with pytest.raises(ValueError, match="'mode' not in"):
        fuse(stack, 2, "mode")


def test_eval_config_accepts_every_fusion_and_rejects_others(tmp_path):
    for name in FUSIONS:
        assert EvalConfig(fusion=name, reference=name).fusion == name
    cfg = load_config(write_params(tmp_path / "params.yaml", evaluation={"fusion": "staple"}))
    assert cfg.evaluation.fusion == "staple"
    for key in ("fusion", "reference"):
        with pytest.raises(ConfigError, match=f"{key}: must be one of 'majority', 'staple', got 'mode'"):
            EvalConfig(**{key: "mode"})
    assert EvalConfig().staple_max_iterations == STAPLE_MAX_ITERATIONS == 100_000
    cfg = load_config(write_params(tmp_path / "p2.yaml", evaluation={"staple_max_iterations": 5000}))
    assert cfg.evaluation.staple_max_iterations == 5000
    for bad in (0, 2.5, "many"):
        with pytest.raises(ConfigError, match="staple_max_iterations"):
            EvalConfig(staple_max_iterations=bad)


# --- sample spread -------------------------------------------------------------------------


def test_sample_spread_by_hand():
    stack = np.array([[[0, 1, 0, 2]],
                      [[0, 1, 1, 2]],
                      [[0, 1, 2, 1]],
                      [[0, 2, 2, 0]]])  # (N=4, H=1, W=4)
    spread = sample_spread(stack, 3)
    assert spread.shape == (1, 4) and spread.dtype == np.float32
    # modal counts 4, 3, 2 (a 2-1-1 split) and 2 (a 2-1-1 split again)
    np.testing.assert_array_equal(spread, [[0.0, 0.25, 0.5, 0.5]])


def test_sample_spread_is_zero_for_one_sample_and_for_agreement():
    rng = np.random.default_rng(0)
    one = rng.integers(0, 3, (1, 2, 5, 5))
    assert sample_spread(one, 3).shape == (2, 5, 5) and not sample_spread(one, 3).any()
    assert not sample_spread(np.repeat(one, 6, axis=0), 3).any()
    halves = np.stack([np.zeros((2, 2)), np.ones((2, 2))] * 2)  # 2-2 split everywhere
    np.testing.assert_array_equal(sample_spread(halves, 2), np.full((2, 2), 0.5, np.float32))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_staple_of_unrelated_noise_maps_stops_at_the_guard(num_classes):
    """SimpleITK's binary STAPLE does not converge on maps with nothing in common (1,000 iterations: 6 s here):
    the guard stops it, with a warning. The multi-label filter converges on them in 2 iterations."""
    rng = np.random.default_rng(0)
    noise = (rng.random((10, 1, 256, 256)) < 0.02) * rng.integers(1, num_classes, (10, 1, 256, 256))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StapleNotConverged)
        fused = staple(noise.astype(np.uint8), num_classes, max_iterations=300)
    assert [str(w.message) for w in caught] == (
        ["STAPLE of 10 maps (1, 256, 256) stopped by its guard after 300 iterations without converging"]
        if num_classes == 2 else [])
    assert fused.shape == (1, 256, 256) and fused.max() < num_classes
    assert (fused > 0).mean() < 0.02  # scattered votes fuse to (nearly) background


def test_sample_entropy_identical_samples_have_zero_entropy():
    one = np.random.default_rng(0).integers(0, 3, size=(2, 5, 6))
    h = sample_entropy(np.stack([one] * 4), num_classes=3)
    assert h.shape == one.shape and h.dtype == np.float32 and (h == 0).all()


def test_sample_entropy_in_bits():
    samples = np.zeros((4, 2, 3), dtype=np.uint8)
    samples[:2, 0, 0] = 1            # 2 of 4 say class 1: 1 bit
    samples[:, 0, 1] = [0, 0, 1, 2]  # 1/2, 1/4, 1/4: 1.5 bits
    samples[:, 1, 2] = 2             # all agree on class 2: 0 bits
    h = sample_entropy(samples, num_classes=3)
    assert h[0, 0] == 1.0 and h[0, 1] == 1.5
    np.testing.assert_array_equal(h[1], 0)
    assert sample_spread(samples, 3)[0, 0] == 0.5  # the same half split on the other scale

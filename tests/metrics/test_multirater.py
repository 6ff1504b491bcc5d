"""Set metrics against independent references: the formulas evaluated directly, brute force, and by hand."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmark.metrics.multirater import (collective_insight, combined_sensitivity, diversity_agreement, ged,
                                          hungarian_iou, max_dice_matching, pairwise_similarity, set_metrics)


def _class_score(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    """IoU or Dice of two boolean masks, counted pixel by pixel; 1 if both empty."""
    inter = sum(1 for x, y in zip(a.ravel(), b.ravel()) if x and y)
    na, nb = int(a.sum()), int(b.sum())
    if na + nb == 0:
        return 1.0
    return inter / (na + nb - inter) if kind == "iou" else 2 * inter / (na + nb)


def _similarity(a: np.ndarray, b: np.ndarray, num_classes: int, kind: str) -> float:
    return float(np.mean([_class_score(a == c, b == c, kind) for c in range(1, num_classes)]))


def _ged_by_formula(samples, raters, num_classes) -> float:
    d = lambda a, b: 1.0 - _similarity(a, b, num_classes, "iou")  # noqa: E731
    n, m = len(samples), len(raters)
    cross = sum(d(s, y) for s in samples for y in raters) / (n * m)
    within_s = sum(d(s, t) for s in samples for t in samples) / n**2
    within_y = sum(d(y, z) for y in raters for z in raters) / m**2
    return 2 * cross - within_s - within_y


def _random_sets(seed: int, n: int, m: int, num_classes: int, shape=(9, 11), empty_rate=0.25):
    rng = np.random.default_rng(seed)

    def one():
        if rng.random() < empty_rate:
            return np.zeros(shape, np.uint8)
        return rng.integers(0, num_classes, shape).astype(np.uint8) * (rng.random(shape) < 0.5)

    return np.stack([one() for _ in range(n)]), np.stack([one() for _ in range(m)])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_ged_equals_the_formula_evaluated_directly(seed, num_classes):
    samples, raters = _random_sets(seed, 5, 3, num_classes)
    assert ged(samples, raters, num_classes) == pytest.approx(_ged_by_formula(samples, raters, num_classes), abs=1e-12)


def test_ged_with_empty_masks_on_either_side_by_hand():
    empty = np.zeros((1, 4, 4), np.uint8)
    full = np.ones((1, 4, 4), np.uint8)
    # Samples {empty}, raters {empty}: every distance 0.
    assert ged(empty, empty, 2) == 0.0
    # Samples {empty}, raters {full}: cross distance 1 (one empty), within-set 0 -> GED 2.
    assert ged(empty, full, 2) == 2.0
    assert ged(full, empty, 2) == 2.0
    # Samples {empty, full}, raters {full}: cross = (1 + 0)/2; within S: (0 + 1 + 1 + 0)/4 -> 2*0.5 - 0.5 = 0.5.
    assert ged(np.concatenate([empty, full]), full, 2) == pytest.approx(0.5)
    # A class absent from both maps counts as agreement in the multi-class mean: class 2 absent everywhere.
    assert ged(full, full, 3) == 0.0


def test_ged_depends_on_the_sample_count_so_it_is_named_by_it():
    samples, raters = _random_sets(3, 8, 4, 2, empty_rate=0.0)
    g2, g8 = ged(samples[:2], raters, 2), ged(samples, raters, 2)
    assert g2 != pytest.approx(g8)
    out = set_metrics(samples[:, None], raters[:, None], 2, ged_counts=(2, 16))
    assert out["ged_2"] == pytest.approx(g2) and out["ged_8"] == pytest.approx(g8)
    assert "ged_16" not in out  # more than the 8 samples there are


@pytest.mark.parametrize("seed", range(5))
def test_pairwise_similarity_matches_pixel_counting(seed):
    a, b = _random_sets(seed, 4, 3, 4)
    for kind in ("iou", "dice"):
        mat = pairwise_similarity(a, b, 4, kind)
        ref = [[_similarity(x, y, 4, kind) for y in b] for x in a]
        np.testing.assert_allclose(mat, ref, atol=1e-12)


def _hm_iou_brute_force(samples, raters, num_classes) -> float:
    size = math.lcm(len(samples), len(raters))
    s = [samples[i % len(samples)] for i in range(size)]
    y = [raters[i % len(raters)] for i in range(size)]
    iou = [[_similarity(a, b, num_classes, "iou") for b in y] for a in s]
    return max(np.mean([iou[i][p[i]] for i in range(size)]) for p in itertools.permutations(range(size)))


@pytest.mark.parametrize("n,m", [(2, 3), (3, 2), (4, 2), (1, 4), (3, 3), (6, 1)])
@pytest.mark.parametrize("seed", range(3))
def test_hm_iou_equals_brute_force_over_permutations(n, m, seed):
    samples, raters = _random_sets(10 * seed + n, n, m, 3)
    assert hungarian_iou(samples, raters, 3) == pytest.approx(_hm_iou_brute_force(samples, raters, 3), abs=1e-12)


def test_mdm_takes_the_best_sample_per_rater_and_scores_empty_pairs_one():
    a = np.zeros((6, 6), np.uint8)
    a[:3, :3] = 1                      # 9 pixels
    b = np.zeros((6, 6), np.uint8)
    b[:3, :2] = 1                      # 6 pixels inside a
    empty = np.zeros((6, 6), np.uint8)
    samples, raters = np.stack([a, empty]), np.stack([b, empty])
    # rater b: best is a, Dice 2*6/15 = 0.8; rater empty: best is the empty sample, Dice 1.
    assert max_dice_matching(samples, raters, 2) == pytest.approx((0.8 + 1.0) / 2)


def _strips() -> tuple[np.ndarray, np.ndarray]:
    """1 x 10 strips. Raters: [0,4) and [0,6); samples: [0,3) and [2,8)."""
    def strip(lo, hi):
        m = np.zeros((1, 10), np.uint8)
        m[0, lo:hi] = 1
        return m

    return np.stack([strip(0, 4), strip(0, 6)]), np.stack([strip(0, 3), strip(2, 8)])


def test_collective_insight_parts_by_hand():
    # 1 x 10 strips. Raters: [0,4) and [0,6); samples: [0,3) and [2,8).
    raters, samples = _strips()
    # Sensitivity: rater union [0,6), sample union [0,8): TP 6, FN 0 -> 1.
    assert combined_sensitivity(samples, raters, 2) == 1.0
    # D_max: rater [0,4): Dice with [0,3) = 6/7, with [2,8) = 4/10 -> 6/7; rater [0,6): 6/9 vs 8/12 -> 2/3.
    d = (6 / 7 + 2 / 3) / 2
    assert max_dice_matching(samples, raters, 2) == pytest.approx(d)
    # Diversity: raters 1 - 8/10 = 0.2 (one pair), samples: overlap 1, 1 - 2/9 = 7/9.
    a = 1 - (abs(0.2 - 7 / 9) + abs(0.2 - 7 / 9)) / 2
    assert diversity_agreement(samples, raters, 2) == pytest.approx(a)
    ci = collective_insight(samples, raters, 2)
    assert ci.ci_paper == pytest.approx(3 * 1.0 * d * a / (1.0 + d + a))
    assert ci.ci_harmonic == pytest.approx(3 / (1 / 1.0 + 1 / d + 1 / a))
    assert ci.ci_paper != pytest.approx(ci.ci_harmonic)  # the printed formula is not the harmonic mean


def test_pixel_variance_reading_by_hand():
    """The strips above under the other public reading: V = variance over the 10 pixels of a - b."""
    raters, samples = _strips()
    # raters: a - b is -1 on [4, 6): mean -0.2, mean square 0.2, variance 0.16
    # samples: a - b is 1 on [0, 2), -1 on [3, 8): mean -0.3, mean square 0.7, variance 0.61
    a = 1 - (abs(0.16 - 0.61) + abs(0.16 - 0.61)) / 2
    assert diversity_agreement(samples, raters, 2, "pixel_variance") == pytest.approx(a, abs=1e-12)
    ci = collective_insight(samples, raters, 2, diversity="pixel_variance")
    assert ci.diversity_agreement == pytest.approx(a, abs=1e-12)
    assert ci.ci_harmonic == pytest.approx(3 / (1 / 1.0 + 1 / ci.max_dice + 1 / a))
    assert collective_insight(samples, raters, 2).diversity_agreement != pytest.approx(a)  # the readings differ


def test_pixel_variance_reading_by_hand_with_two_classes():
    a, b, c = np.array([[1, 2, 0, 1]]), np.array([[1, 1, 2, 0]]), np.zeros((1, 4), int)
    # (a, b): class 1 differences [0, -1, 0, 1] -> 0.5, class 2 [0, 1, -1, 0] -> 0.5: V = 0.5
    # (a, c) and (b, c): class 1 -> 0.25, class 2 (one pixel of 4) -> 0.25 - 0.0625: V = 0.21875
    samples, raters = np.stack([a, b, c]), np.stack([a, b])
    expected = 1 - (abs(0.5 - 0.5) + abs(0.5 - 0.21875)) / 2
    assert diversity_agreement(samples, raters, 3, "pixel_variance") == pytest.approx(expected, abs=1e-12)


def _diversity_by_loops(samples, raters, num_classes, reading) -> float:
    """Each reading pair by pair in plain numpy (np.var of the difference, or Dice counted pixel by pixel)."""
    def v(x, y):
        if reading == "pixel_variance":
            return np.mean([np.var((x == c).astype(float) - (y == c)) for c in range(1, num_classes)])
        return 1.0 - _similarity(x, y, num_classes, "dice")

    def spread(stack):
        values = [v(stack[i], stack[j]) for i in range(len(stack)) for j in range(len(stack)) if i != j] or [0.0]
        return max(values), min(values)

    (s_max, s_min), (y_max, y_min) = spread(samples), spread(raters)
    return 1.0 - (abs(y_max - s_max) + abs(y_min - s_min)) / 2


@pytest.mark.parametrize("reading", ["pairwise_dice", "pixel_variance"])
@pytest.mark.parametrize("seed", range(100, 106))
@pytest.mark.parametrize("num_classes", [2, 4])
def test_both_readings_equal_an_independent_computation(reading, seed, num_classes):
    rng = np.random.default_rng(seed)
    samples, raters = _random_sets(seed, int(rng.integers(1, 6)), int(rng.integers(2, 5)), num_classes,
                                   shape=(7, 13))
    ours = diversity_agreement(samples, raters, num_classes, reading)
    assert ours == pytest.approx(_diversity_by_loops(samples, raters, num_classes, reading), abs=1e-6)
    assert set_metrics(samples[:, None], raters[:, None], num_classes,
                       ci_diversity=reading)["ci_diversity_agreement"] == pytest.approx(ours, abs=1e-12)


def test_an_unknown_reading_is_refused():
    good = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="reading must be one of \\['pairwise_dice', 'pixel_variance'\\], got 'var'"):
        diversity_agreement(good, good, 2, "var")


def test_sensitivity_misses_and_empty_reference():
    raters = np.zeros((2, 1, 10), np.uint8)
    raters[0, 0, :4] = 1
    samples = np.zeros((1, 1, 10), np.uint8)
    samples[0, 0, :1] = 1
    assert combined_sensitivity(samples, raters, 2) == pytest.approx(0.25)
    # No rater marks anything: nothing to miss, whatever the samples hold.
    assert combined_sensitivity(samples, np.zeros_like(raters), 2) == 1.0


def test_one_sample_has_no_diversity_and_ci_harmonic_is_zero_when_a_part_is():
    raters = np.zeros((2, 1, 10), np.uint8)
    raters[0, 0, :4] = 1
    raters[1, 0, 2:6] = 1              # raters overlap by 2 of 4 + 4: within-set 1 - Dice = 0.5
    samples = raters[:1]               # one sample: its within-set spread is {0}
    assert diversity_agreement(samples, raters, 2) == pytest.approx(1 - (0.5 + 0.5) / 2)
    zero = collective_insight(np.zeros((1, 1, 10), np.uint8), raters, 2)  # misses everything: S = 0
    assert zero.sensitivity == 0.0 and zero.ci_harmonic == 0.0 and zero.ci_paper == 0.0


def test_per_slice_averages_slices_and_volume_pools_them():
    rng = np.random.default_rng(0)
    samples = (rng.random((3, 4, 8, 8)) < 0.4).astype(np.uint8)
    raters = (rng.random((2, 4, 8, 8)) < 0.4).astype(np.uint8)
    per_slice = set_metrics(samples, raters, 2, per_slice=True)
    by_hand = np.mean([ged(samples[:, z], raters[:, z], 2) for z in range(4)])
    assert per_slice["ged_3"] == pytest.approx(by_hand)
    volume = set_metrics(samples, raters, 2)
    assert volume["ged_3"] == pytest.approx(ged(samples.reshape(3, -1), raters.reshape(2, -1), 2))
    assert set(volume) == {"ged_3", "hm_iou", "mdm", "ci_sensitivity", "ci_diversity_agreement", "ci_paper",
                           "ci_harmonic"}


def test_bad_input_is_one_clear_error():
    good = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="outside"):
        ged(good + 3, good, 2)
    with pytest.raises(ValueError, match="differ in size"):
        ged(good, np.zeros((2, 5, 4), np.uint8), 2)
    with pytest.raises(ValueError, match="integer"):
        ged(good.astype(np.float32), good, 2)
    with pytest.raises(ValueError, match="non-empty"):
        ged(good[:0], good, 2)

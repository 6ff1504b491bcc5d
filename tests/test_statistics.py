"""Bootstrap intervals of a mean over cases, the paired Wilcoxon test and Holm's adjustment
(benchmark/statistics.py), checked against scipy and against distributions enumerated by hand."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.config import ConfigError, load_config
from benchmark.evaluation import _mean, _summary
from benchmark.evidence import Selection
from benchmark.statistics import CaseValues, bootstrap_interval, holm, paired_wilcoxon, replicates
from tests.conftest import write_params
from tests.evidence_helpers import case_tables

B = 10_000


def _one_seed(values, subjects) -> CaseValues:
    values = np.asarray(values, dtype=float)
    return CaseValues(values[None, :, None], tuple(f"c{i}" for i in range(len(values))), tuple(subjects))


def test_one_case_per_subject_is_scipys_percentile_bootstrap():
    """With one case per subject the cluster bootstrap is the ordinary one: its interval agrees with
    scipy.stats.bootstrap(method="percentile") to Monte-Carlo accuracy.

    Tolerance: each end is a 2.5% or 97.5% quantile of B replicates, whose Monte-Carlo standard error is
    sqrt(q (1 - q) / B) / f(x_q); for the (near normal) bootstrap distribution of a mean, f(x_q) = phi(z_q) / sd,
    sd = s / sqrt(n). Two independent estimates differ by sqrt(2) of that; we allow 4 of those.
    """
    x = np.random.default_rng(7).beta(8, 2, size=40)
    ours = bootstrap_interval(_one_seed(x, [f"s{i}" for i in range(40)]), B, 0.95, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=B, confidence_level=0.95, method="percentile",
                          rng=np.random.default_rng(2)).confidence_interval
    q, z = 0.025, stats.norm.ppf(0.975)
    sd = x.std(ddof=0) / np.sqrt(len(x))
    tolerance = 4 * np.sqrt(2) * np.sqrt(q * (1 - q) / B) * sd / stats.norm.pdf(z)
    assert tolerance < 0.05 * (ref.high - ref.low)        # the check is much finer than the interval
    assert abs(ours.low - ref.low) <= tolerance and abs(ours.high - ref.high) <= tolerance
    assert ours.low < x.mean() < ours.high
    assert (ours.n_cases, ours.n_subjects, ours.n_seeds, ours.resamples) == (40, 40, 1, B)


def test_cluster_bootstrap_draws_a_subjects_cases_together():
    """Subject A has cases scoring 0 and 1, subject B one case scoring 1. Drawing two subjects: AA (p 1/4) gives
    a mean of 1/2, AB or BA (1/2) 2/3, BB (1/4) 1; so the 95% interval is [1/2, 1]. Resampling the three cases
    alone would reach 0 (all three draws the 0 case: p 1/27 > 2.5%)."""
    cv = _one_seed([0.0, 1.0, 1.0], ["A", "A", "B"])
    reps = replicates(cv, B, np.random.default_rng(0))
    freq = Counter(np.round(reps, 6))
    expected = {0.5: 0.25, round(2 / 3, 6): 0.5, 1.0: 0.25}
    assert set(freq) == set(expected)
    for value, p in expected.items():
        assert abs(freq[value] / B - p) <= 4 * np.sqrt(p * (1 - p) / B)
    interval = bootstrap_interval(cv, B, 0.95, seed=0)
    assert (interval.low, interval.high) == (0.5, 1.0) and interval.n_subjects == 2
    assert cv.point() == pytest.approx(2 / 3)


def _exact_two_level(values: np.ndarray, subjects: list[str]) -> dict[float, float]:
    """The exact distribution of the two-level replicate: every ordered draw of subjects, every ordered draw
    of seeds, each equally likely."""
    groups = sorted(set(subjects))
    dist: Counter = Counter()
    draws = list(itertools.product(groups, repeat=len(groups)))
    seed_draws = list(itertools.product(range(values.shape[0]), repeat=values.shape[0]))
    for draw in draws:
        cases = [i for g in draw for i, s in enumerate(subjects) if s == g]
        per_seed = values[:, cases, 0].mean(axis=1)
        for seeds in seed_draws:
            dist[round(float(per_seed[list(seeds)].mean()), 6)] += 1 / (len(draws) * len(seed_draws))
    return dict(dist)


def test_two_level_bootstrap_resamples_seeds_and_subjects():
    """Two seeds x two subjects (one case each): seed 0 scores 0 and 1, seed 1 scores 1 and 1. The point is the
    mean over seeds (0.75) and the replicates follow the distribution enumerated by hand: 0, 0.5, 0.75, 1 with
    p 1/16, 4/16, 4/16, 7/16 (so the 95% interval is [0, 1])."""
    values = np.array([[[0.0], [1.0]], [[1.0], [1.0]]])
    cv = CaseValues(values, ("c0", "c1"), ("A", "B"))
    assert cv.point() == pytest.approx(0.75) and cv.n_seeds == 2
    exact = _exact_two_level(values, ["A", "B"])
    assert exact == pytest.approx({0.0: 1 / 16, 0.5: 4 / 16, 0.75: 4 / 16, 1.0: 7 / 16})
    freq = Counter(np.round(replicates(cv, B, np.random.default_rng(3)), 6))
    assert set(freq) <= set(exact)
    for value, p in exact.items():
        assert abs(freq[value] / B - p) <= 4 * np.sqrt(p * (1 - p) / B) + 1e-12
    interval = bootstrap_interval(cv, B, 0.95, seed=3)
    assert (interval.low, interval.high, interval.n_seeds) == (0.0, 1.0, 2)


def test_seeds_alone_vary_when_the_test_set_is_one_subject():
    """One subject, two seeds scoring 0.2 and 0.6: replicates 0.2, 0.4, 0.6 with p 1/4, 1/2, 1/4."""
    cv = CaseValues(np.array([[[0.2]], [[0.6]]]), ("c0",), ("A",))
    interval = bootstrap_interval(cv, B, 0.95, seed=5)
    assert cv.point() == pytest.approx(0.4)
    assert (interval.low, interval.high) == pytest.approx((0.2, 0.6))
    assert interval.point == pytest.approx(0.4) and interval.seed_spread == pytest.approx(np.std([0.2, 0.6], ddof=1))


def test_the_seed_spread_is_of_each_seeds_mean_of_column_means_and_absent_for_one_seed():
    """Seed 0: columns 0.2 and (NaN, 0.6 -> 0.6), value 0.4; seed 1: columns 0.4 and 0.8, value 0.6."""
    values = np.array([[[0.2, np.nan], [0.2, 0.6]], [[0.4, 0.8], [0.4, 0.8]]])
    cv = CaseValues(values, ("c0", "c1"), ("A", "B"))
    assert cv.per_seed() == pytest.approx([0.4, 0.6]) and cv.seed_spread() == pytest.approx(np.std([0.4, 0.6], ddof=1))
    one = CaseValues(values[:1], ("c0", "c1"), ("A", "B"))
    assert one.seed_spread() is None and bootstrap_interval(one, 200, 0.95, 0).seed_spread is None


def test_point_is_the_evaluate_stages_average_with_excluded_cases():
    """The cell's value from the per-case file equals the evaluation's average (mean over classes of the mean
    over cases, NaN left out), also where a case is excluded from one class."""
    dice = {"RV": [0.8, 0.6, np.nan, 0.9], "Myo": [0.7, 0.5, 0.4, 0.6], "LV": [0.9, 0.95, 0.85, np.nan]}
    run = case_tables(dice, subjects=["s0", "s0", "s1", "s2"])
    per_class = [_summary(run.classes[run.classes["class"] == c])["dice"] for c in dice]
    average = _mean(pd.Series(per_class))
    cv = Selection("dice", None, scale=1.0).values(run)
    values = CaseValues(cv.drop(columns="subject_id").to_numpy(float)[None], tuple(cv.index),
                        tuple(cv["subject_id"]))
    assert values.point() == pytest.approx(average, abs=1e-12)
    assert average != pytest.approx(np.nanmean(np.nanmean(values.values[0], axis=1)))  # not a mean of case means
    assert bootstrap_interval(values, 1000, 0.9, seed=0).n_subjects == 3


def test_paired_wilcoxon_matches_cases_by_id_and_is_scipys():
    a = pd.Series([0.81, 0.75, 0.9, 0.66, 0.7, np.nan, 0.88, 0.79], index=[f"c{i}" for i in range(8)])
    b = pd.Series([0.7, 0.74, 0.8, 0.6, 0.72, 0.5, 0.85, 0.8, 0.9],
                  index=[f"c{i}" for i in range(9)]).iloc[::-1]       # another order, one more case
    t = paired_wilcoxon(a, b)
    kept = [f"c{i}" for i in (0, 1, 2, 3, 4, 6, 7)]                   # c5: NaN in a; c8: absent from a
    ref = stats.wilcoxon(a[kept], b[kept], zero_method="wilcox", alternative="two-sided")
    assert t.n_pairs == 7 and t.statistic == ref.statistic and t.p == pytest.approx(ref.pvalue)
    assert t.mean_difference == pytest.approx((a[kept] - b[kept]).mean())
    assert paired_wilcoxon(a, a).p == 1.0 and paired_wilcoxon(a, pd.Series(dtype=float)).p is None


def test_holm_against_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == []


def test_bootstrap_settings_have_defaults_and_are_checked(tmp_path):
    claims = load_config(write_params(tmp_path / "params.yaml")).claims
    assert (claims.bootstrap_resamples, claims.confidence, claims.bootstrap_seed, claims.significance) == \
        (10000, 0.95, 0, 0.05)
    tolerance = {"%": 1.0}
    with pytest.raises(ConfigError, match="claims.confidence: must be a number in"):
        load_config(write_params(tmp_path / "params.yaml", claims={"tolerance": tolerance, "confidence": 1.0}))
    with pytest.raises(ConfigError, match="claims.bootstrap_resamples: must be an integer >= 100"):
        load_config(write_params(tmp_path / "params.yaml", claims={"tolerance": tolerance, "bootstrap_resamples": 5}))

"""The uncertainty of the tables' numbers: bootstrap intervals of a mean over cases, and paired tests.

A cell of a table is a mean over test cases of one training run, and, once runs are repeated, the mean over
runs (seeds). Its per-case values are :class:`CaseValues`: ``(seeds, cases, columns)``, the columns being the
classes or regions the cell averages. The cell's value is the evaluate stage's: per seed, the mean over columns
of each column's mean over cases (a NaN, a case a convention excludes, is left out of its column's mean, and a
column with no value out of the mean over columns); then the mean over seeds, whose spread (the standard deviation
of the seeds' values, ddof 1) the tables show beside it.

The interval (:func:`bootstrap_interval`) is a percentile bootstrap that resamples *subjects*, every case of a
drawn subject together (a cluster bootstrap: the cases of one subject are not independent), and, with several
seeds, the seeds too (a two-level bootstrap: each replicate draws the subjects once, shared by the seeds it
draws, since every seed is scored on the same test set). Percentile rather than BCa: BCa's acceleration comes
from a jackknife that has no agreed two-level form, and the percentile interval keeps one rule for one seed and
for several; it is also what ``scipy.stats.bootstrap(method="percentile")`` computes, which the tests check.

The paired test (:func:`paired_wilcoxon`) compares two methods' per-case values matched by case id;
:func:`holm` adjusts a table's p-values for multiple comparisons.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# Two-sided Wilcoxon signed-rank; zero differences dropped before ranking (Wilcoxon's own treatment, scipy's
# default); ``method="auto"``: exact for fewer than 50 pairs without ties or zeros, else the normal approximation.
ZERO_METHOD = "wilcox"


@dataclass(frozen=True)
class CaseValues:
    """The per-case values of one cell. ``values``: ``(seeds, cases, columns)`` floats (NaN: excluded);
    ``cases``, ``subjects``: the ``(cases,)`` case ids and each one's subject, the same for every seed."""
    values: np.ndarray
    cases: tuple[str, ...]
    subjects: tuple[str, ...]

    def __post_init__(self):
        if self.values.ndim != 3 or self.values.shape[1] != len(self.cases) or len(self.cases) != len(self.subjects):
            raise ValueError(f"values must be (seeds, cases, columns) with {len(self.cases)} cases and as many "
                             f"subjects ({len(self.subjects)}), got {self.values.shape}")

    @property
    def n_seeds(self) -> int:
        return self.values.shape[0]

    @property
    def n_cases(self) -> int:
        return self.values.shape[1]

    @property
    def n_subjects(self) -> int:
        return len(set(self.subjects))

    def per_seed(self) -> np.ndarray:
        """``(seeds,)`` each seed's value: the mean over columns of the column means (NaN where none)."""
        return _mean_of_column_means(np.nansum(self.values, axis=1), np.sum(~np.isnan(self.values), axis=1))

    def point(self) -> float | None:
        """The cell's value: the mean over seeds of each seed's value (:meth:`per_seed`)."""
        per_seed = self.per_seed()
        return None if np.isnan(per_seed).any() else float(np.mean(per_seed))

    def seed_spread(self) -> float | None:
        """The standard deviation of the seeds' values (ddof 1); None with one seed or no value."""
        return None if self.n_seeds < 2 or self.point() is None else float(np.std(self.per_seed(), ddof=1))

    def per_case(self) -> pd.Series:
        """Each case's value (mean over columns, then over seeds; NaN where none), indexed by case id."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # an all-NaN case is NaN, as intended
            return pd.Series(np.nanmean(self.values, axis=2).mean(axis=0), index=pd.Index(self.cases, name="case_id"))


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval of a cell's value, and what it rests on: ``point`` the value (the mean over seeds),
    ``seed_spread`` the standard deviation of the seeds' values (None with one seed)."""
    point: float
    seed_spread: float | None
    low: float
    high: float
    confidence: float
    resamples: int
    n_cases: int
    n_subjects: int
    n_seeds: int


def _mean_of_column_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(..., columns)`` sums and counts of values -> ``(...)`` the mean over columns with a value of
    ``sums / counts`` (NaN where no column has one)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    n = np.sum(~np.isnan(means), axis=-1)
    total = np.nansum(means, axis=-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def replicates(cv: CaseValues, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(resamples,)`` bootstrap replicates of ``cv.point()``: per replicate, as many subjects drawn with
    replacement as there are (each bringing all its cases), and as many seeds (when there are several)."""
    codes, _ = pd.factorize(pd.Index(cv.subjects))
    n_groups = codes.max() + 1
    member = np.zeros((n_groups, cv.n_cases))
    member[codes, np.arange(cv.n_cases)] = 1.0
    present = ~np.isnan(cv.values)
    sums = member @ np.where(present, cv.values, 0.0)            # (seeds, subjects, columns)
    counts = member @ present.astype(float)
    drawn = rng.integers(0, n_groups, size=(resamples, n_groups)) + n_groups * np.arange(resamples)[:, None]
    draws = np.bincount(drawn.ravel(), minlength=resamples * n_groups).reshape(resamples, n_groups).astype(float)
    per_seed = _mean_of_column_means(draws @ sums, draws @ counts)   # (seeds, resamples)
    if cv.n_seeds == 1:
        return per_seed[0]
    seeds = rng.integers(0, cv.n_seeds, size=(resamples, cv.n_seeds))
    return per_seed[seeds, np.arange(resamples)[:, None]].mean(axis=1)


def bootstrap_interval(cv: CaseValues, resamples: int, confidence: float, seed: int) -> Interval | None:
    """The percentile interval of ``cv``'s value at ``confidence`` from ``resamples`` replicates drawn with
    ``seed``; None where the cell has no value. Replicates without a value (every drawn case excluded) are left
    out of the quantiles."""
    if cv.n_cases == 0 or cv.point() is None:
        return None
    reps = replicates(cv, resamples, np.random.default_rng(seed))
    reps = reps[~np.isnan(reps)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])     # linear interpolation, as scipy.stats.bootstrap
    return Interval(cv.point(), cv.seed_spread(), float(low), float(high), confidence, resamples, cv.n_cases,
                    cv.n_subjects, cv.n_seeds)


@dataclass(frozen=True)
class PairedTest:
    """A two-sided Wilcoxon signed-rank test of ``a - b`` over the cases both have a value for."""
    n_pairs: int
    statistic: float | None
    p: float | None
    mean_difference: float | None


def paired_wilcoxon(a: pd.Series, b: pd.Series) -> PairedTest:
    """``a`` against ``b``, each a value per case id; cases missing or NaN in either are left out. No pair: no
    test (p None); pairs that all tie: p = 1, as scipy gives."""
    pairs = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    if pairs.empty:
        return PairedTest(0, None, None, None)
    diff = pairs["a"] - pairs["b"]
    if not diff.to_numpy().any():
        return PairedTest(len(pairs), 0.0, 1.0, 0.0)
    res = stats.wilcoxon(pairs["a"], pairs["b"], zero_method=ZERO_METHOD, alternative="two-sided")
    return PairedTest(len(pairs), float(res.statistic), float(res.pvalue), float(diff.mean()))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order: the i-th smallest becomes
    ``max over j <= i of min(1, (m - j + 1) p_(j))`` (1-based j)."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()

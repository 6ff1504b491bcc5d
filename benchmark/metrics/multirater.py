"""Metrics of a set of samples against a set of raters: GED, HM-IoU, MDM and CI.

A generative segmenter gives ``N`` samples for an image; an ambiguous dataset gives ``M`` raters'
masks. These metrics score the two sets against each other rather than one fused map.
Every function takes integer label maps stacked on the first axis: ``samples`` ``(N, ...)`` and
``raters`` ``(M, ...)``, ``...`` any shape (``(Z, H, W)`` or ``(H, W)``), labels in
``0..num_classes-1``, 0 being background.

Conventions, stated once:

* **Pairwise similarity of two label maps** is the mean over foreground classes of the class's IoU
  (or Dice). A class absent from both maps scores 1 for that class, a class in exactly one scores 0
  (the PHiSeg code's rule for GED, Kohl et al. 2018; CIMD's for the Dice terms, Rahman et al. 2023).
  For binary data this is the IoU (Dice) of the foreground masks. These rules are not switchable:
  every set metric needs a number for every pair, and NaN would make the whole case NaN.
* **GED** (:func:`ged`) is the biased estimator with the diagonal terms included and no square root,
  ``d = 1 - IoU``: it depends on ``N``, so it is always reported with its sample count (GED_16 and
  GED_100 are different numbers).
* **HM-IoU** (:func:`hungarian_iou`): samples and raters tiled to ``lcm(N, M)``, matched one-to-one
  by scipy's Hungarian solver on ``1 - IoU``; the mean matched IoU.
* **MDM** (D_max, :func:`max_dice_matching`): for each rater the best Dice over samples, averaged
  over raters (ATFM's direction).
* **CI** (:func:`collective_insight`): combined sensitivity, D_max and diversity agreement, and two
  combinations of them: ``ci_paper`` = 3 S D A / (S + D + A) as the CIMD paper prints it (not a
  harmonic mean), and ``ci_harmonic`` = 3 / (1/S + 1/D + 1/A).
* **Diversity agreement** 1 - (|Vmax(Y) - Vmax(S)| + |Vmin(Y) - Vmin(S)|) / 2 has two public readings of
  V, the spread of one pair inside a set, named by :data:`DIVERSITY_READINGS` (``evaluation.ci_diversity``):
  ``pairwise_dice``, V = 1 - Dice of the pair (the suite's reading since its first version, the default);
  ``pixel_variance``, V = the variance over pixels of the difference of the pair's masks (public
  re-implementations of CIMD's CI compute ``np.var(y_i - y_j)`` over each pair). Both take the mean over
  foreground classes of the class's value.

Pairwise overlaps come from one matrix product per class over the flattened one-hot maps, so a
set of ``N + M`` maps costs one BLAS call per class rather than ``(N + M)^2`` mask comparisons.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["pairwise_similarity", "ged", "hungarian_iou", "max_dice_matching", "combined_sensitivity",
           "diversity_agreement", "collective_insight", "CollectiveInsight", "set_metrics", "SET_CONVENTIONS",
           "DIVERSITY_READINGS"]

DIVERSITY_READINGS = {
    "pairwise_dice": "V = 1 - Dice of the pair (mean over foreground classes)",
    "pixel_variance": "V = variance over pixels of the difference of the pair's masks, (|A xor B| - (|A| - |B|)^2 / P) "
                      "/ P for P pixels (mean over foreground classes)",
}

SET_CONVENTIONS = {
    "pair_similarity": "mean over foreground classes of the class IoU (GED, HM-IoU) or Dice (MDM, CI)",
    "class_absent_from_both": 1.0,
    "class_in_exactly_one": 0.0,
    "ged": "2/(NM) sum d(S,Y) - 1/N^2 sum d(S,S') - 1/M^2 sum d(Y,Y'), d = 1 - IoU, diagonal included, no sqrt",
    "hm_iou": "samples and raters tiled to lcm(N, M), Hungarian matching on 1 - IoU, mean matched IoU",
    "mdm": "mean over raters of the best Dice over samples",
    "ci_sensitivity": "TP / (TP + FN) of the union of samples against the union of raters, per class, "
                      "mean over classes; 1 where the raters' union is empty",
    "ci_diversity_agreement": "1 - (|Vmax(Y) - Vmax(S)| + |Vmin(Y) - Vmin(S)|) / 2, V over the pairs of "
                              "distinct members inside each set, as ci_diversity reads it; a set of one mask has "
                              "V = {0}",
    "ci_paper": "3 S D A / (S + D + A) (CIMD paper's printed formula)",
    "ci_harmonic": "3 / (1/S + 1/D + 1/A), 0 if any part is 0",
}


def _check(stack: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    stack = np.asarray(stack)
    if stack.ndim < 2 or stack.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty stack (n, ...) of label maps, got shape {stack.shape}")
    if not np.issubdtype(stack.dtype, np.integer) and stack.dtype != bool:
        raise ValueError(f"{name} must hold integer labels, got dtype {stack.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + a class), got {num_classes}")
    if stack.size and (stack.min() < 0 or stack.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): min {stack.min()}, max {stack.max()}")
    return stack.reshape(stack.shape[0], -1)


def _one_hot(flat: np.ndarray, cls: int) -> np.ndarray:
    # float32 products of 0/1 vectors are exact while every count is below 2**24 pixels.
    dtype = np.float32 if flat.shape[1] < 2**24 else np.float64
    return (flat == cls).astype(dtype)


def pairwise_similarity(a: np.ndarray, b: np.ndarray, num_classes: int, kind: str = "iou") -> np.ndarray:
    """Similarity of every map of ``a`` ``(N, ...)`` with every map of ``b`` ``(M, ...)`` -> ``(N, M)``.

    ``kind`` is ``"iou"`` or ``"dice"``; the class rules are the module's (absent from both: 1,
    in exactly one: 0), averaged over the foreground classes ``1..num_classes-1``.
    """
    if kind not in ("iou", "dice"):
        raise ValueError(f"kind must be 'iou' or 'dice', got {kind!r}")
    fa, fb = _check(a, "a", num_classes), _check(b, "b", num_classes)
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"label maps differ in size: {np.asarray(a).shape[1:]} vs {np.asarray(b).shape[1:]}")
    total = np.zeros((fa.shape[0], fb.shape[0]))
    for cls in range(1, num_classes):
        oa, ob = _one_hot(fa, cls), _one_hot(fb, cls)
        inter = (oa @ ob.T).astype(np.float64)
        sa, sb = oa.sum(axis=1, dtype=np.float64)[:, None], ob.sum(axis=1, dtype=np.float64)[None, :]
        denom = sa + sb - inter if kind == "iou" else sa + sb
        numer = inter if kind == "iou" else 2.0 * inter
        with np.errstate(invalid="ignore", divide="ignore"):
            total += np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), 1.0)
    return total / (num_classes - 1)


def ged(samples: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    """Generalised energy distance (squared form, diagonal included) with ``d = 1 - IoU``."""
    d_sy = 1.0 - pairwise_similarity(samples, raters, num_classes, "iou")
    d_ss = 1.0 - pairwise_similarity(samples, samples, num_classes, "iou")
    d_yy = 1.0 - pairwise_similarity(raters, raters, num_classes, "iou")
    return float(2.0 * d_sy.mean() - d_ss.mean() - d_yy.mean())


def hungarian_iou(samples: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    """HM-IoU: mean IoU of the best one-to-one matching of samples and raters tiled to lcm(N, M)."""
    iou = pairwise_similarity(samples, raters, num_classes, "iou")
    n, m = iou.shape
    size = math.lcm(n, m)
    tiled = np.tile(iou, (size // n, size // m))
    rows, cols = linear_sum_assignment(1.0 - tiled)
    return float(tiled[rows, cols].mean())


def max_dice_matching(samples: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    """MDM (D_max): for each rater, the best Dice over the samples; the mean over raters."""
    return float(pairwise_similarity(samples, raters, num_classes, "dice").max(axis=0).mean())


def combined_sensitivity(samples: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    """TP / (TP + FN) of the samples' union against the raters' union, per class, mean over classes.

    A class no rater marks has nothing to miss: its sensitivity is 1 (CIMD gives 1 when both unions
    are empty and leaves the case of empty raters and non-empty samples undefined).
    """
    fs, fy = _check(samples, "samples", num_classes), _check(raters, "raters", num_classes)
    values = []
    for cls in range(1, num_classes):
        us, uy = (fs == cls).any(axis=0), (fy == cls).any(axis=0)
        positives = np.count_nonzero(uy)
        values.append(np.count_nonzero(us & uy) / positives if positives else 1.0)
    return float(np.mean(values))


def _pixel_variance(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, N)``: variance over the ``P`` pixels of ``1[a == c] - 1[b == c]`` for every pair, mean over classes.

    The difference d is -1, 0 or 1, so mean(d^2) = |a xor b| / P and mean(d) = (|a| - |b|) / P.
    """
    flat = _check(stack, "stack", num_classes)
    total = np.zeros((flat.shape[0], flat.shape[0]))
    for cls in range(1, num_classes):
        o = _one_hot(flat, cls)
        inter = (o @ o.T).astype(np.float64)
        size = o.sum(axis=1, dtype=np.float64)
        xor = size[:, None] + size[None, :] - 2.0 * inter
        total += xor / flat.shape[1] - ((size[:, None] - size[None, :]) / flat.shape[1]) ** 2
    return total / (num_classes - 1)


def _within_set_spread(stack: np.ndarray, num_classes: int, reading: str) -> tuple[float, float]:
    """(max, min) of V (``reading``, a key of :data:`DIVERSITY_READINGS`) over the pairs of distinct members
    of a set; (0, 0) for one member."""
    n = np.asarray(stack).shape[0]
    if n < 2:
        return 0.0, 0.0
    if reading == "pairwise_dice":
        v = 1.0 - pairwise_similarity(stack, stack, num_classes, "dice")
    else:
        v = _pixel_variance(stack, num_classes)
    off = v[~np.eye(n, dtype=bool)]
    return float(off.max()), float(off.min())


def diversity_agreement(samples: np.ndarray, raters: np.ndarray, num_classes: int,
                        reading: str = "pairwise_dice") -> float:
    """1 - (|Vmax(Y) - Vmax(S)| + |Vmin(Y) - Vmin(S)|) / 2, V the spread of a pair inside a set as ``reading``
    (``"pairwise_dice"`` or ``"pixel_variance"``, module docstring) defines it."""
    if reading not in DIVERSITY_READINGS:
        raise ValueError(f"reading must be one of {sorted(DIVERSITY_READINGS)}, got {reading!r}")
    s_max, s_min = _within_set_spread(samples, num_classes, reading)
    y_max, y_min = _within_set_spread(raters, num_classes, reading)
    return 1.0 - (abs(y_max - s_max) + abs(y_min - s_min)) / 2.0


@dataclass(frozen=True)
class CollectiveInsight:
    """CI's three parts and its two combinations, each in [0, 1]."""
    sensitivity: float
    max_dice: float
    diversity_agreement: float
    ci_paper: float
    ci_harmonic: float


def collective_insight(samples: np.ndarray, raters: np.ndarray, num_classes: int,
                       diversity: str = "pairwise_dice") -> CollectiveInsight:
    """CI of Rahman et al. (CIMD, CVPR 2023) with both combinations named and the diversity agreement read
    as ``diversity`` says (module docstring)."""
    s = combined_sensitivity(samples, raters, num_classes)
    d = max_dice_matching(samples, raters, num_classes)
    a = diversity_agreement(samples, raters, num_classes, diversity)
    paper = 3 * s * d * a / (s + d + a) if s + d + a > 0 else 0.0
    harmonic = 3.0 / (1 / s + 1 / d + 1 / a) if min(s, d, a) > 0 else 0.0
    return CollectiveInsight(s, d, a, float(paper), float(harmonic))


def set_metrics(samples: np.ndarray, raters: np.ndarray, num_classes: int,
                ged_counts: tuple[int, ...] = (), per_slice: bool = False,
                ci_diversity: str = "pairwise_dice") -> dict[str, float]:
    """Every set metric of one case: ``ged_<n>`` for ``n`` in ``ged_counts`` and for all ``N`` samples
    (GED on the first ``n`` samples), ``hm_iou``, ``mdm`` and CI's parts and combinations.

    Args:
        samples: ``(N, Z, H, W)`` label maps; raters: ``(M, Z, H, W)``.
        ged_counts: extra sample counts for GED; counts above ``N`` are left out (the caller reports them).
        per_slice: score each slice as its own 2D case and average over slices; otherwise the stack is
            one case (a volume, or a 2D image when ``Z == 1``).
        ci_diversity: the reading of CI's diversity agreement (:data:`DIVERSITY_READINGS`).
    """
    samples, raters = np.asarray(samples), np.asarray(raters)
    if samples.ndim != 4 or raters.ndim != 4 or samples.shape[1:] != raters.shape[1:]:
        raise ValueError(f"samples and raters must be (n, Z, H, W) of one shape, got {samples.shape}, {raters.shape}")
    units = [(samples[:, z], raters[:, z]) for z in range(samples.shape[1])] if per_slice else [(samples, raters)]
    counts = sorted({n for n in ged_counts if n <= samples.shape[0]} | {samples.shape[0]})
    per_unit = []
    for s, y in units:
        ci = collective_insight(s, y, num_classes, ci_diversity)
        per_unit.append({**{f"ged_{n}": ged(s[:n], y, num_classes) for n in counts},
                         "hm_iou": hungarian_iou(s, y, num_classes), "mdm": ci.max_dice,
                         "ci_sensitivity": ci.sensitivity, "ci_diversity_agreement": ci.diversity_agreement,
                         "ci_paper": ci.ci_paper, "ci_harmonic": ci.ci_harmonic})
    return {k: float(np.mean([u[k] for u in per_unit])) for k in per_unit[0]}

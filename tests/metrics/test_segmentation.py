"""Dice/IoU/HD95 against medpy and MONAI, hand-computed values, empty policies, case_metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric import binary as mp
from scipy.ndimage import gaussian_filter

from benchmark.metrics import EmptyPolicy, case_metrics, dice, hd95, iou

SPACING_3D = (3.0, 0.7, 1.1)
SPACING_2D = (0.7, 1.3)


def blob(shape: tuple[int, ...], seed: int, sigma: float = 2.0, frac: float = 0.3) -> np.ndarray:
    """Smoothed Gaussian noise thresholded so that about ``frac`` of the array is foreground."""
    noise = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1 - frac)


def random_pairs(ndim: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(100 + ndim)
    pairs = []
    for i in range(n):
        shape = tuple(int(v) for v in rng.integers(6 if ndim == 3 else 20, 40, size=ndim))
        a, b = blob(shape, 2 * i), blob(shape, 2 * i + 1, frac=float(rng.uniform(0.05, 0.5)))
        if i % 3 == 0:  # a small blob in a large empty array: the crop matters here
            a = np.zeros(shape, bool)
            a[tuple(slice(1, 4) for _ in shape)] = True
        if i % 4 == 1:  # foreground on a whole array face
            b[..., -1] = True
            a[0] = True
        pairs.append((a, b))
    return pairs


PAIRS = {2: random_pairs(2, 12), 3: random_pairs(3, 8)}
SPACINGS = {2: SPACING_2D, 3: SPACING_3D}


# --- agreement with medpy --------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_matches_medpy_on_random_blobs(ndim):
    spacing = SPACINGS[ndim]
    touching = 0
    for a, b in PAIRS[ndim]:
        assert a.any() and b.any()
        touching += any(m.take(i, axis=ax).any() for m in (a, b) for ax in range(ndim) for i in (0, -1))
        assert dice(a, b) == pytest.approx(mp.dc(a, b), abs=1e-12)
        assert iou(a, b) == pytest.approx(mp.jc(a, b), abs=1e-12)
        assert hd95(a, b, spacing) == pytest.approx(mp.hd95(a, b, voxelspacing=spacing), abs=1e-9)
        assert hd95(b, a, spacing) == pytest.approx(mp.hd95(b, a, voxelspacing=spacing), abs=1e-9)
    assert touching >= len(PAIRS[ndim]) // 2  # the border cases are really exercised


def test_spacing_order_trap():
    """A silent (x, y, z) vs (z, y, x) swap changes HD95, and would be caught."""
    for a, b in PAIRS[3]:
        right = hd95(a, b, SPACING_3D)
        assert right == pytest.approx(mp.hd95(a, b, voxelspacing=SPACING_3D), abs=1e-9)
        assert abs(hd95(a, b, SPACING_3D[::-1]) - right) > 1e-3
    # hand-computed: 3x3 squares shifted by 2 voxels along axis 0
    a = np.zeros((12, 12), bool)
    a[3:6, 3:6] = True
    b = np.roll(a, 2, axis=0)
    assert hd95(a, b, (1.5, 1.0)) == 3.0
    assert hd95(a, b, (1.0, 1.5)) == 2.0


# --- hand-computed values -----------------------------------------------------------------


def test_dice_iou_concentric_squares():
    ref = np.zeros((20, 20), bool)
    ref[5:15, 5:15] = True  # 100 px
    pred = np.zeros_like(ref)
    pred[7:13, 7:13] = True  # 36 px, inside ref
    assert dice(pred, ref) == pytest.approx(2 * 36 / (100 + 36), abs=1e-15)
    assert iou(pred, ref) == pytest.approx(36 / 100, abs=1e-15)
    vol = np.stack([ref, ref]), np.stack([pred, np.zeros_like(pred)])  # 3D: 200 vs 36 voxels
    assert dice(vol[1], vol[0]) == pytest.approx(2 * 36 / 236, abs=1e-15)
    assert iou(vol[1], vol[0]) == pytest.approx(36 / 200, abs=1e-15)


def test_hd95_shifted_squares_anisotropic():
    # Surfaces of 3x3 squares shifted by 2 rows: per direction distances in rows are
    # [0, 0, 0, 1, 1, 2, 2, 2] -> the 95th percentile (pooled and per direction) is 2 rows.
    a = np.zeros((12, 12), bool)
    a[3:6, 3:6] = True
    b = np.roll(a, 2, axis=0)
    for conv in ("pooled", "max"):
        assert hd95(a, b, (1.5, 1.0), conv) == 3.0
        assert hd95(a, b, (1.5, 1.0), conv) == hd95(b, a, (1.5, 1.0), conv)


def test_hd95_parallel_planes_3d():
    a = np.zeros((8, 10, 10), bool)
    a[2, 1:9, 1:9] = True
    b = np.roll(a, 2, axis=0)
    for conv in ("pooled", "max"):
        assert hd95(a, b, SPACING_3D, conv) == pytest.approx(6.0, abs=1e-12)  # 2 slices * 3.0 mm
        assert hd95(a, b, SPACING_3D[::-1], conv) == pytest.approx(2.2, abs=1e-12)


def test_hd95_conventions_differ_by_hand():
    # ref: a line of 20 px; pred: its first 10 px. pred->ref: ten zeros; ref->pred: 0 x10, 1..10 px.
    ref = np.zeros((3, 20), bool)
    ref[1] = True
    pred = np.zeros_like(ref)
    pred[1, :10] = True
    sx = 1.1
    # pooled: 30 values, position 0.95*29 = 27.55 between sorted values 8 and 9 px
    assert hd95(pred, ref, (2.0, sx), "pooled") == pytest.approx(8.55 * sx, abs=1e-12)
    # max: ref->pred has 20 values, position 0.95*19 = 18.05 between 9 and 10 px
    assert hd95(pred, ref, (2.0, sx), "max") == pytest.approx(9.05 * sx, abs=1e-12)


# --- MONAI's convention -----------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_max_convention_matches_monai(ndim):
    torch = pytest.importorskip("torch")
    from monai.metrics import HausdorffDistanceMetric

    metric = HausdorffDistanceMetric(include_background=True, percentile=95)
    spacing = list(SPACINGS[ndim])  # MONAI: one value per spatial dim, array-axis order
    n_differ = 0
    for a, b in PAIRS[ndim]:
        ours = hd95(a, b, spacing, "max")
        theirs = metric(
            torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float(), spacing=spacing
        ).item()
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6)  # MONAI returns float32
        n_differ += abs(ours - hd95(a, b, spacing, "pooled")) > 1e-6
    assert n_differ > 0  # the two conventions are distinguishable on these shapes


def test_neither_hd95_convention_bounds_the_other():
    """Linear interpolation puts MONAI's "max" below medpy's "pooled" here, though it is above on wider shapes."""
    pred, ref = np.zeros((3, 3), bool), np.zeros((3, 3), bool)
    pred[0, 0] = pred[1, 1] = True
    ref[0, 0] = ref[2, 0] = True
    # each direction: distances {0, sqrt 2}; pooled: {0, 0, sqrt 2, sqrt 2}, whose 95th percentile (position
    # 2.85 of 0..3) is sqrt 2; max: each direction's 95th percentile, 0.95 sqrt 2
    assert hd95(pred, ref, (1.0, 1.0), "pooled") == pytest.approx(math.sqrt(2), abs=1e-12)
    assert hd95(pred, ref, (1.0, 1.0), "max") == pytest.approx(0.95 * math.sqrt(2), abs=1e-12)
    assert mp.hd95(pred, ref) == pytest.approx(math.sqrt(2), abs=1e-12)
    torch = pytest.importorskip("torch")
    from monai.metrics import HausdorffDistanceMetric
    monai = HausdorffDistanceMetric(include_background=True, percentile=95)(
        torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()).item()
    assert monai == pytest.approx(0.95 * math.sqrt(2), abs=1e-6)
    wider = [(a, b) for a, b in PAIRS[2] if hd95(a, b, SPACINGS[2], "max") > hd95(a, b, SPACINGS[2], "pooled") + 1e-6]
    assert wider  # and the other way round on the shapes above


# --- empty policies -----------------------------------------------------------------------------


@pytest.mark.parametrize("both_empty", ["nan", "perfect"])
@pytest.mark.parametrize("one_empty", ["nan", "diagonal"])
def test_empty_policies(both_empty, one_empty):
    policy = EmptyPolicy(both_empty=both_empty, one_empty_hd95=one_empty)
    spacing = (2.0, 0.5, 1.0)
    shape = (3, 8, 6)
    empty, full = np.zeros(shape, bool), np.zeros(shape, bool)
    full[1, 2:5, 2:4] = True

    d, j, h = dice(empty, empty, policy), iou(empty, empty, policy), hd95(empty, empty, spacing, policy=policy)
    if both_empty == "nan":
        assert math.isnan(d) and math.isnan(j) and math.isnan(h)
    else:
        assert (d, j, h) == (1.0, 1.0, 0.0)

    diagonal = math.sqrt((3 * 2.0) ** 2 + (8 * 0.5) ** 2 + (6 * 1.0) ** 2)
    for p, r in ((empty, full), (full, empty)):
        assert dice(p, r, policy) == 0.0 and iou(p, r, policy) == 0.0
        for conv in ("pooled", "max"):
            h = hd95(p, r, spacing, conv, policy)
            if one_empty == "nan":
                assert math.isnan(h)
            else:
                assert h == pytest.approx(diagonal, abs=1e-12)


def test_default_policy_and_validation():
    assert EmptyPolicy() == EmptyPolicy(both_empty="nan", one_empty_hd95="diagonal")
    with pytest.raises(ValueError, match="both_empty"):
        EmptyPolicy(both_empty="zero")
    with pytest.raises(ValueError, match="one_empty_hd95"):
        EmptyPolicy(one_empty_hd95="max")
    a = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="one value per array axis"):
        hd95(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="> 0"):
        hd95(a, a, (1.0, 0.0))
    with pytest.raises(ValueError, match="convention"):
        hd95(a, a, (1.0, 1.0), "mean")
    with pytest.raises(ValueError, match="same shape"):
        dice(a, a[:3])


# --- case_metrics ---------------------------------------------------------------------------------


def test_case_metrics_multiclass_matches_binary_calls():
    rng = np.random.default_rng(7)
    shape = (6, 32, 28)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for c in (1, 2):
        ref[blob(shape, 10 + c, frac=0.2)] = c
        pred[blob(shape, 20 + c, frac=0.2)] = c
    pred[rng.random(shape) < 0.01] = 3  # class 3 is spurious: absent from ref
    for conv in ("pooled", "max"):
        out = case_metrics(pred, ref, SPACING_3D, num_classes=5, hd_convention=conv)
        assert set(out) == {"dice", "iou", "hd95"} and all(len(v) == 4 for v in out.values())
        for c in (1, 2):
            p, r = pred == c, ref == c
            assert out["dice"][c - 1] == pytest.approx(mp.dc(p, r), abs=1e-12)
            assert out["iou"][c - 1] == pytest.approx(mp.jc(p, r), abs=1e-12)
            assert out["hd95"][c - 1] == pytest.approx(hd95(p, r, SPACING_3D, conv), abs=1e-12)
        assert out["dice"][2] == 0.0  # class 3: predicted, not in ref
        assert out["hd95"][2] == pytest.approx(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, SPACING_3D))))
        assert all(math.isnan(out[k][3]) for k in out)  # class 4: absent in both -> NaN by default
    assert case_metrics(pred, ref, SPACING_3D, 5, EmptyPolicy(both_empty="perfect"))["dice"][3] == 1.0


def test_per_slice_vs_per_volume():
    # slice 0: a 10x10 square predicted exactly; slice 1: a 2x2 square missed entirely.
    ref = np.zeros((2, 16, 16), np.uint8)
    ref[0, 3:13, 3:13] = 1
    ref[1, 7:9, 7:9] = 1
    pred = ref.copy()
    pred[1] = 0
    spacing = (5.0, 1.0, 1.0)
    vol = case_metrics(pred, ref, spacing, 2)
    sl = case_metrics(pred, ref, spacing, 2, per_slice=True)
    assert vol["dice"][0] == pytest.approx(2 * 100 / 204) and vol["iou"][0] == pytest.approx(100 / 104)
    assert sl["dice"][0] == pytest.approx(0.5) and sl["iou"][0] == pytest.approx(0.5)
    diag2d = math.sqrt(16**2 + 16**2)
    assert sl["hd95"][0] == pytest.approx(diag2d / 2)  # mean of 0 and the 2D diagonal penalty
    assert vol["hd95"][0] == pytest.approx(mp.hd95(pred == 1, ref == 1, voxelspacing=spacing))

    # per-slice NaN slices (both empty) are left out of the mean
    ref[1] = 0
    sl = case_metrics(pred, ref, spacing, 2, per_slice=True)
    assert sl == {"dice": [1.0], "iou": [1.0], "hd95": [0.0]}


def test_single_slice_is_scored_in_2d():
    ref = np.zeros((1, 20, 20), np.uint8)
    ref[0, 4:14, 4:14] = 1
    pred = np.zeros_like(ref)
    pred[0, 7:11, 7:11] = 1  # concentric: contours 3 px apart, but pred lies inside ref
    spacing = (4.0, 0.8, 1.2)
    vol = case_metrics(pred, ref, spacing, 2)
    assert vol == case_metrics(pred, ref, spacing, 2, per_slice=True)
    assert vol["hd95"][0] == pytest.approx(mp.hd95(pred[0] == 1, ref[0] == 1, voxelspacing=spacing[1:]))
    # as a 3D volume a single slice is all surface, which gives a different number
    assert abs(hd95(pred == 1, ref == 1, spacing) - vol["hd95"][0]) > 0.1


def test_case_metrics_errors():
    a = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(a, a[:, :7], (1.0, 1.0, 1.0), 2)
    with pytest.raises(ValueError, match=r"pred_label has labels outside \[0, 3\)"):
        case_metrics(a + 3, a, (1.0, 1.0, 1.0), 3)
    with pytest.raises(ValueError, match=r"ref_label has labels outside"):
        case_metrics(a, a.astype(np.int16) - 1, (1.0, 1.0, 1.0), 3)
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        case_metrics(a[0], a[0], (1.0, 1.0), 2)
    with pytest.raises(ValueError, match="one value per array axis"):
        case_metrics(a, a, (1.0, 1.0), 2)
    with pytest.raises(ValueError, match="integer"):
        case_metrics(a.astype(float), a, (1.0, 1.0, 1.0), 2)

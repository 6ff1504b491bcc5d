"""Print the time per case of our HD95 and GED against reference implementations, their agreement, and
the evaluate stage's time on a whole test set with K samples, serial and in parallel.

    python benchmarks/metric_speed.py [--size 256] [--cases 20] [--samples 10] [--raters 4] [--repeats 3]

- HD95: ``benchmark.metrics.hd95`` (surfaces found on the masks' bounding box, nearest surface
  points by k-d tree) against ``medpy.metric.binary.hd95`` (distance transforms of the whole image) on
  the same masks: blobs spread over the image (2D, and a 3D stack with anisotropic spacing) and one
  compact lesion per image.
- GED: ``benchmark.metrics.multirater.ged`` (one matrix product per class) against a straightforward
  evaluation of the formula, one IoU per pair of masks, with K samples and with 100.
- The evaluate stage (STAPLE fusion, Dice/IoU/HD95 and every set metric) on phantom-lesion test cases at
  ``--size`` with K random samples per case, with 1 and with 2 worker processes.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from medpy.metric.binary import hd95 as medpy_hd95
from scipy.ndimage import gaussian_filter

from benchmark.metrics import hd95
from benchmark.metrics.multirater import ged


def blobs(rng: np.random.Generator, n: int, shape: tuple[int, ...], smooth: float = 6.0) -> np.ndarray:
    """``n`` masks of one blobby structure each, perturbed from a common field (like raters or samples)."""
    base = gaussian_filter(rng.standard_normal(shape), smooth)
    out = []
    for _ in range(n):
        own = gaussian_filter(rng.standard_normal(shape), smooth)
        field = base + 0.5 * own * base.std() / own.std()
        out.append(field > np.quantile(field, 0.85))
    return np.stack(out).astype(np.uint8)


def lesion_pair(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two outlines of one compact lesion (radius 8-20 px) at a random place, as two raters draw it."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    cy, cx = rng.uniform(0.2, 0.8, 2) * shape
    r = rng.uniform(8, 20)
    out = []
    for _ in range(2):
        dy, dx = rng.normal(0, 1.5, 2)
        ry, rx = r * rng.uniform(0.8, 1.2, 2)
        out.append(((yy - cy - dy) / ry) ** 2 + ((xx - cx - dx) / rx) ** 2 <= 1)
    return out[0], out[1]


def ged_pairwise(samples: np.ndarray, raters: np.ndarray) -> float:
    """The GED formula with one IoU per pair of binary masks (IoU 1 if both empty)."""
    def d(a, b):
        a, b = a.astype(bool), b.astype(bool)
        union = np.logical_or(a, b).sum()
        return 0.0 if union == 0 else 1.0 - np.logical_and(a, b).sum() / union

    cross = np.mean([d(s, y) for s in samples for y in raters])
    ss = np.mean([d(s, t) for s in samples for t in samples])
    yy = np.mean([d(y, z) for y in raters for z in raters])
    return 2 * cross - ss - yy


def per_case(fn, cases, repeats: int) -> tuple[float, list]:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = [fn(*c) for c in cases]
        best = min(best, (time.perf_counter() - t0) / len(cases))
    return best, out


def compare(name: str, ours, reference, cases, repeats: int) -> None:
    t_ours, v_ours = per_case(ours, cases, repeats)
    t_ref, v_ref = per_case(reference, cases, repeats)
    diff = float(np.max(np.abs(np.asarray(v_ours) - np.asarray(v_ref))))
    print(f"| {name} | {1000 * t_ours:.2f} | {1000 * t_ref:.2f} | {t_ref / t_ours:.1f}x | {diff:.1e} | "
          f"{'yes' if diff <= 1e-6 else 'NO'} |")


def evaluate_stage(size: int, n_cases: int, samples: int) -> None:
    from benchmark.config import DataConfig, EvalConfig
    from benchmark.data.preprocess import load_split, preprocess
    from benchmark.data.sources import fetch
    from benchmark.data.store import save_arrays
    from benchmark.evaluation import evaluate
    from benchmark.records import PredictionRecord, Status, write_record

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = DataConfig(size=size, n_subjects=n_cases * 2, split={"train": 0.5, "val": 0.0, "test": 0.5})
        fetch("phantom-lesion", tmp / "fetched", cfg)
        preprocess("phantom-lesion", tmp / "fetched", tmp / "processed", cfg)
        _, cases = load_split(tmp / "processed", "test")
        rng = np.random.default_rng(0)
        for case in cases:  # samples: the raters' union and intersection, randomly thinned
            pool = case.label[rng.integers(0, case.label.shape[0], samples)]
            noise = rng.random(pool.shape) < 0.02
            save_arrays(tmp / "pred" / f"{case.case_id}.npz", samples=(pool ^ noise).astype(np.uint8))
        write_record(tmp / "pred" / "meta.json", PredictionRecord(
            Status.OK, dataset="phantom-lesion", n_cases=len(cases), n_samples_requested=samples, n_samples=samples,
            nfe_per_sample=1, seconds_per_case=0.0, seconds_total=0.0, device="cpu", seed=0, uncertainty="not written"))
        print(f"\nevaluate stage, phantom-lesion {size}x{size}, {len(cases)} test cases, K = {samples} samples, "
              f"4 raters, STAPLE fusion, all metrics:")
        for workers in (1, 2):
            t0 = time.perf_counter()
            evaluate(tmp / "processed", tmp / "pred", tmp / f"out{workers}", EvalConfig(fusion="staple", workers=workers),
                     "random")
            dt = time.perf_counter() - t0
            print(f"  {workers} worker(s): {dt:.2f} s, {1000 * dt / len(cases):.0f} ms per case")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--raters", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    s = args.size
    print(f"{args.cases} random cases; best of {args.repeats} runs; ms per case\n")
    print("| metric | ours (ms) | reference (ms) | speed-up | max abs difference | agrees to 1e-6 |")
    print("|---|---|---|---|---|---|")
    pairs2d = [tuple(blobs(rng, 2, (s, s))) + ((1.0, 0.7),) for _ in range(args.cases)]
    compare(f"HD95 2D {s}x{s}, blobs over the image, spacing (1.0, 0.7), vs medpy", hd95,
            lambda p, r, sp: medpy_hd95(p, r, voxelspacing=sp), pairs2d, args.repeats)
    lesions = [lesion_pair(rng, (s, s)) + ((1.0, 0.7),) for _ in range(args.cases)]
    compare(f"HD95 2D {s}x{s}, one compact lesion, vs medpy", hd95,
            lambda p, r, sp: medpy_hd95(p, r, voxelspacing=sp), lesions, args.repeats)
    pairs3d = [tuple(blobs(rng, 2, (16, s, s), smooth=4)) + ((3.0, 0.8, 0.8),) for _ in range(max(args.cases // 4, 2))]
    compare(f"HD95 3D 16x{s}x{s}, blobs, spacing (3.0, 0.8, 0.8), vs medpy", hd95,
            lambda p, r, sp: medpy_hd95(p, r, voxelspacing=sp), pairs3d, args.repeats)
    for k in (args.samples, 100):
        sets = []
        for _ in range(args.cases):
            masks = blobs(rng, k + args.raters, (s, s))
            sets.append((masks[:k], masks[k:]))
        compare(f"GED_{k}, {args.raters} raters, {s}x{s}, vs pairwise formula",
                lambda a, b: ged(a, b, 2), ged_pairwise, sets, 1 if k == 100 else args.repeats)
    evaluate_stage(args.size, args.cases, args.samples)


if __name__ == "__main__":
    main()

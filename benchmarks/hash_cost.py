"""Print what verifying a case file's SHA-256 against the manifest adds to reading it, in seconds per GB.

    python benchmarks/hash_cost.py [--cases 16] [--mb-per-case 64] [--repeats 3]

Writes ``--cases`` case files of about ``--mb-per-case`` MB each (float32 noise images, as the preprocess stage
writes them), then reads them all with :func:`benchmark.data.store.load_case` without and with the recorded
hash, best of ``--repeats`` passes each; the files are read once before timing, so both passes read from the
page cache and the difference is the hashing itself.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.data.case import Case  # noqa: E402
from benchmark.data.manifest import file_sha256  # noqa: E402
from benchmark.data.store import load_case, save_case  # noqa: E402


def best_pass(files: list[tuple[Path, str | None]], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for path, sha in files:
            load_case(path, path.stem, path.stem, sha256=sha)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--mb-per-case", type=float, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    side = 256
    z = max(1, int(args.mb_per_case * 2**20 / (side * side * 5)))  # 4 bytes of image + 1 of label per pixel
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.cases):
            path = Path(tmp) / f"case{i:03d}.npz"
            save_case(path, Case(path.stem, path.stem, rng.standard_normal((z, 1, side, side), dtype=np.float32),
                                 rng.integers(0, 2, (1, z, side, side), dtype=np.uint8)))
            files.append((path, file_sha256(path)))
        gb = sum(f.stat().st_size for f, _ in files) / 1e9
        plain = best_pass([(f, None) for f, _ in files], args.repeats)
        verified = best_pass(files, args.repeats)
    print(f"{args.cases} case files, {gb:.2f} GB (page cache), best of {args.repeats}")
    print(f"load_case without verification: {plain / gb:.2f} s/GB")
    print(f"load_case with sha256 verified: {verified / gb:.2f} s/GB")
    print(f"verification adds:              {(verified - plain) / gb:.2f} s/GB "
          f"({100 * (verified - plain) / plain:.0f}% of reading)")


if __name__ == "__main__":
    main()

"""Print the peak resident memory and the read rate of training batches from the slice store, on a synthetic
processed dataset larger than memory is meant to hold.

    python benchmarks/stream_memory.py FOLDER [--gb 10] [--steps 200] [--batch 48] [--size 256] [--channels 4]
                                              [--depth 155] [--workers 0 2] [--keep]

Three stages, each in a fresh process (so each peak is that stage's own):

1. writes a processed dataset of at least ``--gb`` GB of slices under FOLDER (BraTS-like by default: 4 channels,
   1 rater, 155 slices a case, 256 px), one case at a time;
2. builds its slice store (:meth:`benchmark.training.data.SliceSet.from_store`), case by case;
3. for each ``--workers`` value, opens the store and reads ``--steps`` steps of ``--batch`` slices through
   :func:`benchmark.training.data.batches`, after evicting the store's files from the page cache, so the rows come
   from the disk. It checks every batch against what was written (each slice holds its own index). The rate
   counts only the time spent waiting for batches.

Peaks: the process's own (``VmHWM``, Linux), its ``getrusage`` ``ru_maxrss`` (which Linux carries across ``exec``
from the launching process, so it is at least the launcher's), and its largest worker's ``ru_maxrss``
(``RUSAGE_CHILDREN``, read after the workers ended). The dataset and store are deleted at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.data.case import Case, DatasetInfo  # noqa: E402
from benchmark.training.data import SliceSet, batches  # noqa: E402
from benchmark.training.slices import store_folder  # noqa: E402
from tests.training.test_streamed import write_processed  # noqa: E402

CLASSES = ("background", "a", "b", "c")


def peaks() -> str:
    """This process's peak resident memory: its own (``VmHWM``), and ``ru_maxrss``, which Linux carries across
    ``exec`` from the process that launched it, so it is at least the launcher's peak."""
    own = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return f"peak RSS {own / 1024:.0f} MB (ru_maxrss {maxrss:.0f} MB)"


def cases(n_cases: int, depth: int, channels: int, size: int):
    """Case ``i`` holds slices ``i*depth ...``; slice ``k`` of channel ``c`` is ``k + c/8`` everywhere, its label
    ``k % 4``: a read row names itself."""
    for i in range(n_cases):
        k = np.arange(i * depth, (i + 1) * depth, dtype=np.float32)
        image = k[:, None, None, None] + np.arange(channels, dtype=np.float32)[None, :, None, None] / 8
        image = np.ascontiguousarray(np.broadcast_to(image, (depth, channels, size, size)))
        label = np.ascontiguousarray(np.broadcast_to((k % 4).astype(np.uint8)[None, :, None, None],
                                                     (1, depth, size, size)))
        yield Case(f"case{i:04d}", f"subject{i:04d}", image, label)


def evict(folder: Path) -> None:
    """Drop ``folder``'s files from the page cache (clean pages only; nobody else's)."""
    for path in folder.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write(processed: Path, args) -> None:
    n_cases = math.ceil(args.gb * 1e9 / slice_bytes(args) / args.depth)
    info = DatasetInfo(name="stream-synthetic", modality="MRI", channels=args.channels, class_names=CLASSES)
    t = time.perf_counter()
    write_processed(processed, info, cases(n_cases, args.depth, args.channels, args.size))
    print(f"dataset: {n_cases} cases x {args.depth} slices of {args.channels}x{args.size}x{args.size} "
          f"({n_cases * args.depth * slice_bytes(args) / 1e9:.2f} GB of slices) written in "
          f"{time.perf_counter() - t:.0f} s; {peaks()}", flush=True)


def slice_bytes(args) -> int:
    """One slice's image (float32) and label (uint8)."""
    return (args.channels * 4 + 1) * args.size ** 2


def build(processed: Path) -> None:
    t = time.perf_counter()
    data = SliceSet.from_store(processed)
    gb = (data.images.nbytes + data.labels.nbytes) / 1e9
    print(f"store: {len(data)} slices, {gb:.2f} GB, built in {time.perf_counter() - t:.0f} s; "
          f"{peaks()}", flush=True)


def read(processed: Path, steps: int, batch: int, workers: int) -> None:
    data = SliceSet.from_store(processed)
    evict(store_folder(processed, "train"))
    n, waited = 0, 0.0
    t = time.perf_counter()
    for step, shards in zip(range(steps), batches(data, batch, 0, range(steps), [0], workers=workers)):
        waited += time.perf_counter() - t
        images, labels, _ = shards[0]
        k = images[:, 0, 0, 0]
        want = k[:, None, None, None] + torch.arange(images.shape[1])[None, :, None, None] / 8
        if not (torch.equal(k, k.round()) and torch.equal(images, want.expand_as(images))
                and torch.equal(labels, (k.long() % 4)[:, None, None].expand_as(labels))):
            raise AssertionError(f"step {step}: a batch is not the slices it names")
        n += images.shape[0]
        t = time.perf_counter()
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"read, {workers} workers: {steps} steps x {batch} slices, {waited:.1f} s waiting for batches = "
          f"{n / waited:.0f} slices/s ({n * data.images[0].nbytes / waited / 1e6:.0f} MB/s of images); {peaks()}; "
          f"largest worker's peak RSS {workers_peak:.0f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="where the synthetic dataset is written (deleted at the end)")
    ap.add_argument("--gb", type=float, default=10.0, help="slices to write, in GB (1e9 bytes)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--depth", type=int, default=155, help="slices a case")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--keep", action="store_true", help="keep the dataset and its store")
    ap.add_argument("--phase", choices=["write", "build", "read"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    processed = args.folder / "processed"
    if args.phase == "write":
        return write(processed, args)
    if args.phase == "build":
        return build(processed)
    if args.phase == "read":
        return read(processed, args.steps, args.batch, args.workers[0])

    need = 2.1 * args.gb * 1e9   # case files and the store
    free = shutil.disk_usage(args.folder if args.folder.exists() else args.folder.parent).free
    if need > free:
        sys.exit(f"{args.folder}: {need / 1e9:.1f} GB needed (case files and store), {free / 1e9:.1f} GB free")
    if processed.exists() or store_folder(processed, "train").parent.exists():
        sys.exit(f"{args.folder}: already holds a dataset; remove it or choose another folder")
    try:
        me = [sys.executable, __file__, str(args.folder), "--gb", str(args.gb), "--steps", str(args.steps),
              "--batch", str(args.batch), "--size", str(args.size), "--channels", str(args.channels),
              "--depth", str(args.depth)]
        for phase in ("write", "build"):
            subprocess.run(me + ["--phase", phase], check=True)
        for w in args.workers:
            subprocess.run(me + ["--phase", "read", "--workers", str(w)], check=True)
    finally:
        if not args.keep:
            shutil.rmtree(processed, ignore_errors=True)
            shutil.rmtree(store_folder(processed, "train").parent, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Training slices and the batch drawn at each step.

The batch, the rater and the method's noise at step ``s`` for shard ``k`` (a process's micro-batch) come from one
generator seeded by ``(seed, s, k)``. A resumed run therefore draws exactly what the uninterrupted run would have
drawn, without replaying any random stream.

The trainer reads the slices memory-mapped from the slice store on disk (:meth:`SliceSet.from_store`,
:mod:`benchmark.training.slices`), which holds a split larger than memory. :meth:`SliceSet.from_cases` holds them
in memory, for a few cases at hand (the tests check the store against it: both give the same batches). :func:`batches` reads the batches of a range of steps ahead, in worker processes.
"""
from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from benchmark.data.case import Case
from benchmark.training.slices import open_store


@dataclass
class SliceSet:
    """The training slices, in memory or memory-mapped read-only (``np.memmap``).

    Attributes:
        images: float32 ``(N, C, H, W)``.
        labels: uint8 ``(N, R, H, W)``, R raters.
    """
    images: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_cases(cls, cases: list[Case]) -> "SliceSet":
        raters = {c.case_id: c.label.shape[0] for c in cases}
        if len(set(raters.values())) > 1:
            raise ValueError(f"the cases have different numbers of raters: {raters}")
        return cls(np.concatenate([c.image for c in cases]),
                   np.concatenate([c.label.transpose(1, 0, 2, 3) for c in cases]))

    @classmethod
    def from_store(cls, processed: Path, split: str = "train", folder: Path | None = None) -> "SliceSet":
        """The slices of ``split`` of the processed dataset ``processed``, memory-mapped from its slice store
        (built first when needed; ``folder``: where, default beside ``processed``)."""
        return cls(*open_store(processed, split, folder))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getstate__(self) -> dict:
        # A memory map travels as its file name (a worker process started by spawn maps it again), not its contents.
        return {k: a.filename if isinstance(a, np.memmap) else a for k, a in vars(self).items()}

    def __setstate__(self, state: dict) -> None:
        for k, a in state.items():
            setattr(self, k, a if isinstance(a, np.ndarray) else np.load(a, mmap_mode="r"))

    def read(self, idx: np.ndarray, rater: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``idx`` ``(B,)`` in that order: images ``(B, C, H, W)`` and the label of rater ``rater[b]`` of
        row ``b``, ``(B, H, W)``. Each distinct row is read once, in file order."""
        rows, order = np.unique(idx, return_inverse=True)
        images = self.images[rows][order]
        labels = self.labels[rows][order, rater]
        for a in (self.images, self.labels):
            if isinstance(a, np.memmap):
                # Pages read through a mapping stay in the process's resident memory until unmapped: let them go
                # (they stay in the page cache), or a long run's RSS grows to the size of the files.
                a.base.madvise(mmap.MADV_DONTNEED)
        return images, labels


def epoch_steps(epochs: float, n_slices: int, global_batch: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_slices`` training slices at ``global_batch`` slices a step
    (the batch of every process together): ceil(epochs x n_slices / global_batch). ``epochs`` is read as the
    decimal it was written as (0.1 is 1/10, not the float just above it), so a whole product is not rounded up."""
    return math.ceil(Fraction(str(epochs)) * n_slices / global_batch)


def step_generator(seed: int, step: int, shard: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, shard]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _draw(n: int, raters: int, batch_size: int, seed: int, step: int, shard: int):
    """Rows ``(B,)``, raters ``(B,)`` and the generator after drawing them, which the method then draws its noise
    from."""
    g = step_generator(seed, step, shard)
    idx = torch.randint(n, (batch_size,), generator=g)
    rater = torch.randint(raters, (batch_size,), generator=g)
    return idx, rater, g


def batch_at(data: SliceSet, batch_size: int, seed: int, step: int, shard: int):
    """Returns images ``(B, C, H, W)``, labels int64 ``(B, H, W)`` (one random rater each), and the generator."""
    idx, rater, g = _draw(len(data), data.labels.shape[1], batch_size, seed, step, shard)
    # No augmentation: flips would swap anatomical sides (RV left of LV) and change the task.
    images, labels = data.read(idx.numpy(), rater.numpy())
    # int64 by numpy, not torch: a tensor that torch allocated, sent out of a DataLoader worker, stays in the
    # worker's memory (measured: ~6 MB a step; numpy's buffers are freed)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), g


class _Steps(torch.utils.data.Dataset):
    """Item ``i``: the images and labels of step ``steps[i]`` for every shard (the generators cannot travel
    between processes; :func:`batches` rebuilds them)."""

    def __init__(self, data: SliceSet, batch_size: int, seed: int, steps: range, shards: Sequence[int]):
        self.data, self.batch_size, self.seed, self.steps, self.shards = data, batch_size, seed, steps, list(shards)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [batch_at(self.data, self.batch_size, self.seed, self.steps[i], s)[:2] for s in self.shards]


def batches(data: SliceSet, batch_size: int, seed: int, steps: range, shards: Sequence[int], workers: int = 0,
            pin_memory: bool = False) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, torch.Generator]]]:
    """For each step of ``steps``, ``[batch_at(data, batch_size, seed, step, s) for s in shards]``, read ahead by
    ``workers`` processes (0: in this one, when asked) into pinned memory with ``pin_memory``."""
    # Its own generator: a loader draws a base seed when iterated, which must not move torch's global RNG (the
    # method's dropout draws from it, and a resumed run restores it from the checkpoint).
    loader = torch.utils.data.DataLoader(_Steps(data, batch_size, seed, steps, shards), batch_size=None,
                                         num_workers=workers, pin_memory=pin_memory,
                                         generator=torch.Generator().manual_seed(seed))
    for step, read in zip(steps, loader):
        yield [(images, labels, _draw(len(data), data.labels.shape[1], batch_size, seed, step, s)[2])
               for (images, labels), s in zip(read, shards)]

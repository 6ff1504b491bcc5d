"""Training slices and the batch drawn at each step.

The batch, the rater and the method's noise at step ``s`` on rank ``r`` come from one
generator seeded by ``(seed, s, r)``. A resumed run therefore draws exactly what the
uninterrupted run would have drawn, without replaying any random stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from benchmark.data.case import Case


@dataclass
class SliceSet:
    """All training slices in memory.

    Attributes:
        images: float32 ``(N, C, H, W)``.
        labels: uint8 ``(N, R, H, W)``, R raters.
    """
    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_cases(cls, cases: list[Case]) -> "SliceSet":
        images = np.concatenate([c.image for c in cases])
        labels = np.concatenate([c.label.transpose(1, 0, 2, 3) for c in cases])
        return cls(torch.from_numpy(images), torch.from_numpy(labels))

    def __len__(self) -> int:
        return self.images.shape[0]


def epoch_steps(epochs: float, n_slices: int, global_batch: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_slices`` training slices at ``global_batch`` slices a step
    (the batch of every process together): ceil(epochs x n_slices / global_batch). ``epochs`` is read as the
    decimal it was written as (0.1 is 1/10, not the float just above it), so a whole product is not rounded up."""
    return math.ceil(Fraction(str(epochs)) * n_slices / global_batch)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def batch_at(data: SliceSet, batch_size: int, seed: int, step: int, rank: int):
    """Returns images ``(B, C, H, W)``, labels int64 ``(B, H, W)`` (one random rater each), and the generator."""
    g = step_generator(seed, step, rank)
    idx = torch.randint(len(data), (batch_size,), generator=g)
    rater = torch.randint(data.labels.shape[1], (batch_size,), generator=g)
    # No augmentation: flips would swap anatomical sides (RV left of LV) and change the task.
    return data.images[idx], data.labels[idx, rater].long(), g

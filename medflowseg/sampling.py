"""What a method's ``sample`` returns: the labels and the network evaluations that made each of them.

One record for every method, ours and the baselines (``benchmark/methods/interface.py`` is the contract).
It lives here, outside ``benchmark``, so that a method package can build it without importing the suite.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Samples:
    """Attributes:
        labels: int64 ``(n, B, H, W)``, the n samples of each of the B images (n = 1 for a deterministic network).
        nfe: the network evaluations of each returned sample, ``len(nfe) == n``: the velocity or denoiser calls
            of its whole trajectory for every image of the batch at once (restarts and averaged draws included),
            ``(1,)`` for a deterministic network. An adaptive solver's counts differ from sample to sample.
    """
    labels: torch.Tensor
    nfe: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "nfe", tuple(int(k) for k in self.nfe))
        if self.labels.dim() != 4 or self.labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64 (n, B, H, W), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.nfe) != self.labels.shape[0]:
            raise ValueError(f"{self.labels.shape[0]} samples but {len(self.nfe)} NFE counts")

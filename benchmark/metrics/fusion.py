"""Fusing several label maps (samples of a method, or raters) into one."""
from __future__ import annotations

import numpy as np


def majority_vote(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel most frequent label of ``(N, ...)`` integer maps -> ``(...)`` uint8.

    Ties go to the lowest label, so a 2-2 split between background and a structure is
    background: a structure needs a strict majority.
    """
    if stack.shape[0] == 1:
        return stack[0].astype(np.uint8)
    votes = np.stack([(stack == k).sum(axis=0) for k in range(num_classes)])
    return votes.argmax(axis=0).astype(np.uint8)


FUSIONS = {"majority": majority_vote}


def fuse(stack: np.ndarray, num_classes: int, how: str) -> np.ndarray:
    if how not in FUSIONS:
        raise ValueError(f"fusion {how!r} not in {sorted(FUSIONS)}")
    return FUSIONS[how](stack, num_classes)

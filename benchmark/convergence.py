"""Whether a training ended on its plateau, read from its loss curve (``loss.csv`` of the train stage).

The criterion (issue 20): the loss is flat over the last quarter of the steps, i.e. the mean over the last eighth
fell by less than :data:`FLAT` of the mean over the eighth before it. A flow or diffusion loss is noisy from step
to step (a random time and noise each draw), so windows, not single steps, are compared. The other criterion of
the issue, that twice the steps change the test Dice by under 2 points, needs a second training:
``benchmarks/plateau.py --double``.
"""
from __future__ import annotations

import pandas as pd

FLAT = 0.05
"""The largest relative fall over the last eighth that still counts as flat."""


def fall_over_last_quarter(loss: pd.Series) -> float | None:
    """(mean of the second-to-last eighth - mean of the last eighth) / |the former|; None under 16 steps or for a
    zero mean."""
    n = len(loss) // 8
    if n < 2:
        return None
    before, last = loss.iloc[-2 * n:-n].mean(), loss.iloc[-n:].mean()
    return float((before - last) / abs(before)) if before else None


def still_falling(loss: pd.Series) -> bool:
    """Whether the loss fell by :data:`FLAT` or more over its last quarter (False where it cannot be told)."""
    fall = fall_over_last_quarter(loss)
    return fall is not None and fall >= FLAT

"""benchmarks/plateau.py's loss-curve check: windows of the last eighths, not single noisy points."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("plateau", ROOT / "benchmarks" / "plateau.py")
plateau = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plateau)


def test_a_falling_curve_is_not_flat_and_a_noisy_flat_one_is():
    steps = np.arange(800)
    falling = pd.Series(np.exp(-steps / 400))                  # last eighth vs the one before: e^(-1/4) fall
    assert plateau.flatness(falling) == pytest.approx(1 - np.exp(-100 / 400), rel=1e-3)
    noisy = pd.Series(0.3 + 0.05 * np.random.default_rng(0).standard_normal(800))
    assert abs(plateau.flatness(noisy)) < 0.03
    assert plateau.flatness(pd.Series(np.ones(15))) is None   # too short to tell

"""The plateau checks: the loss curve's last quarter (benchmark/convergence.py), and benchmarks/plateau.py's
doubled run scored along the way."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from benchmark.config import load_config
from benchmark.convergence import fall_over_last_quarter, still_falling
from benchmark.evaluation import evaluate
from benchmark.inference import predict
from benchmark.training.trainer import train
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("plateau", ROOT / "benchmarks" / "plateau.py")
plateau = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plateau)


def test_a_falling_curve_is_not_flat_and_a_noisy_flat_one_is():
    steps = np.arange(800)
    falling = pd.Series(np.exp(-steps / 400))                  # last eighth vs the one before: e^(-1/4) fall
    assert fall_over_last_quarter(falling) == pytest.approx(1 - np.exp(-100 / 400), rel=1e-3)
    assert still_falling(falling)
    noisy = pd.Series(0.3 + 0.05 * np.random.default_rng(0).standard_normal(800))
    assert abs(fall_over_last_quarter(noisy)) < 0.03 and not still_falling(noisy)
    assert fall_over_last_quarter(pd.Series(np.ones(15))) is None   # too short to tell
    assert not still_falling(pd.Series(np.ones(15)))


def test_the_doubled_runs_checkpoint_at_n_steps_scores_as_an_n_step_run(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    cfg = load_config("params.yaml")                      # unet, 30 steps
    curve = plateau.doubled_curve(cfg, "phantom-cardiac", "unet", tiny_project / "work", points=2)
    assert [s for s, _ in curve] == [30, 60]
    processed = tiny_project / "data" / "processed" / "phantom-cardiac"
    mc = cfg.method_config("unet")
    train("unet", processed, tiny_project / "alone", mc)
    predict(processed, tiny_project / "alone" / "model", tiny_project / "alone" / "predictions", mc.predict, 1)
    alone = evaluate(processed, tiny_project / "alone" / "predictions", tiny_project / "alone" / "results",
                     cfg.evaluation, "unet")
    assert curve[0][1] == pytest.approx(alone.average["dice"], abs=1e-9)
    assert curve[1][1] != pytest.approx(curve[0][1], abs=1e-9)     # the second half trained on

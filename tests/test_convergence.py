"""The plateau checks: the loss curve's last quarter (benchmark/convergence.py), and benchmarks/plateau.py's
doubled run scored along the way."""
from __future__ import annotations

import dataclasses
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


def test_with_a_decaying_rate_only_the_doubled_runs_end_is_scored(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    cfg = load_config("params.yaml")
    unet = cfg.method_config("unet")
    poly = dataclasses.replace(unet.train, schedule="poly", poly_power=0.9)
    cfg = dataclasses.replace(cfg, method={**cfg.method, "unet": dataclasses.replace(unet, train=poly)})
    curve = plateau.doubled_curve(cfg, "phantom-cardiac", "unet", tiny_project / "work", points=2)
    assert [s for s, _ in curve] == [60]          # step 30 of a 60-step poly run is no 30-step run's model


def _per_case(folder, dice: dict[str, float], classes=("lv", "rv")):
    folder.mkdir(parents=True)
    rows = [{"case_id": c, "subject_id": c.split("c")[0], "class": k, "dice": d + 0.01 * i, "iou": 0.0, "hd95": 0.0}
            for c, d in dice.items() for i, k in enumerate(classes)]
    rows += [{"case_id": c, "subject_id": c.split("c")[0], "class": "region:all", "dice": 9.0, "iou": 0.0, "hd95": 0.0}
             for c in dice]                                   # a region row: not a class, left out
    pd.DataFrame(rows).to_csv(folder / "per_case.csv", index=False)
    return folder


def test_the_change_of_dice_gets_a_paired_interval_over_subjects(tmp_path):
    rng = np.random.default_rng(0)
    cases = [f"s{i // 2}c{i % 2}" for i in range(40)]          # 20 subjects of two cases each
    before = {c: float(rng.uniform(0.2, 0.8)) for c in cases}
    a = _per_case(tmp_path / "a", before)
    same = plateau.change_interval(a, _per_case(tmp_path / "same", before))
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)
    shifted = plateau.change_interval(a, _per_case(tmp_path / "up", {c: d + 0.05 for c, d in before.items()}))
    assert shifted.point == pytest.approx(0.05) and shifted.low == pytest.approx(0.05)
    assert shifted.high == pytest.approx(0.05) and shifted.n_subjects == 20
    noisy = {c: d + float(rng.normal(0.02, 0.1)) for c, d in before.items()}
    ci = plateau.change_interval(a, _per_case(tmp_path / "noisy", noisy))
    diffs = np.array([noisy[c] - before[c] for c in cases])
    assert ci.point == pytest.approx(diffs.mean()) and ci.low < ci.point < ci.high
    assert ci.high - ci.low > 2 * 1.96 * diffs.std() / np.sqrt(40) * 0.5     # as wide as its noise, roughly


def test_a_case_scored_in_one_run_only_is_left_out_of_the_change(tmp_path):
    # both_empty: nan excludes a case from one run's mean only: the paired change must not count it
    before = {f"s{i}c0": 0.5 for i in range(10)}
    after = {**{c: 0.6 for c in before}, "s0c0": float("nan")}
    ci = plateau.change_interval(_per_case(tmp_path / "a", before), _per_case(tmp_path / "b", after))
    assert ci.point == pytest.approx(0.1) and ci.low == pytest.approx(0.1) and ci.high == pytest.approx(0.1)

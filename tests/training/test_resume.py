"""Resuming after a kill gives the same weights, bit for bit, as an uninterrupted run (CPU)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_PARAMS, write_params

CMD = [sys.executable, "-m", "benchmark.cli", "train", "phantom-cardiac", "unet"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's code


def _train(cwd: Path, extra=()) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + list(extra), cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)


def _weights(cwd: Path) -> dict:
    return torch.load(cwd / "runs/phantom-cardiac/unet/model/model.pt", weights_only=True)["state_dict"]


def _assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_sigkill_is_bit_identical(tiny_project, tmp_path_factory):
    import shutil
    steps = {"steps": 400, "batch_size": 4, "lr": 0.001, "warmup_steps": 5, "ema_decay": 0.9,
             "checkpoint_every": 20, "threads": 1}
    write_params(tiny_project / "params.yaml", train=steps)
    other = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(tiny_project, other, dirs_exist_ok=True)

    ref = _train(other)
    assert ref.returncode == 0, ref.stderr

    proc = subprocess.Popen(CMD, cwd=tiny_project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV)
    ckpts = tiny_project / "runs/phantom-cardiac/unet/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.glob("step-*"))):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tiny_project / "runs/phantom-cardiac/unet/model/model.pt").exists(), "run finished before the kill"

    resumed = _train(tiny_project)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr
    _assert_identical(_weights(tiny_project), _weights(other))
    loss_a = (tiny_project / "runs/phantom-cardiac/unet/loss.csv").read_text().splitlines()
    loss_b = (other / "runs/phantom-cardiac/unet/loss.csv").read_text().splitlines()
    assert [l.split(",")[:2] for l in loss_a] == [l.split(",")[:2] for l in loss_b]  # step, loss
    assert len(loss_a) == 401


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_interrupted_then_resumed_in_process(tiny_project, monkeypatch, capsys, dropout):
    """Stop at step 10 with --max-steps, resume to 30: same weights and model file as 30 straight steps. With
    dropout, which draws from torch's global RNG, this needs the RNG state the checkpoint restores."""
    from benchmark.config import load_config
    from benchmark.training.trainer import train

    monkeypatch.chdir(tiny_project)
    unet = {"model": {**TINY_PARAMS["method"]["unet"]["model"], "dropout": dropout}}
    write_params(tiny_project / "params.yaml", method={**TINY_PARAMS["method"], "unet": unet})
    mcfg = load_config("params.yaml").method_config("unet")
    processed = tiny_project / "data/processed/phantom-cardiac"
    partial = train("unet", processed, tiny_project / "a", mcfg, max_steps=10)
    assert partial.status == "partial" and not (tiny_project / "a/model/model.pt").exists()
    resumed = train("unet", processed, tiny_project / "a", mcfg)
    assert f"resuming from {tiny_project / 'a/checkpoints/step-0000010'} at step 10" in capsys.readouterr().out
    straight = train("unet", processed, tiny_project / "b", mcfg)
    assert resumed.weights_sha256 == straight.weights_sha256
    assert resumed.steps == 30
    # the model file is the same bytes whatever its temporary name was
    assert (tiny_project / "a/model/model.pt").read_bytes() == (tiny_project / "b/model/model.pt").read_bytes()
    if dropout:
        no_dropout = train("unet", processed, tiny_project / "c",
                           load_config(write_params(tiny_project / "p0.yaml")).method_config("unet"))
        assert no_dropout.weights_sha256 != straight.weights_sha256  # dropout is in effect


def test_sgd_poly_resumed_gives_the_weights_of_an_uninterrupted_run(tiny_project, capsys):
    """Stop at step 10 of 30 (a checkpoint), resume: same weights and lr curve as 30 straight steps; the lr of
    step s is 0.01 (1 - s / 30)^0.9."""
    from benchmark.config import MethodConfig, TrainConfig
    from benchmark.training.trainer import train

    processed = tiny_project / "data/processed/phantom-cardiac"
    adamw = {**TINY_PARAMS["train"], "lr": 0.01, "warmup_steps": 0, "weight_decay": 1e-4}
    cfg = TrainConfig(**adamw, optimizer="sgd", momentum=0.9, schedule="poly", poly_power=0.9)
    mcfg = MethodConfig(model=TINY_PARAMS["method"]["unet"]["model"], train=cfg)
    partial = train("unet", processed, tiny_project / "a", mcfg, max_steps=10)
    assert partial.status == "partial" and partial.steps == 10
    resumed = train("unet", processed, tiny_project / "a", mcfg)
    assert f"resuming from {tiny_project / 'a/checkpoints/step-0000010'} at step 10" in capsys.readouterr().out
    straight = train("unet", processed, tiny_project / "b", mcfg)
    assert resumed.steps == 30 and resumed.weights_sha256 == straight.weights_sha256
    other = train("unet", processed, tiny_project / "c", MethodConfig(model=mcfg.model, train=TrainConfig(**adamw)))
    assert other.weights_sha256 != straight.weights_sha256   # SGD is in effect
    rows = [list(csv.DictReader((tiny_project / d / "loss.csv").read_text().splitlines())) for d in ("a", "b")]
    assert [(r["step"], r["loss"], r["lr"]) for r in rows[0]] == [(r["step"], r["loss"], r["lr"]) for r in rows[1]]
    # loss.csv's lr is the scheduler's after the step: the lr of the next step, 0-based index `step`
    for r in rows[0]:
        assert abs(float(r["lr"]) - 0.01 * (1 - int(r["step"]) / 30) ** 0.9) < 1e-12


def test_checkpoint_from_other_config_is_not_resumed(tiny_project, monkeypatch):
    from benchmark.config import load_config
    from benchmark.training.trainer import train

    monkeypatch.chdir(tiny_project)
    processed = tiny_project / "data/processed/phantom-cardiac"
    mcfg = load_config("params.yaml").method_config("unet")
    train("unet", processed, tiny_project / "a", mcfg, max_steps=10)
    write_params(tiny_project / "params.yaml", train={**load_config("params.yaml").method_config("unet").train.__dict__,
                                                      "lr": 0.002})
    changed = load_config("params.yaml").method_config("unet")
    meta = train("unet", processed, tiny_project / "a", changed)
    fresh = train("unet", processed, tiny_project / "c", changed)
    assert meta.weights_sha256 == fresh.weights_sha256
    assert json.loads((tiny_project / "a/model/meta.json").read_text())["train"]["lr"] == 0.002

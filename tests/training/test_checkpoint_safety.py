"""Checkpoints run no code when read, a broken newest one is skipped, and a full disk loses nothing.

Each test starts from a run stopped at step 20 (checkpoints ``step-0000010`` and ``step-0000020`` of a 30-step
profile) and trains it to the end through ``segbench train`` (:func:`benchmark.cli.main`).
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from benchmark.cli import main
from benchmark.config import load_config
from benchmark.errors import USER_ERROR
from benchmark.methods import nnunet
from benchmark.training import trainer
from benchmark.training.checkpoint import EMA, MODEL, OPTIMIZER, STATE, CheckpointError, load_torch_file, torch_bytes
from benchmark.training.trainer import train
from tests.conftest import write_params

RUN = Path("runs/phantom-cardiac/unet")
RNG = "rng-0.safetensors"
CKPT_FILES = (MODEL, EMA, OPTIMIZER, RNG, STATE)


class Payload:
    """Unpickled, it creates ``marker``: what an attacker would make run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_processed) -> tuple[Path, str]:
    """A project whose run stopped at step 20, and the weights hash of 30 uninterrupted steps."""
    root = tmp_path_factory.mktemp("stopped")
    mcfg = load_config(write_params(root / "params.yaml")).method_config("unet")
    processed = root / "data/processed/phantom-cardiac"
    shutil.copytree(tiny_processed, processed)
    straight = train("unet", processed, tmp_path_factory.mktemp("straight"), mcfg)
    train("unet", processed, root / RUN, mcfg, max_steps=20)
    return root, straight.weights_sha256


@pytest.fixture
def project(template, tmp_path, monkeypatch) -> Path:
    shutil.copytree(template[0], tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _segbench_train(capsys) -> tuple[int, str]:
    rc = main(["--params", "params.yaml", "train", "phantom-cardiac", "unet"])
    out = capsys.readouterr()
    return rc, out.out + out.err


def _weights() -> str:
    return json.loads((RUN / "model/meta.json").read_text())["weights_sha256"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith((".tmp", ".old"))]


def _planted(name: str, marker: Path) -> bytes:
    if name == OPTIMIZER:  # a real torch archive, so the payload reaches the unpickler
        return torch_bytes({"optimizer": Payload(marker), "scheduler": {}, "scaler": None})
    return pickle.dumps({"state": Payload(marker)})


def test_the_planted_payload_is_a_real_attack(tmp_path):
    """The fixture is no dud: the plain unpickler and ``torch.load(weights_only=False)`` run it."""
    marker = tmp_path / "marker"
    pickle.loads(_planted(MODEL, marker))
    assert marker.is_file()
    marker.unlink()
    (tmp_path / OPTIMIZER).write_bytes(_planted(OPTIMIZER, marker))
    torch.load(tmp_path / OPTIMIZER, weights_only=False)
    assert marker.is_file()


BROKEN = {  # kind -> (how the newest checkpoint's file is broken, what the skip message says for each file)
    "truncated": (lambda data, marker: data[:len(data) // 2], "unreadable or truncated"),
    "empty": (lambda data, marker: b"", "unreadable or truncated"),
    "missing": (None, "file is missing"),
    "payload": (lambda data, marker: None, "unreadable or truncated"),
}
PROBLEM = {(STATE, "truncated"): "not valid JSON", (STATE, "empty"): "not valid JSON",
           (STATE, "payload"): "not valid JSON", (OPTIMIZER, "payload"): "refused to load io.open"}


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("name", CKPT_FILES)
def test_a_broken_newest_checkpoint_is_skipped_and_runs_nothing(template, project, capsys, name, kind):
    marker = project / "marker"
    path = RUN / "checkpoints/step-0000020" / name
    corrupt, problem = BROKEN[kind]
    if corrupt is None:
        path.unlink()
    else:
        path.write_bytes(_planted(name, marker) if kind == "payload" else corrupt(path.read_bytes(), marker))
    rc, log = _segbench_train(capsys)
    assert rc == 0, log
    assert f"skipping checkpoint step-0000020: {path}: {PROBLEM.get((name, kind), problem)}" in log
    assert f"resuming from {RUN / 'checkpoints/step-0000010'} at step 10" in log
    assert _weights() == template[1]  # as if never interrupted
    assert not marker.exists()

"""Fault injection: each stage, killed at a seeded random point and rerun, gives what an uninterrupted run gives.

For each stage (fetch, preprocess, train, predict, evaluate, tables) a reference project runs the stage once,
uninterrupted, counting the filesystem commits it makes (``os.replace``, ``os.rename``, ``shutil.rmtree``:
every swap of a file or folder, every deletion of an old checkpoint). A second project, holding exactly the
reference's files from before that stage, runs it as a ``segbench`` process that SIGKILLs itself just before its
k-th commit, k drawn with a fixed seed, so the kill lands inside the stage's writes (between the two renames of
a folder swap, before a checkpoint is pruned, ...) and the run is reproducible. The stage is then run again, and
every file of the project must equal the reference's (timings aside), with no temporary file or folder anywhere.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from tests.conftest import TINY_PARAMS, write_params

ROOT = Path(__file__).resolve().parents[1]
SEED = 19
STAGES = [["fetch", "phantom-cardiac"], ["preprocess", "phantom-cardiac"], ["train", "phantom-cardiac", "unet"],
          ["predict", "phantom-cardiac", "unet"], ["evaluate", "phantom-cardiac", "unet"], ["tables", "--no-mlflow"]]
COMMITS = ("os.replace", "os.rename", "shutil.rmtree")

# `segbench ARGV` that kills itself (SIGKILL) just before its KILL_AT-th filesystem commit.
KILLED_AT = """
import os, shutil, signal, sys
from benchmark.cli import main

kill_at, count = int(os.environ["KILL_AT"]), [0]

def counted(real):
    def commit(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return commit

os.replace, os.rename, shutil.rmtree = counted(os.replace), counted(os.rename), counted(shutil.rmtree)
sys.exit(main(sys.argv[1:]))
"""


def _timings_dropped(name: str, data: bytes):
    """A file's content with its wall-clock timings (``seconds*`` keys, the ``seconds`` column) taken out."""
    if name.endswith(".json"):
        def drop(x):
            if isinstance(x, dict):
                return {k: drop(v) for k, v in x.items() if not k.startswith("seconds")}
            return [drop(v) for v in x] if isinstance(x, list) else x
        return drop(json.loads(data))
    if name.endswith(".csv") and data.startswith(b"step,loss,lr,seconds"):
        return pd.read_csv(io.BytesIO(data)).drop(columns="seconds").to_dict("list")
    return data


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _comparable(files: dict[str, bytes]) -> dict:
    return {name: _timings_dropped(name, data) for name, data in files.items()}


def _temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name.endswith((".tmp", ".old", ".lock")))


def _materialise(files: dict[str, bytes], root: Path) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _counting(monkeypatch) -> list[int]:
    count = [0]
    for dotted in COMMITS:
        module, name = dotted.split(".")
        real = getattr(sys.modules[module], name)

        def commit(*args, _real=real, **kwargs):
            count[0] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(sys.modules[module], name, commit)
    return count


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[tuple[dict[str, bytes], int, dict[str, bytes]]]:
    """For each stage: the project's files before it, its number of commits, the files after it."""
    root = tmp_path_factory.mktemp("reference")
    write_params(root / "params.yaml", ablations={"datasets": [], "methods": []},
                 table4={"datasets": ["phantom-cardiac"], "methods": ["unet"]},
                 nfe_sweep={"datasets": [], "method": "medflowseg"},
                 train={**TINY_PARAMS["train"], "steps": 60, "checkpoint_every": 10})
    for f in ("paper/claims.yaml", "paper/catalogue.yaml"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, root / f)
    out, cwd = [], os.getcwd()
    os.chdir(root)
    try:
        for argv in STAGES:
            before = _files(root)
            with pytest.MonkeyPatch.context() as mp:
                count = _counting(mp)
                assert main(argv) == 0
            out.append((before, count[0], _files(root)))
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.parametrize("stage", range(len(STAGES)), ids=[argv[0] for argv in STAGES])
def test_a_stage_killed_at_a_random_point_then_rerun_gives_the_uninterrupted_outputs(reference, tmp_path, monkeypatch,
                                                                                     stage):
    argv = STAGES[stage]
    before, commits, after = reference[stage]
    assert commits >= 1
    kill_at = random.Random(f"{SEED}-{argv[0]}").randint(1, commits)
    project = _materialise(before, tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILLED_AT, *argv], cwd=project, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": str(kill_at)}, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr     # it died inside the stage's writes
    monkeypatch.chdir(project)
    assert main(argv) == 0
    assert _temporaries(project) == []
    assert _comparable(_files(project)) == _comparable(after), f"kill before commit {kill_at} of {commits}"

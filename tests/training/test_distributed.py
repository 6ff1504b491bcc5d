"""A real two-process (gloo) run of the training code, started the way a user starts it.

`accelerate launch --cpu --num_processes 2` silently runs one process (SPEC section 5); the
multi-process form below starts two, and the test asserts the world size from inside each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ddp_worker.py")


def _launch(project: Path, run: str, *max_steps: int, processes: int = 2) -> tuple[list[dict], str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd = [*(launch if processes == 2 else [sys.executable]), str(WORKER), str(project), run, *map(str, max_steps)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((project / f"{run}-rank{k}.json").read_text()) for k in range(processes)], r.stdout + r.stderr


def test_two_gloo_processes_train_in_sync_and_resume(tiny_project):
    ranks, _ = _launch(tiny_project, "ddp")
    assert [x["world_size"] for x in ranks] == [2, 2]
    # Each rank draws different batches; identical weights mean the gradients were all-reduced.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    meta = json.loads((tiny_project / "runs/ddp/model/meta.json").read_text())
    assert meta["world_size"] == 2 and (tiny_project / "runs/ddp/model/model.pt").is_file()
    # Both ranks wrote into the one temporary folder the main process made, which was then swapped in: the main
    # process the model, EMA, optimizer and state, each rank its own RNG state; no pickle of any kind.
    checkpoints = tiny_project / "runs/ddp/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000020", "step-0000030"]  # no temporary one
    assert all(sorted(p.name for p in c.iterdir()) == ["ema.safetensors", "model.safetensors", "optimizer.pt",
                                                       "rng-0.safetensors", "rng-1.safetensors", "state.json"]
               for c in checkpoints.iterdir())

    # Stopped at step 10 and resumed by two processes: every rank loads the checkpoint the main process chose.
    assert [x["steps"] for x in _launch(tiny_project, "resumed", 10)[0]] == [10, 10]
    resumed, log = _launch(tiny_project, "resumed")
    assert "resuming from" in log and "step-0000010 at step 10" in log
    assert [x["weights"] for x in resumed] == [ranks[0]["weights"]] * 2

    # Saved by one process, resumed by two: rank 1 has no RNG state of its own to restore, and needs none.
    assert _launch(tiny_project, "grown", 10, processes=1)[0][0]["world_size"] == 1
    grown, log = _launch(tiny_project, "grown")
    assert "step-0000010 at step 10" in log and [x["steps"] for x in grown] == [30, 30]

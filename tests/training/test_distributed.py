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


def test_two_gloo_processes_train_in_sync(tiny_project):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(WORKER), str(tiny_project)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tiny_project / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [x["world_size"] for x in ranks] == [2, 2]
    # Each rank draws different batches; identical weights mean the gradients were all-reduced.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    meta = json.loads((tiny_project / "runs/ddp/model/meta.json").read_text())
    assert meta["world_size"] == 2 and (tiny_project / "runs/ddp/model/model.pt").is_file()
    # Both ranks wrote into the one temporary folder the main process made, which was then swapped in.
    checkpoints = tiny_project / "runs/ddp/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000020", "step-0000030"]  # no temporary one
    assert all((c / f"random_states_{k}.pkl").is_file() for c in checkpoints.iterdir() for k in (0, 1))

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

import torch

from tests.conftest import TINY_PARAMS, write_params

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


def _curve(project: Path, run: str, column: str) -> list[float]:
    rows = (project / f"runs/{run}/loss.csv").read_text().splitlines()
    at = rows[0].split(",").index(column)
    return [float(row.split(",")[at]) for row in rows[1:]]


def test_two_processes_draw_and_learn_what_one_process_accumulating_two_micro_batches_does(tiny_project):
    """The global batch of 4: two gloo processes of 2 slices each, against one process accumulating two
    micro-batches of 2. Same slices, noise and averaged gradient, so the same weights up to float rounding (DDP
    averages by all-reduce, one process by adding scaled gradients)."""
    train = {**TINY_PARAMS["train"], "steps": 8, "checkpoint_every": 8}
    write_params(tiny_project / "params.yaml", train=train)
    assert [x["world_size"] for x in _launch(tiny_project, "split")[0]] == [2, 2]
    write_params(tiny_project / "params.yaml", train={**train, "micro_batch_size": 2})
    _launch(tiny_project, "accumulated", processes=1)
    split, accumulated = (json.loads((tiny_project / f"runs/{r}/model/meta.json").read_text())
                          for r in ("split", "accumulated"))
    assert [tuple(r[k] for k in ("batch_size", "micro_batch_size", "accumulation", "world_size"))
            for r in (split, accumulated)] == [(4, 2, 1, 2), (4, 2, 2, 1)]
    a, b = (torch.load(tiny_project / f"runs/{r}/model/model.pt", weights_only=True)["state_dict"]
            for r in ("split", "accumulated"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    curve_a, curve_b = _curve(tiny_project, "split", "loss"), _curve(tiny_project, "accumulated", "loss")
    assert len(curve_a) == 8 and len(set(curve_a)) > 1
    torch.testing.assert_close(torch.tensor(curve_a), torch.tensor(curve_b), rtol=1e-6, atol=0)
    # the warm-up counts optimizer steps, however many processes share one (Accelerate would count each process's)
    assert _curve(tiny_project, "split", "lr") == _curve(tiny_project, "accumulated", "lr") == [
        min(1.0, (s + 1) / train["warmup_steps"]) * train["lr"] for s in range(1, 9)]

"""Print the size and the save and resume time of one training checkpoint of a method at the paper profile's
settings, in the suite's layout (:mod:`benchmark.training.checkpoint`: safetensors and a weights-only optimizer
file) and in Accelerate's ``save_state``/``load_state`` layout with the EMA registered (pickles, which the suite no
longer writes or reads), the best of ``--repeats``, on the CPU.

    python benchmarks/checkpoint_cost.py [--method medflowseg] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator

from benchmark.methods import build_method
from benchmark.training import checkpoint
from benchmark.training.checkpoint import TrainingState
from benchmark.training.ema import EMAWeights

PAPER = Path(__file__).resolve().parents[1] / "profiles" / "paper.yaml"


def mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="medflowseg")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = build_method(args.method, 1, 4, yaml.safe_load(PAPER.read_text())["method"][args.method]["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():  # one step, so that the optimizer holds its moments
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = EMAWeights(model, 0.999)
    state = TrainingState(model, ema, optimizer, scheduler, None)
    accelerator.register_for_checkpointing(ema)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "suite", Path(tmp) / "accelerate"
        save = best(lambda: checkpoint.save(accelerator, ours, 1, state, {"fingerprint": "f", "history": []}, 1),
                    args.repeats)
        resume = best(lambda: checkpoint.resume(accelerator, ours, "f", state), args.repeats)
        a_save = best(lambda: accelerator.save_state(str(theirs)), args.repeats)
        a_load = best(lambda: accelerator.load_state(str(theirs)), args.repeats)
        print(f"{args.method} (paper profile): {n:.2f} M parameters")
        print(f"suite (safetensors, weights-only): {mib(ours):.1f} MiB, save {save:.2f} s, resume {resume:.2f} s")
        print(f"Accelerate (pickles):              {mib(theirs):.1f} MiB, save {a_save:.2f} s, load {a_load:.2f} s")


if __name__ == "__main__":
    main()

"""Run by tests/training/test_distributed.py under `accelerate launch`: train (resuming from the run's checkpoints
when there are any), then record this rank's view. Arguments: project folder, run name[, max steps]."""
import json
import os
import sys
from pathlib import Path

from accelerate import PartialState

from benchmark.config import load_config
from benchmark.training.trainer import train

if __name__ == "__main__":
    os.chdir(sys.argv[1])
    run, max_steps = sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None
    mcfg = load_config("params.yaml").method_config("unet")
    meta = train("unet", Path("data/processed/phantom-cardiac"), Path("runs") / run, mcfg, max_steps)
    rank = PartialState().process_index
    Path(f"{run}-rank{rank}.json").write_text(json.dumps({"world_size": meta.world_size, "steps": meta.steps,
                                                          "weights": meta.weights_sha256}))

"""Run by tests/training/test_distributed.py under `accelerate launch`: train, then record this rank's view."""
import json
import os
import sys
from pathlib import Path

from accelerate import PartialState

from benchmark.config import load_config
from benchmark.training.trainer import train

if __name__ == "__main__":
    os.chdir(sys.argv[1])
    mcfg = load_config("params.yaml").method_config("unet")
    meta = train("unet", Path("data/processed/phantom-cardiac"), Path("runs/ddp"), mcfg)
    rank = PartialState().process_index
    Path(f"rank{rank}.json").write_text(json.dumps({"world_size": meta.world_size, "weights": meta.weights_sha256}))

"""What one job runs inside its allocation: the stage's command, as ``dvc repro`` would run it, without DVC.

Jobs never run DVC (two DVC processes cannot share a workspace): each removes its stage's outputs and runs the
stage's command in the stage's folder; the last job records everything in DVC (:mod:`.commands` ``collect``).
The command comes from :func:`benchmark.cluster.launch.stage_command`. This module imports nothing heavy: every
job imports it before it starts its stage.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageRun:
    """What the job of one stage does on its node(s), from the repository root ``root``."""
    stage: str
    command: str
    root: str
    wdir: str                  # relative to root
    outs: tuple[str, ...]      # relative to root, removed before the command as `dvc repro` removes them

    def __call__(self) -> None:
        """Run on every node of the allocation (submitit starts one task per node); the first removes the outputs.
        A command that fails raises, so the job ends FAILED and SLURM cancels its dependants."""
        import submitit

        root = Path(self.root)
        if submitit.JobEnvironment().global_rank == 0:
            for out in self.outs:
                path = root / out
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        print(f"[segbench cluster] {self.stage}: {self.command}", flush=True)
        subprocess.run(["bash", "-c", self.command], cwd=root / self.wdir, check=True)

"""What one job runs inside its allocation: the stage's command, as ``dvc repro`` would run it, without DVC.

Jobs never run DVC (two DVC processes cannot share a workspace): each removes its stage's outputs and runs the
stage's command in the stage's folder; the last job records everything in DVC (:mod:`.commands` ``collect``).
The command comes from :func:`benchmark.cluster.launch.stage_command`. This module imports nothing heavy: every
job imports it before it starts its stage.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmark.cluster.record import FOLDER, LOGS


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
        env = submitit.JobEnvironment()
        try:
            subprocess.run(["bash", "-c", self.command], cwd=root / self.wdir, check=True)
        except BaseException:
            if env.global_rank == 0:
                write_outcome(root / FOLDER / LOGS, env.job_id, FAILED)
            raise
        if env.global_rank == 0:
            write_outcome(root / FOLDER / LOGS, env.job_id, COMPLETED)


COMPLETED, FAILED = "COMPLETED", "FAILED"


def outcome_path(logs: Path, job_id: str) -> Path:
    """Where the job ``job_id`` leaves its outcome in the submission's log folder ``logs``: a JSON file, read when
    SLURM no longer knows the job (a cluster without accounting). submitit's own result file is a pickle, which
    the suite never reads."""
    return logs / f"{job_id}.outcome.json"


def write_outcome(logs: Path, job_id: str, state: str) -> None:
    path = outcome_path(logs, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"job_id": job_id, "state": state}))


def read_outcome(logs: Path, job_id: str) -> str | None:
    """COMPLETED or FAILED as the job left it, or None (no outcome, or not one this module writes)."""
    try:
        state = json.loads(outcome_path(logs, job_id).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return None
    return state if state in (COMPLETED, FAILED) else None

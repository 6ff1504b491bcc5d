"""The record of the latest submission, ``.segbench/cluster/submission.json``: the job of each stage, what it waits
for and where its log is; ``status``, ``cancel``, ``collect`` and the next ``submit`` read it."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import SegbenchError

FOLDER = Path(".segbench") / "cluster"   # under the repository root; git-ignored
RECORD = "submission.json"
LOGS = "logs"                           # submitit's folder: scripts, pickles and one log per job


@dataclass(frozen=True)
class JobEntry:
    stage: str                      # a DVC stage, or "collect" for the last job
    job_id: str
    after: tuple[str, ...]          # stages whose jobs must end COMPLETED first (afterok)
    command: str
    log: str                        # stdout and stderr of the job, relative to the root


@dataclass(frozen=True)
class Submission:
    submitted: str                  # ISO time
    jobs: tuple[JobEntry, ...]      # in submission order (dependencies first), collect last

    def job(self, stage: str) -> JobEntry:
        return next(j for j in self.jobs if j.stage == stage)


def record_path(root: Path) -> Path:
    return root / FOLDER / RECORD


def write_submission(root: Path, submission: Submission) -> Path:
    path = record_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(submission), indent=1) + "\n")
    return path


def read_submission(root: Path) -> Submission | None:
    """The latest submission at ``root``, or None when nothing was ever submitted from there."""
    path = record_path(root)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        jobs = tuple(JobEntry(**{**j, "after": tuple(j["after"])}) for j in raw["jobs"])
        return Submission(submitted=raw["submitted"], jobs=jobs)
    except (ValueError, KeyError, TypeError) as e:
        raise SegbenchError(f"{path}: not a submission record this version reads ({e}); "
                            f"cancel its jobs by hand (scancel) and delete it") from None

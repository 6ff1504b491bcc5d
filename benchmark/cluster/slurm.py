"""SLURM through submitit: one ``sbatch`` per job, with ``--dependency=afterok:...`` and
``--kill-on-invalid-dep=yes`` (a failed job's dependants are cancelled by SLURM itself); job states; cancelling.

Job states come from ``squeue --states=all`` while slurmctld still holds a job (``MinJobAge``, 300 s by default),
then from ``sacct`` where the cluster keeps accounting, then from the result file submitit's job wrote on exit.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchmark.cluster.job import COMPLETED, read_outcome
from benchmark.cluster.resources import Resources
from benchmark.errors import SegbenchError

DONE = COMPLETED
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STOPPED"}


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        raise SegbenchError(f"SLURM's {', '.join(missing)} not found on PATH: run segbench cluster on a machine "
                            f"that submits to the cluster (a login node)")


def submit(folder: Path, run, resources: Resources, setup: tuple[str, ...], dependency: str | None) -> str:
    """Submit ``run`` (a :class:`~benchmark.cluster.job.StageRun`) as one job named ``segbench:STAGE`` with
    ``resources``, starting once ``dependency`` (e.g. ``afterok:12:13``) holds; its id."""
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    executor = submitit.SlurmExecutor(folder=folder)
    params = dict(job_name=f"segbench:{run.stage}", nodes=resources.nodes, ntasks_per_node=1,
                  cpus_per_task=resources.cpus, mem=resources.mem, time=resources.time, setup=list(setup),
                  stderr_to_stdout=True, additional_parameters={"kill-on-invalid-dep": "yes"})
    optional = {"gpus_per_node": resources.gpus, "partition": resources.partition, "account": resources.account,
                "dependency": dependency}
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    try:
        return str(executor.submit(run).job_id)
    except (FailedJobError, FailedSubmissionError) as e:   # sbatch's own message: partition, account, limits
        raise SegbenchError(f"sbatch refused the job of {run.stage}: {str(e).strip()}") from None


def log_path(folder: Path, job_id: str) -> Path:
    """The job's log (stdout and stderr of its first task)."""
    import submitit

    return submitit.SlurmJob(folder=folder, job_id=job_id).paths.stdout


def _table(cmd: list[str]) -> dict[str, str]:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:    # squeue: every id unknown to slurmctld; sacct: no accounting on this cluster
        return {}
    rows = (line.split("|") for line in r.stdout.splitlines() if "|" in line)
    return {job_id.strip(): state.split()[0] for job_id, state, *_ in rows if state.strip()}


def job_states(folder: Path, job_ids: list[str]) -> dict[str, str]:
    """SLURM's state (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...) of each job; UNKNOWN for a
    job no source knows any more."""
    if not job_ids:
        return {}
    ids = ",".join(job_ids)
    states = _table(["squeue", "--noheader", "--states=all", "--format=%i|%T", f"--jobs={ids}"])
    rest = [j for j in job_ids if j not in states]
    if rest:
        states.update(_table(["sacct", "--noheader", "--allocations", "--parsable2", "--format=JobID,State",
                              f"--jobs={','.join(rest)}"]))
    return {j: states.get(j) or read_outcome(folder, j) or "UNKNOWN" for j in job_ids}


def cancel(folder: Path, job_ids: list[str]) -> None:
    import submitit

    for job_id in job_ids:
        submitit.SlurmJob(folder=folder, job_id=job_id).cancel(check=False)

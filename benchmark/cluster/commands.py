"""``segbench cluster submit|status|cancel|collect``: the active profile's DVC pipeline as SLURM jobs.

``submit`` sends one job per stage that is not up to date, each waiting (``afterok``) for the jobs of the stages
it depends on, then a last job that waits for every other to end (``afterany``) and runs ``collect``: it records
the outputs of the stages whose jobs COMPLETED in DVC (``dvc commit``), so ``dvc status`` and ``dvc repro`` then
find them up to date. A failed job's dependants are cancelled by SLURM; submitting again sends what is still not
up to date: the failed stage and those that were cancelled.
"""
from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmark.cluster.graph import read_pipeline, to_submit
from benchmark.cluster.job import StageRun
from benchmark.cluster.launch import stage_command
from benchmark.cluster.record import FOLDER, LOGS, JobEntry, Submission, read_submission, write_submission
from benchmark.cluster.resources import COLLECT, Resources, load_cluster_config
from benchmark.cluster import slurm
from benchmark.config import ConfigError, load_config
from benchmark.errors import SegbenchError


PARAMS = "params.yaml"   # the active profile: the one dvc.yaml reads


def project_root(args) -> Path:
    """The project the command acts on: the current folder, with its dvc.yaml and its active profile."""
    root = Path.cwd().resolve()
    if not (root / "dvc.yaml").is_file():
        raise SegbenchError(f"{root}: no dvc.yaml here: run segbench cluster from the project's root")
    if Path(args.params).resolve() != root / PARAMS:
        raise SegbenchError(f"{args.params}: segbench cluster runs the DVC pipeline, which reads {PARAMS}: make this "
                            f"profile the active one first (cp {args.params} {PARAMS})")
    return root


def plan(root: Path) -> list[tuple[StageRun, tuple[str, ...], Resources]]:
    """The jobs a submission would send, dependencies first: (what the job runs, the stages it waits for,
    its resources)."""
    cluster = load_cluster_config(root / PARAMS)
    launcher = load_config(root / PARAMS).launcher
    pipeline = read_pipeline(root)
    unknown = sorted(set(cluster.stages) - set(pipeline) - {COLLECT})
    if unknown:
        raise ConfigError(f"{PARAMS}: cluster.stages: {unknown} are not stages of this profile's pipeline "
                          f"(`dvc stage list` names them)")
    names = to_submit(pipeline)
    jobs = []
    for name in names:
        node, res = pipeline[name], cluster.resources(name)
        run = StageRun(stage=name, command=stage_command(name, node.cmd, launcher, res), root=str(root),
                       wdir=node.wdir, outs=node.outs)
        jobs.append((run, tuple(n for n in node.needs if n in names), res))
    return jobs


def _collect_run(root: Path) -> StageRun:
    command = shlex.join([sys.executable, "-m", "benchmark.cli", "cluster", "collect"])
    return StageRun(stage=COLLECT, command=command, root=str(root), wdir=".", outs=())


def _rel(root: Path, path: Path) -> str:
    return str(Path(path).relative_to(root))


def cmd_submit(args) -> int:
    root = project_root(args)
    previous = read_submission(root)
    folder = root / FOLDER / LOGS
    if previous and not args.dry_run:
        slurm.require_slurm()
        states = slurm.job_states(folder, [j.job_id for j in previous.jobs])
        active = [j for j in previous.jobs if states[j.job_id] in slurm.ACTIVE]
        if active:
            raise SegbenchError(f"the submission of {previous.submitted} has {len(active)} job(s) not ended "
                                f"(e.g. {active[0].stage}: job {active[0].job_id}, {states[active[0].job_id]}): "
                                f"wait for it (segbench cluster status) or cancel it (segbench cluster cancel)")
    jobs = plan(root)
    if not jobs:
        print("segbench cluster: nothing to submit: every stage is up to date")
        return 0
    cluster = load_cluster_config(root / PARAMS)
    if args.dry_run:
        for run, after, res in jobs:
            print(f"{run.stage}\n  after: {', '.join(after) or '-'}\n  resources: {res.nodes} node(s) x "
                  f"{res.gpus} GPU, {res.cpus} CPU, {res.mem}, {res.time}, partition {res.partition or 'default'}"
                  f"\n  runs: {run.command}")
        print(f"{len(jobs)} job(s) and the collect job; nothing submitted (--dry-run)")
        return 0
    slurm.require_slurm()
    ids: dict[str, str] = {}
    entries: list[JobEntry] = []
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        for run, after, res in jobs:
            ids[run.stage] = slurm.submit(folder, run, res, cluster.setup,
                                          "afterok:" + ":".join(ids[a] for a in after) if after else None)
            entries.append(JobEntry(run.stage, ids[run.stage], after, run.command,
                                    _rel(root, slurm.log_path(folder, ids[run.stage]))))
        write_submission(root, Submission(when, tuple(entries)))
        collect = _collect_run(root)      # once every stage job has ended, whatever its state
        collect_id = slurm.submit(folder, collect, cluster.resources(COLLECT), cluster.setup,
                                  "afterany:" + ":".join(ids.values()))
    except BaseException:
        slurm.cancel(folder, list(reversed(ids.values())))
        raise
    entries.append(JobEntry(COLLECT, collect_id, tuple(ids), collect.command,
                            _rel(root, slurm.log_path(folder, collect_id))))
    path = write_submission(root, Submission(when, tuple(entries)))
    print(f"segbench cluster: submitted {len(jobs)} stage job(s) and the collect job {collect_id}; "
          f"record: {_rel(root, path)}")
    for e in entries:
        print(f"  {e.job_id:>10}  {e.stage}" + (f"  (after {', '.join(e.after)})" if e.after and e.stage != COLLECT
                                                 else ""))
    return 0


def _summary(sub: Submission, states: dict[str, str]) -> tuple[list[str], int]:
    """The status lines of a submission and the number of stage jobs that failed (ended neither COMPLETED nor
    CANCELLED: FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...)."""
    by_stage = {j.stage: states[j.job_id] for j in sub.jobs}
    failed = [j for j in sub.jobs if j.stage != COLLECT
              and by_stage[j.stage] not in slurm.ACTIVE | {slurm.DONE, "CANCELLED"}]
    width = max(len(j.stage) for j in sub.jobs)
    lines = [f"submission of {sub.submitted}:"]
    for j in sub.jobs:
        state = by_stage[j.stage]
        blocked = [a for a in j.after if by_stage[a] != slurm.DONE] if state == "CANCELLED" else []
        note = f"  (cancelled: {', '.join(blocked)} did not complete)" if blocked and j.stage != COLLECT else ""
        lines.append(f"  {j.stage:<{width}}  {j.job_id:>8}  {state:<11}  {j.log}{note}")
    counts: dict[str, int] = {}
    for s in by_stage.values():
        counts[s] = counts.get(s, 0) + 1
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for j in failed:
        lines.append(f"FAILED: {j.stage} (job {j.job_id}, {by_stage[j.stage]}); its log: {j.log}")
    return lines, len(failed)


def _require_submission(root: Path) -> Submission:
    sub = read_submission(root)
    if sub is None:
        raise SegbenchError(f"nothing was submitted from {root} ({FOLDER / 'submission.json'} is missing)")
    return sub


def cmd_status(args) -> int:
    root = project_root(args)
    sub = _require_submission(root)
    slurm.require_slurm()
    lines, failed = _summary(sub, slurm.job_states(root / FOLDER / LOGS, [j.job_id for j in sub.jobs]))
    print("\n".join(lines))
    return 1 if failed else 0


def cmd_cancel(args) -> int:
    root = project_root(args)
    sub = _require_submission(root)
    slurm.require_slurm()
    folder = root / FOLDER / LOGS
    states = slurm.job_states(folder, [j.job_id for j in sub.jobs])
    active = [j for j in sub.jobs if states[j.job_id] in slurm.ACTIVE]
    slurm.cancel(folder, [j.job_id for j in reversed(active)])   # dependants first: collect never starts
    print(f"segbench cluster: cancelled {len(active)} job(s) of the submission of {sub.submitted}"
          + (f": {', '.join(j.stage for j in active)}" if active else " (none was pending or running)"))
    return 0


def cmd_collect(args) -> int:
    """Record in DVC the outputs of the stages whose jobs COMPLETED (``dvc commit``); the collect job runs this.
    By hand only before anything the jobs depended on changes: DVC records the dependencies as they are now."""
    from dvc.repo import Repo

    root = project_root(args)
    sub = _require_submission(root)
    slurm.require_slurm()
    states = slurm.job_states(root / FOLDER / LOGS, [j.job_id for j in sub.jobs])
    stage_jobs = [j for j in sub.jobs if j.stage != COLLECT]
    active = [j.stage for j in stage_jobs if states[j.job_id] in slurm.ACTIVE]
    if active:
        raise SegbenchError(f"job(s) of {', '.join(active)} have not ended: collect once they have")
    done = [j.stage for j in stage_jobs if states[j.job_id] == slurm.DONE]
    with Repo(str(root)) as repo:
        for stage in done:
            repo.commit(str(root / stage) if ":" in stage else f"{root / 'dvc.yaml'}:{stage}", force=True)
    print("\n".join(_summary(sub, states)[0]))
    print(f"segbench cluster: recorded {len(done)} stage(s) in DVC (dvc.lock)")
    return 0

"""The tiny profile through a real one-node SLURM cluster (tests/cluster/one_node.py) against a local `dvc repro`:
the same weights and numbers, a stage made to fail cancels its dependants and is resubmitted with them alone, a
second submission submits nothing, cancel stops a submission. Fails (never skips) where SLURM cannot start."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.cluster.one_node import PARTITION, missing, one_node_cluster, wait_until_idle
from tests.conftest import commit_all, copy_project, write_params

EMPTY = {"datasets": [], "methods": []}
PROFILE = dict(table4={"datasets": ["phantom-cardiac"], "methods": ["unet"]}, baselines=EMPTY, ablations=EMPTY,
               nfe_sweep={"datasets": [], "method": "medflowseg"})   # one dataset, unet only
SMALL = {"gpus": 0, "cpus": 1, "mem": "500M", "time": "15"}
CLUSTER = {"partition": PARTITION, "kinds": {k: SMALL for k in ("data", "train", "predict", "evaluate", "tables",
                                                                "collect")}}
# `segbench` as the jobs find it on PATH: the evaluate stage fails (or waits), every other runs the real one.
SHIM = '#!/bin/sh\n[ "$1" = evaluate ] && {{ {action}; }}\nexec {segbench} "$@"\n'
FAIL, WAIT = 'echo "injected failure" >&2; exit 3', "sleep 60"


@pytest.fixture(scope="module")
def slurm():
    why = missing()
    if why:
        pytest.fail(why)
    with one_node_cluster() as env:
        yield env


def _project(path: Path, **extra) -> Path:
    proj = copy_project(path)
    write_params(proj / "params.yaml", **PROFILE, **extra)
    commit_all(proj)
    return proj


def _run(cmd, proj, env, ok=True):
    r = subprocess.run(cmd, cwd=proj, env={**env, "PYTHONPATH": str(proj)}, capture_output=True, text=True,
                       timeout=600)
    if ok:
        assert r.returncode == 0, f"{cmd}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _segbench(proj, env, *args, ok=True):
    return _run(["python3", "-m", "benchmark.cli", "cluster", *args], proj, env, ok)


def _record(proj) -> dict:
    return json.loads((proj / ".segbench/cluster/submission.json").read_text())


def _submitted(proj) -> set[str]:
    return {j["stage"] for j in _record(proj)["jobs"]} - {"collect"}


def _same_outputs(a: Path, b: Path) -> None:
    run = "runs/phantom-cardiac/unet"
    wa, wb = (torch.load(p / run / "model/model.pt", weights_only=True)["state_dict"] for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for f in ("results/phantom-cardiac/unet/metrics.json", "results/phantom-cardiac/unet/per_case.csv",
              "results/phantom-cardiac/unet/per_case_sets.csv", "paper/tables/table1_cardiac.md"):
        assert (a / f).read_text() == (b / f).read_text(), f
    pa, pb = (sorted(p.relative_to(root / run / "predictions") for p in (root / run / "predictions").rglob("*")
                     if p.suffix == ".npz") for root in (a, b))
    assert pa == pb and pa and all((a / run / "predictions" / p).read_bytes() == (b / run / "predictions" / p)
                                   .read_bytes() for p in pa)


def _pipeline_status(proj, env) -> dict:
    out = _run(["dvc", "status", "--json"], proj, env).stdout
    return {k: v for k, v in json.loads(out).items() if not k.endswith(".dvc")}


@pytest.mark.timeout(1500)
def test_the_tiny_profile_through_slurm_equals_a_local_repro(slurm, tmp_path):
    local = _project(tmp_path / "local")
    t0 = time.perf_counter()
    _run(["dvc", "repro"], local, os.environ)
    local_s = time.perf_counter() - t0

    proj = _project(tmp_path / "cluster", cluster=CLUSTER)
    shim = tmp_path / "shim"
    shim.mkdir()
    real = _run(["sh", "-c", "command -v segbench"], proj, os.environ).stdout.strip()
    (shim / "segbench").write_text(SHIM.format(action=FAIL, segbench=real))
    (shim / "segbench").chmod(0o755)
    failing = {**slurm, "PATH": f"{shim}:{slurm['PATH']}"}

    params = yaml.safe_load((proj / "params.yaml").read_text())
    (proj / "params.yaml").write_text(yaml.safe_dump({**params, "cluster": {**CLUSTER, "partition": "gpu"}}))
    refused = _segbench(proj, slurm, "submit", ok=False)   # no such partition: sbatch's reason, nothing left queued
    assert refused.returncode == 2 and "sbatch refused the job of check-data" in refused.stderr, refused.stderr
    assert "partition" in refused.stderr.lower() and not (proj / ".segbench/cluster/submission.json").exists()
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    t0 = time.perf_counter()
    _segbench(proj, failing, "submit")
    stages = _submitted(proj)
    assert {"check-data", "train@phantom-cardiac-unet", "evaluate@phantom-cardiac-unet", "tables"} <= stages
    busy = _segbench(proj, slurm, "submit", ok=False)      # the first has not ended: refused, nothing sent
    assert busy.returncode == 2 and "not ended" in busy.stderr and _submitted(proj) == stages
    wait_until_idle(slurm, 900)
    first_s = time.perf_counter() - t0

    status = _segbench(proj, slurm, "status", ok=False)
    assert status.returncode == 1, status.stdout + status.stderr
    jobs = {j["stage"]: j for j in _record(proj)["jobs"]}
    log = jobs["evaluate@phantom-cardiac-unet"]["log"]
    assert f"FAILED: evaluate@phantom-cardiac-unet (job {jobs['evaluate@phantom-cardiac-unet']['job_id']}, " \
           f"FAILED); its log: {log}" in status.stdout
    assert "injected failure" in (proj / log).read_text()
    lines = {p[0]: p[2] for p in map(str.split, status.stdout.splitlines()) if len(p) >= 4 and p[1].isdigit()}
    assert lines["tables"] == "CANCELLED" and "(cancelled: evaluate@phantom-cardiac-unet did not complete)" in \
        status.stdout
    assert lines["collect"] == "COMPLETED"    # it recorded what completed
    assert all(lines[s] == "COMPLETED" for s in stages - {"evaluate@phantom-cardiac-unet", "tables"})
    assert set(_pipeline_status(proj, slurm)) == {"evaluate@phantom-cardiac-unet", "tables"}

    _segbench(proj, slurm, "submit")       # fixed: the failed stage and its cancelled dependant, nothing else
    assert _submitted(proj) == {"evaluate@phantom-cardiac-unet", "tables"}
    wait_until_idle(slurm, 600)
    cluster_s = time.perf_counter() - t0
    assert _segbench(proj, slurm, "status").stdout.splitlines()[-1].strip() == "3 COMPLETED"
    assert _pipeline_status(proj, slurm) == {}
    _same_outputs(local, proj)

    record = _record(proj)
    again = _segbench(proj, slurm, "submit")
    assert "nothing to submit" in again.stdout and _record(proj) == record
    assert "Data and pipelines are up to date" in _run(["dvc", "repro"], proj, slurm).stdout
    print(f"\ntiny profile: local dvc repro {local_s:.0f} s; through SLURM {first_s:.0f} s to the injected failure, "
          f"{cluster_s:.0f} s with its resubmission")

    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["evaluation"]["both_empty"] = "perfect"       # evaluate and tables out of date again
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (shim / "segbench").write_text(SHIM.format(action=WAIT, segbench=real))
    _segbench(proj, failing, "submit")
    cancel = _segbench(proj, slurm, "cancel")
    assert "cancelled 3 job(s)" in cancel.stdout
    wait_until_idle(slurm, 60)
    lines = _segbench(proj, slurm, "status").stdout.splitlines()
    assert lines[-1].strip() == "3 CANCELLED"
    # nothing of the cancelled submission is recorded: evaluate stays out of date (and tables with it once the
    # evaluate job had started and removed its outputs, which depends on when the cancel came)
    assert {"evaluate@phantom-cardiac-unet"} <= set(_pipeline_status(proj, slurm)) <= {
        "evaluate@phantom-cardiac-unet", "tables"}

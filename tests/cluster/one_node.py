"""A one-node SLURM cluster on this machine for the tests: munged (as the munge user), slurmctld and slurmd (as root),
all on 127.0.0.1, one CPU partition, no cgroups (SPEC section 5). Needs root and Debian's slurm-wlm and munge."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")

SLURM_CONF = """\
ClusterName=segbench-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName={partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why a one-node cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "the SLURM test starts munged, slurmctld and slurmd itself and must run as root"
    absent = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
              if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install slurm-wlm munge (README's test command)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _stop(pid_file: Path) -> None:
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def wait_until_idle(env: dict, timeout: float) -> None:
    """Until no job of the cluster is pending or running."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(1)
    raise TimeoutError(f"SLURM jobs still queued after {timeout} s")


@contextlib.contextmanager
def one_node_cluster():
    """Start the cluster; yield the environment its clients need (SLURM_CONF); stop every daemon it started and
    remove its folder, whatever happened in between."""
    root = Path(tempfile.mkdtemp(prefix="segbench-slurm-"))
    started: list[Path] = []
    try:
        (root / "munge").mkdir(mode=0o700)
        for d in ("state", "spool"):
            (root / d).mkdir()
        (root / "munge" / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(root / "munge" / "munge.key", 0o400)
        shutil.chown(root / "munge", "munge", "munge")
        shutil.chown(root / "munge" / "munge.key", "munge", "munge")
        shutil.chown(root, "munge")
        os.chmod(root, 0o755)
        conf = root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(root=root, ctld_port=_free_port(), slurmd_port=_free_port(),
                                          cpus=os.cpu_count(), partition=PARTITION))
        env = {**os.environ, "SLURM_CONF": str(conf)}
        m = root / "munge"
        started.append(m / "munged.pid")
        subprocess.run([_daemon("munged"), f"--key-file={m / 'munge.key'}", f"--socket={root / 'munge.sock'}",
                        f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                        f"--seed-file={m / 'munged.seed'}"], user="munge", check=True, capture_output=True)
        started.append(root / "slurmctld.pid")
        subprocess.run([_daemon("slurmctld"), "-f", str(conf)], env=env, check=True, capture_output=True)
        started.append(root / "slurmd.pid")
        subprocess.run([_daemon("slurmd"), "-f", str(conf), "-N", "localhost"], env=env, check=True,
                       capture_output=True)
        for _ in range(300):
            state = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                break
            time.sleep(0.1)
        else:
            logs = "\n".join((root / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log")
                             if (root / f).is_file())
            raise RuntimeError(f"the one-node SLURM cluster did not come up (sinfo: {state.stdout.strip()!r} "
                               f"{state.stderr.strip()!r}):\n{logs}")
        yield env
    finally:
        if started:
            env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
            jobs = subprocess.run(["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True)
            if jobs.stdout.split():
                subprocess.run(["scancel", *jobs.stdout.split()], env=env, capture_output=True)
                with contextlib.suppress(TimeoutError):
                    wait_until_idle(env, 30)
        for pid_file in reversed(started):
            _stop(pid_file)
        shutil.rmtree(root, ignore_errors=True)

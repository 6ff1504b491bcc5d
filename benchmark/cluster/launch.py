"""How a train stage starts inside its allocation: the profile's single process for one GPU or none, one process
per GPU under Accelerate for more (``accelerate launch``, across the nodes of the allocation when there are several).
"""
from __future__ import annotations

from benchmark.cluster.resources import Resources, stage_kind
from benchmark.config import ConfigError

# Every node of a multi-node train job runs this; SLURM tells each its rank and the first node's name.
_HEAD = "$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"
_PORT = "$((20000 + SLURM_JOB_ID % 20000))"


def stage_command(stage: str, cmd: str, launcher: str, resources: Resources) -> str:
    """The shell command the job of ``stage`` runs: DVC's ``cmd``, or for a train stage with several GPUs, the
    same arguments after ``launcher`` under ``accelerate launch`` with one process per GPU of the allocation."""
    if stage_kind(stage) != "train" or resources.processes == 1:
        return cmd
    if not cmd.startswith(launcher + " "):
        raise ConfigError(f"dvc.yaml: stage {stage}: its command {cmd!r} does not start with the profile's "
                          f"launcher {launcher!r}, so it cannot be started under Accelerate")
    args = cmd[len(launcher) + 1:]
    machines = (f"--num_machines {resources.nodes} --machine_rank $SLURM_NODEID --main_process_ip {_HEAD} "
                f"--main_process_port {_PORT}" if resources.nodes > 1 else "--num_machines 1")
    return (f"accelerate launch --multi_gpu --num_processes {resources.processes} {machines} "
            f"-m benchmark.cli {args}")

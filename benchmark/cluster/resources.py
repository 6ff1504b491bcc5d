"""What each SLURM job asks for: defaults per stage kind, overridden by the optional ``cluster:`` section of
params.yaml.

.. code-block:: yaml

    cluster:
      partition: gpu                  # every job's, unless a kind or a stage says otherwise
      account: my-project
      setup: ["source /shared/venv/bin/activate"]    # shell lines each job runs before its command
      kinds:                          # per stage kind: data, train, predict, evaluate, tables, collect
        train: {gpus: 4, cpus: 32, mem: 256G, time: "2-00:00:00"}
      stages:                         # per DVC stage, by name: over its kind's resources
        train@acdc-medflowseg: {nodes: 2}

A stage's kind comes from its name (``baseline-train@...``, ``ablation-train@...`` and ``seed-train@...`` are
``train`` stages).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path


from benchmark.config import Checked, ConfigError, Rule, build_section, checked, integer, read_params

# The DVC stage groups of dvc.yaml (the name before "@", without a baseline-/ablation-/head-/seed- prefix) -> kind.
STAGE_KINDS = {"check-data": "data", "fetch": "data", "preprocess": "data", "train": "train", "predict": "predict",
               "nfe-sweep": "predict", "evaluate": "evaluate", "complexity": "evaluate", "tables": "tables"}
COLLECT = "collect"  # the last job: `segbench cluster collect` (dvc commit of what the others made)

_TIME = re.compile(r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")
_MEM = re.compile(r"^\d+[KMGT]?$")
TIME = Rule('a SLURM time limit ("90", "12:00:00", "2-00:00:00")', lambda v: isinstance(v, str) and bool(_TIME.match(v)))
MEM = Rule('memory per node, a whole number with unit K, M, G or T ("64G")',
           lambda v: isinstance(v, str) and bool(_MEM.match(v)))
OPTIONAL_NAME = Rule("a string or null", lambda v: v is None or isinstance(v, str))
LINES = Rule("a list of shell lines", lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v))


@dataclass(frozen=True)
class Resources(Checked):
    """One job's allocation: ``nodes`` x (one task with ``cpus`` CPUs, ``gpus`` GPUs and ``mem``) for ``time``."""
    gpus: int = checked(0, integer(0))              # per node
    cpus: int = checked(1, integer(1))              # per node (one task per node)
    mem: str = checked("4G", MEM)
    time: str = checked("01:00:00", TIME)
    nodes: int = checked(1, integer(1))
    partition: str | None = checked(None, OPTIONAL_NAME)
    account: str | None = checked(None, OPTIONAL_NAME)

    @property
    def processes(self) -> int:
        """Training processes a train job starts: one per GPU of the allocation (one without a GPU)."""
        return max(1, self.gpus * self.nodes)


# Defaults per kind. Train asks for one GPU, so a train job starts the profile's single process as `dvc repro`
# does; more GPUs (cluster.kinds.train.gpus) start one process per GPU under Accelerate, which split the global
# train.batch_size among them (README "Training").
DEFAULTS = {
    "data": Resources(gpus=0, cpus=4, mem="16G", time="04:00:00"),
    "train": Resources(gpus=1, cpus=8, mem="64G", time="3-00:00:00"),
    "predict": Resources(gpus=1, cpus=8, mem="32G", time="12:00:00"),
    "evaluate": Resources(gpus=0, cpus=8, mem="32G", time="04:00:00"),
    "tables": Resources(gpus=0, cpus=2, mem="16G", time="01:00:00"),
    COLLECT: Resources(gpus=0, cpus=1, mem="4G", time="01:00:00"),
}


def stage_kind(stage: str) -> str:
    """The kind of DVC stage ``stage`` (e.g. ``baseline-train@phantom-lesion-atfm`` -> ``train``)."""
    group = stage.split("@")[0]
    for prefix in ("baseline-", "ablation-", "head-", "seed-"):
        group = group.removeprefix(prefix)
    if group not in STAGE_KINDS:
        raise ConfigError(f"dvc.yaml: stage {stage}: no stage kind for '{group}' "
                          f"(known: {sorted(STAGE_KINDS)}; benchmark/cluster/resources.py STAGE_KINDS)")
    return STAGE_KINDS[group]


@dataclass(frozen=True)
class ClusterConfig:
    """The resolved ``cluster:`` section: resources per kind and per named stage, and the jobs' setup lines."""
    kinds: dict[str, Resources] = dataclasses.field(default_factory=lambda: dict(DEFAULTS))
    stages: dict[str, Resources] = dataclasses.field(default_factory=dict)
    setup: tuple[str, ...] = ()
    source: str = "params.yaml"

    def resources(self, stage: str) -> Resources:
        """What the job of DVC stage ``stage`` (or of :data:`COLLECT`) asks for."""
        if stage in self.stages:
            return self.stages[stage]
        return self.kinds[COLLECT if stage == COLLECT else stage_kind(stage)]


def _mapping(value, where: str, source: str) -> dict:
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{source}: {where}: must be a mapping of keys to values, got {value!r}")
    return value or {}


def cluster_config(section: dict | None, source: str = "params.yaml") -> ClusterConfig:
    """The :class:`ClusterConfig` of a ``cluster:`` section of the file ``source``; every error names the file
    and the key."""
    section = _mapping(section, "cluster", source)
    unknown = sorted(set(section) - {"partition", "account", "setup", "kinds", "stages"}, key=str)
    if unknown:
        raise ConfigError(f"{source}: cluster: unknown key(s) {unknown} "
                          f"(allowed: ['account', 'kinds', 'partition', 'setup', 'stages'])")
    setup = section.get("setup") or []
    if not LINES.test(tuple(setup) if isinstance(setup, list) else setup):
        raise ConfigError(f"{source}: cluster.setup: must be {LINES.text}, got {setup!r}")
    common = {k: section[k] for k in ("partition", "account") if k in section}
    kinds_raw = _mapping(section.get("kinds"), "cluster.kinds", source)
    unknown = sorted(set(kinds_raw) - set(DEFAULTS), key=str)
    if unknown:
        raise ConfigError(f"{source}: cluster.kinds: unknown stage kind(s) {unknown} (allowed: {sorted(DEFAULTS)})")
    kinds = {}
    for kind, base in DEFAULTS.items():
        override = _mapping(kinds_raw.get(kind), f"cluster.kinds.{kind}", source)
        kinds[kind] = build_section(Resources, {**dataclasses.asdict(base), **common, **override},
                                    f"cluster.kinds.{kind}", source)
    stages = {}
    for stage, override in _mapping(section.get("stages"), "cluster.stages", source).items():
        try:
            kind = COLLECT if stage == COLLECT else stage_kind(str(stage))
        except ConfigError:
            raise ConfigError(f"{source}: cluster.stages.{stage}: not a stage name of dvc.yaml "
                              f"(e.g. train@acdc-medflowseg)") from None
        override = _mapping(override, f"cluster.stages.{stage}", source)
        stages[str(stage)] = build_section(Resources, {**dataclasses.asdict(kinds[kind]), **override},
                                           f"cluster.stages.{stage}", source)
    return ClusterConfig(kinds=kinds, stages=stages, setup=tuple(setup), source=source)


def load_cluster_config(params: Path | str = "params.yaml") -> ClusterConfig:
    """The ``cluster:`` section of the parameters file ``params`` (defaults where it has none)."""
    raw = read_params(params)
    return cluster_config(raw.get("cluster"), str(params))

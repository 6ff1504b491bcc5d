"""The job graph: DVC's own view of the active profile's pipeline (``Repo().index``), reduced to the stages that
are not up to date, each with the stages it waits for.

A stage is submitted when DVC finds it changed (``Stage.changed()``: its command, a dependency, a parameter or an
output differs from dvc.lock) or when a stage it depends on is submitted: on a cluster every job is planned
before any runs, so a stage downstream of one that reruns reruns too (``dvc repro`` may skip it when the upstream
outputs come out identical). Frozen stages are never submitted, as ``dvc repro`` never runs them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import networkx as nx


@dataclass(frozen=True)
class PipelineNode:
    """One stage of DVC's pipeline: its command, working folder, outputs and the stages it depends on."""
    name: str                   # DVC's name, e.g. train@phantom-cardiac-unet
    cmd: str
    wdir: str                   # relative to the repository root ("." for the root)
    outs: tuple[str, ...]       # outputs that are not `persist`, relative to the root: a rerun starts without them
    needs: tuple[str, ...]      # stages whose outputs it depends on (DVC graph edges), sorted
    changed: bool               # DVC's verdict: not up to date by itself


def _name(stage, root: Path) -> str:
    rel = os.path.relpath(stage.path, root)
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def read_pipeline(root: Path | str = ".") -> dict[str, PipelineNode]:
    """Every command stage of the DVC project at ``root``, in DVC's topological order (dependencies first)."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    root = Path(root).resolve()
    with Repo(str(root)) as repo, repo.lock:
        graph = repo.index.graph      # edges go from a stage to each stage it depends on
        stages = [s for s in reversed(list(nx.topological_sort(graph)))
                  if isinstance(s, PipelineStage) and s.cmd and not s.frozen]
        names = {s: _name(s, root) for s in stages}
        return {names[s]: PipelineNode(
            name=names[s], cmd=s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
            wdir=os.path.relpath(s.wdir, root),
            outs=tuple(os.path.relpath(o.fs_path, root) for o in s.outs if not o.persist),
            needs=tuple(sorted(names[d] for d in graph.successors(s) if d in names)),
            changed=s.changed()) for s in stages}


def to_submit(pipeline: dict[str, PipelineNode]) -> list[str]:
    """The stages a submission runs: those DVC finds changed and every stage downstream of one, in the order of
    ``pipeline`` (dependencies first)."""
    stale: set[str] = set()
    for name, node in pipeline.items():    # topological: a stage's needs are decided before it
        if node.changed or any(n in stale for n in node.needs):
            stale.add(name)
    return [name for name in pipeline if name in stale]

"""Profiles: which one ``params.yaml`` holds, and switching to another with one command.

DVC reads its parameters from ``params.yaml`` only, and fails a stage whose parameter section is absent there
(it checks each stage's ``params:`` when it reaches it). So a profile (``profiles/NAME.yaml``, or any file) is
switched to by writing ``params.yaml`` from it: ``segbench profile use NAME``. The written file is the profile's
text as it is (comments and anchors kept) with a first line naming its source, followed by every optional
section the profile leaves out at its default value, so every stage finds what it reads. ``dvc repro`` then
runs that profile; ``dvc exp run`` records it as an experiment, and ``dvc exp show`` lists the parameters of
experiments of different profiles side by side. The check-data stage (the pipeline's first) stops a
hand-written ``params.yaml`` that lacks a section some stage reads, before any work (:func:`missing_sections`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from benchmark.config import (ClaimsConfig, ConditionHeadConfig, ConfigError, DataConfig, EvalConfig, MatrixConfig, PredictConfig,
                              SeedsConfig, SweepConfig, Table4Config, TrainConfig, load_config, read_params)
from benchmark.data.store import atomic_write

PROFILES = Path("profiles")
PARAMS = Path("params.yaml")

# The sections a profile may leave out, and where their defaults come from.
OPTIONAL = {"launcher": lambda: "segbench", "data": DataConfig, "train": TrainConfig, "predict": PredictConfig,
            "evaluation": EvalConfig, "baselines": MatrixConfig, "ablations": MatrixConfig,
            "nfe_sweep": SweepConfig, "condition_head": ConditionHeadConfig, "table4": Table4Config,
            "seeds": SeedsConfig, "claims": ClaimsConfig}
HEADER = "# Written by `segbench profile use {name}` from {source}: edit that file and switch again.\n"


def profile_file(name: str) -> Path:
    """``profiles/NAME.yaml`` for a bare name, else ``name`` as a path."""
    as_path = Path(name)
    path = PROFILES / f"{name}.yaml" if as_path.suffix == "" and len(as_path.parts) == 1 else as_path
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml")) if PROFILES.is_dir() else []
        raise ConfigError(f"{path}: no such profile (profiles here: {known})")
    return path


def _plain(value):
    """A default as YAML writes it (tuples as lists)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def defaults(section: str):
    made = OPTIONAL[section]()
    return _plain(dataclasses.asdict(made)) if dataclasses.is_dataclass(made) else made


def render(name: str) -> str:
    """The text ``params.yaml`` holds for profile ``name``; the profile is validated first (an error names its
    file and key)."""
    source = profile_file(name)
    load_config(source)
    text = source.read_text()
    missing = {k: defaults(k) for k in OPTIONAL if k not in read_params(source)}
    out = HEADER.format(name=name, source=source.as_posix()) + text.rstrip("\n") + "\n"
    if missing:
        out += ("\n# Sections the profile leaves out, at their defaults (benchmark/config.py), so that every DVC\n"
                "# stage finds the parameters it reads.\n" + yaml.safe_dump(missing, sort_keys=False))
    return out


def use(name: str, dest: Path = PARAMS) -> Path:
    """Write ``dest`` (``params.yaml``) from profile ``name``; returns the profile's file."""
    text = render(name)
    atomic_write(Path(dest), lambda t: Path(t).write_text(text))
    return profile_file(name)


def missing_sections(params: Path, stage_file: Path = Path("dvc.yaml")) -> list[str]:
    """The top-level sections some stage of ``stage_file`` lists under ``params:`` that ``params`` lacks."""
    if not Path(stage_file).is_file():
        return []
    stages = (yaml.safe_load(Path(stage_file).read_text()) or {}).get("stages", {})
    read = set()
    for stage in stages.values():
        body = stage.get("do", stage)
        read |= {str(e).split(".")[0] for e in body.get("params", []) or [] if not isinstance(e, dict)}
        # (a mapping entry names another parameters file)
    have = set(read_params(params))
    return sorted(k for k in read - have if "$" not in k)

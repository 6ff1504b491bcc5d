"""Shared fixtures: a tiny processed dataset and a tiny parameters file."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmark.config import ConfigError, DataConfig, load_config
from benchmark.errors import SegbenchError
from benchmark.data.preprocess import preprocess
from benchmark.data.sources import fetch
from benchmark.profiles import OPTIONAL, defaults

ROOT = Path(__file__).resolve().parents[1]

MEDFLOWSEG_TINY = {"channels": [8, 16], "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "fa_depth": 1,
                   "fa_dim": 16, "fa_heads": 2, "steps": 2}
TINY_PARAMS = {
    "profile": "test",
    "launcher": "segbench",
    "datasets": ["phantom-cardiac"],
    "methods": ["unet"],
    "data": {"size": 32, "seed": 0, "n_subjects": 6, "split": {"train": 0.5, "val": 0.0, "test": 0.5}},
    "train": {"steps": 30, "batch_size": 4, "lr": 0.001, "warmup_steps": 5, "ema_decay": 0.9,
              "checkpoint_every": 10, "threads": 1},
    "predict": {"n_samples": 1, "batch_size": 8},
    "evaluation": {"hd95_convention": "pooled"},
    "method": {"unet": {"model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}},
               "flowseg-plain": {"model": {"channels": [8, 16], "norm_groups": 4, "steps": 2},
                                 "predict": {"n_samples": 2}},
               "medflowseg": {"model": MEDFLOWSEG_TINY, "predict": {"n_samples": 2}},
               "medflowseg-backbone": {"model": MEDFLOWSEG_TINY, "predict": {"n_samples": 2}},
               "flowsdf": {"model": {"channels": [8, 16], "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
                                     "rrdb_growth": 4, "delta": 4.0, "steps": 2}, "predict": {"n_samples": 2}}},
    "ablations": {"datasets": ["phantom-cardiac"], "methods": ["medflowseg-backbone"]},
    "nfe_sweep": {"datasets": ["phantom-cardiac"], "method": "medflowseg"},
    "table4": {"datasets": ["phantom-cardiac"], "methods": ["medflowseg-backbone"]},
    "claims": {"tolerance": {"%": 1.0, "mm": 1.0, "x100": 2.0, "M params": 11.0, "GFLOPs": 79.0}},
}


def copy_project(proj: Path) -> Path:
    """The code, pipeline and DVC setup of this project in ``proj`` (no data, runs or results), as a git repo."""
    for d in ("benchmark", "medflowseg", "baselines"):
        shutil.copytree(ROOT / d, proj / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", ".gitignore", "data.dvc", "paper/claims.yaml", "paper/catalogue.yaml"):
        (proj / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, proj / f)
    shutil.copytree(ROOT / ".dvc", proj / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    return proj


def commit_all(proj: Path) -> None:
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["add", "-A"], cwd=proj, check=True, capture_output=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=proj, check=True, capture_output=True)


def write_params(path: Path, **overrides) -> Path:
    params = {**TINY_PARAMS, **overrides}
    for section in ("ablations", "table4"):   # tiny ones on phantom-cardiac: kept only where that is listed
        if section not in overrides:
            kept = [d for d in TINY_PARAMS[section]["datasets"] if d in params["datasets"]]
            params[section] = {**TINY_PARAMS[section], "datasets": kept}
    params.update({k: defaults(k) for k in OPTIONAL if k not in params})   # as `segbench profile use` writes it
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_processed(tmp_path_factory) -> Path:
    """phantom-cardiac at 32x32 with 6 subjects, fetched and preprocessed once per session."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = DataConfig(**TINY_PARAMS["data"])
    fetch("phantom-cardiac", root / "fetched", cfg)
    preprocess("phantom-cardiac", root / "fetched", root / "processed", cfg)
    return root / "processed"


@pytest.fixture
def tiny_project(tmp_path, tiny_processed) -> Path:
    """A working directory laid out like the project, with the tiny dataset processed."""
    write_params(tmp_path / "params.yaml")
    dest = tmp_path / "data" / "processed" / "phantom-cardiac"
    dest.parent.mkdir(parents=True)
    shutil.copytree(tiny_processed, dest)
    return tmp_path


def raw_params(tmp_path: Path, **sections) -> Path:
    """A hand-written ``params.yaml`` (nothing filled in): unet on phantom-cardiac, plus ``sections``."""
    raw = {"profile": "test", "datasets": ["phantom-cardiac"], "methods": ["unet"], "method": {"unet": {}}}
    raw.update(sections)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def config_error(path: Path) -> str:
    """The one error loading ``path`` raises: a ConfigError, which is a SegbenchError and a ValueError."""
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert isinstance(err.value, SegbenchError) and isinstance(err.value, ValueError)
    return str(err.value)

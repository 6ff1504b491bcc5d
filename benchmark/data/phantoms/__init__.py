"""Deterministic synthetic stand-ins for the paper datasets.

Each module exposes ``INFO`` (a :class:`~benchmark.data.case.DatasetInfo`, ``phantom=True``),
``generate(seed, n_subjects, size) -> list[Case]`` (subject ``i`` depends only on ``(seed, i)``) and
``source()``, the :class:`PhantomSource` that ``pyproject.toml`` registers in the ``segbench.datasets``
entry-point group.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import assign_splits
from benchmark.data.store import load_case, read_json, save_case, write_json


class PhantomSource:
    """A generator as a dataset (:class:`benchmark.data.interface.DatasetSource`): the fetch stage
    generates ``cfg.n_subjects`` subjects at ``cfg.size`` from ``cfg.seed``, one ``.npz`` per case
    plus ``cases.json`` (case id -> subject id); the split is seeded by ``cfg.split``."""

    def __init__(self, info: DatasetInfo, generate: Callable[[int, int, int], list[Case]]):
        self.info = info
        self.generate = generate

    def fetch(self, dest: Path, cfg: DataConfig) -> dict:
        cases = self.generate(cfg.seed, cfg.n_subjects, cfg.size)
        for c in cases:
            save_case(dest / f"{c.case_id}.npz", c)
        write_json(dest / "cases.json", {c.case_id: c.subject_id for c in cases})
        return {"generator": f"{self.generate.__module__}.{self.generate.__name__}", "seed": cfg.seed,
                "n_subjects": cfg.n_subjects, "size": cfg.size}

    def load(self, src: Path, cfg: DataConfig) -> list[Case]:
        index = read_json(src / "cases.json", "case index (written by the fetch stage)")
        return [load_case(src / f"{cid}.npz", cid, sid, self.info.num_classes, self.info.channels)
                for cid, sid in index.items()]

    def split(self, cases: list[Case], cfg: DataConfig) -> dict[str, str]:
        return assign_splits([c.subject_id for c in cases], cfg.split, cfg.seed)

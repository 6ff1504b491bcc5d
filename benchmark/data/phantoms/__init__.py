"""Deterministic synthetic stand-ins for the paper datasets.

Each module exposes ``INFO`` (a :class:`~benchmark.data.case.DatasetInfo`) and
``generate(seed, n_subjects, size) -> list[Case]``; subject ``i`` depends only on
``(seed, i)``. ``PHANTOMS`` maps the registry name to the module.
"""
from __future__ import annotations

from types import ModuleType

from benchmark.data.phantoms import brain, cardiac, echo, fundus, gland, lesion

PHANTOMS: dict[str, ModuleType] = {m.INFO.name: m for m in (cardiac, brain, fundus, gland, echo, lesion)}

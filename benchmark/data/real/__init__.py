"""The paper's real datasets: one module each, fetched where internet or the files exist.

See :mod:`benchmark.data.real.source` for what a module declares. ``REAL_DATASETS`` maps the
registry name to the module; modules are imported only when a dataset is used.
"""
from __future__ import annotations

import importlib
from types import ModuleType

REAL_DATASETS: dict[str, str] = {
    "acdc": "benchmark.data.real.acdc",
    "brats2021": "benchmark.data.real.brats",
    "refuge2": "benchmark.data.real.refuge",
    "glas": "benchmark.data.real.glas",
    "camus": "benchmark.data.real.camus",
    "monuseg": "benchmark.data.real.monuseg",
    "lidc": "benchmark.data.real.lidc",
    "isic": "benchmark.data.real.isic",
}


def real_module(name: str) -> ModuleType:
    return importlib.import_module(REAL_DATASETS[name])

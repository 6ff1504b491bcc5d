"""The fetch stage: one registered dataset's files into ``data/fetched/NAME`` with its ``status.json``.

What a dataset provides is :mod:`benchmark.data.interface`; the datasets are looked up by name in
:mod:`benchmark.data.registry`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmark.config import DataConfig
from benchmark.data import registry
from benchmark.data.interface import DataUnavailable, DatasetSource
from benchmark.data.store import staged_folder, write_json

STATUS = "status.json"


def fetch(name: str, dest: Path, cfg: DataConfig, source: DatasetSource | None = None) -> dict:
    """Fetch one dataset into ``dest``, leaving ``dest/status.json``.

    The folder is built beside ``dest`` and renamed into place only when complete, so a failed
    or interrupted fetch leaves the previous result (or nothing), never part of a dataset.
    Colin27 unavailable on this machine is not an error for the pipeline: it is announced loudly
    and recorded, and every later stage marks it "not run". A real dataset of the paper that is
    missing stops the fetch with :class:`~benchmark.data.interface.DatasetMissing`: its tables must
    never be filled from anything else. ``source`` replaces the registered one (tests).
    """
    source = source or registry.dataset_source(name)
    with staged_folder(dest) as tmp:
        try:
            provenance = source.fetch(tmp, cfg)
            status = {"dataset": name, "available": True, "provenance": provenance}
        except DataUnavailable as e:
            banner = "!" * 78
            print(f"\n{banner}\n!! DATASET {name} IS NOT AVAILABLE ON THIS MACHINE; it will be marked "
                  f"'not run' in every table.\n!! {e}\n{banner}\n", file=sys.stderr)
            status = {"dataset": name, "available": False, "reason": str(e)}
        write_json(tmp / STATUS, status)
    return status


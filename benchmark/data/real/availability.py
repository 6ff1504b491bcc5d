"""Which of a profile's real datasets this machine has or can download, and what to do about the rest.

``segbench check-data`` runs this before any fetch (the ``check-data`` DVC stage), so a profile naming a
dataset that is neither here nor reachable stops within seconds with one message listing every such
dataset and how to get it, instead of failing one download at a time or falling back to other data.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from benchmark import paths
from benchmark.data.real import REAL_DATASETS, real_module
from benchmark.data.real.source import RealSource
from benchmark.data.store import read_json


def _state(name: str, probe: bool) -> tuple[dict, list[str], str]:
    """(state recorded in availability.json, missing-file lines, how to get it)."""
    status_file = paths.fetched(name) / "status.json"
    if status_file.is_file() and read_json(status_file, "fetch status").get("available"):
        return {"state": "fetched"}, [], ""
    source = RealSource(real_module(name))
    gaps = source.missing(probe=probe)
    files = {}
    for f in source.files:
        local = source.local(f)
        files[f.name] = (f"{local.parent} ({local.stat().st_size} bytes)" if local is not None
                         else f.url if not f.gated else "missing")
    return {"state": "missing" if gaps else "ready", "files": files}, gaps, source.how_to_get()


def check(datasets, probe: bool = True) -> tuple[dict, str | None]:
    """``(record, message)``: the state of every real dataset in ``datasets``; ``message`` is None when none
    is missing, else the text to show. Download hosts are probed in parallel (a few seconds at most)."""
    names = [d for d in dict.fromkeys(datasets) if d in REAL_DATASETS]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        states = dict(zip(names, pool.map(lambda n: _state(n, probe), names)))
    record = {n: s[0] for n, s in states.items()}
    missing = [n for n, s in states.items() if s[1]]
    if not missing:
        return record, None
    parts = [f"{len(missing)} of the profile's datasets are not on this machine and cannot be downloaded from "
             f"here: {', '.join(missing)}.",
             "The suite never fills a real dataset's rows with other data. Get each as below, then run again.", ""]
    for n in missing:
        _, gaps, how = states[n]
        parts += [how, "  missing now:"] + [f"    {g}" for g in gaps] + [""]
    return record, "\n".join(parts)

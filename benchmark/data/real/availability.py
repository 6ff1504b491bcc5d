"""Which of a profile's datasets with files to obtain this machine has or can download, and what to do
about the rest.

A dataset takes part when it implements :class:`~benchmark.data.interface.FilesToObtain` (every
:class:`~benchmark.data.real.source.RealSource` does); the others (phantoms, Colin27) need no check.

``segbench check-data`` runs this before any fetch (the ``check-data`` DVC stage), so a profile naming a
dataset that is neither here nor reachable stops within seconds with one message listing every such
dataset and how to get it, instead of failing one download at a time or falling back to other data.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from benchmark import paths
from benchmark.data.interface import FilesToObtain
from benchmark.data.registry import dataset_source
from benchmark.data.store import read_json


def _state(name: str, source: FilesToObtain, probe: bool) -> tuple[str, list[str], str]:
    """(``"fetched"``, ``"here"``, ``"downloadable"`` or ``"missing"``; missing-file lines; how to get it)."""
    status_file = paths.fetched(name) / "status.json"
    if status_file.is_file() and read_json(status_file, "fetch status").get("available"):
        return "fetched", [], ""
    gaps = source.missing(probe=probe)
    if gaps:
        return "missing", gaps, source.how_to_get()
    return ("here" if source.on_this_machine() else "downloadable"), [], ""


def check(datasets, probe: bool = True) -> tuple[dict, str | None]:
    """``(record, message)``. ``record``: the datasets of ``datasets`` with files to obtain, each
    ``"available"`` (the same whether fetched, on this machine or downloadable, so the fetch stages that
    depend on it rerun only when the set of datasets changes). An unregistered name is an error. ``message`` is None when none is missing, else the text to show. Download
    hosts are probed in parallel (a few seconds at most)."""
    sources = {d: s for d in dict.fromkeys(datasets) if isinstance(s := dataset_source(d), FilesToObtain)}
    names = list(sources)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        states = dict(zip(names, pool.map(lambda n: _state(n, sources[n], probe), names)))
    missing = [n for n, s in states.items() if s[0] == "missing"]
    if not missing:
        for n, (state, _, _) in states.items():
            print(f"  {n}: {state}")
        return {n: "available" for n in names}, None
    parts = [f"{len(missing)} of the profile's datasets are not on this machine and cannot be downloaded from "
             f"here: {', '.join(missing)}.",
             "The suite never fills a real dataset's rows with other data. Get each as below, then run again.", ""]
    for n in missing:
        _, gaps, how = states[n]
        parts += [how, "  missing now:"] + [f"    {g}" for g in gaps] + [""]
    return {}, "\n".join(parts)

"""Where each dataset comes from: the fetch and load halves of every source.

A source has ``info``; ``fetch(dest, cfg)`` writes its raw files into ``dest``;
``load(src, cfg)`` reads them back as :class:`Case` objects at the profile's size;
``split(cases, cfg)`` maps subject ids to splits (the cases it gets are headers: see
:meth:`Case.header`). Phantoms are generated at fetch time; the real Colin27 data comes from
a Debian package; the paper's datasets (:mod:`benchmark.data.real`) are downloaded or placed by hand.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import assign_splits
from benchmark.data.store import load_case, read_json, replace_folder, save_case, write_json

STATUS = "status.json"


class DataUnavailable(RuntimeError):
    """A dataset cannot be obtained on this machine; the pipeline marks it "not run"."""


class PhantomSource:
    def __init__(self, module):
        self.module = module
        self.info: DatasetInfo = module.INFO

    def fetch(self, dest: Path, cfg: DataConfig) -> dict:
        cases = self.module.generate(cfg.seed, cfg.n_subjects, cfg.size)
        for c in cases:
            save_case(dest / f"{c.case_id}.npz", c)
        write_json(dest / "cases.json", {c.case_id: c.subject_id for c in cases})
        return {"generator": f"{self.module.__name__}.generate", "seed": cfg.seed,
                "n_subjects": cfg.n_subjects, "size": cfg.size}

    def load(self, src: Path, cfg: DataConfig) -> list[Case]:
        index = read_json(src / "cases.json", "case index (written by the fetch stage)")
        return [load_case(src / f"{cid}.npz", cid, sid, self.info.num_classes, self.info.channels)
                for cid, sid in index.items()]

    def split(self, cases: list[Case], cfg: DataConfig) -> dict[str, str]:
        return assign_splits([c.subject_id for c in cases], cfg.split, cfg.seed)


class Colin27Source:
    def __init__(self):
        from benchmark.data import colin27
        self.module = colin27
        self.info: DatasetInfo = colin27.INFO

    def fetch(self, dest: Path, cfg: DataConfig) -> dict:
        try:
            return self.module.fetch(dest)
        except self.module.FetchError as e:
            raise DataUnavailable(str(e)) from e

    def load(self, src: Path, cfg: DataConfig) -> list[Case]:
        return self.module.load(src, cfg.size)

    def split(self, cases: list[Case], cfg: DataConfig) -> dict[str, str]:
        return self.module.split(cases, cfg.seed)


def get_source(name: str):
    from benchmark.data.phantoms import PHANTOMS
    from benchmark.data.real import REAL_DATASETS, real_module
    from benchmark.data.real.source import RealSource

    if name in PHANTOMS:
        return PhantomSource(PHANTOMS[name])
    if name == "colin27":
        return Colin27Source()
    if name in REAL_DATASETS:
        return RealSource(real_module(name))
    raise KeyError(f"unknown dataset {name!r}; known: {known_datasets()}")


def known_datasets() -> list[str]:
    from benchmark.data.phantoms import PHANTOMS
    from benchmark.data.real import REAL_DATASETS
    return sorted(PHANTOMS) + ["colin27"] + sorted(REAL_DATASETS)


def fetch(name: str, dest: Path, cfg: DataConfig, source=None) -> dict:
    """Fetch one dataset into ``dest``, leaving ``dest/status.json``.

    The folder is built beside ``dest`` and renamed into place only when complete, so a failed
    or interrupted fetch leaves the previous result (or nothing), never part of a dataset.
    Colin27 unavailable on this machine is not an error for the pipeline: it is announced loudly
    and recorded, and every later stage marks it "not run". A real dataset of the paper that is
    missing stops the fetch with :class:`~benchmark.data.real.source.DatasetMissing`: its tables must
    never be filled from anything else. ``source`` replaces the registered one (tests).
    """
    source = source or get_source(name)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        try:
            provenance = source.fetch(tmp, cfg)
            status = {"dataset": name, "available": True, "provenance": provenance}
        except DataUnavailable as e:
            banner = "!" * 78
            print(f"\n{banner}\n!! DATASET {name} IS NOT AVAILABLE ON THIS MACHINE; it will be marked "
                  f"'not run' in every table.\n!! {e}\n{banner}\n", file=sys.stderr)
            status = {"dataset": name, "available": False, "reason": str(e)}
        write_json(tmp / STATUS, status)
        replace_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return status


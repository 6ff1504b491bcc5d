"""Running a real dataset's fetch and preprocess on a fixture, the way ``segbench`` runs them."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import ModuleType

from benchmark.config import DataConfig
from benchmark.data.manifest import Manifest
from benchmark.data.preprocess import preprocess
from benchmark.data.download import file_digest
from benchmark.data.real.source import RealSource
from benchmark.data.sources import fetch


def fixture_source(module: ModuleType, files: dict[str, Path], server, root: Path) -> RealSource:
    """The module's source with its files taken from ``files`` (same names as the real ones).

    Gated files are placed in ``root/raw`` as a user would; downloadable ones are served by ``server``
    with their SHA-256 recorded, as the registry records the real ones.
    """
    raw, downloads = root / "raw", root / "downloads"
    raw.mkdir(parents=True, exist_ok=True)
    remote = []
    for f in module.FILES:
        src = files[f.name]
        if f.gated:
            shutil.copyfile(src, raw / f.name)
            remote.append(f)
        else:
            shutil.copyfile(src, server.root / f.name)
            remote.append(dataclasses.replace(f, url=server.file_url(f.name),
                                              checksum="sha256:" + file_digest(src, "sha256")))
    return RealSource(module, raw=raw, downloads=downloads, files=tuple(remote))


def fetch_and_preprocess(module: ModuleType, files: dict[str, Path], server, root: Path,
                         cfg: DataConfig) -> tuple[RealSource, Path, Manifest]:
    source = fixture_source(module, files, server, root)
    fetched, processed = root / "fetched", root / "processed"
    status = fetch(module.INFO.name, fetched, cfg, source=source)
    assert status["available"]
    return source, processed, preprocess(module.INFO.name, fetched, processed, cfg, source=source)

"""Datasets register by name through the ``segbench.datasets`` entry-point group (:mod:`benchmark.plugins`);
the phantoms, Colin27 and the papers' datasets are registered that way in ``pyproject.toml``. The contract:
:mod:`benchmark.data.interface`."""
from __future__ import annotations

from benchmark import plugins
from benchmark.data.interface import DatasetSource

ENTRY_POINT_GROUP = "segbench.datasets"


class UnknownDatasetError(plugins.UnknownNameError):
    pass


def available_datasets() -> list[str]:
    return plugins.registered(ENTRY_POINT_GROUP)


def dataset_source(name: str) -> DatasetSource:
    """A fresh instance of the dataset registered as ``name``, checked against the contract."""
    source = plugins.load(ENTRY_POINT_GROUP, name, UnknownDatasetError)()
    where = plugins.target(ENTRY_POINT_GROUP, name)
    if not isinstance(source, DatasetSource):
        missing = [a for a in ("info", "fetch", "load", "split") if not hasattr(source, a)]
        raise TypeError(f"dataset {name!r} ({where}) does not implement "
                        f"benchmark.data.interface.DatasetSource: missing {missing}")
    if source.info.name != name:
        raise TypeError(f"dataset {name!r} ({where}) calls itself {source.info.name!r} in its info; "
                        f"the registered name and info.name must be the same")
    return source

"""Plug-ins: methods and datasets register by name through entry-point groups.

``segbench.methods`` (:mod:`benchmark.methods.registry`) and ``segbench.datasets``
(:mod:`benchmark.data.registry`) are read here, the one place that looks entry points up. The suite's own
methods and datasets are registered the same way, in ``pyproject.toml``, so an external package adds one
with no edit to this repository::

    [project.entry-points."segbench.methods"]
    my-method = "my_package.module:MyMethod"
"""
from __future__ import annotations

from importlib.metadata import entry_points

from benchmark.errors import SegbenchError


class UnknownNameError(SegbenchError, KeyError):
    """A name no installed package registers in the group."""

    def __str__(self) -> str:
        return str(self.args[0])


def registered(group: str) -> list[str]:
    """The names registered in ``group``, sorted."""
    return sorted(ep.name for ep in entry_points(group=group))


def load(group: str, name: str, error: type[UnknownNameError] = UnknownNameError):
    """The object the entry point ``name`` of ``group`` names; ``error`` (listing the registered names) when
    no installed package registers it."""
    eps = {ep.name: ep for ep in entry_points(group=group)}
    if name not in eps:
        kind = group.rsplit(".", 1)[-1].rstrip("s")
        raise error(f"unknown {kind} {name!r}; registered: {sorted(eps)} "
                    f"(entry-point group {group!r}; is the package installed?)")
    return eps[name].load()


def target(group: str, name: str) -> str:
    """What the entry point names (``module:attribute``), for error messages."""
    return next(ep.value for ep in entry_points(group=group) if ep.name == name)

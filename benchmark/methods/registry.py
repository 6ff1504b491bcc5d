"""Methods register by name through the ``segbench.methods`` entry-point group.

The suite's own methods are registered the same way (in ``pyproject.toml``), so an
external package adds a method with no edit to this repository::

    [project.entry-points."segbench.methods"]
    my-method = "my_package.module:MyMethod"
"""
from __future__ import annotations

from importlib.metadata import entry_points

import torch

ENTRY_POINT_GROUP = "segbench.methods"


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_methods() -> list[str]:
    return sorted(_entry_points())


def method_class(name: str) -> type:
    eps = _entry_points()
    if name not in eps:
        raise UnknownMethodError(f"unknown method {name!r}; registered: {sorted(eps)} "
                                 f"(entry-point group {ENTRY_POINT_GROUP!r}; is the package installed?)")
    return eps[name].load()


def build_method(name: str, in_channels: int, num_classes: int, params: dict | None = None) -> torch.nn.Module:
    """Instantiate a registered method and check it implements the interface."""
    from benchmark.methods.interface import SegmentationMethod

    method = method_class(name)(in_channels=in_channels, num_classes=num_classes, **(params or {}))
    missing = [a for a in ("loss", "sample", "nfe") if not hasattr(method, a)]
    if missing or not isinstance(method, torch.nn.Module) or not isinstance(method, SegmentationMethod):
        raise TypeError(f"method {name!r} ({type(method).__name__}) does not implement the interface: "
                        f"needs an nn.Module with loss(), sample() and nfe; missing {missing}")
    return method

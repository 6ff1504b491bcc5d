"""Methods register by name through the ``segbench.methods`` entry-point group (:mod:`benchmark.plugins`);
the suite's own are registered that way in ``pyproject.toml``."""
from __future__ import annotations

import dataclasses
import inspect

import torch

from benchmark import plugins
from benchmark.errors import SegbenchError

ENTRY_POINT_GROUP = "segbench.methods"


class UnknownMethodError(plugins.UnknownNameError):
    pass


def available_methods() -> list[str]:
    return plugins.registered(ENTRY_POINT_GROUP)


def method_class(name: str) -> type:
    return plugins.load(ENTRY_POINT_GROUP, name, UnknownMethodError)


def build_method(name: str, in_channels: int, num_classes: int, params: dict | None = None) -> torch.nn.Module:
    """Instantiate a registered method and check it implements the interface."""
    method = _construct(name, method_class(name), in_channels, num_classes, params or {})
    problem = _interface_problem(method)
    if problem:
        raise TypeError(f"method {name!r} ({type(method).__module__}.{type(method).__qualname__}) does not "
                        f"implement the interface of benchmark/methods/interface.py: {problem}")
    return method


def _interface_problem(method) -> str | None:
    """What ``method`` lacks of :class:`SegmentationMethod`, or None."""
    from benchmark.methods.interface import Sampler

    missing = [a for a in ("loss", "sample", "default_sampler") if not hasattr(method, a)]
    if missing or not isinstance(method, torch.nn.Module):
        return f"needs an nn.Module with loss(), sample() and default_sampler; missing {missing}"
    if "sampler" not in inspect.signature(method.sample).parameters:
        return "sample() must take a `sampler` argument: sample(images, n, generator, sampler=None)"
    sampler = method.default_sampler
    if sampler is not None and not (dataclasses.is_dataclass(sampler) and sampler.__dataclass_params__.frozen
                                    and isinstance(sampler, Sampler)):
        return (f"default_sampler must be None or a frozen dataclass with `steps` and `adaptive`; "
                f"got {sampler!r}")
    return None


def check_params(name: str, params: dict, source: str | None = None, key: str = "methods") -> None:
    """That ``name`` is registered (else a :class:`ConfigError` at ``key``, the key path naming it) and that its
    constructor takes every key of ``params``, its ``method.NAME.model`` section, and is given all it needs,
    ``source`` being the parameters file. A method that trains itself checks its section itself
    (:meth:`~benchmark.methods.interface.TrainsItself.check_model`)."""
    from benchmark.config import ConfigError
    from benchmark.methods.interface import TrainsItself

    prefix = f"{source}: " if source else ""
    try:
        cls = method_class(name)
    except UnknownMethodError as e:
        raise ConfigError(f"{prefix}{key}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, TrainsItself)):
        _bind(name, cls, 1, 1, params, prefix)
        return
    try:
        cls.check_model(params)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None


def _bind(name: str, cls: type, in_channels: int, num_classes: int, params: dict, prefix: str = "") -> None:
    """Bind ``cls(in_channels, num_classes, **params)`` to the constructor's signature without calling it; a
    parameter it does not take, or one it needs and lacks, is a :class:`ConfigError` naming the key path."""
    from benchmark.config import ConfigError

    signature = inspect.signature(cls)
    fixed = {"in_channels", "num_classes"}
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        accepted = [p for p, v in signature.parameters.items() if p not in fixed and v.kind is not v.VAR_POSITIONAL]
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ConfigError(f"{prefix}method.{name}.model.{unknown[0]}: not a parameter of {name}; accepted: "
                              f"{', '.join(accepted)} ({cls.__module__}.{cls.__qualname__})")
    try:
        signature.bind(in_channels=in_channels, num_classes=num_classes, **params)
    except TypeError as e:
        raise ConfigError(f"{prefix}method.{name}.model: {e} (the parameters of {cls.__module__}."
                          f"{cls.__qualname__})") from e


def _construct(name: str, cls: type, in_channels: int, num_classes: int, params: dict):
    """``cls(in_channels, num_classes, **params)``; parameters it does not take (:func:`_bind`), or a
    ``ValueError`` it raises for a bad one (a method package does not import the suite's errors), become a
    :class:`ConfigError` naming the method's section. Any other exception is a bug and propagates as it is."""
    from benchmark.config import ConfigError
    from benchmark.methods.interface import TrainsItself

    if isinstance(cls, type) and issubclass(cls, TrainsItself):
        raise SegbenchError(f"method {name!r} trains and predicts by itself; it has no network to build for this "
                            f"stage (only `segbench train` and `segbench predict` apply to it)")
    _bind(name, cls, in_channels, num_classes, params)
    try:
        return cls(in_channels=in_channels, num_classes=num_classes, **params)
    except ValueError as e:
        raise ConfigError(f"method.{name}.model: {e}") from e

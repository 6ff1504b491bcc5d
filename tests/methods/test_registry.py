"""The method registry: entry points in the ``segbench.methods`` group, including an external
package's, unknown names, and classes that do not implement the interface."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmark.methods import (ENTRY_POINT_GROUP, SegmentationMethod, UnknownMethodError, available_methods,
                               build_method)
from benchmark.methods.registry import method_class

DEMO_MODULE = '''
import torch
from torch import nn

from medflowseg.sampling import Samples


class Demo(nn.Module):
    default_sampler = None

    def __init__(self, in_channels, num_classes, width=2):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        self.width = width

    def loss(self, images, labels, generator):
        return nn.functional.cross_entropy(self.conv(images), labels)

    @torch.no_grad()
    def sample(self, images, n, generator, sampler=None):
        return Samples(self.conv(images).argmax(dim=1).unsqueeze(0), (1,))
'''

BROKEN_MODULE = '''
from torch import nn


class NoSample(nn.Module):
    default_sampler = None

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def loss(self, images, labels, generator):
        return self.conv(images).mean()


class OldContract(nn.Module):
    """The contract before issue 15: an ``nfe`` attribute set by ``sample``, no sampler argument."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        self.nfe = 1

    def loss(self, images, labels, generator):
        return self.conv(images).mean()

    def sample(self, images, n, generator):
        return self.conv(images).argmax(dim=1).unsqueeze(0)


class NoSamplerArgument(OldContract):
    default_sampler = None


class MutableSampler(NoSamplerArgument):
    def sample(self, images, n, generator, sampler=None):
        return super().sample(images, n, generator)

    @property
    def default_sampler(self):
        return {"steps": 4}


class NotAModule:
    default_sampler = None

    def __init__(self, in_channels, num_classes):
        self.in_channels = in_channels

    def loss(self, images, labels, generator):
        return 0

    def sample(self, images, n, generator, sampler=None):
        return None
'''


@pytest.fixture(autouse=True)
def forget_external_modules():
    """Drop the external test modules from ``sys.modules`` so no test sees another's import."""
    names = ("extpkg_demo", "extpkg_broken")
    for name in names:
        sys.modules.pop(name, None)
    yield
    for name in names:
        sys.modules.pop(name, None)


def install_external(root: Path, module: str, source: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: the module file plus a ``.dist-info`` with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


def test_own_methods_are_registered():
    names = available_methods()
    assert "unet" in names and "flowseg-plain" in names
    assert names == sorted(names)
    assert method_class("unet").__name__ == "UNetMethod"
    assert method_class("flowseg-plain").__name__ == "PlainFlowSeg"


def test_external_package_registers_a_method(tmp_path, monkeypatch):
    install_external(tmp_path, "extpkg_demo", DEMO_MODULE, {"demo-method": "extpkg_demo:Demo"})
    assert "demo-method" not in available_methods()

    monkeypatch.syspath_prepend(str(tmp_path))
    # discovered on the next call: nothing is cached from the call above
    assert "demo-method" in available_methods()
    assert {"unet", "flowseg-plain"} <= set(available_methods())

    method = build_method("demo-method", 1, 2, {})
    assert type(method).__name__ == "Demo" and type(method).__module__ == "extpkg_demo"
    assert isinstance(method, torch.nn.Module) and isinstance(method, SegmentationMethod)
    assert build_method("demo-method", 3, 4, {"width": 5}).width == 5
    assert build_method("demo-method", 1, 2).conv.in_channels == 1

    images, labels = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
    g = torch.Generator().manual_seed(0)
    assert method.loss(images, labels, g).ndim == 0
    assert method.sample(images, 3, g).labels.shape == (1, 2, 8, 8)

    # and gone again once the package is no longer on the path
    monkeypatch.undo()
    assert "demo-method" not in available_methods()


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(UnknownMethodError) as exc:
        build_method("no-such-method", 1, 2, {})
    msg = str(exc.value)
    assert "'no-such-method'" in msg
    assert "unet" in msg and "flowseg-plain" in msg and ENTRY_POINT_GROUP in msg
    assert isinstance(exc.value, KeyError)


def test_registered_class_without_interface_is_refused(tmp_path, monkeypatch):
    names = {"no-sample": "NoSample", "old-contract": "OldContract", "no-sampler-argument": "NoSamplerArgument",
             "mutable-sampler": "MutableSampler", "not-a-module": "NotAModule"}
    install_external(tmp_path, "extpkg_broken", BROKEN_MODULE, {k: f"extpkg_broken:{v}" for k, v in names.items()})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert set(names) <= set(available_methods())

    def refusal(name: str) -> str:
        with pytest.raises(TypeError) as exc:
            build_method(name, 1, 2, {})
        assert f"'{name}'" in str(exc.value) and "benchmark/methods/interface.py" in str(exc.value)
        return str(exc.value)

    assert "['sample']" in refusal("no-sample")
    assert "['default_sampler']" in refusal("old-contract")
    assert "must take a `sampler` argument" in refusal("no-sampler-argument")
    assert "frozen dataclass with `steps` and `adaptive`" in refusal("mutable-sampler")
    assert "needs an nn.Module" in refusal("not-a-module")

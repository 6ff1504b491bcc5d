"""One base class for the errors a user can cause: ``segbench`` turns exactly those into one line and exit 2, and
lets every other exception (a bug) show its traceback."""
from __future__ import annotations

import pytest
import torch

from benchmark.cli import main
from benchmark.config import ConfigError
from benchmark.data.archive import ArchiveError, UnsafeArchiveError
from benchmark.data.download import ChecksumError, DownloadError
from benchmark.data.interface import DatasetMissing, DataUnavailable
from benchmark.data.manifest import ManifestError
from benchmark.data.registry import UnknownDatasetError
from benchmark.data.safe_pickle import PickleFileError, UnsafePickleError
from benchmark.data.store import CaseFileError
from benchmark.errors import USER_ERROR, SegbenchError
from benchmark.methods import registry
from benchmark.methods.registry import UnknownMethodError, build_method
from benchmark.nfe_sweep import NotSweepableError
from tests.conftest import write_params


@pytest.mark.parametrize("cls, builtin", [
    (ConfigError, ValueError), (CaseFileError, ValueError), (ManifestError, ValueError),
    (ArchiveError, ValueError), (UnsafeArchiveError, ValueError), (PickleFileError, ValueError),
    (UnsafePickleError, ValueError), (NotSweepableError, ValueError),
    (UnknownMethodError, KeyError), (UnknownDatasetError, KeyError),
    (DownloadError, RuntimeError), (ChecksumError, RuntimeError), (DatasetMissing, RuntimeError),
    (DataUnavailable, RuntimeError),
])
def test_every_user_error_is_a_segbench_error_and_keeps_its_builtin_base(cls, builtin):
    assert issubclass(cls, SegbenchError) and issubclass(cls, builtin)


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["--params", str(missing), "fetch", "phantom-cardiac"]) == USER_ERROR == 2
    err = capsys.readouterr().err
    assert err == f"segbench fetch: error: {missing}: parameters file is missing\n"

    params = write_params(tmp_path / "params.yaml")
    assert main(["--params", str(params), "fetch", "no-such-dataset", "--out", str(tmp_path / "f")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segbench fetch: error: unknown dataset 'no-such-dataset'")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), KeyError("a bug"), ValueError("a bug"), TypeError("a bug")])
def test_a_bug_propagates_with_its_traceback(tmp_path, monkeypatch, bug):
    import benchmark.data.sources as sources

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(sources, "fetch", broken)
    params = write_params(tmp_path / "params.yaml")
    with pytest.raises(type(bug), match="a bug") as exc:
        main(["--params", str(params), "fetch", "phantom-cardiac", "--out", str(tmp_path / "f")])
    assert exc.traceback[-1].name == "broken"  # raised where the bug is, not re-raised by the CLI


class _Picky(torch.nn.Module):
    """A method constructor as a method package writes it: plain ValueError for a bad value."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if width == 99:
            raise TypeError("a bug inside the constructor")


def test_a_method_constructor_rejecting_its_parameters_is_a_config_error_naming_the_method(monkeypatch):
    monkeypatch.setattr(registry, "method_class", lambda name: _Picky)
    with pytest.raises(ConfigError, match=r"^method.picky.model: width must be >= 1, got 0$"):
        build_method("picky", 1, 2, {"width": 0})
    with pytest.raises(ConfigError, match=r"^method.picky.model.depth: not a parameter of picky; accepted: width "):
        build_method("picky", 1, 2, {"depth": 3})
    with pytest.raises(TypeError, match="a bug inside the constructor") as exc:  # not a user error
        build_method("picky", 1, 2, {"width": 99})
    assert not isinstance(exc.value, SegbenchError)

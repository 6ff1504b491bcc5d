"""One base class for the errors a user can cause: ``segbench`` turns exactly those into one line and exit 2, and
lets every other exception (a bug) show its traceback."""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.catalogue import CatalogueError
from benchmark.cli import main
from benchmark.claims import ClaimsError
from benchmark.config import ConfigError
from benchmark.data.archive import ArchiveError, UnsafeArchiveError
from benchmark.data.download import ChecksumError, DownloadError
from benchmark.data.filetype import ContentError
from benchmark.data.interface import DataFormatError, DatasetMissing, DataUnavailable, ReleaseFileMissing
from benchmark.data.manifest import ManifestError
from benchmark.data.registry import UnknownDatasetError
from benchmark.data.safe_pickle import PickleFileError, UnsafePickleError
from benchmark.data.store import CaseFileError
from benchmark.errors import USER_ERROR, SegbenchError
from benchmark.methods import registry
from benchmark.methods.registry import UnknownMethodError, build_method
from benchmark.nfe_sweep import NotSweepableError
from benchmark.training.checkpoint import CheckpointError
from tests.conftest import write_params


@pytest.mark.parametrize("cls, builtin", [
    (ConfigError, ValueError), (CaseFileError, ValueError), (ManifestError, ValueError),
    (ArchiveError, ValueError), (UnsafeArchiveError, ValueError), (PickleFileError, ValueError),
    (UnsafePickleError, ValueError), (NotSweepableError, ValueError),
    (UnknownMethodError, KeyError), (UnknownDatasetError, KeyError),
    (DownloadError, RuntimeError), (ChecksumError, RuntimeError), (DatasetMissing, RuntimeError),
    (DataUnavailable, RuntimeError), (DataFormatError, ValueError), (ContentError, ValueError),
    (CatalogueError, ValueError), (ClaimsError, ValueError), (ReleaseFileMissing, FileNotFoundError),
    (CheckpointError, ValueError),
])
def test_every_user_error_is_a_segbench_error_and_keeps_its_builtin_base(cls, builtin):
    assert issubclass(cls, SegbenchError) and issubclass(cls, builtin)


def test_a_full_disk_and_a_busy_stage_are_user_errors_and_no_os_errors():
    from benchmark.data.store import DiskFullError
    from benchmark.lock import StageBusyError
    for cls in (DiskFullError, StageBusyError):
        assert issubclass(cls, SegbenchError) and not issubclass(cls, OSError)


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


# ---------------------------------------------------------------- a full disk (ENOSPC) while a stage writes
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name.endswith((".tmp", ".old")))


def _fill_the_disk_on_call(monkeypatch, owner, name: str, n: int) -> list[str]:
    """Make ``owner.name`` write part of its file, then fail with ENOSPC, on its ``n``-th call; returns the
    temporary files it was writing."""
    real = getattr(owner, name)
    calls, targets = [0], []

    def full(*args, **kwargs):
        calls[0] += 1
        if calls[0] < n:
            return real(*args, **kwargs)
        target = args[0]
        targets.append(str(getattr(target, "name", target)))
        (target.write if hasattr(target, "write") else Path(target).open("ab").write)(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(owner, name, full)
    return targets


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory, tiny_processed):
    """The tiny project with unet trained, predicted and evaluated once."""
    root = tmp_path_factory.mktemp("full-disk")
    write_params(root / "params.yaml")
    shutil.copytree(tiny_processed, root / "data" / "processed" / "phantom-cardiac")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for stage in ("train", "predict", "evaluate"):
            assert main([stage, "phantom-cardiac", "unet"]) == 0
    finally:
        os.chdir(cwd)
    return root


def test_a_full_disk_during_predict_is_one_error_and_the_previous_predictions_stay(trained_project, monkeypatch,
                                                                                 capsys):
    monkeypatch.chdir(trained_project)
    before = _files(trained_project / "runs")
    targets = _fill_the_disk_on_call(monkeypatch, np, "savez", 2)   # the second case file
    assert main(["predict", "phantom-cardiac", "unet"]) == USER_ERROR
    err = capsys.readouterr().err
    case = Path(targets[0]).name                                     # the file's own name, in a private folder
    assert err == (f"segbench predict: error: runs/phantom-cardiac/unet/predictions/{case}: could not be "
                   f"written: No space left on device; the previous output, if any, is left as it was and no "
                   f"temporary file remains\n")
    assert _files(trained_project / "runs") == before and _temporaries(trained_project) == []


def test_a_full_disk_during_preprocess_is_one_error_and_the_previous_dataset_stays(trained_project, monkeypatch,
                                                                                   capsys, tmp_path):
    monkeypatch.chdir(trained_project)
    assert main(["fetch", "phantom-cardiac", "--out", str(tmp_path / "fetched")]) == 0
    processed = trained_project / "data" / "processed"
    before = _files(processed)
    capsys.readouterr()
    _fill_the_disk_on_call(monkeypatch, np, "savez", 3)
    assert main(["preprocess", "phantom-cardiac", "--src", str(tmp_path / "fetched")]) == USER_ERROR
    err = capsys.readouterr().err
    assert re.fullmatch(r"segbench preprocess: error: data/processed/phantom-cardiac/cases/[\w-]+\.npz: could not be "
                        r"written: No space left on device; the previous output, if any, is left as it was and no "
                        r"temporary file remains\n", err), err
    assert _files(processed) == before and _temporaries(trained_project) == [] and _temporaries(tmp_path) == []


def test_a_full_disk_during_a_json_write_is_one_error_and_the_previous_file_stays(trained_project, monkeypatch,
                                                                                  capsys):
    monkeypatch.chdir(trained_project)
    before = _files(trained_project / "results")
    _fill_the_disk_on_call(monkeypatch, Path, "write_text", 1)      # metrics.json, the first JSON it writes
    assert main(["evaluate", "phantom-cardiac", "unet"]) == USER_ERROR
    assert capsys.readouterr().err == (
        "segbench evaluate: error: results/phantom-cardiac/unet/metrics.json: could not be written: No space "
        "left on device; the previous output, if any, is left as it was and no temporary file remains\n")
    assert _files(trained_project / "results") == before and _temporaries(trained_project) == []


def test_a_full_quota_is_named_the_same_way_and_other_os_errors_are_not_user_errors(tmp_path):
    from benchmark.data.store import DiskFullError, atomic_write, staged_folder

    def quota(t: Path):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(t))

    with pytest.raises(DiskFullError, match=rf"^{re.escape(str(tmp_path / 'a.json'))}: could not be written: "
                                            rf"{os.strerror(errno.EDQUOT)};") as exc:
        atomic_write(tmp_path / "a.json", quota)
    assert str(pickle.loads(pickle.dumps(exc.value))) == str(exc.value)   # crosses a worker process whole
    with pytest.raises(DiskFullError, match=rf"^{re.escape(str(tmp_path / 'out' / 'sub' / 'x.npz'))}: "):
        with staged_folder(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
            quota(tmp / "sub" / "x.npz")
    with pytest.raises(PermissionError):                            # not a full disk: propagates as it is
        atomic_write(tmp_path / "b.json", lambda t: (_ for _ in ()).throw(PermissionError(errno.EACCES, "no")))
    assert sorted(p.name for p in tmp_path.iterdir()) == []

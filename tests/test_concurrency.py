"""Two runs of one stage at once never corrupt its output (issue 19, item 1).

fetch, preprocess and predict build their folder privately and swap it in: both runs finish and the survivor is
one run's complete folder (a second fetch of a dataset also waits for the first, whose downloads it shares).
train, evaluate, nfe-sweep and tables take a lock on their output: a second run stops at once naming the holder.
A writer killed mid-write leaves temporaries that the next write removes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.data.manifest import file_sha256, load_manifest
from benchmark.data.store import atomic_write, staged_folder
from benchmark.errors import USER_ERROR
from benchmark.lock import StageBusyError, exclusive
from tests.conftest import write_params

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SEGBENCH = [sys.executable, "-m", "benchmark.cli"]


def _start(cwd: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([*SEGBENCH, *argv], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(p: subprocess.Popen) -> tuple[int, str]:
    out, err = p.communicate(timeout=600)
    return p.returncode, out + err


def _temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name.endswith((".tmp", ".old", ".lock")))


def _assert_complete_dataset(processed: Path) -> None:
    manifest = load_manifest(processed)
    assert manifest.status == "ok" and manifest.cases
    on_disk = {str(p.relative_to(processed)) for p in processed.rglob("*.npz")}
    assert on_disk == {c.file for c in manifest.cases}
    for c in manifest.cases:
        assert file_sha256(processed / c.file) == c.sha256, c.file


@pytest.fixture
def project(tmp_path) -> Path:
    write_params(tmp_path / "params.yaml")
    return tmp_path


def test_two_fetches_and_two_preprocesses_at_once_leave_one_complete_dataset(project):
    for _ in range(2):
        runs = [_start(project, "fetch", "phantom-cardiac") for _ in range(2)]
        for p in runs:
            rc, log = _finish(p)
            assert rc == 0, log
        runs = [_start(project, "preprocess", "phantom-cardiac") for _ in range(2)]
        for p in runs:
            rc, log = _finish(p)
            assert rc == 0, log
        _assert_complete_dataset(project / "data" / "processed" / "phantom-cardiac")
        assert _temporaries(project) == []


def test_two_predicts_at_once_leave_one_complete_folder_and_a_second_train_stops(project, monkeypatch):
    monkeypatch.chdir(project)
    assert main(["fetch", "phantom-cardiac"]) == 0 and main(["preprocess", "phantom-cardiac"]) == 0
    run = project / "runs" / "phantom-cardiac" / "unet"

    first = _start(project, "train", "phantom-cardiac", "unet")
    deadline = time.monotonic() + 300
    while not (run / ".train.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # holds the lock, mid-training, for as long as the second takes to start
    try:
        second = _start(project, "train", "phantom-cardiac", "unet")
        rc2, log2 = _finish(second)
    finally:
        first.send_signal(signal.SIGCONT)
    rc1, log1 = _finish(first)
    assert rc1 == 0, log1
    assert rc2 == USER_ERROR and log2.strip().splitlines()[-1] == (
        f"segbench train: error: runs/phantom-cardiac/unet: another `segbench train` (pid {first.pid} on "
        f"{os.uname().nodename}) is writing it; wait for it to end (or stop it), then run again"), log2
    assert (run / "model" / "model.pt").is_file() and _temporaries(project) == []

    test_cases = {c.case_id for c in load_manifest(project / "data" / "processed" / "phantom-cardiac").split("test")}
    for _ in range(2):
        runs = [_start(project, "predict", "phantom-cardiac", "unet") for _ in range(2)]
        for p in runs:
            rc, log = _finish(p)
            assert rc == 0, log
        predictions = run / "predictions"
        assert {p.stem for p in predictions.glob("*.npz")} == test_cases and (predictions / "meta.json").is_file()
        for case in test_cases:
            with np.load(predictions / f"{case}.npz") as z:
                assert z["samples"].ndim == 4
        assert _temporaries(project) == []


@pytest.mark.parametrize("argv, folder, stage", [
    (["train", "phantom-cardiac", "unet"], "runs/phantom-cardiac/unet", "train"),
    (["evaluate", "phantom-cardiac", "unet"], "results/phantom-cardiac/unet", "evaluate"),
    (["nfe-sweep", "phantom-cardiac", "medflowseg"], "results/phantom-cardiac/medflowseg/nfe_sweep", "nfe-sweep"),
    (["tables", "--no-mlflow"], "paper", "tables"),
])
def test_a_stage_whose_output_is_locked_stops_at_once_naming_the_holder(project, monkeypatch, capsys, argv, folder,
                                                                        stage):
    monkeypatch.chdir(project)
    with exclusive(Path(folder), stage):
        assert main(argv) == USER_ERROR
        assert capsys.readouterr().err == (
            f"segbench {argv[0]}: error: {folder}: another `segbench {stage}` (pid {os.getpid()} on "
            f"{os.uname().nodename}) is writing it; wait for it to end (or stop it), then run again\n")
    assert _temporaries(project) == []


def test_a_killed_holder_releases_the_lock_and_the_next_run_removes_its_file(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom benchmark.lock import exclusive\n"
                               "with exclusive(sys.argv[1], 'train'):\n    print('held', flush=True)\n"
                               "    time.sleep(600)\n", str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(StageBusyError, match=rf"another `segbench train` \(pid {holder.pid} on "):
        with exclusive(tmp_path, "train"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".train.lock").exists()                   # the file stays, the kernel's lock is gone
    with exclusive(tmp_path, "train"):
        pass
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_temporaries_of_a_killed_writer_are_removed_by_the_next_write_and_a_live_ones_kept(tmp_path):
    from benchmark.data.store import _HOST
    dead, live = _dead_pid(), os.getppid()
    stale = [tmp_path / f".out.{_HOST}-{dead}.abcd1234.tmp", tmp_path / f".out.{_HOST}-{dead}.efgh5678.old",
             tmp_path / f".a.json.{_HOST}-{dead}.ijkl9012.tmp"]
    kept = [tmp_path / f".out.{_HOST}-{live}.mnop3456.tmp", tmp_path / f".out.otherhost-{dead}.qrst7890.tmp",
            tmp_path / ".out.tmp"]
    for p in stale[:2] + kept[:2]:
        p.mkdir()
        (p / "half.npz").write_bytes(b"half")
    for p in stale[2:] + kept[2:]:
        p.write_text("half")
    with staged_folder(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out"] + [p.name for p in kept])
    stale[2].write_text("half")
    atomic_write(tmp_path / "a.json", lambda t: t.write_text("{}"))
    assert not stale[2].exists() and (tmp_path / "a.json").read_text() == "{}"


def test_a_stage_that_fails_leaves_no_folder_made_for_its_lock(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["train", "phantom-cardiac", "unet"]) == USER_ERROR   # no processed dataset
    err = capsys.readouterr().err
    assert err.startswith("segbench train: error: data/processed/phantom-cardiac") and "manifest is missing" in err
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]


def test_a_second_fetch_waits_for_the_first_then_runs(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom benchmark.lock import exclusive\n"
                               "with exclusive(sys.argv[1], 'fetch'):\n    print('held', flush=True)\n"
                               "    sys.stdin.readline()\n", str(tmp_path)],
                              env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    acquired = threading.Event()

    def second():
        with exclusive(tmp_path, "fetch", wait=True):
            acquired.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(1.0)
    assert not acquired.is_set()                                  # waiting on the first
    holder.stdin.write("release\n")
    holder.stdin.flush()
    waiter.join(timeout=60)
    assert acquired.is_set() and holder.wait(timeout=60) == 0 and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == (f"{tmp_path}: waiting for another `segbench fetch` (pid {holder.pid} on "
                                       f"{os.uname().nodename}) to end\n")

"""Checkpoints run no code when read, a broken newest one is skipped, and a full disk loses nothing.

Each test starts from a run stopped at step 20 (checkpoints ``step-0000010`` and ``step-0000020`` of a 30-step
profile) and trains it to the end through ``segbench train`` (:func:`benchmark.cli.main`).
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from accelerate import Accelerator

from benchmark.cli import main
from benchmark.config import load_config
from benchmark.errors import USER_ERROR
from benchmark.methods import nnunet
from benchmark.training import checkpoint, trainer
from benchmark.training.checkpoint import EMA, MODEL, OPTIMIZER, STATE, CheckpointError, TrainingState, load_torch_file
from benchmark.training.ema import EMAWeights
from benchmark.training.trainer import train
from tests.conftest import TINY_PARAMS, write_params

RUN = Path("runs/phantom-cardiac/unet")
RNG = "rng-0.safetensors"
CKPT_FILES = (MODEL, EMA, OPTIMIZER, RNG, STATE)


class Payload:
    """Unpickled, it creates ``marker``: what an attacker would make run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_processed) -> tuple[Path, str]:
    """A project whose run stopped at step 20, and the weights hash of 30 uninterrupted steps."""
    root = tmp_path_factory.mktemp("stopped")
    mcfg = load_config(write_params(root / "params.yaml")).method_config("unet")
    processed = root / "data/processed/phantom-cardiac"
    shutil.copytree(tiny_processed, processed)
    straight = train("unet", processed, tmp_path_factory.mktemp("straight"), mcfg)
    train("unet", processed, root / RUN, mcfg, max_steps=20)
    return root, straight.weights_sha256


@pytest.fixture
def project(template, tmp_path, monkeypatch) -> Path:
    shutil.copytree(template[0], tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _segbench_train(capsys) -> tuple[int, str]:
    rc = main(["--params", "params.yaml", "train", "phantom-cardiac", "unet"])
    out = capsys.readouterr()
    return rc, out.out + out.err


def _weights() -> str:
    return json.loads((RUN / "model/meta.json").read_text())["weights_sha256"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith((".tmp", ".old"))]


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _planted(name: str, marker: Path) -> bytes:
    if name == OPTIMIZER:  # a real torch archive, so the payload reaches the unpickler
        return _torch_bytes({"optimizer": Payload(marker), "scheduler": {}, "scaler": None})
    return pickle.dumps({"state": Payload(marker)})


def test_the_planted_payload_is_a_real_attack(tmp_path):
    """The fixture is no dud: the plain unpickler and ``torch.load(weights_only=False)`` run it."""
    marker = tmp_path / "marker"
    pickle.loads(_planted(MODEL, marker))
    assert marker.is_file()
    marker.unlink()
    (tmp_path / OPTIMIZER).write_bytes(_planted(OPTIMIZER, marker))
    torch.load(tmp_path / OPTIMIZER, weights_only=False)
    assert marker.is_file()


BROKEN = {"truncated": "unreadable or truncated", "empty": "unreadable or truncated", "missing": "file is missing",
          "payload": "unreadable or truncated"}  # how the newest checkpoint's file is broken -> the skip message
PROBLEM = {(STATE, "truncated"): "not valid JSON", (STATE, "empty"): "not valid JSON",
           (STATE, "payload"): "not valid JSON", (OPTIMIZER, "payload"): "refused to load io.open"}


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("name", CKPT_FILES)
def test_a_broken_newest_checkpoint_is_skipped_and_runs_nothing(template, project, capsys, name, kind):
    marker = project / "marker"
    path = RUN / "checkpoints/step-0000020" / name
    if kind == "missing":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes({"truncated": data[:len(data) // 2], "empty": b"", "payload": _planted(name, marker)}[kind])
    rc, log = _segbench_train(capsys)
    assert rc == 0, log
    assert f"skipping checkpoint step-0000020: {path}: {PROBLEM.get((name, kind), BROKEN[kind])}" in log
    assert f"resuming from {RUN / 'checkpoints/step-0000010'} at step 10" in log
    assert _weights() == template[1]  # as if never interrupted
    assert not marker.exists()


FOREIGN = {  # a whole file of the right kind that does not belong to this run -> the skip message
    MODEL: (lambda: safetensors.torch.save({"other.weight": torch.zeros(3)}), "does not fit the model: 2"),
    OPTIMIZER: (lambda: _torch_bytes({"optimizer": {"state": {}, "param_groups": []}, "scheduler": {},
                                     "scaler": None}), "does not fit this optimizer (ValueError"),
    RNG: (lambda: safetensors.torch.save({"cuda": torch.zeros(8, dtype=torch.uint8)}), "holds no CPU RNG state"),
    STATE: (lambda: json.dumps({"step": 7, "fingerprint": "x", "history": []}).encode(),
            "not the state of step-0000020"),
}


@pytest.mark.parametrize("name", FOREIGN)
def test_a_file_that_does_not_fit_the_run_is_skipped(template, project, capsys, name):
    make, problem = FOREIGN[name]
    path = RUN / "checkpoints/step-0000020" / name
    path.write_bytes(make())
    rc, log = _segbench_train(capsys)
    assert rc == 0, log
    assert f"skipping checkpoint step-0000020: {path}: {problem}" in log
    assert f"resuming from {RUN / 'checkpoints/step-0000010'} at step 10" in log and _weights() == template[1]


def test_pickles_of_the_old_layout_are_never_read(template, project, capsys):
    """Accelerate's files (``random_states_0.pkl``, ``custom_checkpoint_0.pkl`` for the EMA, ``optimizer.bin``,
    ``scheduler.bin``), planted beside a whole checkpoint: it is resumed and none of them is opened."""
    marker = project / "marker"
    for name in ("random_states_0.pkl", "custom_checkpoint_0.pkl", "optimizer.bin", "scheduler.bin"):
        (RUN / "checkpoints/step-0000020" / name).write_bytes(_planted(OPTIMIZER, marker))
    rc, log = _segbench_train(capsys)
    assert rc == 0 and "skipping" not in log
    assert f"resuming from {RUN / 'checkpoints/step-0000020'} at step 20" in log and _weights() == template[1]
    assert not marker.exists()


def test_no_usable_checkpoint_is_one_error_naming_each(project, capsys):
    ckpts = RUN / "checkpoints"
    (ckpts / "step-0000020" / OPTIMIZER).write_bytes(b"")
    (ckpts / "step-0000010" / MODEL).unlink()
    before = _files(RUN)
    rc, log = _segbench_train(capsys)
    assert rc == USER_ERROR
    error = log.splitlines()[-1]
    assert error == (f"segbench train: error: {ckpts}: no usable checkpoint: "
                     f"{ckpts / 'step-0000020' / OPTIMIZER}: unreadable or truncated (EOFError: no data); "
                     f"{ckpts / 'step-0000010' / MODEL}: file is missing. Delete these checkpoints to train from "
                     f"step 0")
    assert _files(RUN) == before  # nothing deleted, nothing written


def test_checkpoints_of_another_config_are_not_counted(project, capsys):
    """Another config's checkpoints are neither resumed nor an error, even when broken beyond their state."""
    write_params(Path("params.yaml"), train={**load_config("params.yaml").method_config("unet").train.__dict__,
                                             "lr": 0.002})
    (RUN / "checkpoints/step-0000020" / MODEL).write_bytes(b"")
    rc, log = _segbench_train(capsys)
    assert rc == 0 and "resuming" not in log and "skipping" not in log


class Tied(torch.nn.Module):
    """Two layers sharing one weight, as a plug-in method may have (safetensors refuses shared memory)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False)
        self.b.weight = self.a.weight


def _state(init_scale: float) -> TrainingState:
    model = Tied()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainingState(model, EMAWeights(model, 0.9), optimizer,
                         torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                         torch.amp.GradScaler("cpu", init_scale=init_scale))


def test_tied_weights_and_the_loss_scale_are_restored(tmp_path):
    """fp16 training keeps a loss scale; it travels in ``optimizer.pt`` (the GPU path, checked here on the CPU)."""
    accelerator = Accelerator(cpu=True)
    saved = _state(512.0)
    checkpoint.save(accelerator, tmp_path, 5, saved, {"fingerprint": "f", "history": []}, keep=1)
    restored = _state(2.0 ** 16)
    assert checkpoint.resume(accelerator, tmp_path, "f", restored) == {"step": 5, "world_size": 1, "fingerprint": "f",
                                                                      "history": []}
    assert restored.scaler.get_scale() == 512.0
    assert torch.equal(restored.model.a.weight, saved.model.a.weight)
    assert restored.model.b.weight is restored.model.a.weight  # still tied


# --------------------------------------------------------------------------------------------------- full disk


def _disk_full_at(monkeypatch, name: str) -> None:
    """Writing the file ``name`` (or its temporary ``.name.*``) writes part of the data, then fails with ENOSPC."""
    def hit(path) -> bool:
        return Path(path).name == name or Path(path).name.startswith(f".{name}.")

    def full():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for method in ("write_bytes", "write_text"):
        def failing(self, data, *args, _real=getattr(Path, method), **kwargs):
            if hit(self):
                _real(self, data[:len(data) // 2], *args, **kwargs)
                raise full()
            return _real(self, data, *args, **kwargs)
        monkeypatch.setattr(Path, method, failing)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if hit(getattr(f, "name", "")):
            f.write(b"PK\x03\x04")
            raise full()
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", failing_save)


def _previous_outputs() -> dict[str, bytes]:
    (RUN / "model").mkdir()
    (RUN / "model/model.pt").write_bytes(b"previous weights")
    (RUN / "model/meta.json").write_text('{"status": "ok"}')
    (RUN / "loss.csv").write_text("step,loss,lr,seconds\n")
    return _files(RUN)


def _is_full_disk_error(log: str, path: Path) -> bool:
    """The last line is the one error, naming the file (or folder) where it will be, not its temporary."""
    return log.splitlines()[-1].startswith(f"segbench train: error: {path}: could not be written") and \
        "No space left on device" in log.splitlines()[-1]


@pytest.mark.parametrize("name", CKPT_FILES)
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoints(project, capsys, monkeypatch, name):
    before = _previous_outputs()
    _disk_full_at(monkeypatch, name)
    rc, log = _segbench_train(capsys)
    assert rc == USER_ERROR
    assert _is_full_disk_error(log, RUN / "checkpoints/step-0000030" / name)
    assert _files(RUN) == before and _temporaries(project) == []


@pytest.mark.parametrize("folder", ["checkpoints/step-0000030", "model"])
def test_a_full_disk_making_a_folder_names_it(project, capsys, monkeypatch, folder):
    before = _previous_outputs()
    real = tempfile.mkdtemp

    def mkdtemp(*args, prefix="", **kwargs):
        if prefix.startswith(f".{Path(folder).name}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, prefix=prefix, **kwargs)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    rc, log = _segbench_train(capsys)
    assert rc == USER_ERROR and _is_full_disk_error(log, RUN / folder)
    after = _files(RUN)
    if folder == "model":  # the final checkpoint was saved (and the oldest pruned) before the model
        before = {k: v for k, v in before.items() if not k.startswith("checkpoints")}
        after = {k: v for k, v in after.items() if not k.startswith("checkpoints")}
    assert after == before and _temporaries(project) == []


@pytest.mark.parametrize("name", ["model.pt", "meta.json", "loss.csv"])
def test_a_full_disk_while_saving_the_model_keeps_the_previous_one(template, project, capsys, monkeypatch, name):
    before = _previous_outputs()
    if name == "loss.csv":  # written through open(): fail the writer itself
        def full(path, rows):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(trainer, "write_loss_csv", full)
    else:
        _disk_full_at(monkeypatch, name)
    rc, log = _segbench_train(capsys)
    assert rc == USER_ERROR
    assert _is_full_disk_error(log, RUN / ("" if name == "loss.csv" else "model") / name)
    after = _files(RUN)
    assert after["loss.csv"] == before["loss.csv"] and _temporaries(project) == []
    if name != "loss.csv":
        assert {k: v for k, v in after.items() if k.startswith("model")} == \
               {k: v for k, v in before.items() if k.startswith("model")}
    assert "checkpoints/step-0000030/state.json" in after  # the final state was saved before the model

    monkeypatch.undo()
    monkeypatch.chdir(project)
    rc, log = _segbench_train(capsys)  # with space again: nothing to train, the outputs are written
    assert rc == 0 and f"resuming from {RUN / 'checkpoints/step-0000030'} at step 30" in log
    assert _weights() == template[1]


# ----------------------------------------------------------------------------------------------------- nnU-Net


def _nnunet_model(root: Path, checkpoint: bytes) -> Path:
    folder = root / "model" / nnunet.MODEL_SUBDIR
    nnunet.checkpoint_file(folder, 0).parent.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    (folder / "dataset.json").write_text("{}")
    nnunet.checkpoint_file(folder, 0).write_bytes(checkpoint)
    return root / "model"


LIKE_NNUNET = {"network_weights": {"w": torch.ones(2)}, "optimizer_state": {"state": {}, "param_groups": []},
               "grad_scaler_state": None, "_best_ema": np.float32(0.5), "current_epoch": 2,
               "logging": {"train_losses": [np.float32(1.0), np.float64(0.5)], "lrs": [0.01, 0.009]},
               "init_args": {"plans": {}, "configuration": "2d", "fold": 0, "dataset_json": {},
                             "device": torch.device("cpu")},
               "trainer_name": "SegbenchNNUNetTrainer", "inference_allowed_mirroring_axes": (0, 1)}


def test_nnunet_checkpoint_types_load_weights_only(tmp_path):
    """What nnU-Net 2 writes (numpy scalars among plain data) loads with the allow-list; the round trip in
    tests/baselines/test_nnunet.py loads a real one."""
    path = tmp_path / "checkpoint_final.pth"
    path.write_bytes(_torch_bytes(LIKE_NNUNET))
    loaded = load_torch_file(path, nnunet.NNUNET_CHECKPOINT_GLOBALS)
    assert loaded["_best_ema"] == np.float32(0.5) and loaded["logging"]["train_losses"][1] == 0.5
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth: refused to load numpy"):
        load_torch_file(path)  # the allow-list is needed, and given for this file only
    path.write_bytes(_torch_bytes({**LIKE_NNUNET, "x": np.array([None, 1], dtype=object)}))
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth: refused to load numpy"):
        load_torch_file(path, nnunet.NNUNET_CHECKPOINT_GLOBALS)  # arrays and object dtypes are not admitted


@pytest.mark.parametrize("checkpoint, problem", [
    (lambda marker: _torch_bytes({**LIKE_NNUNET, "_best_ema": Payload(marker)}), "refused to load io.open"),
    (lambda marker: _torch_bytes(LIKE_NNUNET)[:500], "unreadable or truncated"),
    (lambda marker: _torch_bytes({"network_weights": {}}), "not an nnU-Net checkpoint"),
], ids=["payload", "truncated", "other"])
def test_nnunet_predict_refuses_a_planted_or_broken_checkpoint(tiny_project, capsys, monkeypatch, checkpoint,
                                                              problem):
    monkeypatch.chdir(tiny_project)
    write_params(Path("params.yaml"), method={**TINY_PARAMS["method"], "nnunet": {"model": {"epochs": 2}}})
    marker = tiny_project / "marker"
    run = Path("runs/phantom-cardiac/nnunet")
    _nnunet_model(run, checkpoint(marker))
    rc = main(["--params", "params.yaml", "predict", "phantom-cardiac", "nnunet"])
    assert rc == USER_ERROR
    ckpt = nnunet.checkpoint_file(run / "model" / nnunet.MODEL_SUBDIR, 0)
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"segbench predict: error: {ckpt}: {problem}")
    assert not marker.exists() and not (run / "predictions").exists() and _temporaries(tiny_project) == []

"""Training checkpoints that run no code when read, and resuming from the newest one that is whole.

A checkpoint is the folder ``step-XXXXXXX/`` (built aside, then swapped in). The main process writes

- ``model.safetensors``: the model's parameters and buffers;
- ``ema.safetensors``: the EMA's tensors (``module.*``, on the model's device while training) and ``n_averaged``;
- ``optimizer.pt``: ``{"optimizer", "scheduler", "scaler"}`` state dicts (the scaler's is None unless fp16),
  written by ``torch.save`` and read with ``torch.load(weights_only=True)``, which builds tensors and plain
  containers only;
- ``state.json``: step, number of processes, fingerprint, resolved config, loss history;

and every process writes ``rng-<rank>.safetensors``: its torch RNG state (``cpu``, and ``cuda`` on a GPU), which
dropout draws from. Batches and noise need none: they come from per-step generators
(:mod:`benchmark.training.data`). A run resumed by more processes than saved the checkpoint leaves the RNG of
the new ranks as seeded (such a run cannot match an uninterrupted one anyway).

Nothing is unpickled with arbitrary globals, so a payload planted in any file is refused as a broken file and
never runs. :func:`resume` tries the checkpoints newest first and skips, saying so, any with a missing,
truncated or refused file or one that does not fit the model. When checkpoints exist but none is usable it
stops with one :class:`CheckpointError` naming each and why: training from step 0 would silently discard them,
so the user decides (delete them, or restore the files).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError

from benchmark.data.store import disk_full_named, staged_folder, write_json
from benchmark.errors import SegbenchError
from benchmark.training.ema import EMAWeights

CKPT_PREFIX = "step-"
MODEL, EMA, OPTIMIZER, STATE = "model.safetensors", "ema.safetensors", "optimizer.pt", "state.json"


class CheckpointError(SegbenchError, ValueError):
    """A checkpoint file is missing, unreadable, refused, or does not fit the model being trained."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass
class TrainingState:
    """The live objects a checkpoint saves and restores (optimizer and scheduler as Accelerate prepared them)."""
    model: torch.nn.Module
    ema: EMAWeights
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None


def rng_file(rank: int) -> str:
    return f"rng-{rank}.safetensors"


# ------------------------------------------------------------------------------------------------------ writing


def write_files(tmp: Path, dest: Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Call each ``writers[name](tmp / name)``; a full disk names ``dest / name``, where the file would have been
    once ``tmp`` is swapped in."""
    for name, write in writers.items():
        with disk_full_named(dest / name):
            write(tmp / name)


def save_torch(path: Path, obj) -> None:
    """``torch.save`` through a Python file: the archive's inner folder is ``archive/`` whatever the file is called
    (a path would name it after the temporary file), and a failed write (a full disk) raises ``OSError`` with its
    errno instead of torch's ``RuntimeError``."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _tensor_bytes(module: torch.nn.Module) -> bytes:
    """The state dict as safetensors bytes (written by Python: ``safetensors.torch.save_file`` ignores a full
    disk). safetensors refuses tensors that share memory (tied weights): those after the first are copied."""
    tensors, storages = {}, set()
    for k, v in module.state_dict().items():
        v = v.detach().cpu().contiguous()
        storage = v.untyped_storage().data_ptr()
        tensors[k] = v.clone() if storage in storages else v
        storages.add(storage)
    return safetensors.torch.save(tensors)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save(accelerator: Accelerator, folder: Path, step: int, state: TrainingState, record: dict, keep: int) -> None:
    """Write ``folder/step-XXXXXXX/`` (``record`` goes into ``state.json`` with the step), then delete all but the
    newest ``keep`` checkpoints. A full disk is one :class:`SegbenchError` naming the file; the folder being built
    is removed and the previous checkpoints are kept."""
    dest = folder / f"{CKPT_PREFIX}{step:07d}"
    with disk_full_named(dest), _staged_on_main(accelerator, dest) as tmp:  # the folder itself, or its swap
        writers = {rng_file(accelerator.process_index):
                   lambda p: p.write_bytes(safetensors.torch.save(_rng_state(accelerator.device)))}
        if accelerator.is_main_process:
            scaler = state.scaler.state_dict() if state.scaler is not None else None
            writers |= {
                MODEL: lambda p: p.write_bytes(_tensor_bytes(state.model)),
                EMA: lambda p: p.write_bytes(_tensor_bytes(state.ema)),
                OPTIMIZER: lambda p: save_torch(p, {"optimizer": state.optimizer.state_dict(),
                                                    "scheduler": state.scheduler.state_dict(), "scaler": scaler}),
                STATE: lambda p: write_json(p, {"step": step, "world_size": accelerator.num_processes, **record})}
        write_files(tmp, dest, writers)
        accelerator.wait_for_everyone()  # every process has written its part before the swap
    if accelerator.is_main_process:
        for old in sorted(folder.glob(f"{CKPT_PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


@contextlib.contextmanager
def _staged_on_main(accelerator: Accelerator, dest: Path) -> Iterator[Path]:
    """:func:`~benchmark.data.store.staged_folder` run by the main process; every process writes into its
    temporary folder, whose name the main process sends to the others."""
    if accelerator.is_main_process:
        with staged_folder(dest) as tmp:
            broadcast_object_list([str(tmp)])
            yield tmp
    else:
        yield Path(broadcast_object_list([None])[0])


# ------------------------------------------------------------------------------------------------------ reading


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, "file is missing") from None
    except OSError as e:
        raise CheckpointError(path, f"unreadable ({e.strerror})") from e


def load_torch_file(path: Path, allowed: list | tuple = ()):
    """``torch.load(weights_only=True)`` of ``path`` onto the CPU: tensors, plain containers and the ``allowed``
    globals only (as for :func:`torch.serialization.safe_globals`). A missing, truncated or refused file is a
    :class:`CheckpointError` naming it; nothing in the file is run."""
    data = _read_bytes(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a broken or refused file
        refused = re.search(r"Unsupported global: GLOBAL (\S+)|got <class '([^']+)'>", str(e))
        if refused:
            raise CheckpointError(path, f"refused to load {refused.group(1) or refused.group(2)}: the file may hold "
                                        f"only tensors and plain data (a planted payload?); nothing from it "
                                        f"was run") from None
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else "no data"
        raise CheckpointError(path, f"unreadable or truncated ({type(e).__name__}: {first_line})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(_read_bytes(path))
    except SafetensorError as e:
        raise CheckpointError(path, f"unreadable or truncated ({e})") from None


def _fitting(path: Path, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, checked to be exactly the keys, shapes and dtypes of ``module``'s state dict."""
    tensors, expected = _load_tensors(path), module.state_dict()
    wrong = sorted(k for k in tensors.keys() | expected.keys() if k not in tensors or k not in expected
                   or tensors[k].shape != expected[k].shape or tensors[k].dtype != expected[k].dtype)
    if wrong:
        raise CheckpointError(path, f"does not fit the model: {len(wrong)} tensor(s) missing, extra or of "
                                    f"another shape or dtype ({', '.join(wrong[:3])}{', ...' if wrong[3:] else ''})")
    return tensors


def _rng(path: Path) -> dict[str, torch.Tensor]:
    tensors = _load_tensors(path)
    cpu = tensors.get("cpu")
    if cpu is None or cpu.dtype != torch.uint8 or cpu.shape != torch.get_rng_state().shape:
        raise CheckpointError(path, "holds no CPU RNG state")
    return tensors


def _record(ckpt: Path) -> dict:
    path = ckpt / STATE
    try:
        record = json.loads(_read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"not valid JSON ({e})") from None
    if not (isinstance(record, dict) and isinstance(record.get("fingerprint"), str)
            and isinstance(record.get("history"), list) and record.get("step") == _step_of(ckpt)
            and isinstance(record.get("world_size"), int) and record["world_size"] >= 1):
        raise CheckpointError(path, f"not the state of {ckpt.name} (step, world_size, fingerprint and history "
                                    f"expected)")
    return record


def _step_of(ckpt: Path) -> int | None:
    digits = ckpt.name.removeprefix(CKPT_PREFIX)
    return int(digits) if digits.isdigit() else None


def _load(ckpt: Path, state: TrainingState, accelerator: Accelerator, ranks: range, world_size: int) -> None:
    """Read every file of ``ckpt`` (the RNG files of those ``ranks`` among the ``world_size`` that saved it) and
    check it, then restore ``state`` and this process's RNG from them."""
    model, ema = _fitting(ckpt / MODEL, state.model), _fitting(ckpt / EMA, state.ema)
    saved = load_torch_file(ckpt / OPTIMIZER)
    rngs = {rank: _rng(ckpt / rng_file(rank)) for rank in ranks if rank < world_size}
    state.model.load_state_dict(model)
    state.ema.load_state_dict(ema)
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        if state.scaler is not None and saved["scaler"] is not None:
            state.scaler.load_state_dict(saved["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(ckpt / OPTIMIZER, f"does not fit this optimizer ({type(e).__name__}: {e})") from None
    rng = rngs.get(accelerator.process_index)
    if rng is not None:
        torch.set_rng_state(rng["cpu"])
        if accelerator.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], accelerator.device)


def resume(accelerator: Accelerator, folder: Path, fingerprint: str, state: TrainingState) -> dict | None:
    """Restore ``state`` from the newest usable checkpoint in ``folder`` made with ``fingerprint`` (config and
    data); returns its ``state.json`` record, or None when there is no checkpoint to resume.

    The main process chooses (checking every process's RNG file too), printing each checkpoint it skips and why;
    every process then loads the chosen one.

    Raises:
        CheckpointError: checkpoints exist but none is usable (it names each, and the problem with it).
    """
    chosen, record, problems = None, None, []
    if accelerator.is_main_process:
        for ckpt in sorted(folder.glob(f"{CKPT_PREFIX}*"), reverse=True) if folder.is_dir() else ():
            try:
                record = _record(ckpt)
                if record["fingerprint"] != fingerprint:
                    continue  # another config's or data's: not ours to resume
                _load(ckpt, state, accelerator, range(accelerator.num_processes), record["world_size"])
            except CheckpointError as e:
                problems.append(str(e))
                print(f"skipping checkpoint {ckpt.name}: {e}", file=sys.stderr)
                continue
            chosen = ckpt.name
            break
    chosen, problems = broadcast_object_list([chosen, problems])
    if chosen is None:
        if problems:
            raise CheckpointError(folder, f"no usable checkpoint: {'; '.join(problems)}. Delete these checkpoints "
                                          f"to train from step 0")
        return None
    if not accelerator.is_main_process:
        record = _record(folder / chosen)
        rank = accelerator.process_index
        _load(folder / chosen, state, accelerator, range(rank, rank + 1), record["world_size"])
    return record

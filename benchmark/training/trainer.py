"""The train stage: Accelerate-driven loop with EMA, atomic checkpoints and resume.

Outputs in ``out`` (a run folder ``runs/<dataset>/<method>``):
- ``model/model.pt``: EMA weights + what is needed to rebuild the method;
  ``model/meta.json``: resolved config, manifest hash, git revision, world size, timings;
  ``model/manifest.json``: a copy of the data manifest the weights were trained on;
- ``loss.csv``: step, loss, lr, seconds (a DVC plot);
- ``checkpoints/step-XXXXXXX/``: full training state every ``checkpoint_every`` steps
  (:mod:`benchmark.training.checkpoint`: safetensors and a weights-only optimizer file, nothing
  that runs code when read), resumed automatically from the newest usable one whose config and
  data fingerprint match. Not a DVC output, so DVC never deletes it before a rerun.

The ``model`` folder is built aside and swapped in whole. A full disk while writing any of these
is one error naming the file; the previous checkpoints, model and curve are kept.
"""
from __future__ import annotations

import csv
import hashlib
import dataclasses
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from benchmark.config import MethodConfig, TrainConfig
from benchmark.data.manifest import MANIFEST, file_sha256
from benchmark.data.preprocess import load_split
from benchmark.data.store import atomic_write, disk_full_named, staged_folder
from benchmark.methods import build_method
from benchmark.methods.interface import CountsInEpochs
from benchmark.records import RunRecord, Status, write_record
from benchmark.provenance import git_revision, json_hash
from benchmark.training import checkpoint
from benchmark.training.checkpoint import TrainingState, save_torch, write_files
from benchmark.training.data import SliceSet, batch_at, epoch_steps


def write_loss_csv(path: Path, rows: list[dict]) -> None:
    def write(t: Path):
        with open(t, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "seconds"])
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)


def write_not_run(out: Path, reason: str) -> None:
    """Outputs of a stage whose dataset is unavailable: a status file, an empty curve."""
    (out / "model").mkdir(parents=True, exist_ok=True)
    write_record(out / "model" / "meta.json", RunRecord.not_run(reason))
    write_loss_csv(out / "loss.csv", [])


def train(method: str, processed: Path, out: Path, mcfg: MethodConfig, max_steps: int | None = None) -> RunRecord:
    """Train ``method`` on the train split of ``processed``; returns the meta record.

    ``max_steps`` stops early (after checkpointing) without writing the final model: used to
    simulate an interruption.
    """
    cfg: TrainConfig = mcfg.train
    torch.set_num_threads(cfg.threads)
    processed, out = Path(processed), Path(out)
    manifest, cases = load_split(processed, "train")
    info = manifest.dataset
    data = SliceSet.from_cases(cases)
    manifest_sha = file_sha256(processed / MANIFEST)
    # the length as given (steps or epochs): a profile in steps keeps the fingerprint of its checkpoints
    given = {k: v for k, v in dataclasses.asdict(cfg).items() if v is not None}
    resolved = {"method": method, "model": mcfg.model, "train": given,
                "predict": dataclasses.asdict(mcfg.predict), "manifest_sha256": manifest_sha}
    fingerprint = json_hash({k: v for k, v in resolved.items() if k != "predict"})

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_method(method, info.channels, info.num_classes, mcfg.model)
    global_batch = cfg.batch_size * accelerator.num_processes
    steps = cfg.steps if cfg.epochs is None else epoch_steps(cfg.epochs, len(data), global_batch)
    if isinstance(model, CountsInEpochs):   # a method whose own stages are counted in epochs (ATFM)
        model.set_epoch_length(lambda epochs: epoch_steps(epochs, len(data), global_batch))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    trainable, optimizer, scheduler = accelerator.prepare(LossForward(model), optimizer, scheduler)
    state = TrainingState(model, ema, optimizer, scheduler, accelerator.scaler)

    ckpt_dir = out / "checkpoints"
    history: list[dict] = []
    start = 0
    resumed = checkpoint.resume(accelerator, ckpt_dir, fingerprint, state)
    if resumed is not None:
        start, history = resumed["step"], resumed["history"]
        accelerator.print(f"resuming from {ckpt_dir / f'{checkpoint.CKPT_PREFIX}{start:07d}'} at step {start}")

    stop = steps if max_steps is None else min(steps, max_steps)
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    bar = tqdm(range(start, stop), initial=start, total=steps, desc=f"train {info.name}/{method}",
               disable=not accelerator.is_local_main_process, mininterval=2.0, dynamic_ncols=True)
    for step in bar:
        images, labels, g = batch_at(data, cfg.batch_size, cfg.seed, step, accelerator.process_index)
        images, labels = images.to(accelerator.device), labels.to(accelerator.device)
        with accelerator.autocast():
            loss = trainable(images, labels, g)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
        history.append({"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                        "seconds": round(time.perf_counter() - t0, 3)})
        bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == stop:
            checkpoint.save(accelerator, ckpt_dir, step + 1, state,
                            {"fingerprint": fingerprint, "config": resolved, "history": history}, cfg.keep_checkpoints)
    bar.close()

    in_epochs = cfg.epochs is not None
    meta = RunRecord(Status.PARTIAL if stop < steps else Status.OK, method=method, dataset=info.name,
                     steps=stop, epochs=cfg.epochs, slices_per_epoch=len(data) if in_epochs else None,
                     global_batch=global_batch if in_epochs else None, world_size=accelerator.num_processes, device=str(accelerator.device),
                     seconds=history[-1]["seconds"] if history else 0.0,
                     final_loss=history[-1]["loss"] if history else None,
                     model_params=mcfg.model, train=resolved["train"], predict=resolved["predict"],
                     in_channels=info.channels, num_classes=info.num_classes, fingerprint=fingerprint,
                     manifest_sha256=manifest_sha, git_revision=git_revision(),
                     weights_sha256=weights_hash(ema.module))
    if accelerator.is_main_process and stop == steps:
        payload = {"method": method, "in_channels": info.channels, "num_classes": info.num_classes,
                   "model_params": mcfg.model, "state_dict": ema.module.state_dict()}
        with disk_full_named(out / "model"), staged_folder(out / "model") as tmp:
            write_files(tmp, out / "model", {
                "model.pt": lambda p: save_torch(p, payload),
                "meta.json": lambda p: write_record(p, meta),
                MANIFEST: lambda p: shutil.copy2(processed / MANIFEST, p)})  # the data contract beside the weights
        with disk_full_named(out / "loss.csv"):
            write_loss_csv(out / "loss.csv", history)
    accelerator.wait_for_everyone()
    return meta


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over the state dict's tensors in key order: identifies a set of weights."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class LossForward(torch.nn.Module):
    """Routes ``forward`` to the method's ``loss``: DDP synchronises gradients only for
    computations that pass through the wrapped module's forward."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images, labels, generator):
        return self.method.loss(images, labels, generator)

"""The train stage: Accelerate-driven loop with EMA, atomic checkpoints and resume.

Outputs in ``out`` (a run folder ``runs/<dataset>/<method>``):
- ``model/model.pt``: EMA weights + what is needed to rebuild the method;
  ``model/meta.json``: resolved config, manifest hash, git revision, the batch split, precision, timings;
  ``model/manifest.json``: a copy of the data manifest the weights were trained on;
- ``loss.csv``: step, loss, lr, seconds (a DVC plot);
- ``checkpoints/step-XXXXXXX/``: full training state every ``checkpoint_every`` steps
  (:mod:`benchmark.training.checkpoint`: safetensors and a weights-only optimizer file, nothing
  that runs code when read), resumed automatically from the newest usable one whose config and
  data fingerprint match. Not a DVC output, so DVC never deletes it before a rerun.

``train.batch_size`` is the global batch of one optimizer step. Each of the ``P`` processes takes
``batch_size / P`` slices of it, in ``accumulation`` micro-batches of ``micro_batch_size`` (:class:`BatchPlan`);
micro-batch ``m`` of rank ``r`` draws shard ``r * accumulation + m`` of the step
(:func:`benchmark.training.data.batch_at`), so the step's slices and noise depend on the global batch and the
micro-batch size only, not on how many processes share it. The slices are read from the dataset's memory-mapped
slice store (:mod:`benchmark.training.slices`, built once beside the processed dataset), ahead of the step by
``loader_workers`` processes; a method that declares ``grad_clip`` (``ClipsGradients``) has its gradients clipped
before each optimizer step. The optimizer is ``train.optimizer`` (AdamW, or SGD with momentum), its learning rate a
linear warm-up and then ``train.schedule`` (constant, or poly decay to zero at the last step), in optimizer steps.

The ``model`` folder is built aside and swapped in whole. A full disk while writing any of these
is one error naming the file; the previous checkpoints, model and curve are kept.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from benchmark.config import ConfigError, MethodConfig, TrainConfig
from benchmark.data.manifest import MANIFEST, file_sha256, load_manifest
from benchmark.data.store import atomic_write, disk_full_named, staged_folder
from benchmark.methods import build_method
from benchmark.methods.interface import ClipsGradients, CountsInEpochs
from benchmark.records import RunRecord, Status, write_record
from benchmark.provenance import git_revision, json_hash
from benchmark.training import checkpoint
from benchmark.training.checkpoint import TrainingState, save_torch, write_files
from benchmark.training.data import SliceSet, batches, epoch_steps
from benchmark.training.ema import EMAWeights


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's ``batch_size`` slices (the global batch) are drawn: ``world_size`` processes,
    each ``accumulation`` micro-batches of ``micro`` slices. ``micro`` is the process's share, or
    ``train.micro_batch_size`` where the share is larger (the most one device holds in one pass)."""
    batch_size: int
    world_size: int
    micro: int
    accumulation: int

    @classmethod
    def of(cls, cfg: TrainConfig, world_size: int, method: str) -> "BatchPlan":
        """The plan of ``cfg`` on ``world_size`` processes; a batch that does not split evenly is a
        :class:`ConfigError` naming the key."""
        share, rest = divmod(cfg.batch_size, world_size)
        if rest:
            raise ConfigError(f"train.batch_size of {method}: the global batch {cfg.batch_size} does not divide "
                              f"among {world_size} processes; give a multiple of {world_size}")
        micro = share if cfg.micro_batch_size is None else min(share, cfg.micro_batch_size)
        if share % micro:
            raise ConfigError(f"train.micro_batch_size of {method}: {micro} does not divide the {share} slices "
                              f"each process takes of the global batch ({cfg.batch_size} / {world_size} "
                              f"process(es))")
        return cls(cfg.batch_size, world_size, micro, share // micro)

    def shards(self, rank: int) -> range:
        """The shard index of each micro-batch of process ``rank`` (the last argument of ``batch_at``)."""
        return range(rank * self.accumulation, (rank + 1) * self.accumulation)


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
    info = load_manifest(processed).dataset
    data = SliceSet.from_store(processed)   # memory-mapped: bounded memory whatever the dataset's size
    manifest_sha = file_sha256(processed / MANIFEST)
    # the length as given (steps or epochs): a profile in steps keeps the fingerprint of its checkpoints
    given = {k: v for k, v in dataclasses.asdict(cfg).items() if v is not None}
    resolved = {"method": method, "model": mcfg.model, "train": given,
                "predict": dataclasses.asdict(mcfg.predict), "manifest_sha256": manifest_sha}
    fingerprint = json_hash({k: v for k, v in resolved.items() if k != "predict"})

    # The schedule counts optimizer steps: Accelerate would otherwise step it once per process at every step
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                              step_scheduler_with_optimizer=False)
    plan = BatchPlan.of(cfg, accelerator.num_processes, method)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_method(method, info.channels, info.num_classes, mcfg.model)
    clip = model.grad_clip if isinstance(model, ClipsGradients) else None   # (norm type, max norm), FlowSDF's
    steps = cfg.steps if cfg.epochs is None else epoch_steps(cfg.epochs, len(data), cfg.batch_size)
    if isinstance(model, CountsInEpochs):   # a method whose own stages are counted in epochs (ATFM)
        if plan.accumulation > 1:   # it counts its stages in calls of its loss, one per optimizer step
            raise ConfigError(f"train.micro_batch_size of {method}: {method} counts its training stages in calls "
                              f"of its loss, so it cannot accumulate gradients ({plan.accumulation} micro-batches "
                              f"a step); leave micro_batch_size unset")
        model.set_epoch_length(lambda epochs: epoch_steps(epochs, len(data), cfg.batch_size))
    layout = torch.channels_last if cfg.channels_last else torch.preserve_format
    if cfg.channels_last:
        to_channels_last(model)
    optimizer, notes = build_optimizer(model, cfg, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))
    trainable, optimizer, scheduler = accelerator.prepare(LossForward(model), optimizer, scheduler)
    forward = torch.compile(trainable) if cfg.compile else trainable
    ema = EMAWeights(model, cfg.ema_decay)   # after prepare: on the model's device
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
    reads = batches(data, plan.micro, cfg.seed, range(start, stop), plan.shards(accelerator.process_index),
                    cfg.loader_workers, pin_memory=accelerator.device.type == "cuda")
    for step, micro_batches in zip(bar, reads):
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for m, (images, labels, g) in enumerate(micro_batches):
            images = images.to(accelerator.device, memory_format=layout, non_blocking=True)
            labels = labels.to(accelerator.device, non_blocking=True)
            # DDP all-reduces the gradients once a step, in the backward pass of the last micro-batch
            last = m == plan.accumulation - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(trainable):
                with accelerator.autocast():
                    loss = forward(images, labels, g)
                accelerator.backward(loss / plan.accumulation)
            losses.append(loss.detach().float())   # a bf16 loss (autocast) averaged in float32
        if clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), clip[1], norm_type=clip[0])
        optimizer.step()
        scheduler.step()
        ema.update(model)
        mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        history.append({"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                        "seconds": round(time.perf_counter() - t0, 3)})
        bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == stop:
            checkpoint.save(accelerator, ckpt_dir, step + 1, state,
                            {"fingerprint": fingerprint, "config": resolved, "history": history}, cfg.keep_checkpoints)
    bar.close()

    weights = {k: v.cpu() for k, v in ema.weights().items()}
    meta = RunRecord(Status.PARTIAL if stop < steps else Status.OK, method=method, dataset=info.name,
                     steps=stop, epochs=cfg.epochs, slices_per_epoch=len(data) if cfg.epochs is not None else None,
                     batch_size=plan.batch_size, micro_batch_size=plan.micro, accumulation=plan.accumulation,
                     world_size=plan.world_size, device=str(accelerator.device),
                     mixed_precision=accelerator.mixed_precision, notes=notes or None,
                     seconds=history[-1]["seconds"] if history else 0.0,
                     final_loss=history[-1]["loss"] if history else None,
                     model_params=mcfg.model, train=resolved["train"], predict=resolved["predict"],
                     in_channels=info.channels, num_classes=info.num_classes, fingerprint=fingerprint,
                     manifest_sha256=manifest_sha, git_revision=git_revision(),
                     weights_sha256=weights_hash(weights))
    if accelerator.is_main_process and stop == steps:
        payload = {"method": method, "in_channels": info.channels, "num_classes": info.num_classes,
                   "model_params": mcfg.model, "state_dict": weights}
        with disk_full_named(out / "model"), staged_folder(out / "model") as tmp:
            write_files(tmp, out / "model", {
                "model.pt": lambda p: save_torch(p, payload),
                "meta.json": lambda p: write_record(p, meta),
                MANIFEST: lambda p: shutil.copy2(processed / MANIFEST, p)})  # the data contract beside the weights
        with disk_full_named(out / "loss.csv"):
            write_loss_csv(out / "loss.csv", history)
    accelerator.wait_for_everyone()
    return meta


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's tensors in key order: identifies a set of weights."""
    h = hashlib.sha256()
    for k, v in state_dict.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def to_channels_last(model: torch.nn.Module) -> None:
    """The 2D convolutions' weights in channels-last layout, in place. Not ``model.to(memory_format=...)``, which
    re-strides every 4-D parameter: MedSegDiff's FF-Parser weight must keep its last dimension contiguous."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.to(memory_format=torch.channels_last)


OPTIMIZERS = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}   # train.optimizer -> its class
FUSED_DEVICES = ("cuda", "cpu")    # where both have a fused kernel (on the CPU about 12% off MedFlowSeg's 32 px step)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                    device: torch.device) -> tuple[torch.optim.Optimizer, list[str]]:
    """``cfg.optimizer`` over every parameter of ``model`` (AdamW, or SGD with ``cfg.momentum``), with its fused
    kernel when ``cfg.fused_optimizer`` and the device is a GPU or the CPU (PyTorch has both); the notes say when
    the setting was ignored (another device)."""
    cls = OPTIMIZERS[cfg.optimizer]
    fused = cfg.fused_optimizer and device.type in FUSED_DEVICES
    notes = [f"fused_optimizer ignored on {device.type}: {cls.__name__}'s fused kernel runs on "
             f"{' and '.join(FUSED_DEVICES)} only"] if cfg.fused_optimizer and not fused else []
    extra = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True if fused else None,
               **extra), notes


def lr_factor(cfg: TrainConfig, steps: int):
    """The learning rate of optimizer step ``s`` (0-based) of ``steps``, as a factor of ``cfg.lr`` (LambdaLR's
    lambda): a linear warm-up over ``cfg.warmup_steps``, times 1 ("constant") or (1 - s / steps)^poly_power
    ("poly")."""
    warmup = max(1, cfg.warmup_steps)
    if cfg.schedule == "constant":
        return lambda s: min(1.0, (s + 1) / warmup)
    return lambda s: min(1.0, (s + 1) / warmup) * (1.0 - s / steps) ** cfg.poly_power


class LossForward(torch.nn.Module):
    """Routes ``forward`` to the method's ``loss``: DDP synchronises gradients only for
    computations that pass through the wrapped module's forward."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images, labels, generator):
        return self.method.loss(images, labels, generator)

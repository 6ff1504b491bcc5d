"""The compute plan of a profile (``segbench plan``): for every trained (dataset, method) pair of the pipeline
(``Config.pairs()``), and again for each of its extra training seeds (``seeds``), its training length and the
GPU-hours it will take on a named GPU, before any compute.

Per row: the training split in slices (from the processed dataset's manifest when it is here, else from the
release's published split, ``PUBLISHED_SPLIT`` of its module in :mod:`benchmark.data.real`, else unknown),
epochs and steps (steps = ceil(epochs x slices / global batch), :func:`benchmark.training.data.epoch_steps`;
nnU-Net: its epochs x iterations per epoch), the global batch, the test protocol (cases x samples x network
evaluations per sample), GPU-hours of training and of sampling, and the peak memory of one process.

Estimates come from the measured table (:mod:`benchmark.steptable`). A method measured on the GPU at the
profile's precision and size uses its own measurements (a fit where its batch was not measured). Any other
method is scaled from the first method measured there by the ratio of fvcore training FLOPs per image
(:func:`training_flops_per_image`), and its row says "scaled from FLOPs"; its memory is not estimated. Where
the table has nothing for the GPU, precision or size, or the training length is unknown, the hours are blank
and the row says why: nothing is invented.

Conventions, ours: a training step of a global batch G on P processes with micro-batches of m images takes
ceil(G / P / m) times the measured step at batch m (each micro-step is counted as a whole step, optimizer
included: a slight overestimate); sampling takes the test slices x samples x evaluations, at the profile's
predict batch, times the measured evaluation. Wall hours on N GPUs: the total over N, but never less than the
longest training on its own processes.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from benchmark import paths
from benchmark.config import Config, MethodConfig
from benchmark.data.store import write_json
from benchmark.provenance import json_hash
from benchmark.steptable import StepTable

FLOPS_PER_MAC = 2
BACKWARD_FACTOR = 3   # a training step's FLOPs are 3x its forward's: the backward costs about twice the forward
FLOPS_CACHE = Path(".segbench") / "plan_flops.json"   # git-ignored: FLOPs already counted, per configuration
PRECISION = {"no": "fp32", "bf16": "bf16"}   # train.mixed_precision -> the table's precision (fp16: bf16)
# the image the table's measurements used (benchmarks/step_times.yaml's header): FLOPs are counted on the same
MEASURED_CHANNELS, MEASURED_CLASSES = 1, 3


@dataclass(frozen=True)
class Split:
    """Training slices, test cases and test slices of a dataset (None: unknown), and where they come from."""
    train_slices: int | None
    test_cases: int | None
    test_slices: int | None
    source: str


def dataset_split(dataset: str, cfg: Config, processed: Path | None = None) -> Split:
    """From ``processed``'s manifest (default ``data/processed/DATASET``) when it is there, else the release's
    published split under ``data.splits: standard``, less the validation share where the suite draws it."""
    from benchmark.data.manifest import load_manifest
    folder = paths.processed(dataset) if processed is None else processed
    if (folder / "manifest.json").is_file():
        m = load_manifest(folder)
        if m.status == "ok":
            test = m.split("test")
            return Split(sum(c.n_slices for c in m.split("train")), len(test), sum(c.n_slices for c in test),
                         f"manifest {folder / 'manifest.json'}")
    published = _published(dataset)
    if published is None or cfg.data.splits != "standard":
        why = "no published split declared" if published is None else "data.splits is seeded"
        return Split(None, None, None, f"unknown: no manifest here and {why}")
    train, approx = published.train_slices, ""
    if published.val_from_train:
        share = cfg.data.split.get("val", 0) / (cfg.data.split.get("train", 0) + cfg.data.split.get("val", 0))
        train -= round(share * published.train_slices)
        approx = "" if published.slice_subjects else ", about (validation is drawn by subject)"
    return Split(train, published.test_cases, published.test_slices, f"published split{approx}: {published.source}")


def _published(dataset: str):
    from benchmark.data.registry import dataset_source
    module = getattr(dataset_source(dataset), "module", None)
    return getattr(module, "PUBLISHED_SPLIT", None)


class _Loss(torch.nn.Module):
    """``method.loss`` as a module fvcore can trace."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.method.loss(images, labels, torch.Generator(images.device).manual_seed(0))


def first_stage_per_epoch(method: torch.nn.Module) -> None:
    """Count a method's epochs (``CountsInEpochs``: ATFM's prior stage) as one step each, so that the first
    training steps of a measurement belong to its first stage, on which the FLOPs are counted."""
    from benchmark.methods.interface import CountsInEpochs
    if isinstance(method, CountsInEpochs):
        method.set_epoch_length(lambda epochs: max(1, math.ceil(epochs)))


def training_flops_per_image(method: torch.nn.Module, in_channels: int, num_classes: int, size: int) -> float:
    """FLOPs of one training image: 3 x the fvcore forward MACs of ``loss`` on one random image
    ``(1, in_channels, size, size)``, x 2 FLOPs per MAC. The loss is the method's first training step
    (ATFM: its prior's stage)."""
    from benchmark.complexity import count_macs
    first_stage_per_epoch(method)
    device = next(method.parameters()).device
    g = torch.Generator(device).manual_seed(0)
    images = torch.randn(1, in_channels, size, size, generator=g, device=device)
    labels = torch.randint(0, num_classes, (1, size, size), generator=g, device=device)
    macs, _, _ = count_macs(_Loss(method.train()), (images, labels))
    return BACKWARD_FACTOR * FLOPS_PER_MAC * macs


@dataclass
class Row:
    dataset: str
    method: str
    split: Split
    epochs: float | None
    steps: int | None
    global_batch: int | None
    micro_batch: int | None           # images per forward of one process
    test: str                         # "cases x samples x evaluations"
    train_hours: float | None
    sample_hours: float | None
    memory_gib: float | None
    estimate: str                     # how the hours were had, or why there are none
    seed: int | None = None           # an extra training seed of the pair (None: its main run)

    @property
    def hours(self) -> float | None:
        return None if self.train_hours is None else self.train_hours + (self.sample_hours or 0.0)


def processes(launcher: str) -> int:
    """Processes per training under the profile's launcher: its ``--num_processes``, else 1."""
    m = re.search(r"--num_processes[ =](\d+)", launcher)
    return int(m.group(1)) if m else 1


def batches(train, procs: int, method: str) -> tuple[int, int, int]:
    """(global batch, micro-batch per process, micro-steps per step), as the trainer splits ``train.batch_size``
    (:class:`benchmark.training.trainer.BatchPlan`; a batch that does not split is its ConfigError)."""
    from benchmark.training.trainer import BatchPlan
    plan = BatchPlan.of(train, procs, method)
    return plan.batch_size, plan.micro, plan.accumulation


class Planner:
    """Rows of one profile on one GPU; FLOPs counts and built methods are cached per method."""

    def __init__(self, cfg: Config, table: StepTable, gpu: str, cache: Path | None = FLOPS_CACHE):
        self.cfg, self.table, self.gpu = cfg, table, gpu
        self.procs = processes(cfg.launcher)
        self._flops: dict[str, float] = {}
        self._methods: dict[str, torch.nn.Module] = {}
        self.cache = cache
        self._counted = _read_cache(cache)

    def method(self, name: str) -> torch.nn.Module:
        from benchmark.methods import build_method
        if name not in self._methods:
            torch.manual_seed(0)
            self._methods[name] = build_method(name, MEASURED_CHANNELS, MEASURED_CLASSES,
                                               self.cfg.method_config(name).model)
        return self._methods[name]

    def flops(self, name: str) -> float:
        """Training FLOPs per image of ``name`` as configured: counted once per configuration (fvcore at the
        paper's size takes minutes), then read from the cache file."""
        if name not in self._flops:
            key = json_hash({"method": name, "model": self.cfg.method_config(name).model, "size": self.cfg.data.size,
                             "channels": MEASURED_CHANNELS, "classes": MEASURED_CLASSES})
            if key not in self._counted:
                self._counted[key] = training_flops_per_image(self.method(name), MEASURED_CHANNELS,
                                                              MEASURED_CLASSES, self.cfg.data.size)
                if self.cache is not None:
                    self.cache.parent.mkdir(parents=True, exist_ok=True)
                    write_json(self.cache, self._counted)
            self._flops[name] = self._counted[key]
        return self._flops[name]

    def row(self, dataset: str, name: str) -> Row:
        from benchmark.cli import _trains_itself
        mc = self.cfg.method_config(name)
        split = dataset_split(dataset, self.cfg)
        if _trains_itself(name):
            return self._self_trained(dataset, name, mc, split)
        glob, micro, accumulation = batches(mc.train, self.procs, name)
        steps = mc.train.steps
        if steps is None and split.train_slices is not None:
            from benchmark.training.data import epoch_steps
            steps = epoch_steps(mc.train.epochs, split.train_slices, glob)
        sampler = self.method(name).default_sampler
        if sampler is None:
            samples, nfe = 1, 1
        else:
            samples, nfe = mc.predict.n_samples, None if sampler.adaptive else sampler.steps
        test = f"{_n(split.test_cases)} x {samples} x {nfe or 'adaptive'}"
        row = Row(dataset, name, split, mc.train.epochs, steps, glob, micro, test, None, None, None, "")
        # fp16 runs on the tensor cores at bf16's peak: timed by the bf16 measurements, and the row says so
        precision = "bf16" if mc.train.mixed_precision == "fp16" else PRECISION[mc.train.mixed_precision]
        where = f"{self.gpu}, {precision}, {self.cfg.data.size} px"
        if self.gpu not in self.table.gpus:
            row.estimate = f"no entry for GPU {self.gpu} in the step-time table"
            return row
        step = self._step(name, precision, micro, where)
        if step is None:
            row.estimate = f"no step-time entry at {where}"
            return row
        seconds, memory, how = step
        row.memory_gib = memory
        row.estimate = how + ("; fp16 timed as bf16" if mc.train.mixed_precision == "fp16" else "")
        oom = self.table.out_of_memory_at(name, self.gpu, precision, self.cfg.data.size, micro)
        if oom is not None:
            row.estimate += f"; batch {oom.batch} ran out of memory ({oom.source})"
        elif memory is not None and memory > self.table.gpus[self.gpu].memory_gib:
            row.estimate += f"; {memory:.0f} GiB exceeds the {self.table.gpus[self.gpu].memory_gib:g} GiB card"
        if steps is None:
            row.estimate = f"steps unknown: its epochs need the training slices; {row.estimate}"
            return row
        row.train_hours = steps * accumulation * seconds * self.procs / 3600
        per_eval = self._evaluation(name, precision, mc.predict.batch_size, seconds / micro)
        if split.test_slices is not None and nfe is not None:
            row.sample_hours = split.test_slices * samples * nfe * per_eval / 3600
        return row

    def _step(self, name: str, precision: str, micro: int, where: str):
        """(seconds per micro-step, peak GiB or None, how) or None when nothing is measured at ``where``."""
        size = self.cfg.data.size
        fit = self.table.training_fit(name, self.gpu, precision, size)
        if fit is not None:
            seconds, memory = fit.at(micro)
            return seconds, memory, f"{fit.describe(micro)} ({fit.source})"
        measured = self.table.measured_methods(self.gpu, precision, size)
        if not measured:
            return None
        ref = measured[0]
        ratio = self.flops(name) / self.flops(ref)
        ref_fit = self.table.training_fit(ref, self.gpu, precision, size)
        seconds, _ = ref_fit.at(micro)
        return seconds * ratio, None, f"scaled from FLOPs: {ratio:.2f} x {ref} at {where} ({ref_fit.source})"

    def _evaluation(self, name: str, precision: str, batch: int, train_per_image: float) -> float:
        """Seconds of one network evaluation of one slice: measured (fit) for ``name``, else a third of its
        training step per image (one forward of the three a training step costs)."""
        fit = self.table.evaluation_fit(name, self.gpu, precision, self.cfg.data.size)
        if fit is None:
            return train_per_image / BACKWARD_FACTOR
        return fit.at(batch)[0] / batch

    def _self_trained(self, dataset: str, name: str, mc: MethodConfig, split: Split) -> Row:
        """nnU-Net: its own epochs x iterations for each of its folds; it plans its network and batch, so no
        estimate."""
        epochs, iterations = mc.model.get("epochs"), mc.model.get("iterations_per_epoch")
        folds = mc.model.get("folds", 1)
        steps = folds * epochs * iterations if epochs and iterations else None
        return Row(dataset, name, split, epochs, steps, None, None, f"{_n(split.test_cases)} x {folds} x 1", None,
                   None, None, f"not estimated: it plans its own network and batch, and none of it is measured; "
                               f"steps: {folds} fold(s) x {epochs} epochs x {iterations} iterations")


def _n(x) -> str:
    return "unknown" if x is None else f"{x:,}"


def _read_cache(path: Path | None) -> dict[str, float]:
    """The FLOPs counted before (configuration hash -> FLOPs); an unreadable cache is counted again."""
    try:
        raw = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))} if isinstance(raw, dict) else {}


def plan(cfg: Config, gpu: str, table: StepTable, cache: Path | None = FLOPS_CACHE) -> list[Row]:
    planner = Planner(cfg, table, gpu, cache)
    rows = [planner.row(d, m) for d, m in cfg.pairs() if cfg.trained_as(m) == m]   # a head row trains nothing
    return rows + [replace(r, seed=s) for r in rows for s in cfg.seeds_of(r.dataset, r.method)]


def _h(x: float | None) -> str:
    return "" if x is None else f"{x:,.1f}"


def render(rows: list[Row], cfg: Config, gpu: str, gpus: int, table: StepTable) -> str:
    """The plan as Markdown: one row per pair, then the totals and each row's source."""
    procs = processes(cfg.launcher)
    head = (f"Compute plan: profile {cfg.profile} ({cfg.source}), {cfg.data.size} px, GPU {gpu}"
            + (f" ({table.gpus[gpu].name})" if gpu in table.gpus else " (no entry in the step-time table)")
            + f", {procs} process(es) per training\n\n")
    lines = ["| dataset | method | train slices | epochs | steps | global batch | micro-batch | test cases x samples x "
             "NFE | train GPU-h | sampling GPU-h | memory per process (GiB) | estimate |", "|" + "---|" * 12]
    for r in rows:
        memory = "" if r.memory_gib is None else f"{r.memory_gib:.1f}"
        method = r.method if r.seed is None else f"{r.method} (seed {r.seed})"
        lines.append(f"| {r.dataset} | {method} | {_n(r.split.train_slices)} | "
                     f"{'' if r.epochs is None else f'{r.epochs:g}'} | {_n(r.steps) if r.steps else 'unknown'} | "
                     f"{r.global_batch or ''} | {r.micro_batch or ''} | {r.test} | {_h(r.train_hours)} | "
                     f"{_h(r.sample_hours)} | {memory} | {r.estimate} |")
    trained = [r for r in rows if r.train_hours is not None]
    sampled = [r for r in rows if r.sample_hours is not None]
    train_total, sample_total = sum(r.train_hours for r in trained), sum(r.sample_hours for r in sampled)
    total = train_total + sample_total
    longest = max((r.hours / procs for r in trained), default=0.0)
    wall = max(total / gpus, longest)
    scaled = sum(r.hours for r in trained if "scaled from FLOPs" in r.estimate)
    tail = [f"\nTotal: {total:,.1f} GPU-hours on {gpu}: training {train_total:,.1f} over {len(trained)} of "
            f"{len(rows)} rows, sampling {sample_total:,.1f} over {len(sampled)} of {len(rows)} rows (a blank is "
            f"not counted); {wall:,.1f} wall hours on {gpus} GPU(s) (the total over {gpus}, at least the longest "
            f"training).", f"Of it scaled from FLOPs: {scaled:,.1f} GPU-hours; the rest from measured steps "
            f"(benchmarks/step_times.yaml).", "", "Training slices:"]
    for d in dict.fromkeys(r.dataset for r in rows):
        tail.append(f"- {d}: {next(r.split.source for r in rows if r.dataset == d)}")
    return head + "\n".join(lines) + "\n" + "\n".join(tail) + "\n"

"""Print how efficiently each method trains and samples at its paper configuration on this GPU.

    python benchmarks/gpu_efficiency.py [--params profiles/paper.yaml] [--methods NAME ...] [--gpu h100]
        [--bf16] [--channels-last] [--compile] [--fused-adamw] [--checkpointing] [--batch-size B] [--steps 10]
        [--sample-mode eager|compile|cuda-graph] [--no-sampling] [--device cuda|cpu] [--smoke]

Per method (random inputs, 1 image channel, 3 classes, the profile's size; batch: the method's
``train.batch_size`` unless ``--batch-size``):

- training: images/s of one AdamW step, peak memory per image (CUDA), and model FLOPs utilisation (MFU) =
  training FLOPs per step / step time / the GPU's dense peak for the dtype. Training FLOPs are fvcore's
  forward count of the method's loss x 3 (the backward taken as twice the forward) x 2 FLOPs per MAC
  (:func:`benchmark.plan.training_flops_per_image`); recomputation by ``--checkpointing`` is not counted,
  as MFU counts the model's FLOPs only. Peaks (``benchmarks/step_times.yaml``, with their datasheets): bf16
  for ``--bf16``; TF32 otherwise, since PyTorch runs fp32 convolutions on TF32 tensor cores by default.
- sampling: images/s of the whole protocol, ``predict.n_samples`` samples x the default sampler's steps
  (MedFlowSeg: 10 x 50) on ``predict.batch_size`` images; ``--sample-mode compile`` compiles the per-step
  network call (``velocity``), ``cuda-graph`` captures it as a CUDA graph and replays it.

Switches: ``--channels-last`` (NHWC weights and inputs), ``--compile`` (``torch.compile`` of the loss),
``--fused-adamw`` (``AdamW(fused=True)``), ``--checkpointing`` (MedFlowSeg's ``checkpointing``: the UNet
levels' activations recomputed in the backward), ``--bf16`` (bf16 autocast). ``--smoke``: 32 px, batch 2,
2 timed steps, 2 samples of 2 steps, on CPU unless ``--device`` says otherwise (the test runs this).

It ends with the exact command to paste into benchmarks/NOTES.md and, on CUDA, the rows for
benchmarks/step_times.yaml.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import shlex
import sys

import torch

from benchmark.config import load_config
from benchmark.methods import build_method
from benchmark.methods.interface import TrainsItself
from benchmark.methods.registry import method_class
from benchmark.plan import first_stage_per_epoch, training_flops_per_image
from benchmark.steptable import load_step_table
from method_step_time import timed   # this folder, on sys.path when the script runs

CHANNELS, CLASSES = 1, 3      # as the measurements of benchmarks/step_times.yaml


def autocast(args):
    if not args.bf16:
        return contextlib.nullcontext()
    # a CUDA graph must not replay casts autocast cached during capture
    return torch.autocast(args.device, dtype=torch.bfloat16, cache_enabled=args.sample_mode != "cuda-graph")


def build(name: str, args, cfg, checkpointing: bool) -> torch.nn.Module:
    params = dict(cfg.method_config(name).model)
    if checkpointing:
        params["checkpointing"] = True
    torch.manual_seed(0)
    method = build_method(name, CHANNELS, CLASSES, params).to(args.device)
    first_stage_per_epoch(method)     # ATFM: its prior's stage, as the FLOPs count
    return method.to(memory_format=torch.channels_last) if args.channels_last else method


def inputs(batch: int, args):
    g = torch.Generator(args.device).manual_seed(0)
    images = torch.randn(batch, CHANNELS, args.size, args.size, device=args.device, generator=g)
    labels = torch.randint(0, CLASSES, (batch, args.size, args.size), device=args.device, generator=g)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


def train_figures(name: str, args, cfg, peak_tflops: float | None) -> dict:
    """images/s, peak GiB per image (CUDA), MFU (with a peak) of one training step."""
    mc = cfg.method_config(name)
    batch = args.batch_size or mc.train.batch_size
    checkpointing = args.checkpointing and "checkpointing" in inspect.signature(method_class(name)).parameters
    method = build(name, args, cfg, checkpointing).train()
    flops = training_flops_per_image(build(name, args, cfg, False), CHANNELS, CLASSES, args.size) * batch
    opt = torch.optim.AdamW(method.parameters(), lr=mc.train.lr, fused=args.fused_adamw)
    loss_fn = torch.compile(method.loss) if args.compile else method.loss
    images, labels = inputs(batch, args)
    g = torch.Generator(args.device).manual_seed(0)

    def step():
        with autocast(args):
            loss = loss_fn(images, labels, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = timed(step, args.steps, args.device, warmup=args.warmup)
    except torch.OutOfMemoryError:
        return {"batch": batch, "error": "out of memory"}
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    return {"batch": batch, "step_s": seconds, "images_s": batch / seconds, "peak_gib": peak,
            "checkpointing": checkpointing, "tflops_step": flops / 1e12,
            "mfu": flops / seconds / (peak_tflops * 1e12) if peak_tflops else None}


class GraphedCall:
    """A per-step network call ``fn(x, t, cond)`` captured once as a CUDA graph and replayed: its inputs are
    copied into the captured ones (the condition only when a new one arrives, once per ``sample`` call)."""

    def __init__(self, fn):
        self.fn, self.graph, self.cond_id = fn, None, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond):
        if self.graph is None:
            self.x, self.t, self.cond = x.clone(), t.clone(), _clone(cond)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.fn(self.x, self.t, self.cond)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.fn(self.x, self.t, self.cond)
            self.cond_id = id(cond)
        if id(cond) != self.cond_id:
            for mine, new in zip(_tensors(self.cond), _tensors(cond)):
                mine.copy_(new)
            self.cond_id = id(cond)
        self.x.copy_(x)
        self.t.copy_(t)
        self.graph.replay()
        return self.out.clone()


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in _tensors(getattr(obj, f.name))]
    if isinstance(obj, (tuple, list)):
        return [t for x in obj for t in _tensors(x)]
    return []


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _clone(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(x) for x in obj)
    return obj


def sample_figures(name: str, args, cfg) -> dict:
    """images/s of the whole sampling protocol (samples x steps) on the predict batch."""
    mc = cfg.method_config(name)
    method = build(name, args, cfg, False).eval()
    sampler = method.default_sampler
    n = 1 if sampler is None else mc.predict.n_samples     # a deterministic network gives one sample
    if args.smoke and sampler is not None:
        sampler, n = dataclasses.replace(sampler, steps=2), 2
    mode = args.sample_mode if hasattr(method, "velocity") else "eager"   # the flow methods' per-step call
    if mode != "eager":
        method.velocity = (torch.compile(method.velocity) if args.sample_mode == "compile"
                           else GraphedCall(method.velocity))
    batch = 2 if args.smoke else mc.predict.batch_size
    images, _ = inputs(batch, args)
    g = torch.Generator(args.device).manual_seed(0)
    with torch.no_grad(), autocast(args):
        seconds = timed(lambda: method.sample(images, n, g, sampler), 1 if args.smoke else 3, args.device, warmup=1)
        nfe = method.sample(images, n, g, sampler).nfe
    return {"batch": batch, "samples": n, "nfe": sum(nfe), "seconds": seconds, "images_s": batch / seconds,
            "mode": mode}


def steps_here(name: str) -> bool:
    """Whether this script can time ``name``'s training step: not a method that trains itself (nnU-Net), and its
    module imports here (a GPU machine may lack an optional package such as nnunetv2; the skip is printed)."""
    try:
        cls = method_class(name)
    except ImportError as e:
        print(f"{name}: skipped: {e}", flush=True)
        return False
    return not (isinstance(cls, type) and issubclass(cls, TrainsItself))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="profiles/paper.yaml")
    p.add_argument("--methods", nargs="+", help="default: every method the profile trains (nnU-Net aside)")
    p.add_argument("--gpu", default="h100", help="the GPU's entry in benchmarks/step_times.yaml, for the peak")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda (cpu with --smoke)")
    for flag in ("bf16", "channels-last", "compile", "fused-adamw", "checkpointing", "smoke", "no-sampling"):
        p.add_argument(f"--{flag}", action="store_true")
    p.add_argument("--sample-mode", choices=["eager", "compile", "cuda-graph"], default="eager")
    p.add_argument("--batch-size", type=int, help="training batch (default: the method's train.batch_size)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (after 3 warm-ups)")
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if args.sample_mode == "cuda-graph" and args.device != "cuda":
        p.error("--sample-mode cuda-graph needs --device cuda")
    args.warmup = 1 if args.smoke else 3
    if args.smoke:
        args.batch_size, args.steps = 2, 2
    return args


def main(argv=None) -> None:
    args = parse(argv)
    cfg = load_config(args.params)
    args.size = 32 if args.smoke else cfg.data.size
    gpu = load_step_table().gpus.get(args.gpu)
    peak = None if args.device != "cuda" or gpu is None else gpu.peak_tflops["bf16" if args.bf16 else "tf32"]
    trained = [m for _, m in cfg.pairs() if cfg.trained_as(m) == m]     # a condition-head row trains nothing
    names = args.methods or [m for m in dict.fromkeys(trained) if steps_here(m)]
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {device}; peak {f'{peak:g} TFLOP/s ({gpu.source})' if peak else 'none (no MFU)'}; "
          f"{args.size} px; {'bf16 autocast' if args.bf16 else 'fp32 (TF32 convolutions)'}")
    rows = []
    for name in dict.fromkeys(names):
        torch.set_num_threads(cfg.method_config(name).train.threads)
        try:
            tr = train_figures(name, args, cfg, peak)
        except Exception as e:      # one method's failure is reported; the others are still measured
            print(f"{name}: failed: {type(e).__name__}: {e}", flush=True)
            continue
        if "error" in tr:
            print(f"{name}: train batch {tr['batch']}: {tr['error']}", flush=True)
            continue
        mem = f", {tr['peak_gib'] / tr['batch']:.2f} GiB per image" if tr["peak_gib"] else ""
        mfu = f", MFU {100 * tr['mfu']:.1f}%" if tr["mfu"] is not None else ""
        line = (f"{name}: train batch {tr['batch']}{' (checkpointing)' if tr['checkpointing'] else ''} "
                f"{1000 * tr['step_s']:.0f} ms, {tr['images_s']:.1f} images/s{mem}, "
                f"{tr['tflops_step']:.3g} TFLOP per step{mfu}")
        if not args.no_sampling:
            sa = sample_figures(name, args, cfg)
            line += (f" | sampling ({sa['mode']}) {sa['samples']} samples x {sa['nfe'] // sa['samples']} "
                     f"evaluations of {sa['batch']} images: {sa['seconds']:.2f} s, {sa['images_s']:.2f} images/s")
        print(line, flush=True)
        rows.append((name, tr))
    print("\nCommand (paste into benchmarks/NOTES.md):\n    python benchmarks/gpu_efficiency.py "
          + shlex.join(sys.argv[1:] if argv is None else argv))
    if args.device == "cuda" and not (args.checkpointing or args.compile or args.channels_last or args.fused_adamw):
        print("\nRows for benchmarks/step_times.yaml (source: the NOTES line that reports them):")
        for name, tr in rows:
            print(f"  - {{method: {name}, gpu: {args.gpu}, precision: {'bf16' if args.bf16 else 'fp32'}, "
                  f"size: {args.size}, batch: {tr['batch']}, step_s: {tr['step_s']:.3f}, "
                  f"peak_gib: {tr['peak_gib']:.1f}, source: \"benchmarks/NOTES.md:LINE\"}}")


if __name__ == "__main__":
    main()

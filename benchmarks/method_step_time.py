"""Print each configured method's training step time, throughput and network-evaluation time.

    python benchmarks/method_step_time.py [--params params.yaml] [--size 64] [--classes 4]
        [--methods NAME ...] [--device cpu|cuda] [--bf16] [--steps 10] [--batch-size B ...]

Uses the model parameters and batch size of each method in the parameters file, random
inputs, and the torch thread count of its train section. On CUDA it also prints the peak
memory of the training step. The paper-config GPU measurement of benchmarks/NOTES.md is

    python benchmarks/method_step_time.py --params profiles/paper.yaml --size 256 --methods medflowseg \\
        --device cuda --bf16

Its GPU figures are the measured rows of benchmarks/step_times.yaml, from which ``segbench plan`` estimates;
``benchmarks/gpu_efficiency.py`` adds FLOPs utilisation, the speed switches and sampling throughput.
"""
import argparse
import contextlib
import time

import torch

from benchmark.config import load_config
from benchmark.methods import build_method


def timed(fn, repeats: int, device: str, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def autocast(args):
    return torch.autocast(args.device, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()


def time_training(method, mc, batch: int, args) -> str:
    """One AdamW training step at ``batch``: ms, images/s and (CUDA) peak memory, or "out of memory"."""
    dev = args.device
    opt = torch.optim.AdamW(method.parameters(), lr=mc.train.lr)
    g = torch.Generator(dev).manual_seed(0)
    images = torch.randn(batch, 1, args.size, args.size, device=dev)
    labels = torch.randint(0, args.classes, (batch, args.size, args.size), device=dev)

    def step():
        with autocast(args):
            loss = method.loss(images, labels, g)
        opt.zero_grad()
        loss.backward()
        opt.step()

    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        train_s = timed(step, args.steps, dev)
    except torch.OutOfMemoryError:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        return f"train step (batch {batch}) out of memory on {total:.0f} GiB"
    finally:
        opt.zero_grad(set_to_none=True)
        del opt
    peak = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if dev == "cuda" else ""
    return f"train step (batch {batch}) {1000 * train_s:.0f} ms, {batch / train_s:.1f} images/s{peak}"


def time_sampling(method, mc, args) -> str:
    dev = args.device
    g = torch.Generator(dev).manual_seed(0)
    slices = torch.randn(mc.predict.batch_size, 1, args.size, args.size, device=dev)
    with torch.no_grad(), autocast(args):
        sample_s = timed(lambda: method.sample(slices, 1, g), 3, dev, warmup=1)
        nfe = method.sample(slices, 1, g).nfe[0]
    return (f"one sample of {mc.predict.batch_size} slices {1000 * sample_s:.0f} ms ({nfe} network "
            f"evaluations, {1000 * sample_s / nfe:.0f} ms each)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--methods", nargs="+", help="default: the parameters file's methods")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--batch-size", type=int, nargs="+",
                   help="training batch sizes to time (default: each method's train.batch_size)")
    args = p.parse_args()
    cfg = load_config(args.params)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {name}, {args.size}x{args.size}, {args.classes} classes, params {args.params}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}")
    for method_name in args.methods or cfg.methods:
        mc = cfg.method_config(method_name)
        torch.set_num_threads(mc.train.threads)
        torch.manual_seed(0)
        # a network built for one input side (UNETR, MedSegDiff, TransUNet, ...) is built for --size
        model = {k: args.size if k in ("img_size", "image_size") else v for k, v in mc.model.items()}
        try:
            method = build_method(method_name, 1, args.classes, model).to(args.device)
            params = sum(p.numel() for p in method.parameters())
            parts = [time_training(method, mc, b, args) for b in args.batch_size or [mc.train.batch_size]]
        except (ValueError, RuntimeError) as e:     # e.g. a window or a bottleneck too large for --size
            print(f"{method_name}: does not run at {args.size} px: {e}", flush=True)
            continue
        parts.append(time_sampling(method, mc, args))
        print(f"{method_name}: {params / 1e6:.2f} M params | " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()

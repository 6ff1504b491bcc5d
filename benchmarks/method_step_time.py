"""Print each configured method's training step time and network-evaluation time on this machine.

    python benchmarks/method_step_time.py [--params params.yaml] [--size 64] [--classes 4]

Uses the model parameters and batch size of each method in the parameters file, random
inputs, and the torch thread count of its train section.
"""
import argparse
import time

import torch

from benchmark.config import load_config
from benchmark.methods import build_method


def timed(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--classes", type=int, default=4)
    args = p.parse_args()
    cfg = load_config(args.params)
    print(f"device cpu, {args.size}x{args.size}, {args.classes} classes, params {args.params}")
    for name in cfg.methods:
        mc = cfg.method_config(name)
        torch.set_num_threads(mc.train.threads)
        torch.manual_seed(0)
        method = build_method(name, 1, args.classes, mc.model)
        opt = torch.optim.AdamW(method.parameters(), lr=mc.train.lr)
        g = torch.Generator().manual_seed(0)
        b = mc.train.batch_size
        images = torch.randn(b, 1, args.size, args.size)
        labels = torch.randint(0, args.classes, (b, args.size, args.size))

        def step():
            loss = method.loss(images, labels, g)
            opt.zero_grad()
            loss.backward()
            opt.step()

        train_ms = 1000 * timed(step, 10)
        slices = torch.randn(mc.predict.batch_size, 1, args.size, args.size)
        with torch.no_grad():
            sample_s = timed(lambda: method.sample(slices, 1, g), 3, warmup=1)
        params = sum(p.numel() for p in method.parameters())
        print(f"{name}: {params / 1e6:.2f} M params | train step (batch {b}) {train_ms:.0f} ms | "
              f"one sample of {mc.predict.batch_size} slices {1000 * sample_s:.0f} ms "
              f"({method.nfe} network evaluations, {1000 * sample_s / method.nfe:.0f} ms each)")


if __name__ == "__main__":
    main()

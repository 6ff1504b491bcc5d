"""Parameters and multiply-adds of MedFlowSeg and its ablations at the paper configuration.

Counts one 256x256 image through the paper's protocol (50 Euler steps x 10 samples) with
fvcore, FFTs and fused attention included (``benchmark.complexity``). Runs on CPU in about a
minute; prints a Markdown table.

    python benchmarks/complexity.py [--size 256] [--in-channels 3] [--classes 3] [--samples 10] [--steps 50]
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmark.complexity import method_complexity
from benchmark.methods import build_method

METHODS = ["medflowseg-backbone", "medflowseg-sa", "medflowseg-dbsa", "medflowseg-fa", "medflowseg-nomod",
           "medflowseg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--in-channels", type=int, default=3, help="3: RGB fundus (REFUGE-2, the paper's Table 4)")
    ap.add_argument("--classes", type=int, default=3, help="3: background, disc, cup")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{args.size}x{args.size}, {args.in_channels} image channels, {args.classes} classes; protocol "
          f"{args.samples} samples x {args.steps} Euler steps; fvcore MACs (1 multiply-add = 1), FFT and attention counted\n")
    print("| method | params (M) | GMACs fixed (condition network) | GMACs per evaluation | GMACs protocol | "
          "of which FFT per evaluation | of which attention per evaluation |")
    print("|---|---|---|---|---|---|---|")
    uncounted = set()
    for name in args.methods:
        t0 = time.perf_counter()
        m = build_method(name, args.in_channels, args.classes, {"steps": args.steps})
        c = method_complexity(m, args.in_channels, args.size, args.samples)
        fft = sum(v for k, v in c.by_operator.items() if k.startswith("fft_"))
        attn = c.by_operator.get("scaled_dot_product_attention", 0.0)
        print(f"| {name} | {c.params / 1e6:.1f} | {c.macs_fixed / 1e9:.1f} | {c.macs_per_evaluation / 1e9:.1f} | "
              f"{c.macs_protocol / 1e9:.0f} | {fft / 1e9:.3f} | {attn / 1e9:.3f} |  <!-- {time.perf_counter() - t0:.0f} s -->")
        uncounted |= set(c.uncounted)
    print(f"\nuncounted (elementwise) operators: {', '.join(sorted(uncounted))}")


if __name__ == "__main__":
    main()

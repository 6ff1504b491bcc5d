"""Parameters and multiply-adds of methods as a profile configures them.

Counts one image through each method's sampling protocol (its ``predict.n_samples`` samples at its
configured steps) with fvcore, FFTs and fused attention included (``benchmark.complexity``), and
prints a Markdown table. Defaults: the paper profile's MedFlowSeg and ablation variants at 256x256,
3 image channels and 3 classes (REFUGE-2, the paper's Table 4); about a minute on CPU.

    python benchmarks/complexity.py [--params profiles/paper.yaml] [--size N] [--in-channels 3] [--classes 3]
        [--methods NAME ...]

``--size`` defaults to the profile's ``data.size`` and ``--methods`` to its ``table4.methods``. A method
the profile does not configure is built with its class defaults. The evaluations per sample are
counted by one untraced sampling call at the configured steps, which dominates the time for methods
of many steps at 256 px.
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmark.complexity import method_complexity
from benchmark.config import load_config
from benchmark.methods import build_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="profiles/paper.yaml")
    ap.add_argument("--size", type=int)
    ap.add_argument("--in-channels", type=int, default=3, help="3: RGB fundus (REFUGE-2, the paper's Table 4)")
    ap.add_argument("--classes", type=int, default=3, help="3: background, disc, cup")
    ap.add_argument("--methods", nargs="+")
    args = ap.parse_args()
    cfg = load_config(args.params)
    size = args.size or cfg.data.size
    methods = args.methods or list(cfg.table4.methods)
    torch.manual_seed(0)
    print(f"{args.params}: {size}x{size}, {args.in_channels} image channels, {args.classes} classes; each method's "
          f"protocol as configured; fvcore MACs (1 multiply-add = 1), FFT and attention counted\n")
    print("| method | params (M) | GMACs fixed | GMACs per sample (besides evaluations) | GMACs per evaluation | "
          "samples x evaluations | GMACs protocol | of which FFT per evaluation | of which attention per evaluation |")
    print("|---|---|---|---|---|---|---|---|---|")
    uncounted = set()
    for name in methods:
        t0 = time.perf_counter()
        mcfg = cfg.method.get(name)
        m = build_method(name, args.in_channels, args.classes, mcfg.model if mcfg else {})
        c = method_complexity(m, args.in_channels, size, mcfg.predict.n_samples if mcfg else 1)
        fft = sum(v for k, v in c.by_operator.items() if k.startswith("fft_"))
        attn = c.by_operator.get("scaled_dot_product_attention", 0.0)
        print(f"| {name} | {c.params / 1e6:.3g} | {c.macs_fixed / 1e9:.3g} | {c.macs_per_sample / 1e9:.3g} | "
              f"{c.macs_per_evaluation / 1e9:.3g} | {c.samples} x {c.evaluations_per_sample} | "
              f"{c.macs_protocol / 1e9:.4g} | {fft / 1e9:.3g} | {attn / 1e9:.3g} |  "
              f"<!-- {time.perf_counter() - t0:.0f} s -->")
        uncounted |= set(c.uncounted)
    print(f"\nuncounted (elementwise) operators: {', '.join(sorted(uncounted))}")


if __name__ == "__main__":
    main()

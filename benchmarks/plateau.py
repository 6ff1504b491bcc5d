"""Is each method trained to the plateau of its scale? Two checks on the runs of a profile.

    python benchmarks/plateau.py [--params params.yaml] [--double DATASET/METHOD ...] [--work DIR]

1. The loss curve (every trained pair with ``runs/DATASET/METHOD/loss.csv``): the mean training loss over the
   last eighth of the steps against the eighth before it; "flat" when it fell by less than ``--flat`` (5%) of
   its level. A flow or diffusion loss is noisy from step to step (a random time each draw), so windows, not
   points, are compared.
2. ``--double``: the pair trained again with twice its steps (in ``--work``, default a temporary folder; the
   profile's other settings unchanged), predicted and scored like the pipeline; prints the change of its mean
   test Dice against ``results/DATASET/METHOD/evaluation.json``. The issue's criterion: under 2 points.

Run from the project root after ``dvc repro``. Prints one line per pair; the figures go to benchmarks/NOTES.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import pandas as pd

from benchmark import paths
from benchmark.config import load_config
from benchmark.records import EvaluationRecord, read_record


def flatness(loss: pd.Series) -> float | None:
    """(mean of the second-to-last eighth - mean of the last eighth) / the former; None under 16 points."""
    n = len(loss) // 8
    if n < 2:
        return None
    before, last = loss.iloc[-2 * n:-n].mean(), loss.iloc[-n:].mean()
    return float((before - last) / abs(before)) if before else None


def doubled_dice(cfg, dataset: str, method: str, work: Path) -> float:
    """Mean test Dice of ``method`` on ``dataset`` trained with twice its configured steps."""
    from benchmark.evaluation import evaluate
    from benchmark.inference import predict
    from benchmark.training.data import epoch_steps
    from benchmark.training.trainer import train
    from benchmark.data.preprocess import load_split

    mc = cfg.method_config(method, dataset)
    steps = mc.train.steps
    if steps is None:
        _, cases = load_split(paths.processed(dataset), "train")
        steps = epoch_steps(mc.train.epochs, sum(c.image.shape[0] for c in cases), mc.train.batch_size)
    mc = dataclasses.replace(mc, train=dataclasses.replace(mc.train, steps=2 * steps, epochs=None))
    run = work / dataset / method
    train(method, paths.processed(dataset), run, mc)
    predict(paths.processed(dataset), run / "model", run / "predictions", mc.predict, mc.train.threads)
    record = evaluate(paths.processed(dataset), run / "predictions", run / "results", cfg.evaluation, method)
    return record.average["dice"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--double", nargs="*", default=[], metavar="DATASET/METHOD")
    ap.add_argument("--flat", type=float, default=0.05, help="largest relative fall over the last eighth")
    ap.add_argument("--work", type=Path, help="where the doubled runs go (default: a temporary folder)")
    args = ap.parse_args()
    cfg = load_config(args.params)
    print(f"{'dataset/method':45s} {'steps':>6s} {'fall over last 1/8':>18s}  curve")
    for dataset, method in cfg.pairs():
        path = paths.run(dataset, cfg.trained_as(method)) / "loss.csv"
        if method != cfg.trained_as(method) or not path.is_file():
            continue
        loss = pd.read_csv(path)["loss"] if path.stat().st_size else pd.Series(dtype=float)
        f = flatness(loss)
        verdict = "n/a" if f is None else ("flat" if f < args.flat else "still falling")
        print(f"{dataset + '/' + method:45s} {len(loss):6d} {'' if f is None else f'{100 * f:17.1f}%'}  {verdict}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for pair in args.double:
            dataset, method = pair.split("/")
            before = read_record(paths.results(dataset, method) / "evaluation.json", EvaluationRecord)
            after = doubled_dice(cfg, dataset, method, work)
            delta = 100 * (after - before.average["dice"])
            print(f"{pair}: Dice {100 * before.average['dice']:.2f} -> {100 * after:.2f} with twice the steps "
                  f"({delta:+.2f} points; {'plateau' if abs(delta) < 2 else 'NOT at the plateau'})")


if __name__ == "__main__":
    main()

"""Is each method trained to the plateau of its scale? Two checks on the runs of a profile.

    python benchmarks/plateau.py [--params params.yaml] [--double DATASET/METHOD ...] [--points K] [--work DIR]

1. The loss curve (every trained pair with ``runs/DATASET/METHOD/loss.csv``): the mean training loss over the
   last eighth of the steps against the eighth before it; "flat" when it fell by less than ``--flat`` (5%) of
   its level. A flow or diffusion loss is noisy from step to step (a random time each draw), so windows, not
   points, are compared.
2. ``--double``: the pair trained again with twice its steps (in ``--work``, default a temporary folder; the
   profile's other settings unchanged), scored like the pipeline at ``--points`` checkpoints of that run (the
   learning curve; only its end where the rate decays over the run); prints the change of its mean test Dice
   against ``results/DATASET/METHOD/evaluation.json``,
   and the change on the cases scored in both runs with its 95% paired bootstrap interval over subjects. The
   verdict (the issue's criterion, under 2 points) reads the paired change: with ``both_empty: nan`` a case whose
   reference is empty counts in a run's mean only where that run predicts something there (a Dice of 0), so the
   two means can differ by the cases they include rather than by any case's Dice (measured: nnU-Net's 8 -> 16
   epochs on the lesion phantom moved its mean by +2.8 and its paired Dice by +0.8).

Run from the project root after ``dvc repro``. Prints one line per pair; the figures go to benchmarks/NOTES.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from benchmark import paths
from benchmark.config import load_config
from benchmark.convergence import FLAT, fall_over_last_quarter
from benchmark.records import EvaluationRecord, read_record


def dice_table(results: Path) -> pd.DataFrame:
    """``(cases, subject_id + classes)`` per-case Dice of an evaluate stage's ``per_case.csv``, as the tables read
    it (:class:`benchmark.evidence.Selection`: every class, regions left out), indexed by case id."""
    from benchmark.evidence import CaseTables, Selection
    ids = {"case_id": str, "subject_id": str}
    run = CaseTables(pd.read_csv(results / "per_case.csv", dtype=ids), sets=pd.DataFrame())
    return Selection("dice", None, scale=1.0).values(run)


def change_interval(before: Path, after: Path, resamples: int = 10_000, seed: int = 0):
    """The mean over the cases scored in both (a NaN in either is left out) of the per-case Dice change from the
    results in ``before`` to those in ``after``, with its 95% bootstrap interval, subjects resampled with their
    cases (``benchmark.statistics``)."""
    from benchmark.statistics import CaseValues, bootstrap_interval
    a, b = dice_table(before), dice_table(after)
    diff = (b.drop(columns="subject_id") - a.drop(columns="subject_id")).reindex(a.index)
    cv = CaseValues(diff.to_numpy(dtype=float)[None], tuple(a.index), tuple(a["subject_id"]))
    return bootstrap_interval(cv, resamples, 0.95, seed)


def doubled_curve(cfg, dataset: str, method: str, work: Path, points: int) -> list[tuple[int, float]]:
    """``(step, mean test Dice)`` of ``method`` on ``dataset`` trained with twice its configured steps, scored at
    ``points`` evenly spaced checkpoints of that one run (its EMA weights, predicted and evaluated like the
    pipeline). The trainer draws batch ``s`` from the seed and ``s`` alone and a constant rate after the warm-up
    does not depend on the run's length, so the checkpoint at step ``n`` is the model an ``n``-step run would end
    with. A decaying schedule (``poly``) spans the whole run, so there only the last checkpoint is scored."""
    from safetensors.torch import load_file
    from benchmark.data.manifest import MANIFEST, load_manifest
    from benchmark.evaluation import evaluate
    from benchmark.inference import predict
    from benchmark.training.checkpoint import CKPT_PREFIX, EMA, save_torch
    from benchmark.training.data import epoch_steps
    from benchmark.training.trainer import train
    from benchmark.data.preprocess import load_split

    processed = paths.processed(dataset)
    mc = cfg.method_config(method, dataset)
    steps = mc.train.steps
    if steps is None:
        _, cases = load_split(processed, "train")
        steps = epoch_steps(mc.train.epochs, sum(c.image.shape[0] for c in cases), mc.train.batch_size)
    if mc.train.schedule != "constant":
        points = 1            # the rate decays over the whole run: only its end is a 2N-step run's model
    every = max(1, 2 * steps // points)
    mc = dataclasses.replace(mc, train=dataclasses.replace(mc.train, steps=every * points, epochs=None,
                                                           checkpoint_every=every, keep_checkpoints=points))
    run = work / dataset / method
    train(method, processed, run, mc)
    info = load_manifest(processed).dataset
    curve = []
    for ckpt in sorted((run / "checkpoints").glob(f"{CKPT_PREFIX}*")):
        step = int(ckpt.name.removeprefix(CKPT_PREFIX))
        weights = {k.removeprefix("module."): v for k, v in load_file(ckpt / EMA).items() if k.startswith("module.")}
        model = run / "scored" / str(step)
        (model / "model").mkdir(parents=True, exist_ok=True)
        save_torch(model / "model" / "model.pt", {"method": method, "in_channels": info.channels,
                                                  "num_classes": info.num_classes, "model_params": mc.model,
                                                  "state_dict": weights})
        shutil.copy2(processed / MANIFEST, model / "model" / MANIFEST)
        predict(processed, model / "model", model / "predictions", mc.predict, mc.train.threads)
        record = evaluate(processed, model / "predictions", model / "results", cfg.evaluation, method)
        curve.append((step, record.average["dice"]))
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--double", nargs="*", default=[], metavar="DATASET/METHOD")
    ap.add_argument("--flat", type=float, default=FLAT, help="largest relative fall over the last eighth")
    ap.add_argument("--work", type=Path, help="where the doubled runs go (default: a temporary folder)")
    ap.add_argument("--points", type=int, default=4, help="checkpoints of the doubled run scored (default 4)")
    args = ap.parse_args()
    cfg = load_config(args.params)
    print(f"{'dataset/method':45s} {'steps':>6s} {'fall over last 1/8':>18s}  curve")
    for dataset, method in cfg.pairs():
        path = paths.run(dataset, cfg.trained_as(method)) / "loss.csv"
        if method != cfg.trained_as(method) or not path.is_file():
            continue
        loss = pd.read_csv(path)["loss"] if path.stat().st_size else pd.Series(dtype=float)
        f = fall_over_last_quarter(loss)
        verdict = "n/a" if f is None else ("flat" if f < args.flat else "still falling")
        print(f"{dataset + '/' + method:45s} {len(loss):6d} {'' if f is None else f'{100 * f:17.1f}%'}  {verdict}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for pair in args.double:
            dataset, method = pair.split("/")
            before = read_record(paths.results(dataset, method) / "evaluation.json", EvaluationRecord)
            curve = doubled_curve(cfg, dataset, method, work, args.points)
            (last_step, last), half = curve[-1], before.average["dice"]
            delta = 100 * (last - half)
            ci = change_interval(paths.results(dataset, method), work / dataset / method / "scored" /
                                 str(last_step) / "results")
            paired = 100 * ci.point
            print(f"{pair}: Dice {100 * half:.2f} -> {100 * last:.2f} with twice the steps ({last_step}): "
                  f"{delta:+.2f} points; on the cases scored in both {paired:+.2f} [{100 * ci.low:+.2f}, "
                  f"{100 * ci.high:+.2f}] (95% paired bootstrap over {ci.n_subjects} subjects): "
                  f"{'plateau' if abs(paired) < 2 else 'NOT at the plateau'}; along the way "
                  + ", ".join(f"{s}: {100 * d:.1f}" for s, d in curve))

if __name__ == "__main__":
    main()

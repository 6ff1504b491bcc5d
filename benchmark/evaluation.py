"""The evaluate stage: Dice, IoU and HD95 per case and class, under named conventions.

Writes ``evaluation.json`` (the full record: status, means per class and the average,
sample count, NFE, and every convention that produced them), ``metrics.json`` (the
headline numbers only, for ``dvc metrics show``) and ``per_case.csv`` (one row per case
and class).
The "Average" is the mean over classes of the mean over cases; a case is a volume
for volumetric data and an image for 2D data (unless ``per_slice``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.config import EvalConfig
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError, atomic_write, load_arrays, read_json, write_json
from benchmark.metrics import EmptyPolicy, case_metrics
from benchmark.metrics.fusion import fuse

METRICS = ("dice", "iou", "hd95")
CSV_COLUMNS = ["case_id", "subject_id", "class", "dice", "iou", "hd95"]


def conventions(cfg: EvalConfig, n_annotators: int) -> dict:
    return {**dataclasses.asdict(cfg),
            "hd95_definition": ("95th percentile of both directed surface-distance sets pooled (medpy)"
                                if cfg.hd95_convention == "pooled" else
                                "max of the two directed 95th percentiles (MONAI)"),
            "hd95_unit": "mm", "spacing_order": "(z, y, x)",
            "case": "image" if cfg.per_slice else "volume (2D images: the image)",
            "average": "mean over foreground classes of the mean over cases (NaN excluded)",
            "reference_raters": n_annotators}


def headline(record: dict) -> dict:
    """Numbers only: average and per-class Dice/IoU/HD95 (empty for a dataset not run)."""
    if record.get("status") != "ok":
        return {}
    out = {f"avg_{k}": v for k, v in record["average"].items()}
    for cls, block in record["per_class"].items():
        out.update({f"{cls}_{k}": block[k] for k in METRICS})
    return out


def _write(out: Path, record: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", record)
    write_json(out / "metrics.json", headline(record))
    atomic_write(out / "per_case.csv", lambda t: pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(t, index=False))


def evaluate(processed: Path, predictions: Path, out: Path, cfg: EvalConfig, method: str) -> dict:
    processed, predictions, out = Path(processed), Path(predictions), Path(out)
    pred_meta = read_json(predictions / "meta.json", "prediction metadata (run the predict stage)")
    if pred_meta.get("status") == "not_run":
        metrics = {"status": "not_run", "method": method, "reason": pred_meta.get("reason", "")}
        _write(out, metrics, [])
        return metrics

    manifest, cases = load_split(processed, "test")
    info = manifest.dataset
    policy = EmptyPolicy(cfg.both_empty, cfg.one_empty_hd95)
    rows = []
    for case in cases:
        path = predictions / f"{case.case_id}.npz"
        samples = load_arrays(path, ("samples",))["samples"]
        if samples.ndim != 4 or samples.shape[1:] != case.label.shape[1:]:
            raise CaseFileError(path, f"samples must be (n, Z, H, W) = (n, {case.label.shape[1:]}), got {samples.shape}")
        if samples.size and samples.max() >= info.num_classes:
            raise CaseFileError(path, f"predicted labels outside the declared classes 0..{info.num_classes - 1}")
        pred = fuse(samples, info.num_classes, cfg.fusion)
        ref = fuse(case.label, info.num_classes, cfg.reference)
        m = case_metrics(pred, ref, case.spacing, info.num_classes, policy, cfg.hd95_convention, cfg.per_slice)
        for k, cls in enumerate(info.class_names[1:]):
            rows.append({"case_id": case.case_id, "subject_id": case.subject_id, "class": cls,
                         **{name: m[name][k] for name in METRICS}})

    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    per_class = {}
    for cls in info.class_names[1:]:
        d = df[df["class"] == cls]
        per_class[cls] = {**{name: _mean(d[name]) for name in METRICS}, "n_cases": int(len(d)),
                          "n_excluded": {name: int(d[name].isna().sum()) for name in METRICS}}
    average = {name: _mean(pd.Series([per_class[c][name] for c in per_class])) for name in METRICS}
    metrics = {"status": "ok", "dataset": info.name, "method": method, "phantom": info.phantom,
               "n_cases": len(cases), "n_samples": pred_meta["n_samples"], "nfe_per_sample": pred_meta["nfe_per_sample"],
               "seconds_per_case": pred_meta["seconds_per_case"], "average": average, "per_class": per_class,
               "conventions": conventions(cfg, info.n_annotators)}
    _write(out, metrics, rows)
    return metrics


def _mean(values: pd.Series) -> float | None:
    v = values.dropna()
    return float(np.mean(v)) if len(v) else None

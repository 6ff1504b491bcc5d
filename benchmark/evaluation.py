"""The evaluate stage: Dice, IoU and HD95 of the fused prediction per case and class, and the set
metrics (GED, HM-IoU, MDM, CI) of the samples against the raters, under named conventions; the same
per evaluation region (a union of classes the dataset declares, e.g. REFUGE's whole disc), recorded
under ``region:<name>`` beside the classes.

Writes ``evaluation.json`` (the full record: status, means per class and the average, the set
metrics' means, sample and rater counts, NFE, every convention that produced them, and where STAPLE
fuses, the cases its iteration guard stopped, each also named on stderr),
``metrics.json`` (the headline numbers only, for ``dvc metrics show``), ``per_case.csv`` (one row
per case and class, then one per case and region) and ``per_case_sets.csv`` (one row per case; a
region's set metrics in columns ``region:<name>_<metric>``). Cases are scored in parallel
across ``evaluation.workers`` processes.
The "Average" is the mean over classes of the mean over cases; a case is a volume
for volumetric data and an image for 2D data (unless ``per_slice``).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from benchmark.config import EvalConfig
from benchmark.data.manifest import ManifestError, load_manifest
from benchmark.data.store import CaseFileError, atomic_write, load_arrays, load_case, write_json
from benchmark.metrics import EmptyPolicy, case_metrics
from benchmark.metrics.fusion import StapleNotConverged, fuse
from benchmark.metrics.multirater import DIVERSITY_READINGS, SET_CONVENTIONS, set_metrics
from benchmark.metrics.regions import region_key, region_map
from benchmark.records import EvaluationRecord, PredictionRecord, Status, read_record, write_record

METRICS = ("dice", "iou", "hd95")
CSV_COLUMNS = ["case_id", "subject_id", "class", "dice", "iou", "hd95"]


def conventions(cfg: EvalConfig, n_annotators: int, regions: dict[str, list[str]]) -> dict:
    """Every setting behind the numbers; ``regions``: ``region:<name>`` -> its class names (written only where
    there are some)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"}  # speed, not a convention
    case = "image" if cfg.per_slice else "volume (2D images: the image)"
    region_rule = {"regions": regions,
                   "region_definition": "the union of its classes in the fused prediction and the fused reference "
                                        "(Dice, IoU, HD95), and in every sample and rater (set metrics)"}
    return {**settings, **(region_rule if regions else {}),
            "hd95_definition": ("95th percentile of both directed surface-distance sets pooled (medpy)"
                                if cfg.hd95_convention == "pooled" else
                                "max of the two directed 95th percentiles (MONAI)"),
            "hd95_unit": "mm", "spacing_order": "(z, y, x)",
            "case": case,
            "average": "mean over foreground classes of the mean over cases (NaN excluded)",
            "reference_raters": n_annotators,
            "set_metrics": {**SET_CONVENTIONS, "ci_diversity_reading": f"{cfg.ci_diversity}: "
                                                                     f"{DIVERSITY_READINGS[cfg.ci_diversity]}",
                            "samples": "the method's n samples as predicted (not fused)",
                            "raters": "every rater of the case (not fused)",
                            "case": case, "aggregate": "mean over cases"}}


def headline(record: EvaluationRecord) -> dict:
    """Numbers only: average and per-class Dice/IoU/HD95 and the set metrics (empty for a dataset not run)."""
    if not record.ok:
        return {}
    out = {f"avg_{k}": v for k, v in record.average.items()}
    for cls, block in record.per_class.items():
        out.update({f"{cls}_{k}": block[k] for k in METRICS})
    out.update(record.set_metrics["mean"])
    for region, block in (record.per_region or {}).items():
        out.update({f"{region}_{k}": block[k] for k in METRICS})
        out.update({f"{region}_{k}": v for k, v in block["set_metrics"].items()})
    return out


def _write(out: Path, record: EvaluationRecord, rows: list[dict], set_rows: list[dict]) -> None:
    # The folder also holds other stages' files (complexity, NFE sweep), so it is not swapped whole; the record
    # the later stages read goes last, so once it is new every file it speaks for is new too.
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "per_case.csv", lambda t: pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(t, index=False))
    atomic_write(out / "per_case_sets.csv", lambda t: pd.DataFrame(set_rows).to_csv(t, index=False))
    write_json(out / "metrics.json", headline(record))
    write_record(out / "evaluation.json", record)


def evaluate(processed: Path, predictions: Path, out: Path, cfg: EvalConfig, method: str) -> EvaluationRecord:
    processed, predictions, out = Path(processed), Path(predictions), Path(out)
    pred_meta = read_record(predictions / "meta.json", PredictionRecord)
    if pred_meta.status is Status.NOT_RUN:
        metrics = EvaluationRecord.not_run(pred_meta.reason, method=method)
        _write(out, metrics, [], [])
        return metrics

    manifest = load_manifest(processed)
    info = manifest.dataset
    entries = manifest.split("test")
    if not entries:
        raise ManifestError(f"{manifest.path}: the test split has no cases")
    jobs = [(processed / e.file, e.case_id, e.subject_id, e.sha256, predictions / f"{e.case_id}.npz",
             info.num_classes, info.channels, info.regions, cfg) for e in entries]
    scored = _map(_score_case, jobs, cfg.workers)
    regions = [region_key(n) for n in info.regions]
    rows = [{"case_id": e.case_id, "subject_id": e.subject_id, "class": cls,
             **{name: per_class[name][k] for name in METRICS}}
            for e, (per_class, *_) in zip(entries, scored) for k, cls in enumerate(info.class_names[1:])]
    rows += [{"case_id": e.case_id, "subject_id": e.subject_id, "class": region, **per_region[region]}
             for e, (_, _, per_region, _, _) in zip(entries, scored) for region in regions]
    set_rows = [{"case_id": e.case_id, "subject_id": e.subject_id, **sets} for e, (_, sets, *_) in zip(entries, scored)]
    region_sets = {region: pd.DataFrame([case_sets[region] for *_, case_sets, _ in scored]) for region in regions}
    region_set_rows = [{f"{region}_{k}": v for region in regions for k, v in case_sets[region].items()}
                       for *_, case_sets, _ in scored]
    not_converged = [e.case_id for e, (*_, stopped) in zip(entries, scored) if stopped]
    for case_id in not_converged:
        print(f"evaluate {method}: case {case_id}: STAPLE stopped by its guard of {cfg.staple_max_iterations} "
              f"iterations without converging (evaluation.staple_max_iterations)", file=sys.stderr)

    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    per_class = {cls: _summary(df[df["class"] == cls]) for cls in info.class_names[1:]}
    average = {name: _mean(pd.Series([per_class[c][name] for c in per_class])) for name in METRICS}
    sets = pd.DataFrame(set_rows)
    per_region = {region: {"classes": [info.class_names[c] for c in classes], **_summary(df[df["class"] == region]),
                           "set_metrics": {k: _mean(region_sets[region][k]) for k in region_sets[region].columns}}
                  for region, classes in zip(regions, info.regions.values())}
    n_samples = int(pred_meta.n_samples)
    set_summary = {"n_samples": n_samples, "n_raters": info.n_annotators,
                   "ged_counts_not_available": sorted(n for n in cfg.ged_samples if n > n_samples),
                   "mean": {k: _mean(sets[k]) for k in sets.columns if k not in ("case_id", "subject_id")}}
    metrics = EvaluationRecord(Status.OK, dataset=info.name, method=method, phantom=info.phantom,
                               n_cases=len(entries), n_samples=n_samples, nfe_per_sample=pred_meta.nfe_per_sample,
                               sampler=pred_meta.sampler,
                               seconds_per_case=pred_meta.seconds_per_case, average=average, per_class=per_class,
                               set_metrics=set_summary, per_region=per_region or None,
                               conventions=conventions(cfg, info.n_annotators,
                                                       {r: per_region[r]["classes"] for r in per_region}),
                               staple_not_converged={"count": len(not_converged), "cases": not_converged}
                               if "staple" in (cfg.fusion, cfg.reference) else None)
    _write(out, metrics, rows, [{**s, **r} for s, r in zip(set_rows, region_set_rows)])
    return metrics


def _summary(d: pd.DataFrame) -> dict:
    """Means over the cases of ``d`` (rows of one class or region), their count and the NaN excluded per metric."""
    return {**{name: _mean(d[name]) for name in METRICS}, "n_cases": int(len(d)),
            "n_excluded": {name: int(d[name].isna().sum()) for name in METRICS}}


def _score_case(job) -> tuple[dict, dict, dict, dict, bool]:
    """Fused-prediction metrics per class and set metrics of one test case, then the same per region (keyed
    ``region:<name>``; each metric one number), and whether STAPLE's guard stopped a fusion (runs in a worker
    process)."""
    case_file, case_id, subject_id, sha256, pred_path, num_classes, channels, regions, cfg = job
    case = load_case(case_file, case_id, subject_id, num_classes, channels, sha256)
    samples = load_arrays(pred_path, ("samples",))["samples"]
    if samples.ndim != 4 or samples.shape[1:] != case.label.shape[1:]:
        raise CaseFileError(pred_path, f"samples must be (n, Z, H, W) = (n, {case.label.shape[1:]}), got {samples.shape}")
    if samples.size and samples.max() >= num_classes:
        raise CaseFileError(pred_path, f"predicted labels outside the declared classes 0..{num_classes - 1}")
    policy = EmptyPolicy(cfg.both_empty, cfg.one_empty_hd95)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StapleNotConverged)
        pred = fuse(samples, num_classes, cfg.fusion, cfg.staple_max_iterations)
        ref = fuse(case.label, num_classes, cfg.reference, cfg.staple_max_iterations)
    for w in caught:  # any other warning goes on as it would have
        if not issubclass(w.category, StapleNotConverged):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    per_class = case_metrics(pred, ref, case.spacing, num_classes, policy, cfg.hd95_convention, cfg.per_slice)
    sets = set_metrics(samples, case.label, num_classes, cfg.ged_samples, cfg.per_slice, cfg.ci_diversity)
    per_region, region_sets = {}, {}
    for name, classes in regions.items():
        scores = case_metrics(region_map(pred, classes), region_map(ref, classes), case.spacing, 2, policy,
                              cfg.hd95_convention, cfg.per_slice)
        per_region[region_key(name)] = {k: v[0] for k, v in scores.items()}
        region_sets[region_key(name)] = set_metrics(region_map(samples, classes), region_map(case.label, classes), 2,
                                                    cfg.ged_samples, cfg.per_slice, cfg.ci_diversity)
    stopped = any(issubclass(w.category, StapleNotConverged) for w in caught)
    return per_class, sets, per_region, region_sets, stopped


def _map(fn, jobs: list, workers: int) -> list:
    """``[fn(j) for j in jobs]``, across ``workers`` processes when there is more than one of each."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("fork"),
                             initializer=_single_threaded) as pool:
        return list(pool.map(fn, jobs))


def _single_threaded() -> None:
    # Each worker gets one core; SimpleITK would otherwise start a thread per core in every worker.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _mean(values: pd.Series) -> float | None:
    v = values.dropna()
    return float(np.mean(v)) if len(v) else None

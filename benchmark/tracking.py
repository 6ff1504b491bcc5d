"""MLflow logging: one experiment per profile, one run per (dataset, method), one summary run.

Tracking goes to a SQLite file in the project (``mlflow.db``; artifacts in ``mlartifacts/``),
both ignored by git. Browse it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``, run
from the project root.

A (dataset, method) run holds the resolved parameters, the metrics of ``evaluation.json`` (step 0),
the checkpoint's provenance (tags ``git_revision``, ``manifest_sha256`` from ``model/meta.json``),
``evaluation.json`` and ``preview.png`` (image, reference, fused prediction on the qualitative
figure's test slice). The summary run holds every table file (``tables/``; each CSV also as an
MLflow table ``tables/<stem>.json``), every figure (``figures/``), the report's files (``report/``)
and the headline metrics of ``paper/metrics.json`` (mean Dice per method, claim verdict counts).

Reruns: runs are found again by a ``segbench.key`` tag, so a rerun updates a run instead of adding
one; a run whose parameters changed is replaced (MLflow parameters are immutable). Artifacts
overwrite by path. A metric is logged only when its value differs from the run's latest, so a
rerun adds no history entries. The summary run's artifact folders are emptied first, so they
mirror the files given (and ``log_table``, which appends to an existing table, starts afresh).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmark import paths
from benchmark.evidence import Evidence

KEY_TAG = "segbench.key"
SUMMARY_DIRS = ("tables", "figures", "report")


def _summary_dir(f: Path) -> str:
    """Figures by suffix; the tables stage's files by folder; anything else (the claims report) is "report"."""
    return "figures" if f.suffix == ".png" else "tables" if f.parent.name == "tables" else "report"


def tracking_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()).resolve()
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")


def _experiment(client, name: str, root: Path) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=(root / "mlartifacts").resolve().as_uri())


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _run(client, experiment_id: str, key: str, params: dict[str, str]):
    """The run tagged ``key``, created if missing, replaced if its parameters differ."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'")
    for run in found:
        if run.data.params == params:
            return run.info.run_id
        client.delete_run(run.info.run_id)
    run = client.create_run(experiment_id, tags={KEY_TAG: key, "mlflow.runName": key})
    for k, v in params.items():
        client.log_param(run.info.run_id, k, v)
    return run.info.run_id


def _log_metrics(client, run_id: str, metrics: dict[str, float | None]) -> None:
    """Log at step 0 the values that differ from the run's latest ones; ``None`` is skipped.

    MLflow keeps every (value, timestamp) logged, so logging unchanged values again would grow
    the history by one entry per rerun.
    """
    from mlflow.entities import Metric

    latest = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    new = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and latest.get(k) != float(v)]
    for i in range(0, len(new), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=new[i:i + 1000])


def preview(example, dataset: str, method: str, fusion: str, out: Path) -> Path | None:
    """Write ``out``: image, majority reference and the method's samples fused by ``fusion`` on the
    test slice of the qualitative figure; None if the method has no predictions for that case.

    ``example``: ``benchmark.figures.example_slice(dataset)``, ``(num_classes, case, z, reference (H, W))``
    or None. Predictions: ``paths.predictions(dataset, method)/<case_id>.npz``, ``samples`` ``(K, Z, H, W)``.
    """
    from matplotlib.figure import Figure

    from benchmark.figures import display_rgb, load_samples, overlay
    from benchmark.metrics.fusion import fuse

    if example is None:
        return None
    k, case, z, ref = example
    samples = load_samples(dataset, method, case.case_id)
    if samples is None:
        return None
    rgb = display_rgb(case.image[z])
    pred = fuse(samples[:, z], k, fusion)  # fused on this slice alone: a picture, not a score
    fig = Figure(figsize=(4, 1.5), layout="constrained")
    for ax, title, img in zip(fig.subplots(1, 3), ("image", "reference (majority)", f"{method} ({fusion})"),
                              (rgb, overlay(rgb, ref), overlay(rgb, pred))):
        ax.imshow(img)
        ax.set_title(title, fontsize=6)
        ax.set_axis_off()
    fig.suptitle(f"{dataset} {case.case_id} slice {z}", fontsize=6)
    fig.savefig(out, dpi=80, format="png")
    return out


def log_all(ev: Evidence, files: list[Path], summary_metrics: dict[str, float] | None = None,
            root: Path | None = None) -> list[str]:
    """Log the evaluations and runs of ``ev``, the tables stage's ``files`` and its headline
    ``summary_metrics``; returns the run ids, the summary run's last."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import MlflowClient

    from benchmark.evaluation import headline
    from benchmark.figures import example_slice

    cfg = ev.cfg
    root = (root or Path.cwd()).resolve()
    client = MlflowClient(tracking_uri(root))
    exp = _experiment(client, f"segbench-{cfg.profile}", root)
    run_ids, examples = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for (ds, m), metrics in ev.results.items():
            if not metrics.ok:
                continue
            mc = cfg.method_config(cfg.trained_as(m), ds)
            meta = ev.runs[(ds, m)]
            params = _flatten({"dataset": ds, "method": m, "model": mc.model, "train": mc.train.__dict__,
                               "predict": mc.predict.__dict__, "evaluation": metrics.conventions})
            rid = _run(client, exp, f"{ds}/{m}", params)
            _log_metrics(client, rid, {**headline(metrics), "nfe_per_sample": metrics.nfe_per_sample})
            client.set_tag(rid, "git_revision", meta.git_revision or "unknown")
            client.set_tag(rid, "manifest_sha256", meta.manifest_sha256 or "unknown")
            client.log_artifact(rid, str(paths.results(ds, m) / "evaluation.json"))
            if ds not in examples:
                examples[ds] = example_slice(ds)
            png = preview(examples[ds], ds, m, metrics.conventions["fusion"], Path(tmp) / "preview.png")
            if png is not None:
                client.log_artifact(rid, str(png))
            client.set_terminated(rid)
            run_ids.append(rid)

    rid = _run(client, exp, "summary", {"profile": cfg.profile, "datasets": ",".join(cfg.datasets),
                                        "methods": ",".join(cfg.methods)})
    repo = get_artifact_repository(client.get_run(rid).info.artifact_uri)
    for d in SUMMARY_DIRS:
        repo.delete_artifacts(d)
    for f in map(Path, files):
        client.log_artifact(rid, str(f), artifact_path=_summary_dir(f))
        if f.suffix == ".csv":  # cells as written (strings such as "50.00", "not run")
            client.log_table(rid, data=pd.read_csv(f, dtype=object, keep_default_na=False),
                             artifact_file=f"tables/{f.stem}.json")
    _log_metrics(client, rid, summary_metrics or {})
    client.set_terminated(rid)
    run_ids.append(rid)
    return run_ids

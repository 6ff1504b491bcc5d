"""MLflow logging: one experiment per profile, one run per (dataset, method), one summary run.

Tracking goes to a SQLite file in the project (``mlflow.db``; artifacts in ``mlartifacts/``),
both ignored by git. Runs are found again by a ``segbench.key`` tag, so a rerun updates a
run instead of adding one; a run whose parameters changed is replaced (MLflow parameters are
immutable).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from benchmark import paths
from benchmark.config import Config

KEY_TAG = "segbench.key"


def tracking_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()).resolve()
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")


def _experiment(mlflow, name: str, root: Path) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=(root / "mlartifacts").resolve().as_uri())


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


def log_all(cfg: Config, results: dict, files: list[Path], root: Path | None = None) -> list[str]:
    import mlflow
    from mlflow.tracking import MlflowClient

    root = (root or Path.cwd()).resolve()
    mlflow.set_tracking_uri(tracking_uri(root))
    client = MlflowClient()
    exp = _experiment(mlflow, f"segbench-{cfg.profile}", root)
    run_ids = []
    for (ds, m), metrics in results.items():
        if metrics.get("status") != "ok":
            continue
        mc = cfg.method_config(m)
        meta_path = paths.model(ds, m) / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        params = _flatten({"dataset": ds, "method": m, "model": mc.model, "train": mc.train.__dict__,
                           "predict": mc.predict.__dict__, "evaluation": metrics["conventions"]})
        rid = _run(client, exp, f"{ds}/{m}", params)
        for k, v in metrics["average"].items():
            if v is not None:
                client.log_metric(rid, f"avg_{k}", v, step=0)
        for cls, block in metrics["per_class"].items():
            for k in ("dice", "iou", "hd95"):
                if block[k] is not None:
                    client.log_metric(rid, f"{cls}_{k}", block[k], step=0)
        for k, v in metrics["set_metrics"]["mean"].items():
            if v is not None:
                client.log_metric(rid, k, v, step=0)
        client.log_metric(rid, "nfe_per_sample", metrics["nfe_per_sample"], step=0)
        client.set_tag(rid, "git_revision", meta.get("git_revision", "unknown"))
        client.set_tag(rid, "manifest_sha256", meta.get("manifest_sha256", "unknown"))
        client.log_artifact(rid, str(paths.results(ds, m) / "evaluation.json"))
        run_ids.append(rid)
    rid = _run(client, exp, "summary", {"profile": cfg.profile, "datasets": ",".join(cfg.datasets),
                                        "methods": ",".join(cfg.methods)})
    for f in files:
        client.log_artifact(rid, str(f), artifact_path="tables" if f.suffix != ".png" else "figures")
    run_ids.append(rid)
    return run_ids

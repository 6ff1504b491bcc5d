"""MLflow logging: runs, provenance tags, previews, summary tables and figures, and rerun semantics."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from benchmark import paths
from benchmark.catalogue import load_catalogue
from benchmark.config import load_config
from benchmark.data.preprocess import load_split
from benchmark.evidence import Evidence
from benchmark.records import EvaluationRecord, RunRecord, Status, read_record, write_record
from benchmark.tables import write_table
from benchmark.tables_stage import flat_metrics, headline_metrics
from benchmark.tracking import log_all
from tests.conftest import write_params
from tests.evidence_helpers import CATALOGUE

DS = "phantom-cardiac"


def _record(dice: float, fusion: str = "staple") -> EvaluationRecord:
    """An evaluation record (of ``log_all``'s interest: the average, the classes, the set metrics, NFE)."""
    block = {"dice": dice, "iou": dice / 2, "hd95": 3.0}
    return EvaluationRecord(Status.OK, dataset=DS, method="m", phantom=True, n_cases=3, n_samples=2, nfe_per_sample=2,
                            seconds_per_case=0.1, average=block, per_class={"LV": block, "RV": {**block, "hd95": None}},
                            set_metrics={"n_samples": 2, "mean": {"ged_2": 0.25, "hm_iou": 0.5}},
                            conventions={"fusion": fusion, "reference": "majority", "hd95_convention": "pooled"})


def _evidence(cfg, results: dict) -> Evidence:
    runs = {p: read_record(paths.model(*p) / "meta.json", RunRecord, missing_ok=True) for p in results}
    return Evidence(cfg, load_catalogue(CATALOGUE), results=results, runs=runs)


@pytest.fixture
def project(tmp_path, tiny_processed, monkeypatch):
    """unet: evaluated, with checkpoint metadata and predictions; flowseg-plain: evaluated, no predictions;
    medflowseg: not run. Tables and a figure as the tables stage would write them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_params(tmp_path / "params.yaml", methods=["unet", "flowseg-plain", "medflowseg"],
                 ablations={"datasets": [], "methods": []}, nfe_sweep={"datasets": [], "method": "medflowseg"},
                 table4={"datasets": [], "methods": []})
    shutil.copytree(tiny_processed, paths.processed(DS))
    results = {(DS, "unet"): _record(0.8), (DS, "flowseg-plain"): _record(0.6),
               (DS, "medflowseg"): EvaluationRecord.not_run("no data", method="medflowseg")}
    for (ds, m), r in results.items():
        write_record(paths.results(ds, m) / "evaluation.json", r)
    write_record(paths.model(DS, "unet") / "meta.json", RunRecord(
        Status.OK, method="unet", dataset=DS, steps=30, world_size=1, device="cpu", seconds=1.0, final_loss=0.5,
        model_params={}, train={}, predict={}, in_channels=1, num_classes=4, fingerprint="f",
        manifest_sha256="f00d", git_revision="abc123", weights_sha256="w"))
    paths.predictions(DS, "unet").mkdir(parents=True)
    for case in load_split(paths.processed(DS), "test")[1]:
        samples = np.stack([case.label[0], np.roll(case.label[0], 1, axis=-1)])  # (K=2, Z, H, W)
        np.savez(paths.predictions(DS, "unet") / f"{case.case_id}.npz", samples=samples)

    files = write_table(pd.DataFrame({"Dice": ["80.00", "not run"]}, index=pd.Index(["unet", "medflowseg"],
                                                                                     name="Method")),
                        paths.PAPER / "tables" / "table2_modalities", "Table 2", "caption")
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    (paths.PAPER / "figures").mkdir(parents=True)
    fig.savefig(paths.PAPER / "figures" / "qualitative.png")
    report = [paths.PAPER / "claims_report.md", paths.PAPER / "claims_report.html"]
    for f in report:
        f.write_text("report")
    files += [paths.PAPER / "figures" / "qualitative.png", *report]
    return load_config(tmp_path / "params.yaml"), results, files


def _client():
    import os

    from mlflow.tracking import MlflowClient
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # explicit: another test may have set a global URI


def _runs(client) -> dict:
    exp = client.get_experiment_by_name("segbench-test")
    return {r.data.tags["segbench.key"]: r for r in client.search_runs([exp.experiment_id])}


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, f.path) if f.is_dir else [f.path]
    return sorted(out)


def test_rerun_updates_runs_in_place(project, tmp_path):
    cfg, results, files = project
    ev = _evidence(cfg, results)
    first = log_all(ev, files, flat_metrics(headline_metrics(ev, [])))
    client = _client()
    before = {k: (r.info.run_id, _artifacts(client, r.info.run_id)) for k, r in _runs(client).items()}
    assert log_all(ev, files, flat_metrics(headline_metrics(ev, []))) == first

    runs = _runs(client)
    assert {k: (r.info.run_id, _artifacts(client, r.info.run_id)) for k, r in runs.items()} == before
    assert sorted(runs) == [f"{DS}/flowseg-plain", f"{DS}/unet", "summary"]  # not_run is not logged
    unet, plain, summary = runs[f"{DS}/unet"], runs[f"{DS}/flowseg-plain"], runs["summary"]
    assert (unet.data.tags["git_revision"], unet.data.tags["manifest_sha256"]) == ("abc123", "f00d")
    assert (plain.data.tags["git_revision"], plain.data.tags["manifest_sha256"]) == ("unknown", "unknown")
    assert unet.data.params["evaluation.fusion"] == "staple" and unet.data.params["train.lr"] == "0.001"
    assert unet.data.metrics["avg_dice"] == 0.8 and "RV_hd95" not in unet.data.metrics
    assert len(client.get_metric_history(unet.info.run_id, "avg_dice")) == 1
    assert unet.info.status == "FINISHED"

    assert _artifacts(client, unet.info.run_id) == ["evaluation.json", "preview.png"]
    assert _artifacts(client, plain.info.run_id) == ["evaluation.json"]  # no predictions, no preview
    png = client.download_artifacts(unet.info.run_id, "preview.png", str(tmp_path / "dl"))
    from matplotlib.image import imread
    assert imread(png).shape[:2] == (120, 320)  # 4 x 1.5 inches at 80 dpi
    elsewhere = [p for p in tmp_path.rglob("preview.png") if p.parts[len(tmp_path.parts)] not in ("dl", "mlartifacts")]
    assert not elsewhere  # written to a temporary directory, not into the project

    assert _artifacts(client, summary.info.run_id) == [
        "figures/qualitative.png", "report/claims_report.html", "report/claims_report.md",
        "tables/table2_modalities.csv",
        "tables/table2_modalities.json", "tables/table2_modalities.md", "tables/table2_modalities.tex"]
    table = client.load_table(summary.info.experiment_id, "tables/table2_modalities.json",
                              run_ids=[summary.info.run_id])
    assert table["Method"].tolist() == ["unet", "medflowseg"]  # not appended to by the rerun
    assert table["Dice"].tolist() == ["80.00", "not run"]
    assert summary.data.metrics == pytest.approx({"dice_mean.unet": 80.0, "dice_mean.flowseg-plain": 60.0})
    assert len(client.get_metric_history(summary.info.run_id, "dice_mean.unet")) == 1


def test_changed_params_replace_the_run_and_changed_values_extend_history(project):
    from mlflow.entities import ViewType

    cfg, results, files = project
    ev = _evidence(cfg, results)
    log_all(ev, files, flat_metrics(headline_metrics(ev, [])))
    client = _client()
    old = {k: r.info.run_id for k, r in _runs(client).items()}

    results[(DS, "unet")] = _record(0.8, fusion="majority")  # a parameter changed
    results[(DS, "flowseg-plain")] = _record(0.7)  # a value changed, parameters not
    ev = _evidence(cfg, results)
    log_all(ev, files[:-3], flat_metrics(headline_metrics(ev, [])))  # and the summary's figure and report are gone
    runs = _runs(client)
    assert sorted(runs) == sorted(old)
    unet = runs[f"{DS}/unet"]
    assert unet.info.run_id != old[f"{DS}/unet"] and unet.data.params["evaluation.fusion"] == "majority"
    assert client.get_run(old[f"{DS}/unet"]).info.lifecycle_stage == "deleted"
    assert len(client.search_runs([unet.info.experiment_id], run_view_type=ViewType.ALL)) == 4
    assert _artifacts(client, unet.info.run_id) == ["evaluation.json", "preview.png"]

    plain = runs[f"{DS}/flowseg-plain"]
    assert plain.info.run_id == old[f"{DS}/flowseg-plain"] and plain.data.metrics["avg_dice"] == 0.7
    assert [m.value for m in client.get_metric_history(plain.info.run_id, "avg_dice")] == [0.6, 0.7]
    assert len(client.get_metric_history(plain.info.run_id, "avg_iou")) == 2
    assert len(client.get_metric_history(plain.info.run_id, "hm_iou")) == 1

    summary = runs["summary"]
    assert summary.info.run_id == old["summary"] and summary.data.metrics["dice_mean.flowseg-plain"] == pytest.approx(70.0)
    assert not [p for p in _artifacts(client, summary.info.run_id) if not p.startswith("tables/")]

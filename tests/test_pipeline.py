"""The whole pipeline on tiny data: DVC reruns, MLflow reruns, tables, and a dataset that cannot be fetched."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.cli import main
from tests.conftest import ROOT, TINY_PARAMS, commit_all, copy_project, write_params

METHODS = ["unet", "flowseg-plain", "medflowseg"]
BASELINES = {"datasets": ["phantom-cardiac"], "methods": ["flowsdf"]}
TABLE4 = {"datasets": ["phantom-cardiac"], "methods": ["flowseg-plain", "flowsdf", "medflowseg", "medflowseg-backbone"]}
HEAD = {"datasets": ["phantom-cardiac"], "method": "medflowseg"}     # MedFlowSeg's condition-head row


def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A git + DVC copy of the project with two methods on one tiny dataset, reproduced once."""
    proj = copy_project(tmp_path_factory.mktemp("dvcproj"))
    write_params(proj / "params.yaml", methods=METHODS, baselines=BASELINES, table4=TABLE4, condition_head=HEAD)
    commit_all(proj)
    out = _run(["dvc", "repro"], proj)
    assert "Running stage 'tables'" in out and "Running stage 'baseline-evaluate@phantom-cardiac-flowsdf'" in out
    return proj


def test_repro_produces_tables_figure_and_metrics(dvc_project):
    for m in ("unet", "flowseg-plain", "medflowseg", "medflowseg-backbone", "flowsdf"):
        metrics = json.loads((dvc_project / f"results/phantom-cardiac/{m}/evaluation.json").read_text())
        assert metrics["status"] == "ok" and 0 <= metrics["average"]["dice"] <= 1
        assert metrics["conventions"]["hd95_convention"] == "pooled"
        headline = json.loads((dvc_project / f"results/phantom-cardiac/{m}/metrics.json").read_text())
        assert headline["avg_dice"] == metrics["average"]["dice"] and "RV_hd95" in headline
        assert all(isinstance(v, (int, float)) for v in headline.values())  # DVC metrics: numbers only
    t1 = (dvc_project / "paper/tables/table1_cardiac.md").read_text()
    assert "| UNet [ours: unet]" in t1 and "not run (paper 92.76)" in t1 and "RV Dice" in t1
    assert "(NFE): {'unet': 1, 'flowseg-plain': 2, 'medflowseg': 2, 'medflowseg-head': 1, 'flowsdf': 2}" in t1  # 2 steps
    flowsdf = next(line for line in t1.splitlines() if line.startswith("| FlowSDF [ours: flowsdf, suite reimplementation]"))
    assert flowsdf.count("(paper ") == 9 and "not run" not in flowsdf  # a baseline's row in the paper's table
    medflowseg = next(line for line in t1.splitlines() if line.startswith("| MedFlowSeg [ours: medflowseg]"))
    assert medflowseg.count("(paper ") == 9 and medflowseg.count(", Δ ") == 9  # ours beside every paper cell
    head = next(line for line in t1.splitlines() if line.startswith("| MedFlowSeg's condition head alone"))
    assert "[ours: medflowseg-head]" not in head                 # a row of our own: no paper row, no paper value
    assert "not run" not in head and json.loads((dvc_project / "runs/phantom-cardiac/medflowseg-head/predictions/"
                                                 "meta.json").read_text())["readout"] == "condition-head"
    assert (dvc_project / "paper/tables/table1_cardiac.tex").read_text().startswith("\\begin{table}")
    assert (dvc_project / "paper/tables/table2_modalities.csv").is_file()
    for fig in ("qualitative", "nfe_sweep"):
        png = (dvc_project / f"paper/figures/{fig}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_repro_renders_the_ablation_and_the_nfe_sweep(dvc_project):
    t3 = (dvc_project / "paper/tables/table3_ablation.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in t3.splitlines() if "[ours: " in line]
    assert [r[0] for r in rows] == ["backbone [ours: medflowseg-backbone]", "+ DB-SA + FA-A. + Neural Mod. [ours: medflowseg]"]
    assert rows[0][1] == "not run (paper 87.6)"  # the paper's Brain Tumor column: not a dataset of the tiny profile
    # its phantom-cardiac column: "mean [low, high]", with a dagger where it differs from MedFlowSeg's
    assert all(0 <= float(r[-1].split(" [")[0]) <= 100 and r[-1].rstrip("†").endswith("]") for r in rows)
    sweep = (dvc_project / "results/phantom-cardiac/medflowseg/nfe_sweep/nfe_sweep.csv").read_text().splitlines()
    assert len(sweep) == 1 + 7  # header, Euler 1/2/4/8/16/50, dopri5
    assert [int(float(line.split(",")[4])) for line in sweep[1:7]] == [1, 2, 4, 8, 16, 50]
    assert "Dice against NFE: phantom-cardiac / medflowseg" in (dvc_project / "paper/tables/nfe_sweep.md").read_text()


def test_repro_renders_the_complexity_and_uncertainty_table(dvc_project):
    t4 = (dvc_project / "paper/tables/table4_complexity_uncertainty.md").read_text()
    rows = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in t4.splitlines()
                              if line.startswith("| phantom-cardiac"))}
    ours = {"flowseg-plain (flow-matching scaffold, not MedFlowSeg)", "MedFlowSeg [ours: medflowseg]", "medflowseg-backbone",
            "FlowSDF [ours: flowsdf, suite reimplementation]"}
    assert ours <= set(rows) and all("not run" not in rows[name] for name in ours)
    full = rows["MedFlowSeg [ours: medflowseg]"]
    assert full[9] == "2 x 2" and full[5].endswith("(paper 21.9 on REFUGE2-Cup)")  # tiny profile: 2 samples, 2 steps
    assert rows["bone + DB-SA"][6] == "not run (paper 85.1)" and rows["SegDiff"][2] == "not run (paper 53)"
    assert rows["MedSegDiff"][2] == "not run (paper 85)"  # registered, not in the tiny profile
    record = json.loads((dvc_project / "results/phantom-cardiac/medflowseg/evaluation.json").read_text())
    assert record["set_metrics"]["n_samples"] == 2 and "ged_2" in record["set_metrics"]["mean"]
    assert (dvc_project / "results/phantom-cardiac/medflowseg/complexity.json").is_file()


def test_second_repro_runs_nothing(dvc_project):
    out = _run(["dvc", "repro"], dvc_project)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out


def test_changing_one_method_reruns_only_that_method(dvc_project):
    params = dict(TINY_PARAMS, methods=METHODS, baselines=BASELINES, table4=TABLE4, condition_head=HEAD)
    params["method"] = {**params["method"], "unet": {"model": {**params["method"]["unet"]["model"], "dropout": 0.1}}}
    write_params(dvc_project / "params.yaml", **params)
    status = json.loads(subprocess.run(["dvc", "status", "--json"], cwd=dvc_project, capture_output=True,
                                       text=True, check=True).stdout)
    stages = set(status) - {"data.dvc"}  # the hand-filled raw-data folder is absent here, by design
    # check-data checks every method's parameters, so it reruns; its record does not change, so no fetch follows
    assert "check-data" in stages
    stages -= {"check-data"}
    assert "train@phantom-cardiac-unet" in stages
    assert all(name.endswith("-unet") for name in stages), sorted(stages)


def test_the_launcher_starts_every_train_stage_and_only_those(dvc_project):
    write_params(dvc_project / "params.yaml", methods=METHODS, baselines=BASELINES, table4=TABLE4, condition_head=HEAD,
                 launcher="accelerate launch --multi_gpu --num_processes 4 -m benchmark.cli")
    try:
        status = json.loads(subprocess.run(["dvc", "status", "--json"], cwd=dvc_project, capture_output=True,
                                           text=True, check=True).stdout)
    finally:
        write_params(dvc_project / "params.yaml", methods=METHODS, baselines=BASELINES, table4=TABLE4,
                     condition_head=HEAD)
    stages = set(status) - {"data.dvc"}
    trained = {f"train@phantom-cardiac-{m}" for m in METHODS} | {"baseline-train@phantom-cardiac-flowsdf",
                                                                 "ablation-train@phantom-cardiac-medflowseg-backbone"}
    assert stages == trained, sorted(stages)
    assert all(status[name] == ["changed command"] for name in trained), status


def test_mlflow_rerun_does_not_duplicate_runs(dvc_project):
    from mlflow.tracking import MlflowClient

    _run(["segbench", "tables"], dvc_project)
    client = MlflowClient(f"sqlite:///{dvc_project / 'mlflow.db'}")  # no global state for later tests
    exp = client.get_experiment_by_name("segbench-test")
    runs = client.search_runs([exp.experiment_id])
    keys = sorted(r.data.tags["segbench.key"] for r in runs)
    assert keys == ["phantom-cardiac/flowsdf", "phantom-cardiac/flowseg-plain", "phantom-cardiac/medflowseg",
                    "phantom-cardiac/medflowseg-backbone", "phantom-cardiac/medflowseg-head", "phantom-cardiac/unet",
                    "summary"]
    run = next(r for r in runs if r.data.tags["segbench.key"] == "phantom-cardiac/unet")
    assert run.data.tags["manifest_sha256"] != "unknown" and "avg_dice" in run.data.metrics


def test_unavailable_dataset_is_marked_not_run_everywhere(tmp_path, monkeypatch, capsys):
    """If Colin27 cannot be obtained, the run says so loudly and every table says 'not run'."""
    from benchmark.data import colin27

    def refuse(dest):
        raise colin27.FetchError("apt-get download mricron-data failed (simulated)")

    monkeypatch.setattr(colin27, "fetch", refuse)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", datasets=["colin27"], methods=["unet"])
    (tmp_path / "paper").mkdir()
    shutil.copy(ROOT / "paper/claims.yaml", tmp_path / "paper/claims.yaml")
    shutil.copy(ROOT / "paper/catalogue.yaml", tmp_path / "paper/catalogue.yaml")
    for argv in (["fetch", "colin27"], ["preprocess", "colin27"], ["train", "colin27", "unet"],
                 ["predict", "colin27", "unet"], ["evaluate", "colin27", "unet"], ["tables", "--no-mlflow"]):
        assert main(argv) == 0, argv
    err = capsys.readouterr().err
    assert "DATASET colin27 IS NOT AVAILABLE" in err and "simulated" in err
    metrics = json.loads((tmp_path / "results/colin27/unet/evaluation.json").read_text())
    assert metrics["status"] == "not_run"
    table = (tmp_path / "paper/tables/table2_modalities.md").read_text()
    assert "not run" in table and "colin27" in table


def test_claims_report_and_headline_metrics(dvc_project):
    report = (dvc_project / "paper/claims_report.md").read_text()
    assert "**Nothing in this report reproduces a claim of the papers.**" in report
    lines = [line for line in report.splitlines() if line.startswith("| medflowseg.") or line.startswith("| flowsdf.")
             or line.startswith("| atfm.")]
    assert len(lines) == 430  # one line per claim of paper/claims.yaml
    unet = next(line for line in lines if line.startswith("| medflowseg.t1.unet.avg_dice "))
    assert "**not comparable**" in unet and "phantom-cardiac is a synthetic phantom standing in for ACDC" in unet
    assert "| phantom-cardiac | none (subjects and image slices) |" in report
    headline = json.loads((dvc_project / "paper/metrics.json").read_text())
    assert set(headline) >= {"dice_mean.unet", "dice_mean.medflowseg", "claims.not_comparable", "claims.not_run"}
    assert sum(v for k, v in headline.items() if k.startswith("claims.")) == 430
    shown = _run(["dvc", "metrics", "show", "--md"], dvc_project)
    assert "paper/metrics.json" in shown and "dice_mean.unet" in shown


def test_claims_report_opens_in_headless_chromium(dvc_project, tmp_path):
    """The HTML report renders in Debian's Chromium (installed by the README's test command) without
    script errors or broken images, and shows the report's text."""
    from matplotlib.image import imread
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: apt-get install chromium (the README's test command does)"
    errors, shot = [], tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((dvc_project / "paper/claims_report.html").as_uri())
        page.screenshot(path=str(shot))
        text = page.inner_text("body")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        browser.close()
    assert errors == []
    assert text.startswith("Claims report: profile test") and "Nothing in this report reproduces" in text
    assert "medflowseg.t4.medflowseg.ged" in text and "not comparable" in text
    assert sorted(src for src, _ in images) == [f"figures/{f}.png" for f in
                                                ("nfe_sweep", "qualitative", "training_curves", "uncertainty")]
    assert all(width > 100 for _, width in images)  # every figure loaded
    pixels = imread(shot)
    assert pixels.shape[:2] == (900, 1280) and pixels[..., :3].std() > 0.05  # a rendered page, not a blank one

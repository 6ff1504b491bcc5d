"""The complexity-and-uncertainty table (paper Table 4's shape) and the complexity stage behind it."""
from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.complexity import method_complexity
from benchmark.config import load_config
from benchmark.methods import build_method
from benchmark.tables import TABLE4_COLUMNS, table4, table4_caption, write_table
from tests.conftest import TINY_PARAMS, write_params

DS = "phantom-lesion"


def _result(dice: float, n_samples: int = 4) -> dict:
    means = {f"ged_{n_samples}": 0.25, "hm_iou": 0.5, "mdm": 0.6, "ci_sensitivity": 0.9,
             "ci_diversity_agreement": 0.8, "ci_paper": 0.7, "ci_harmonic": 0.75}
    return {"status": "ok", "average": {"dice": dice, "iou": dice / 2, "hd95": 3.0},
            "set_metrics": {"n_samples": n_samples, "n_raters": 4, "mean": means},
            "conventions": {"fusion": "staple", "reference": "majority"}}


def _complexity() -> dict:
    return {"status": "ok", "params": 840_000, "macs_per_evaluation": 2.5e7, "macs_protocol": 1.1e9, "samples": 4,
            "evaluations_per_sample": 10, "image": [1, 64, 64]}


@pytest.fixture
def cfg(tmp_path):
    method = dict(TINY_PARAMS["method"])
    method.update({m: method["medflowseg-backbone"] for m in ("medflowseg-dbsa", "medflowseg-fa")})
    return load_config(write_params(
        tmp_path / "params.yaml", datasets=[DS], methods=["unet", "medflowseg"], method=method,
        ablations={"datasets": [DS], "methods": ["medflowseg-dbsa", "medflowseg-fa"]},
        nfe_sweep={"datasets": [], "method": "medflowseg"},
        table4={"datasets": [DS], "methods": ["medflowseg", "medflowseg-dbsa", "medflowseg-fa"]}))


def test_table4_rows_cells_and_missing_results(cfg, tmp_path):
    results = {(DS, "medflowseg"): _result(0.5), (DS, "medflowseg-dbsa"): _result(0.4)}  # -fa not evaluated
    complexity = {(DS, "medflowseg"): _complexity()}
    df = table4(cfg, results, complexity)
    assert list(df.columns) == TABLE4_COLUMNS
    not_implemented = [name for ds, name in df.index if ds == ""]
    assert not_implemented == ["EnsemDiff", "SegDiff", "MedSegDiff", "MedSegDiff-V2", "FlowSDF"]
    assert (df.loc[("", "FlowSDF")] == "not implemented").all()
    full = df.loc[(DS, "MedFlowSeg")]
    assert list(full) == ["0.840", "0.025", "4 x 10", "1.10", "70.0", "75.0", "25.0 (K = 4)", "50.0", "50.00"]
    dbsa = df.loc[(DS, "medflowseg-dbsa (paper: bone + DB-SA)")]
    assert list(dbsa[:4]) == ["not run"] * 4 and dbsa["Dice"] == "40.00"
    assert (df.loc[(DS, "medflowseg-fa (paper: bone + FA-A.)")] == "not run").all()
    caption = table4_caption(cfg, results, complexity)
    assert "{'medflowseg': 4, 'medflowseg-dbsa': 4}" in caption and "raters per case: {'phantom-lesion': 4}" in caption
    assert "at 64x64 pixels" in caption

    md, tex, csv = write_table(df, tmp_path / "t4", "Table 4", caption)
    text = md.read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    assert rows[0][:3] == ["Dataset", "Method", "Params (M)"] and ["phantom-lesion", "MedFlowSeg"] in [r[:2] for r in rows]
    assert "('phantom-lesion'" not in text
    assert csv.read_text().splitlines()[0].startswith("Dataset,Method,Params (M)")
    assert tex.read_text().startswith("\\begin{table}")


def test_table4_config_refuses_pairs_no_stage_evaluates(tmp_path):
    from benchmark.config import ConfigError
    with pytest.raises(ConfigError, match="table4 asks for"):
        load_config(write_params(tmp_path / "params.yaml", table4={"datasets": ["phantom-cardiac"],
                                                                    "methods": ["medflowseg"]}))


def test_complexity_stage_writes_the_counts_of_the_configured_method(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    assert main(["complexity", "phantom-cardiac", "medflowseg-backbone"]) == 0
    record = json.loads((tiny_project / "results/phantom-cardiac/medflowseg-backbone/complexity.json").read_text())
    cfg = load_config(tiny_project / "params.yaml")
    mcfg = cfg.method_config("medflowseg-backbone")
    expected = method_complexity(build_method("medflowseg-backbone", 1, 4, mcfg.model), 1, 32, mcfg.predict.n_samples)
    assert record["status"] == "ok" and record["image"] == [1, 32, 32] and record["num_classes"] == 4
    assert record["params"] == expected.params
    assert record["macs_per_evaluation"] == pytest.approx(expected.macs_per_evaluation)
    assert record["samples"] == 2 and record["evaluations_per_sample"] == 2  # tiny profile: 2 samples, 2 steps
    assert record["macs_protocol"] == pytest.approx(record["macs_fixed"] + 2 * 2 * record["macs_per_evaluation"])

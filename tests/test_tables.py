"""The complexity-and-uncertainty table (paper Table 4's shape) and the complexity stage behind it."""
from __future__ import annotations

import dataclasses
import json

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.cli import main
from benchmark.complexity import method_complexity
from benchmark.config import load_config
from benchmark.data.phantoms import brain, cardiac, fundus
from benchmark.layouts import TABLES
from benchmark.methods import build_method
from benchmark.records import EvaluationRecord
from benchmark.reproduction import measure
from benchmark.tables import build_table, complexity_caption, results_caption, write_table
from tests.conftest import TINY_PARAMS, write_params
from tests.evidence_helpers import CLASSES, case_tables
from tests.evidence_helpers import complexity as _complexity
from tests.evidence_helpers import evaluation as _result
from tests.evidence_helpers import evidence as _evidence

DS = "phantom-lesion"
LAYOUTS = {layout.table: layout for layout in TABLES}
TABLE4_EXTRA = [name for name, _ in LAYOUTS["Table 4"].our_columns]


def _table(table: str, ev):
    return build_table(LAYOUTS[table], ev)


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
    ev = _evidence(cfg, results, complexity)
    df = _table("Table 4", ev)
    assert list(df.columns) == ["Params", "Gflops", "CI", "GED", "Dice"] + TABLE4_EXTRA
    names = [name for _, name in df.index]
    assert names == ["EnsemDiff", "SegDiff", "MedSegDiff", "MedSegDiff-V2", "FlowSDF",
                     "bone + DB-SA [ours: medflowseg-dbsa]", "bone + FA-A. [ours: medflowseg-fa]",
                     "MedFlowSeg [ours: medflowseg]"]
    assert df.loc[(DS, "FlowSDF"), "Params"] == "not run (paper 42)"  # registered, not in this profile
    assert df.loc[(DS, "SegDiff"), "Params"] == "not run (paper 53)"       # every Table 4 row is implemented
    assert (df.loc[(DS, "FlowSDF"), TABLE4_EXTRA] == "not run").all()
    assert (df.loc[(DS, "SegDiff"), TABLE4_EXTRA] == "not run").all()
    full = df.loc[(DS, "MedFlowSeg [ours: medflowseg]")]
    assert full["Params"] == "0.840 (paper 111, Δ -110.160)" and full["Gflops"].startswith("2.20 (paper 789")
    # phantom-lesion does not stand for the paper's REFUGE2-Cup: the paper's value, no difference
    assert full["CI"] == "70.0 (paper 83.2 on REFUGE2-Cup)" and full["GED"] == "25.0 (paper 21.9 on REFUGE2-Cup)"
    assert full["Dice"] == "50.00 (paper 88.6 on REFUGE2-Cup)"
    assert list(full[TABLE4_EXTRA]) == ["0.025", "0.050", "4 x 10", "75.0", "50.0"]
    assert TABLE4_EXTRA[:2] == ["GMACs per evaluation", "GFLOPs per evaluation (2 per MAC)"]
    dbsa = df.loc[(DS, "bone + DB-SA [ours: medflowseg-dbsa]")]
    assert dbsa["Params"] == "not run" and dbsa["Dice"] == "40.00 (paper 85.1 on REFUGE2-Cup)"
    fa = df.loc[(DS, "bone + FA-A. [ours: medflowseg-fa]")]
    assert fa["CI"].startswith("not run (paper 82.9") and fa["HM-IoU"] == "not run"
    caption = complexity_caption(ev, LAYOUTS["Table 4"])
    assert "{'medflowseg': 4, 'medflowseg-dbsa': 4}" in caption and "raters per case: {'phantom-lesion': 4}" in caption
    assert "at 64x64 pixels" in caption

    md, tex, csv = write_table(df, tmp_path / "t4", "Table 4", caption)
    text = md.read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    assert rows[0][:3] == ["Dataset", "Method", "Params"]
    assert ["phantom-lesion", "MedFlowSeg [ours: medflowseg]"] in [r[:2] for r in rows]
    assert "('phantom-lesion'" not in text
    assert csv.read_text().splitlines()[0].startswith("Dataset,Method,Params")
    latex = tex.read_text()
    assert latex.startswith("\\begin{table}") and "Δ" not in latex and "$\\Delta$ -110.160" in latex


def test_table1_has_every_paper_row_and_our_extra_method(tmp_path):
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=["phantom-cardiac"],
                                   methods=["unet", "flowseg-plain", "medflowseg"]))
    results = {("phantom-cardiac", "unet"): _result(0.6), ("phantom-cardiac", "flowseg-plain"): _result(0.3)}
    df = _table("Table 1", _evidence(cfg, results))
    assert list(df.columns) == ["Average Dice", "Average IoU", "Average HD95"] + [
        f"{s} {k}" for s in ("RV", "Myo", "LV") for k in ("Dice", "IoU")]
    paper_rows = ["UNet", "nnUNet", "TransUNet", "SwinUNet", "MT-UNet", "EnsemDiff", "SegDiff", "MedSegDiff",
                  "MedSegDiff-V2", "FlowSDF", "MedFlowSeg"]
    assert [i.split(" [")[0] for i in df.index] == paper_rows + ["flowseg-plain (flow-matching scaffold, not MedFlowSeg)"]
    unet = df.loc["UNet [ours: unet]"]
    assert unet["Average Dice"] == "60.00 (paper 87.55, Δ -27.55)" and unet["LV Dice"] == "90.00 (paper 94.92, Δ -4.92)"
    assert unet["Average HD95"] == "3.00 (paper 9.58, Δ -6.58)"
    assert df.loc["nnUNet", "Average Dice"] == "not run (paper 90.29)"  # registered, not in this profile
    assert df.loc["EnsemDiff", "Average Dice"] == "not run (paper 92.76)"     # every Table 1 row is implemented
    assert df.loc["TransUNet", "Average Dice"] == "not run (paper 89.71)"  # in the catalogue, not in this profile
    assert df.loc["MedFlowSeg [ours: medflowseg]", "Average Dice"] == "not run (paper 93.57)"  # no evaluation
    assert df.iloc[-1]["Average Dice"] == "30.00"   # our extra row: no paper value


def test_table2_adds_columns_for_datasets_the_paper_lacks(tmp_path):
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=["phantom-gland", DS], methods=["unet"]))
    results = {("phantom-gland", "unet"): _result(0.8), (DS, "unet"): _result(0.4)}
    df = _table("Table 2", _evidence(cfg, results))
    assert list(df.columns[-3:]) == [f"{DS} Dice", f"{DS} IoU", f"{DS} HD95"]
    assert df.loc["UNet (MONAI)", f"{DS} Dice"] == "40.00"
    assert df.loc["UNet (MONAI)", "GlaS Dice"] == "80.00"   # the paper's Table 2 has no UNet row: ours alone
    assert df.loc["UNet (MONAI)", "CAMUS Dice"] == "not run"
    assert df.loc["MedFlowSeg", "GlaS Dice"] == "not run (paper 92.8)"
    assert df.loc["SwinBTS", "GlaS Dice"] == "not implemented (paper 84.3)"
    assert df.loc["UNetr", "GlaS Dice"] == "not run (paper 89)"  # registered, not in this profile
    assert df.loc["SwinBTS", f"{DS} Dice"] == "not implemented" and df.loc["MedFlowSeg", f"{DS} Dice"] == "not run"


def test_table3_rows_are_the_papers_ablation(cfg):
    results = {(DS, "medflowseg-dbsa"): _result(0.45), (DS, "medflowseg"): _result(0.5)}
    df = _table("Table 3", _evidence(cfg, results))
    assert [i.split(" [")[0] for i in df.index] == ["backbone", "+ SA", "+ DB-SA", "+ DB-SA + FA-A. (w/o Mod.)",
                                                    "+ DB-SA + FA-A. + Neural Mod.", "medflowseg-fa"]
    assert df.loc["+ DB-SA [ours: medflowseg-dbsa]", f"{DS} Dice"] == "45.00"
    assert df.loc["+ DB-SA [ours: medflowseg-dbsa]", "Optic Cup Dice"].startswith("not run (paper 86.4")
    assert df.loc["backbone", "Brain Tumor Dice"] == "not run (paper 87.6)"  # not in this profile's ablations


def test_table4_config_refuses_pairs_no_stage_evaluates(tmp_path):
    from benchmark.config import ConfigError
    with pytest.raises(ConfigError, match="table4 asks for"):
        load_config(write_params(tmp_path / "params.yaml", table4={"datasets": ["phantom-cardiac"],
                                                                    "methods": ["medflowseg"]}))


def test_baselines_matrix_joins_the_comparison_tables_and_is_checked(tmp_path):
    from benchmark.config import ConfigError
    baselines = {"datasets": ["phantom-cardiac"], "methods": ["flowsdf", "unet"]}
    cfg = load_config(write_params(tmp_path / "params.yaml", baselines=baselines))
    assert cfg.compared_methods == ("unet", "flowsdf")   # the main methods first, none twice
    assert cfg.evaluated("phantom-cardiac", "flowsdf") and not cfg.evaluated("phantom-lesion", "flowsdf")
    assert cfg.pairs().count(("phantom-cardiac", "unet")) == 1
    with pytest.raises(ConfigError, match=r"baselines.datasets \['phantom-lesion'\] are not in datasets"):
        load_config(write_params(tmp_path / "params.yaml", baselines={**baselines, "datasets": ["phantom-lesion"]}))
    with pytest.raises(ConfigError, match=r"no section method.atfm"):
        load_config(write_params(tmp_path / "params.yaml", baselines={**baselines, "methods": ["atfm"]}))


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
    # the same compute in FLOPs, 2 per multiply-add, each unit named
    assert record["flops_per_evaluation"] == 2 * record["macs_per_evaluation"] > 0
    assert record["flops_protocol"] == 2 * record["macs_protocol"] and "2 FLOPs" in record["counted_by"]


def test_headline_metrics_average_the_main_matrix_and_count_verdicts(cfg):
    from benchmark.reproduction import Line, Measured
    from benchmark.tables_stage import flat_metrics, headline_metrics

    results = {(DS, "unet"): _result(0.6), (DS, "medflowseg"): EvaluationRecord.not_run("no data", method="medflowseg"),
               (DS, "medflowseg-dbsa"): _result(0.9)}  # an ablation variant: Table 3's, not a headline
    ev = _evidence(cfg, results)
    claim = ev.claims[0]
    lines = [Line(claim, Measured(None), "not run"), Line(claim, Measured(1.0), "not comparable"),
             Line(claim, Measured(None), "not run")]
    assert flat_metrics(headline_metrics(ev, lines)) == {
        "dice_mean.unet": pytest.approx(60.0), "claims.not_run": 2, "claims.not_comparable": 1}


def test_table2_reports_each_region_and_reads_brats_as_their_mean(tmp_path):
    """Region columns per dataset that declares regions (BraTS's WT, TC, ET; the fundus's disc and cup); the paper's
    single BraTS number is compared with the mean of WT, TC and ET, and the caption says what each region is."""
    method = dict(TINY_PARAMS["method"])
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=["phantom-brain", "phantom-fundus"],
                                   methods=["unet", "medflowseg"], method=method))
    region = lambda dice, hd95: {"classes": [], "dice": dice, "iou": dice / 2, "hd95": hd95, "set_metrics": {}}
    brain_result = dataclasses.replace(_result(0.5), per_region={
        "region:WT": region(0.9, 6.0), "region:TC": region(0.8, 9.0), "region:ET": region(0.7, 12.0)})
    ev = _evidence(cfg, {("phantom-brain", "medflowseg"): brain_result})
    ev.manifests.update({"phantom-brain": SimpleNamespace(dataset=brain.INFO),
                         "phantom-fundus": SimpleNamespace(dataset=fundus.INFO)})
    df = _table("Table 2", ev)
    row = "MedFlowSeg [ours: medflowseg]"
    regions = [f"phantom-brain {r} {m}" for r in ("WT", "TC", "ET") for m in ("Dice", "HD95")] + \
              [f"phantom-fundus {r} {m}" for r in ("disc", "cup") for m in ("Dice", "HD95")]
    assert [c for c in df.columns if " WT " in c or " TC " in c or " ET " in c or " disc " in c or " cup " in c] \
        == regions
    assert [df.loc[row, c] for c in regions[:6]] == ["90.00", "6.00", "80.00", "9.00", "70.00", "12.00"]
    assert df.loc[row, "phantom-fundus disc Dice"] == "not run"
    assert df.loc[row, "BraTs-2021 Dice"].startswith("80.00 (paper ")
    assert df.loc[row, "BraTs-2021 HD95"].startswith("9.00 (paper ")
    caption = results_caption(ev, LAYOUTS["Table 2"])
    assert "Regions (unions of classes): WT = NCR + ED + ET; TC = NCR + ET; ET = ET." in caption
    assert "disc = optic disc + optic cup; cup = optic cup." in caption


def test_table4_on_a_stand_in_for_refuge2_cup_reads_the_cup_in_every_column(tmp_path):
    ds = "phantom-fundus"
    method = dict(TINY_PARAMS["method"])
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=[ds], methods=["unet", "medflowseg"],
                                   method=method, table4={"datasets": [ds], "methods": ["medflowseg"]}))
    cup = {"classes": ["optic cup"], "dice": 0.85, "iou": 0.7, "hd95": 2.0,
           "set_metrics": {"ged_4": 0.28, "ci_paper": 0.77, "ci_harmonic": 0.66, "hm_iou": 0.55}}
    disc = {"classes": ["optic disc", "optic cup"], "dice": 0.95, "iou": 0.9, "hd95": 1.0,
            "set_metrics": {"ged_4": 0.1, "ci_paper": 0.9, "ci_harmonic": 0.9, "hm_iou": 0.9}}
    result = dataclasses.replace(_result(0.5), per_region={"region:disc": disc, "region:cup": cup})
    ev = _evidence(cfg, {(ds, "medflowseg"): result})
    ev.manifests[ds] = SimpleNamespace(dataset=fundus.INFO)
    row = _table("Table 4", ev).loc[(ds, "MedFlowSeg [ours: medflowseg]")]
    assert row["CI"].startswith("77.0 (paper ") and row["GED"].startswith("28.0 (paper ")
    assert row["Dice"].startswith("85.00 (paper ")
    assert (row["CI (harmonic)"], row["HM-IoU"]) == ("66.0", "55.0")    # the all-class means are 75.0 and 50.0
    assert "every column reads the cup region alone" in complexity_caption(ev, LAYOUTS["Table 4"])


def test_table4_gives_compute_in_macs_and_in_flops_from_the_record(cfg):
    """The FLOPs column is twice the MACs column, cell for cell, read from the complexity record."""
    import dataclasses

    counts = {"medflowseg": (3.7e7, 7.4e7), "medflowseg-dbsa": (1.25e9, 2.5e9)}
    complexity = {(DS, m): dataclasses.replace(_complexity(), macs_per_evaluation=macs, flops_per_evaluation=flops)
                  for m, (macs, flops) in counts.items()}
    ev = _evidence(cfg, {(DS, m): _result(0.5) for m in counts}, complexity)
    df = _table("Table 4", ev)
    for label in ("MedFlowSeg [ours: medflowseg]", "bone + DB-SA [ours: medflowseg-dbsa]"):
        macs, flops = (float(df.loc[(DS, label), c]) for c in ("GMACs per evaluation",
                                                                 "GFLOPs per evaluation (2 per MAC)"))
        assert flops == pytest.approx(2 * macs) and macs > 0



def _cardiac_per_case(runs: dict[str, list[list[float]]]) -> dict:
    """Per-case results on phantom-cardiac: each method's Dice per case (the same for every class) for each of
    its seeds, one subject per case."""
    return {("phantom-cardiac", m): [case_tables({c: dice for c in CLASSES[1:]}) for dice in seeds]
            for m, seeds in runs.items()}


def test_cells_carry_intervals_and_the_dagger_marks_holm_significant_dice(tmp_path):
    """Every mean over cases shows its bootstrap interval; UNet, below MedFlowSeg on every case, is marked as
    differing from it; flowseg-plain, within noise of it, is not; the legend gives cases, seeds and the rule."""
    from benchmark.significance import marks, paired_tests
    from benchmark.statistics import CaseValues, bootstrap_interval
    from benchmark.tables import write_tables

    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=["phantom-cardiac"],
                                   methods=["unet", "flowseg-plain", "medflowseg"]))
    base = np.array([0.70 + 0.02 * i for i in range(12)])
    noise = np.array([0.01 * (-1) ** i * (1 + i % 3) for i in range(12)])
    per_case = _cardiac_per_case({"medflowseg": [base, base + 0.01], "unet": [base - 0.2],
                                  "flowseg-plain": [base + noise]})
    means = {m: float(np.mean([r.classes["dice"].mean() for r in runs])) for (_, m), runs in per_case.items()}
    results = {("phantom-cardiac", m): _result(v, lv=v) for m, v in means.items()}
    ev = _evidence(cfg, results, per_case=per_case)
    ev.manifests["phantom-cardiac"] = SimpleNamespace(dataset=cardiac.INFO)    # the captions read its description

    found = paired_tests(LAYOUTS["Table 1"], ev)
    tests = found.set_index("method")
    assert list(tests.index) == ["unet", "flowseg-plain"] and set(tests["column"]) == {"Average Dice"}
    exact = stats.wilcoxon(base - 0.2, base + 0.005)      # against MedFlowSeg's per-case mean over its two seeds
    assert tests.loc["unet", "p"] == pytest.approx(exact.pvalue) and tests.loc["unet", "n_pairs"] == 12
    assert tests.loc["unet", "direction"] == "lower" and tests.loc["unet", "significant"]
    assert tests.loc["unet", "p_holm"] == pytest.approx(2 * exact.pvalue)  # the smaller of two p-values
    assert not tests.loc["flowseg-plain", "significant"] and tests.loc["flowseg-plain", "p"] > 0.05

    df = build_table(LAYOUTS["Table 1"], ev, marks(found))
    values = CaseValues(100 * (base - 0.2)[None, :, None].repeat(3, axis=2), tuple(f"c{i:02d}" for i in range(12)),
                        tuple(f"s{i:02d}" for i in range(12)))
    i = bootstrap_interval(values, cfg.claims.bootstrap_resamples, cfg.claims.confidence, cfg.claims.bootstrap_seed)
    unet = df.loc["UNet [ours: unet]"]
    assert unet["Average Dice"] == f"{100 * means['unet']:.2f} [{i.low:.2f}, {i.high:.2f}]† (paper 87.55, Δ " \
                                   f"{100 * means['unet'] - 87.55:+.2f})"
    assert unet["LV Dice"].startswith(f"{100 * means['unet']:.2f} [") and "†" not in unet["LV Dice"]
    plain = df.iloc[-1]["Average Dice"]
    assert plain.endswith("]") and "†" not in plain

    written = write_tables(ev, tmp_path / "tables")
    assert tmp_path / "tables" / "table1_cardiac_wilcoxon.csv" in written
    csv = pd.read_csv(tmp_path / "tables" / "table1_cardiac_wilcoxon.csv")
    assert list(csv.columns) == ["dataset", "column", "method", "reference", "n_pairs", "statistic", "p", "p_holm",
                                 "significant", "direction", "mean_difference"]
    tex = (tmp_path / "tables" / "table1_cardiac.tex").read_text()
    assert "†" not in tex and "]$^{\\dagger}$ (paper 87.55" in tex
    md = (tmp_path / "tables" / "table1_cardiac.md").read_text()
    assert ("Cases (subjects) per dataset: phantom-cardiac 12 (12); training seeds per cell: 1, except "
            "phantom-cardiac/medflowseg 2.") in md
    assert "†: per-case Dice differs from MedFlowSeg's at Holm-adjusted p < 0.05" in md
    assert "Holm over the 2 tests of this table, `table1_cardiac_wilcoxon.csv`" in md


def test_table4_set_metric_columns_carry_intervals(cfg):
    ci = [0.6 + 0.02 * i for i in range(10)]
    run = case_tables({c: [0.5] * 10 for c in CLASSES[1:]}, sets={"ci_harmonic": ci, "hm_iou": [0.5] * 10,
                                                              "ci_paper": [0.7] * 10, "ged_4": [0.25] * 10})
    ev = _evidence(cfg, {(DS, "medflowseg"): _result(0.5)}, per_case={(DS, "medflowseg"): [run]})
    row = _table("Table 4", ev).loc[(DS, "MedFlowSeg [ours: medflowseg]")]
    low, high = (float(v) for v in row["CI (harmonic)"].split("[")[1].rstrip("]").split(", "))
    assert row["CI (harmonic)"].startswith("75.0 [") and 60 < low < 69 < 70 < high < 80
    assert row["HM-IoU"] == "50.0 [50.0, 50.0]"     # every case the same: no spread
    assert row["CI"] == "70.0 [70.0, 70.0] (paper 83.2 on REFUGE2-Cup)"
    assert row["Params"] == "not run (paper 111)"    # no complexity record; never an interval


def test_a_set_metric_column_over_several_seeds_shows_their_mean_and_spread(cfg):
    """Table 4's columns of ours: over two seeds, the mean of the seeds' values ± their standard deviation, not
    the main run's value of the evaluation record."""
    ci = np.array([0.6 + 0.02 * i for i in range(10)])
    runs = [case_tables({c: [0.5] * 10 for c in CLASSES[1:]}, sets={"ci_harmonic": list(v), "hm_iou": [0.5] * 10,
                                                                 "ci_paper": [0.7] * 10, "ged_4": [0.25] * 10})
            for v in (ci, ci + 0.1)]
    ev = _evidence(cfg, {(DS, "medflowseg"): _result(0.5)}, per_case={(DS, "medflowseg"): runs})
    row = _table("Table 4", ev).loc[(DS, "MedFlowSeg [ours: medflowseg]")]
    per_seed = [100 * ci.mean(), 100 * (ci + 0.1).mean()]
    assert row["CI (harmonic)"].startswith(f"{np.mean(per_seed):.1f} ± {np.std(per_seed, ddof=1):.1f} [")
    assert row["HM-IoU"] == "50.0 ± 0.0 [50.0, 50.0]"


def test_the_evidence_reads_each_evaluated_pairs_per_case_files_as_one_seed(tmp_path, monkeypatch):
    """Case and subject ids stay text ("007" is not 7); a pair without an ok evaluation has no per-case results."""
    from benchmark import paths
    from benchmark.evidence import Selection, load_evidence
    from benchmark.records import write_record
    from tests.evidence_helpers import CATALOGUE, CLAIMS

    monkeypatch.chdir(tmp_path)
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=["phantom-cardiac"], methods=["unet"]))
    run = case_tables({c: [0.5, 0.7] for c in CLASSES[1:]}, subjects=["007", "007"], sets={"hm_iou": [0.2, 0.4]})
    run.classes["case_id"] = run.classes["case_id"].map({"c00": "001", "c01": "002"})
    run.sets["case_id"] = ["001", "002"]
    folder = paths.results("phantom-cardiac", "unet")
    folder.mkdir(parents=True)
    run.classes.to_csv(folder / "per_case.csv", index=False)
    run.sets.to_csv(folder / "per_case_sets.csv", index=False)
    write_record(folder / "evaluation.json", _result(0.6))
    ev = load_evidence(cfg, CATALOGUE, CLAIMS)
    assert list(ev.per_case) == [("phantom-cardiac", "unet")] and len(ev.per_case[("phantom-cardiac", "unet")]) == 1
    cv = ev.case_values(("phantom-cardiac", "unet"), Selection("dice", None))
    assert cv.cases == ("001", "002") and cv.subjects == ("007", "007") and cv.point() == pytest.approx(60.0)
    sets = ev.case_values(("phantom-cardiac", "unet"), Selection(None, ("hm_iou",)))
    assert sets.values.shape == (1, 2, 1) and sets.point() == pytest.approx(30.0)


def test_a_pair_whose_loss_still_falls_is_named_in_the_caption_and_in_its_claims(tmp_path):
    cfg = load_config(write_params(tmp_path / "params.yaml", methods=["unet", "medflowseg"]))
    ev = _evidence(cfg, {("phantom-cardiac", "unet"): _result(0.8), ("phantom-cardiac", "medflowseg"): _result(0.7)})
    ev.manifests["phantom-cardiac"] = SimpleNamespace(dataset=cardiac.INFO)
    steps = np.arange(400)
    ev.losses = {("phantom-cardiac", "medflowseg"): pd.DataFrame({"step": steps, "loss": np.exp(-steps / 200)}),
                 ("phantom-cardiac", "unet"): pd.DataFrame({"step": steps, "loss": np.full(400, 0.3)})}
    caption = results_caption(ev, LAYOUTS["Table 1"])
    assert ("phantom-cardiac/medflowseg: training loss still falling at the end (22% over the last quarter of its "
            "steps), maybe short of its plateau") in caption
    assert "phantom-cardiac/unet:" not in caption
    claim = next(c for c in ev.claims if c.table == "Table 1" and c.metric == "dice"
                 and ev.catalogue.row_method(c.row) == "medflowseg")
    assert any("maybe short of its plateau" in c for c in measure(claim, ev).caveats)


def test_a_velocity_loss_other_than_the_papers_is_named_in_the_rows_and_the_claims(tmp_path):
    # the CPU profiles may train MedFlowSeg with the MSE velocity loss: its row, its head row and its claims say so
    mse = {**TINY_PARAMS["method"]["medflowseg"], "model": {**TINY_PARAMS["method"]["medflowseg"]["model"],
                                                            "velocity_loss": "mse"}}
    cfg = load_config(write_params(tmp_path / "params.yaml", methods=["unet", "medflowseg"],
                                   method={**TINY_PARAMS["method"], "medflowseg": mse},
                                   condition_head={"datasets": ["phantom-cardiac"], "method": "medflowseg"}))
    ev = _evidence(cfg, {("phantom-cardiac", "unet"): _result(0.8), ("phantom-cardiac", "medflowseg"): _result(0.7),
                         ("phantom-cardiac", "medflowseg-head"): _result(0.75)})
    ev.manifests["phantom-cardiac"] = SimpleNamespace(dataset=cardiac.INFO)
    index = list(_table("Table 1", ev).index)
    flow = [r for r in index if "medflowseg" in r.lower()]
    assert flow and all("MSE velocity loss" in r for r in flow), index
    assert not any("velocity loss" in r for r in index if r not in flow)
    claim = next(c for c in ev.claims if c.table == "Table 1" and c.metric == "dice"
                 and ev.catalogue.row_method(c.row) == "medflowseg")
    assert "medflowseg trained with the MSE velocity loss, not the paper's L1" in measure(claim, ev).caveats
    unet = next(c for c in ev.claims if c.table == "Table 1" and c.metric == "dice"
                and ev.catalogue.row_method(c.row) == "unet")
    assert not any("velocity loss" in c for c in measure(unet, ev).caveats)

"""Evaluation regions on fixtures of the REFUGE-2 and BraTS 2021 layouts: declared in the manifest, nested as
the challenges nest them, and scored by the evaluate stage beside the classes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.config import DataConfig, EvalConfig
from benchmark.data.manifest import load_manifest
from benchmark.data.phantoms import brain, fundus
from benchmark.data.preprocess import load_split
from benchmark.data.real import brats, refuge
from benchmark.data.store import save_arrays
from benchmark.evaluation import evaluate
from benchmark.metrics import case_metrics
from benchmark.metrics.fusion import fuse
from benchmark.metrics.multirater import set_metrics
from benchmark.metrics.regions import region_map
from benchmark.records import PredictionRecord, Status, write_record
from tests.data.real.helpers import fetch_and_preprocess
from tests.data.real.test_brats import make_brats_tar
from tests.data.real.test_refuge import make_refuge_zip


def _classes(info, region: str) -> set[str]:
    return {info.class_names[c] for c in info.regions[region]}


@pytest.mark.parametrize("info", [refuge.INFO, fundus.INFO], ids=["refuge2", "phantom-fundus"])
def test_refuge_and_its_phantom_declare_the_whole_disc_and_the_cup(info):
    assert _classes(info, "disc") == {"optic disc", "optic cup"} and _classes(info, "cup") == {"optic cup"}


@pytest.mark.parametrize("info", [brats.INFO, brain.INFO], ids=["brats2021", "phantom-brain"])
def test_brats_and_its_phantom_declare_wt_tc_et(info):
    assert _classes(info, "WT") == {"NCR", "ED", "ET"} and _classes(info, "TC") == {"NCR", "ET"}
    assert _classes(info, "ET") == {"ET"}


@pytest.fixture
def refuge_processed(tmp_path, http_server):
    zpath = tmp_path / refuge.FILES[0].name
    make_refuge_zip(zpath)
    cfg = DataConfig(size=32, split={"train": 0.75, "val": 0.25, "test": 0.0})
    return fetch_and_preprocess(refuge, {zpath.name: zpath}, http_server, tmp_path, cfg)[1]


def test_refuge_disc_region_is_the_raters_whole_disc_and_contains_the_cup(refuge_processed):
    manifest = load_manifest(refuge_processed)
    assert manifest.dataset.regions == {"disc": (1, 2), "cup": (2,)}
    for split in ("train", "val", "test"):
        for case in load_split(refuge_processed, split)[1]:
            disc, cup = region_map(case.label, (1, 2)), region_map(case.label, (2,))
            assert cup.any() and np.all(disc >= cup) and (disc > cup).any()
            # the rim class alone misses the cup the raters drew inside their disc
            assert not np.array_equal(disc, case.label == 1)


def test_brats_regions_nest_wt_tc_et(tmp_path, http_server):
    tar = tmp_path / brats.FILES[0].name
    written = make_brats_tar(tar, tmp_path / "src")
    cfg = DataConfig(size=16, seed=3, split={"train": 0.6, "val": 0.2, "test": 0.2})
    _, processed, manifest = fetch_and_preprocess(brats, {tar.name: tar}, http_server, tmp_path, cfg)
    assert load_manifest(processed).dataset.regions == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    for split in ("train", "val", "test"):
        for case in load_split(processed, split)[1]:
            wt, tc, et = (region_map(case.label, manifest.dataset.regions[r]) for r in ("WT", "TC", "ET"))
            assert et.any() and np.all(wt >= tc) and np.all(tc >= et) and (wt > tc).any() and (tc > et).any()
    # at the fixture's own size the regions are the BraTS label sets: WT = {1, 2, 4}, TC = {1, 4}, ET = {4}
    native = "BraTS2021_00000"
    z0, z1 = 3, 6
    case = next(c for c in brats.load(tmp_path / "fetched", DataConfig(size=16)) if c.case_id.endswith(native))
    seg = written[native]["seg"][z0:z1]
    for region, values in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
        np.testing.assert_array_equal(region_map(case.label[0], brats.INFO.regions[region]), np.isin(seg, values))


def _predictions(processed, out) -> None:
    manifest, cases = load_split(processed, "test")
    rng = np.random.default_rng(0)
    for case in cases:
        shape = (4, *case.label.shape[1:])
        samples = np.where(rng.random(shape) < 0.7, case.label[rng.integers(0, 7, 4)], rng.integers(0, 3, shape))
        save_arrays(out / f"{case.case_id}.npz", samples=samples.astype(np.uint8))
    write_record(out / "meta.json", PredictionRecord(
        Status.OK, dataset="refuge2", n_cases=len(cases), n_samples_requested=4, n_samples=4, nfe_per_sample=1,
        seconds_per_case=0.1, seconds_total=0.2, device="cpu", seed=0, uncertainty="test"))


def test_evaluate_scores_regions_beside_the_classes(refuge_processed, tmp_path):
    """Dice/IoU/HD95 of the union of the fused maps, and the set metrics of the union of each sample and rater,
    recorded under ``region:<name>`` in evaluation.json, metrics.json and both CSVs; the classes and the average
    are those of an evaluation without regions."""
    _predictions(refuge_processed, tmp_path / "pred")
    cfg = EvalConfig(ged_samples=(2,), workers=1)
    record = evaluate(refuge_processed, tmp_path / "pred", tmp_path / "r", cfg, "m")
    manifest, cases = load_split(refuge_processed, "test")

    rows = pd.read_csv(tmp_path / "r" / "per_case.csv")
    sets = pd.read_csv(tmp_path / "r" / "per_case_sets.csv")
    assert list(rows["class"]) == ["optic disc", "optic cup"] * len(cases) + ["region:disc", "region:cup"] * len(cases)
    for case, (_, set_row) in zip(cases, sets.iterrows()):
        with np.load(tmp_path / "pred" / f"{case.case_id}.npz") as z:
            samples = z["samples"]
        pred, ref = fuse(samples, 3, cfg.fusion), fuse(case.label, 3, cfg.reference)
        for name, classes in (("disc", (1, 2)), ("cup", (2,))):
            want = case_metrics(np.isin(pred, classes), np.isin(ref, classes), case.spacing, 2)
            got = rows[(rows["case_id"] == case.case_id) & (rows["class"] == f"region:{name}")].iloc[0]
            for k in ("dice", "iou", "hd95"):
                assert got[k] == pytest.approx(want[k][0], abs=1e-12), (name, k)
            want_sets = set_metrics(np.isin(samples, classes).astype(np.uint8),
                                    np.isin(case.label, classes).astype(np.uint8), 2, (2,))
            for k, v in want_sets.items():
                assert set_row[f"region:{name}_{k}"] == pytest.approx(v, abs=1e-12), (name, k)

    disc = record.per_region["region:disc"]
    assert disc["classes"] == ["optic disc", "optic cup"] and disc["n_cases"] == len(cases)
    assert disc["dice"] == pytest.approx(rows[rows["class"] == "region:disc"]["dice"].mean())
    assert disc["set_metrics"]["ged_4"] == pytest.approx(sets["region:disc_ged_4"].mean())
    assert disc["dice"] != pytest.approx(record.per_class["optic disc"]["dice"])   # the whole disc, not the rim
    # the cup region is the cup class
    assert record.per_region["region:cup"]["dice"] == pytest.approx(record.per_class["optic cup"]["dice"])
    headline = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert headline["region:disc_dice"] == disc["dice"] and headline["region:cup_ci_paper"] == \
        record.per_region["region:cup"]["set_metrics"]["ci_paper"]
    saved = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert saved["per_region"]["region:cup"]["set_metrics"] == pytest.approx(
        record.per_region["region:cup"]["set_metrics"])
    assert saved["conventions"]["regions"] == {"region:disc": ["optic disc", "optic cup"], "region:cup": ["optic cup"]}

    # the same data without regions: classes, average and set metrics unchanged, and no region anywhere
    d = json.loads((refuge_processed / "manifest.json").read_text())
    del d["dataset"]["regions"]
    (refuge_processed / "manifest.json").write_text(json.dumps(d))
    plain = evaluate(refuge_processed, tmp_path / "pred", tmp_path / "plain", cfg, "m")
    assert (plain.per_class, plain.average, plain.set_metrics) == (record.per_class, record.average,
                                                                   record.set_metrics)
    assert plain.per_region is None and "regions" not in plain.conventions
    assert "per_region" not in json.loads((tmp_path / "plain" / "evaluation.json").read_text())
    plain_rows = pd.read_csv(tmp_path / "plain" / "per_case.csv")
    pd.testing.assert_frame_equal(plain_rows, rows[~rows["class"].str.startswith("region:")])
    assert list(pd.read_csv(tmp_path / "plain" / "per_case_sets.csv").columns) == \
        [c for c in sets.columns if not c.startswith("region:")]


def test_regions_scored_in_parallel_are_those_scored_serially(refuge_processed, tmp_path):
    _predictions(refuge_processed, tmp_path / "pred")
    serial = evaluate(refuge_processed, tmp_path / "pred", tmp_path / "a", EvalConfig(workers=1), "m")
    parallel = evaluate(refuge_processed, tmp_path / "pred", tmp_path / "b", EvalConfig(workers=2), "m")
    assert serial == parallel and serial.per_region
    for name in ("per_case.csv", "per_case_sets.csv", "metrics.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()

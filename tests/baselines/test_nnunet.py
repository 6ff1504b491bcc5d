"""nnU-Net through the real nnunetv2 package: export of the train/val splits, import of its outputs, and the whole
round trip (export -> plan/preprocess -> train -> predict -> import -> evaluate) twice, through the CLI and the API,
with identical results. ``baselines/nnunet.py`` is nnU-Net's side (no suite imports); ``benchmark/methods/nnunet.py``
is the registered method that trains itself."""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
from nnunetv2.utilities.crossval_split import generate_crossval_split

from baselines.nnunet import augmentation_workers, crossval_splits, write_volume
from benchmark.cli import _trains_itself, main
from benchmark.config import ConfigError, MethodConfig, load_config
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import CaseEntry, Manifest, ManifestError, file_sha256, load_manifest, slice_hashes
from benchmark.data.preprocess import normalise
from benchmark.data.store import CaseFileError, load_arrays, save_case
from benchmark.errors import SegbenchError
from benchmark.evaluation import evaluate
from benchmark.methods import nnunet
from benchmark.methods.interface import TrainsItself
from benchmark.methods.registry import build_method
from tests.conftest import TINY_PARAMS, write_params

SPACING = (5.0, 1.5, 1.25)  # (z, y, x) mm
SPLITS = {"a": "train", "b": "train", "c": "val", "d": "test"}
TINY_NNUNET = {"epochs": 2, "iterations_per_epoch": 5, "val_iterations": 2}


def _toy_processed(root: Path, status: str = "ok") -> dict:
    """4 subjects (2 train, 1 val, 1 test), 3 channels, 3 raters, 3 classes, 2 slices of 6x5 px, z-scored as the
    preprocess stage does from source intensities of a scale and offset of their own per channel. Returns
    ``{case id: (case, source image)}``."""
    info = DatasetInfo(name="toy-set", modality="CT", channels=3, class_names=("background", "cyst", "wall"),
                       n_annotators=3)
    rng = np.random.default_rng(0)
    entries, cases = [], {}
    for sid, split in SPLITS.items():
        cid = f"{sid}_case"
        source = (rng.normal(size=(2, 3, 6, 5)) * [[[[300.0]], [[20.0]], [[1.0]]]] + [[[[-500.0]], [[40.0]], [[0.0]]]]
                  ).astype(np.float32)
        image, mean, std = normalise(source)
        case = Case(cid, sid, image, rng.integers(0, 3, (3, 2, 6, 5)).astype(np.uint8), SPACING)
        save_case(root / "cases" / f"{cid}.npz", case)
        entries.append(CaseEntry(cid, sid, split, f"cases/{cid}.npz", info.modality, 3, list(SPACING),
                                 list(info.class_names), 3, 2, file_sha256(root / "cases" / f"{cid}.npz"),
                                 slice_hashes(case.image), mean.tolist(), std.tolist()))
        cases[cid] = (case, source)
    Manifest(info, status, reason="" if status == "ok" else "the source is not available",
             cases=entries if status == "ok" else []).save(root)
    return cases


def test_export_gives_source_intensities_and_one_training_case_per_rater(tmp_path):
    cases = _toy_processed(tmp_path / "processed")
    out = nnunet.export_raw(tmp_path / "processed", tmp_path / "raw")
    folder = tmp_path / "raw" / "Dataset001_ToySet"
    assert out["folder"] == folder
    copies = {c: [f"{c}_rater{r}" for r in range(3)] for c in ("a_case", "b_case", "c_case")}
    assert out["cases"] == {"train": 2, "val": 1} and out["training_cases"] == 9
    assert out["splits"] == [{"train": copies["a_case"] + copies["b_case"], "val": copies["c_case"]}]

    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "CT", "1": "CT", "2": "CT"}  # nnU-Net's CT normalisation
    assert dj["labels"] == {"background": 0, "cyst": 1, "wall": 2}
    assert (dj["numTraining"], dj["file_ending"]) == (9, ".nii.gz")

    # one file per channel and one label per rater copy, for train + val only; nothing of the test subject
    names = sorted(p.name for p in folder.rglob("*") if p.is_file())
    expected = sorted([f"{t}_{k:04d}.nii.gz" for ts in copies.values() for t in ts for k in range(3)]
                      + [f"{t}.nii.gz" for ts in copies.values() for t in ts] + ["dataset.json"])
    assert names == expected
    test_case, _ = cases["d_case"]
    reader = SimpleITKIO()
    for cid, training_ids in copies.items():
        case, source = cases[cid]
        for r, tid in enumerate(training_ids):
            files = [str(folder / "imagesTr" / f"{tid}_{k:04d}.nii.gz") for k in range(3)]
            image, props = reader.read_images(files)  # nnU-Net's own reader: (C, Z, H, W), spacing (z, y, x)
            np.testing.assert_allclose(image, source.transpose(1, 0, 2, 3), rtol=1e-5, atol=1e-3)  # not z-scored
            assert props["spacing"] == list(SPACING)
            assert not any(np.array_equal(image[:, z], test_case.image[z]) for z in range(2))  # no test content
            seg, _ = reader.read_seg(str(folder / "labelsTr" / f"{tid}.nii.gz"))
            np.testing.assert_array_equal(seg[0], case.label[r])  # rater r, no fusion


def test_export_with_folds_splits_subjects_as_nnunet_does(tmp_path):
    _toy_processed(tmp_path / "processed")
    splits = nnunet.export_raw(tmp_path / "processed", tmp_path / "raw", folds=3)["splits"]
    # nnU-Net's own split of the three train + val subjects, each subject's rater copies together
    subjects = generate_crossval_split(["a", "b", "c"], seed=12345, n_splits=3)
    assert splits == [{part: sorted(f"{s}_case_rater{r}" for s in fold[part] for r in range(3))
                       for part in ("train", "val")} for fold in subjects]
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(c for c in splits[0]["train"] + splits[0]["val"])


def test_crossval_splits_are_nnunets_own_on_one_case_per_subject():
    ids = [f"case_{i:02d}" for i in range(11)]
    assert crossval_splits({c: [c] for c in ids[::-1]}, 5) == generate_crossval_split(ids, seed=12345, n_splits=5)
    with pytest.raises(ValueError, match="5 cross-validation folds need at least 5 subjects, there are 4"):
        crossval_splits({c: [c] for c in ids[:4]}, 5)


def test_channel_names_follow_nnunets_conversions():
    info = lambda modality, channels: DatasetInfo("x", modality, channels, ("background", "y"))  # noqa: E731
    assert nnunet.channel_names(info("CT", 1)) == ["CT"]
    assert nnunet.channel_names(info("fundus", 3)) == ["R", "G", "B"]
    assert nnunet.channel_names(info("MRI", 1)) == ["MRI"]
    assert [get_normalization_scheme(n).__name__ for n in ("CT", "R", "MRI", "ultrasound")] == \
        ["CTNormalization"] + ["ZScoreNormalization"] * 3


def test_augmentation_workers_auto_is_nnunets_default_capped_by_the_cores_given(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(48)))
    assert augmentation_workers("auto") == 12
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert augmentation_workers("auto") == 3 and augmentation_workers(0) == 0 and augmentation_workers(5) == 5


def test_export_refuses_a_missing_processed_dataset_or_one_without_intensity_parameters(tmp_path):
    with pytest.raises(ValueError, match="manifest is missing"):
        nnunet.export_raw(tmp_path / "nothing", tmp_path / "raw")
    _toy_processed(tmp_path / "processed")
    manifest = json.loads((tmp_path / "processed" / "manifest.json").read_text())
    for row in manifest["cases"]:
        del row["intensity_mean"], row["intensity_std"]  # a manifest written before they were kept
    (tmp_path / "processed" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="a_case: the manifest keeps no intensity mean and std .* run the "
                                            "preprocess stage again"):
        nnunet.export_raw(tmp_path / "processed", tmp_path / "raw")


def test_import_turns_an_nnunet_segmentation_into_the_prediction_format(tmp_path):
    seg = np.random.default_rng(1).integers(0, 4, (3, 7, 9)).astype(np.uint8)
    write_volume(tmp_path / "img.nii.gz", seg.astype(np.float32), SPACING)
    _, props = SimpleITKIO().read_images([str(tmp_path / "img.nii.gz")])
    SimpleITKIO().write_seg(seg, str(tmp_path / "case.nii.gz"), props)  # as nnU-Net's predictor writes it

    samples = nnunet.import_prediction(tmp_path / "case.nii.gz", tmp_path / "case.npz", (3, 7, 9), 4)
    got = load_arrays(tmp_path / "case.npz", ("samples", "uncertainty"))
    assert got["samples"].dtype == np.uint8 and got["samples"].shape == (1, 3, 7, 9)
    np.testing.assert_array_equal(got["samples"][0], seg)
    np.testing.assert_array_equal(samples, got["samples"])
    assert got["uncertainty"].dtype == np.float16 and got["uncertainty"].shape == (3, 7, 9)
    assert not got["uncertainty"].any()

    with pytest.raises(CaseFileError, match="shape"):
        nnunet.import_prediction(tmp_path / "case.nii.gz", tmp_path / "x.npz", (3, 9, 7), 4)
    with pytest.raises(CaseFileError, match="outside 0..2"):
        nnunet.import_prediction(tmp_path / "case.nii.gz", tmp_path / "x.npz", (3, 7, 9), 3)
    with pytest.raises(CaseFileError, match="missing"):
        nnunet.import_prediction(tmp_path / "none.nii.gz", tmp_path / "x.npz", (3, 7, 9), 4)


def test_settings_name_a_bad_key_or_value():
    assert nnunet.NNUNetSettings.from_model({}) == nnunet.NNUNetSettings(1000, 250, 50, 0.5, True, 1, 1, 0)
    assert nnunet.NNUNetSettings.from_model({"folds": 5, "augmentation_workers": "auto"}).augmentation_workers == "auto"
    with pytest.raises(ConfigError, match=r"method.nnunet.model: unknown key\(s\) \['epoch'\]"):
        nnunet.NNUNetSettings.from_model({"epoch": 2})
    with pytest.raises(ConfigError, match="val_iterations: must be an integer >= 1"):
        nnunet.NNUNetSettings.from_model({"val_iterations": 0})
    with pytest.raises(ConfigError, match="tile_step_size"):
        nnunet.NNUNetSettings.from_model({"tile_step_size": 1.5})
    with pytest.raises(ConfigError, match="use_mirroring: must be true or false"):
        nnunet.NNUNetSettings.from_model({"use_mirroring": "no"})
    with pytest.raises(ConfigError, match="folds: must be an integer >= 1"):
        nnunet.NNUNetSettings.from_model({"folds": 0})
    for bad in (-1, "all", 2.5, True):
        with pytest.raises(ConfigError, match='augmentation_workers: must be an integer >= 0 or "auto"'):
            nnunet.NNUNetSettings.from_model({"augmentation_workers": bad})


def test_nnunet_is_a_declared_trains_itself_and_baselines_import_nothing_from_the_suite():
    assert issubclass(nnunet.NNUNet, TrainsItself) and _trains_itself("nnunet") is nnunet.NNUNet
    assert _trains_itself("unet") is None and _trains_itself("no-such-method") is None
    with pytest.raises(SegbenchError, match="'nnunet' trains and predicts by itself"):
        build_method("nnunet", 1, 2, {})
    with pytest.raises(SegbenchError, match="--max-steps is not supported"):
        nnunet.NNUNet.train(Path("unused"), Path("unused"), MethodConfig(), max_steps=3)
    for module in sorted((Path(__file__).resolve().parents[2] / "baselines").glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.split(".")[0] == "benchmark"], module


def test_not_run_dataset_and_missing_model(tmp_path):
    _toy_processed(tmp_path / "processed", status="not_run")
    mcfg = MethodConfig(model=TINY_NNUNET)
    meta = nnunet.NNUNet.train(tmp_path / "processed", tmp_path / "run", mcfg).to_json()
    assert meta["status"] == "not_run"
    assert json.loads((tmp_path / "run" / "model" / "meta.json").read_text())["status"] == "not_run"
    pred = nnunet.NNUNet.predict(tmp_path / "processed", tmp_path / "run" / "model", tmp_path / "run" / "pred",
                                   mcfg).to_json()
    assert pred["status"] == "not_run" and json.loads((tmp_path / "run" / "pred" / "meta.json").read_text()) == pred
    with pytest.raises(CaseFileError, match="trained nnU-Net model is missing"):
        nnunet.NNUNet.predict(tmp_path / "processed", tmp_path / "nothing", tmp_path / "pred2", mcfg)


def test_cli_gives_a_not_run_dataset_the_usual_not_run_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path / "params.yaml", method={**TINY_PARAMS["method"], "nnunet": {"model": TINY_NNUNET}})
    _toy_processed(tmp_path / "data" / "processed" / "toy-set", status="not_run")
    assert main(["--params", str(params), "train", "toy-set", "nnunet"]) == 0
    assert main(["--params", str(params), "predict", "toy-set", "nnunet"]) == 0
    run = tmp_path / "runs" / "toy-set" / "nnunet"
    assert json.loads((run / "model" / "meta.json").read_text())["status"] == "not_run"
    assert json.loads((run / "predictions" / "meta.json").read_text())["status"] == "not_run"


def _dice(processed: Path, predictions: Path, out: Path, cfg) -> float:
    m = evaluate(processed, predictions, out, dataclasses.replace(cfg.evaluation, workers=1), "nnunet")
    return m.average["dice"]


def test_round_trip_trains_predicts_and_repeats_exactly(tiny_project, monkeypatch):
    """Run 1 through ``segbench train/predict``, run 2 through the API: same weights, same samples, same Dice."""
    monkeypatch.chdir(tiny_project)
    params = write_params(tiny_project / "params.yaml",
                          method={**TINY_PARAMS["method"], "nnunet": {"model": TINY_NNUNET}})
    cfg = load_config(params)
    processed = tiny_project / "data" / "processed" / "phantom-cardiac"
    manifest = load_manifest(processed)
    env_before = {k: v for k, v in os.environ.items() if k.startswith("nnUNet")}

    assert main(["--params", str(params), "train", "phantom-cardiac", "nnunet"]) == 0
    assert main(["--params", str(params), "predict", "phantom-cardiac", "nnunet"]) == 0
    run1 = tiny_project / "runs" / "phantom-cardiac" / "nnunet"
    mcfg = cfg.method_config("nnunet")
    run2 = tiny_project / "api"
    meta2 = nnunet.NNUNet.train(processed, run2, mcfg).to_json()
    pred2 = nnunet.NNUNet.predict(processed, run2 / "model", run2 / "predictions", mcfg).to_json()

    assert {k: v for k, v in os.environ.items() if k.startswith("nnUNet")} == env_before  # set for the run only
    meta1 = json.loads((run1 / "model" / "meta.json").read_text())
    pred1 = json.loads((run1 / "predictions" / "meta.json").read_text())
    for run, meta in ((run1, meta1), (run2, meta2)):
        assert meta["status"] == "ok" and meta["steps"] == 10
        assert meta["nnunet"]["cases"]["train"] == len(manifest.split("train"))
        assert meta["nnunet"]["plans"]["configuration"] == "2d" and meta["nnunet"]["params"] > 0
        assert meta["nnunet"]["plans"]["normalization_schemes"] == ["ZScoreNormalization"]  # "MRI": per image
        assert (meta["nnunet"]["folds"], meta["nnunet"]["augmentation_workers"], meta["nnunet"]["nnUNet_n_proc_DA"]) \
            == (1, 0, 0)
        assert meta["nnunet"]["rater_rule"] == nnunet.RATER_RULE
        assert sorted(p.name for p in (run / "model" / "nnunet").glob("fold_*")) == ["fold_0"]
        assert nnunet.checkpoint_file(run / "model" / "nnunet", 0).is_file()
        assert (run / "model" / "nnunet" / "plans.json").is_file() and (run / "model" / "manifest.json").is_file()
        assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no work or temporary folder
        assert len((run / "loss.csv").read_text().splitlines()) == 1 + 2  # header + one row per epoch
    assert meta1["weights_sha256"] == meta2["weights_sha256"]

    info = manifest.dataset
    for pred in (pred1, pred2):
        assert pred["status"] == "ok" and pred["n_samples"] == 1 and pred["n_cases"] == len(manifest.split("test"))
        n = pred["nnunet"]
        assert pred["nfe_per_sample"] == pytest.approx(n["network_evaluations"] / n["slices"])
        assert pred["nfe_per_sample"] >= 4 and n["evaluations_per_tile"] == 4  # 2D mirroring on by default
        assert n["macs_per_evaluation"] > 0
    for entry in manifest.split("test"):
        a = load_arrays(run1 / "predictions" / f"{entry.case_id}.npz", ("samples", "uncertainty"))
        b = load_arrays(run2 / "predictions" / f"{entry.case_id}.npz", ("samples", "uncertainty"))
        assert a["samples"].shape == (1, entry.n_slices, 32, 32) and a["samples"].dtype == np.uint8
        assert a["samples"].max() < info.num_classes
        assert a["uncertainty"].shape == (entry.n_slices, 32, 32) and a["uncertainty"].dtype == np.float16
        np.testing.assert_array_equal(a["samples"], b["samples"])

    assert main(["--params", str(params), "evaluate", "phantom-cardiac", "nnunet"]) == 0
    metrics = tiny_project / "results" / "phantom-cardiac" / "nnunet" / "metrics.json"
    dice1 = json.loads(metrics.read_text())["avg_dice"]
    dice2 = _dice(processed, run2 / "predictions", tiny_project / "results2", cfg)
    assert math.isfinite(dice1) and 0 <= dice1 <= 1
    assert dice1 == dice2
    print(f"nnU-Net round trip: Dice {dice1:.4f}; train {meta2['timings']}; predict {pred2['seconds_total']:.1f} s")


def test_folds_train_a_cross_validation_and_predict_as_their_ensemble(tiny_project):
    """Two folds over the tiny dataset's three train subjects: two models, each evaluated on every tile."""
    processed = tiny_project / "data" / "processed" / "phantom-cardiac"
    manifest = load_manifest(processed)
    cfg = load_config(write_params(tiny_project / "params.yaml", method={
        **TINY_PARAMS["method"], "nnunet": {"model": {**TINY_NNUNET, "folds": 2}}}))
    mcfg = cfg.method_config("nnunet")
    run = tiny_project / "run"
    meta = nnunet.NNUNet.train(processed, run, mcfg).to_json()
    n = meta["nnunet"]
    assert meta["status"] == "ok" and (n["folds"], n["ensemble"]) == (2, nnunet.ENSEMBLE)
    assert n["cases"] == {"train": len(manifest.split("train")), "val": 0,
                          "training_cases": len(manifest.split("train")),
                          "validated_on": "each fold's held-out subjects"}
    assert len(set(n["fold_weights_sha256"])) == 2 and len(n["final_ema_pseudo_dice"]) == 2
    assert sorted(p.name for p in (run / "model" / "nnunet").glob("fold_*")) == ["fold_0", "fold_1"]
    assert len((run / "loss.csv").read_text().splitlines()) == 1 + 2  # one row per epoch, the folds' mean

    pred = nnunet.NNUNet.predict(processed, run / "model", run / "predictions", mcfg).to_json()
    assert (pred["nnunet"]["folds"], pred["nnunet"]["ensemble"]) == (2, nnunet.ENSEMBLE)
    one_fold = dataclasses.replace(mcfg, model={**mcfg.model, "folds": 1})
    with pytest.raises(CaseFileError, match=r"the model has \['fold_0', 'fold_1'\], method.nnunet.model.folds is 1"):
        nnunet.NNUNet.predict(processed, run / "model", run / "predictions1", one_fold)
    shutil.copytree(run / "model", run / "fold0")
    shutil.rmtree(run / "fold0" / "nnunet" / "fold_1")
    single = nnunet.NNUNet.predict(processed, run / "fold0", run / "predictions1", one_fold).to_json()
    assert pred["nfe_per_sample"] == 2 * single["nfe_per_sample"]  # every tile through both models

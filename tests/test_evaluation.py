"""The evaluate stage: set metrics beside the fused metrics, the same numbers serial or in parallel, clear errors."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.config import EvalConfig
from benchmark.data.manifest import ManifestError
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError, save_arrays
from benchmark.evaluation import evaluate
from benchmark.metrics.multirater import diversity_agreement, set_metrics
from benchmark.errors import USER_ERROR
from benchmark.records import EvaluationRecord, PredictionRecord, Status, read_record, write_record
from tests.data.tamper import copy_processed, empty_split, hidden, rewrite_label, snapshot


@pytest.fixture
def predictions(tiny_processed, tmp_path):
    """Three random samples per test case, in the predict stage's format."""
    manifest, cases = load_split(tiny_processed, "test")
    rng = np.random.default_rng(0)
    out = tmp_path / "predictions"
    for case in cases:
        samples = np.where(rng.random((3, *case.label.shape[1:])) < 0.8, case.label[0],
                           rng.integers(0, manifest.dataset.num_classes, (3, *case.label.shape[1:])))
        save_arrays(out / f"{case.case_id}.npz", samples=samples.astype(np.uint8))
    write_record(out / "meta.json", PredictionRecord(
        Status.OK, dataset=manifest.dataset.name, n_cases=len(cases), n_samples_requested=3, n_samples=3,
        nfe_per_sample=2, seconds_per_case=0.1, seconds_total=0.1 * len(cases), device="cpu", seed=0,
        uncertainty="test"))
    return out


def test_set_metrics_are_written_per_case_and_averaged(tiny_processed, predictions, tmp_path):
    cfg = EvalConfig(ged_samples=(2, 16), workers=1)
    record = evaluate(tiny_processed, predictions, tmp_path / "r", cfg, "m")
    manifest, cases = load_split(tiny_processed, "test")
    sets = pd.read_csv(tmp_path / "r" / "per_case_sets.csv")
    assert list(sets["case_id"]) == [c.case_id for c in cases]
    for case, (_, row) in zip(cases, sets.iterrows()):
        with np.load(predictions / f"{case.case_id}.npz") as z:
            direct = set_metrics(z["samples"], case.label, manifest.dataset.num_classes, (2,))
        for key, value in direct.items():
            assert row[key] == pytest.approx(value, abs=1e-12), key
    back = read_record(tmp_path / "r" / "evaluation.json", EvaluationRecord)
    assert (back.average, back.per_class, back.set_metrics) == (record.average, record.per_class, record.set_metrics)
    assert record.n_samples == 3 and record.nfe_per_sample == 2 and record.method == "m"
    u = record.set_metrics
    assert u["n_samples"] == 3 and u["n_raters"] == manifest.dataset.n_annotators
    assert u["ged_counts_not_available"] == [16]
    assert u["mean"]["ged_3"] == pytest.approx(sets["ged_3"].mean()) and "ged_2" in u["mean"]
    assert 0 <= u["mean"]["ci_harmonic"] <= 1 and 0 <= u["mean"]["hm_iou"] <= 1
    headline = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert headline["ged_3"] == u["mean"]["ged_3"] and headline["ci_paper"] == u["mean"]["ci_paper"]
    conv = record.conventions
    assert "workers" not in conv and list(conv["ged_samples"]) == [2, 16]
    assert conv["set_metrics"]["class_absent_from_both"] == 1.0


def test_parallel_and_serial_evaluation_agree(tiny_processed, predictions, tmp_path):
    serial = evaluate(tiny_processed, predictions, tmp_path / "a", EvalConfig(workers=1), "m")
    parallel = evaluate(tiny_processed, predictions, tmp_path / "b", EvalConfig(workers=2), "m")
    assert serial == parallel
    for name in ("per_case.csv", "per_case_sets.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_prediction_file_is_named_in_one_error(tiny_processed, predictions, tmp_path, workers):
    victim = sorted(predictions.glob("*.npz"))[1]
    with np.load(victim) as z:
        samples = z["samples"]
    save_arrays(victim, samples=samples[:, :, :5])
    with pytest.raises(CaseFileError, match=victim.name) as err:
        evaluate(tiny_processed, predictions, tmp_path / "r", EvalConfig(workers=workers), "m")
    assert err.value.path == victim
    assert not (tmp_path / "r" / "evaluation.json").exists()


def test_a_prediction_not_run_gives_an_evaluation_not_run(tiny_processed, tmp_path):
    write_record(tmp_path / "p" / "meta.json", PredictionRecord.not_run("phantom-x: no data"))
    record = evaluate(tiny_processed, tmp_path / "p", tmp_path / "r", EvalConfig(workers=1), "m")
    assert record == EvaluationRecord.not_run("phantom-x: no data", method="m")
    assert json.loads((tmp_path / "r" / "evaluation.json").read_text()) == {
        "status": "not_run", "method": "m", "reason": "phantom-x: no data"}
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == {}
    with pytest.raises(CaseFileError, match=r"prediction record .* is missing \(run the predict stage\)"):
        evaluate(tiny_processed, tmp_path / "nothing", tmp_path / "r2", EvalConfig(workers=1), "m")


def test_eval_config_validates_new_fields():
    from benchmark.config import ConfigError
    with pytest.raises(ConfigError, match="ged_samples"):
        EvalConfig(ged_samples=(0,))
    with pytest.raises(ConfigError, match="workers"):
        EvalConfig(workers=0)
    assert dataclasses.replace(EvalConfig(), ged_samples=[16, 100]).ged_samples == (16, 100)
    with pytest.raises(ConfigError, match="ci_diversity: must be one of 'pairwise_dice', 'pixel_variance', got 'var'"):
        EvalConfig(ci_diversity="var")
    with pytest.raises(ConfigError, match="staple_max_iterations"):
        EvalConfig(staple_max_iterations=0)


# ---------------------------------------------------------------- STAPLE's guard and CI's reading (issue 16)
@pytest.mark.parametrize("workers", [1, 2])
def test_cases_stopped_by_the_staple_guard_are_named_and_counted(tiny_processed, predictions, tmp_path, capsys,
                                                                  workers):
    """A guard of one iteration stops every case's multi-label STAPLE; the default guard stops none."""
    _, cases = load_split(tiny_processed, "test")
    cfg = EvalConfig(fusion="staple", staple_max_iterations=1, workers=workers)
    record = evaluate(tiny_processed, predictions, tmp_path / "r", cfg, "m")
    ids = [c.case_id for c in cases]
    assert record.staple_not_converged == {"count": len(ids), "cases": ids}
    on_disk = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert on_disk["staple_not_converged"] == {"count": len(ids), "cases": ids}
    assert on_disk["conventions"]["staple_max_iterations"] == 1
    err = capsys.readouterr().err
    for case_id in ids:
        assert (f"evaluate m: case {case_id}: STAPLE stopped by its guard of 1 iterations without converging "
                f"(evaluation.staple_max_iterations)") in err
    converged = evaluate(tiny_processed, predictions, tmp_path / "c", dataclasses.replace(cfg, staple_max_iterations=
                                                                                           100_000), "m")
    assert converged.staple_not_converged == {"count": 0, "cases": []}
    assert "STAPLE stopped" not in capsys.readouterr().err


def test_majority_fusion_writes_no_staple_count(tiny_processed, predictions, tmp_path):
    evaluate(tiny_processed, predictions, tmp_path / "r", EvalConfig(workers=1), "m")
    assert "staple_not_converged" not in json.loads((tmp_path / "r" / "evaluation.json").read_text())


def test_the_ci_reading_is_applied_recorded_and_named_in_the_claims_report(tiny_processed, predictions, tmp_path):
    from types import SimpleNamespace

    from benchmark.report import conventions as report_conventions
    manifest, cases = load_split(tiny_processed, "test")
    k = manifest.dataset.num_classes
    runs = {reading: evaluate(tiny_processed, predictions, tmp_path / reading, EvalConfig(ci_diversity=reading,
                                                                                         workers=1), "m")
            for reading in ("pairwise_dice", "pixel_variance")}
    for reading, record in runs.items():
        sets = pd.read_csv(tmp_path / reading / "per_case_sets.csv")
        for case, value in zip(cases, sets["ci_diversity_agreement"]):
            with np.load(predictions / f"{case.case_id}.npz") as z:
                assert value == pytest.approx(diversity_agreement(z["samples"], case.label, k, reading), abs=1e-12)
        assert record.conventions["ci_diversity"] == reading
        assert record.conventions["set_metrics"]["ci_diversity_reading"].startswith(f"{reading}: V = ")
    means = [r.set_metrics["mean"]["ci_diversity_agreement"] for r in runs.values()]
    assert means[0] != pytest.approx(means[1])
    text = report_conventions(SimpleNamespace(results={("d", "m"): runs["pixel_variance"]}))
    assert text.splitlines()[0] == (
        "- CI claims are compared with a CI whose diversity agreement reads `pixel_variance` (V = variance over "
        "pixels of the difference of the pair's masks, (|A xor B| - (|A| - |B|)^2 / P) / P for P pixels (mean over "
        "foreground classes)); public implementations also read it as `pairwise_dice` (`evaluation.ci_diversity`)")
    assert "`ci_diversity`: pixel_variance" in text
    older = dataclasses.replace(runs["pairwise_dice"], conventions={"fusion": "staple"})  # before the setting
    assert "reads `pairwise_dice`" in report_conventions(SimpleNamespace(results={("d", "m"): older}))


# ---------------------------------------------------------------- the data is what the manifest says (issue 19)
def _previous_results(tiny_processed, predictions, out):
    """A good evaluation in ``out``, and its bytes."""
    evaluate(tiny_processed, predictions, out, EvalConfig(workers=1), "m")
    return snapshot(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_rewritten_test_label_is_refused_naming_the_file_and_both_hashes(tiny_processed, predictions, tmp_path,
                                                                           workers):
    processed = copy_processed(tiny_processed, tmp_path / "processed")
    recorded = {c["file"]: c["sha256"] for c in json.loads((processed / "manifest.json").read_text())["cases"]}
    before = _previous_results(processed, predictions, tmp_path / "r")
    victim = rewrite_label(processed, "test")
    actual = hashlib.sha256(victim.read_bytes()).hexdigest()
    with pytest.raises(CaseFileError) as err:
        evaluate(processed, predictions, tmp_path / "r", EvalConfig(workers=workers), "m")
    assert err.value.path == victim
    message = str(err.value)
    assert message.startswith(f"{victim}: ") and recorded[str(victim.relative_to(processed))] in message
    assert actual in message
    assert snapshot(tmp_path / "r") == before and hidden(tmp_path / "r") == []


def test_cli_evaluate_refuses_a_rewritten_label_with_the_user_error_code(tiny_project, tmp_path, monkeypatch,
                                                                           capsys):
    processed = tiny_project / "data" / "processed" / "phantom-cardiac"
    manifest, cases = load_split(processed, "test")
    predictions = tiny_project / "runs" / "phantom-cardiac" / "m" / "predictions"
    for case in cases:
        save_arrays(predictions / f"{case.case_id}.npz", samples=case.label[:1])
    write_record(predictions / "meta.json", PredictionRecord(
        Status.OK, dataset=manifest.dataset.name, n_cases=len(cases), n_samples_requested=1, n_samples=1,
        nfe_per_sample=1, seconds_per_case=0.1, seconds_total=0.1, device="cpu", seed=0, uncertainty="test"))
    victim = rewrite_label(processed, "test")
    monkeypatch.chdir(tiny_project)
    assert main(["evaluate", "phantom-cardiac", "m"]) == USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"segbench evaluate: error: data/processed/phantom-cardiac/"
                                               f"{victim.relative_to(processed)}: content changed")
    assert not (tiny_project / "results").exists()


def test_an_empty_test_split_names_the_manifest_and_the_split(tiny_processed, predictions, tmp_path):
    processed = copy_processed(tiny_processed, tmp_path / "processed")
    before = _previous_results(processed, predictions, tmp_path / "r")
    manifest = empty_split(processed, "test")
    with pytest.raises(ManifestError, match=re.escape(f"{manifest}: the test split has no cases")):
        evaluate(processed, predictions, tmp_path / "r", EvalConfig(workers=1), "m")
    assert snapshot(tmp_path / "r") == before


def test_no_json_the_evaluation_writes_holds_nan(tiny_processed, tmp_path):
    """A method that predicts background everywhere: HD95 has no value for any case (NaN in the means), and the
    JSON files say null, never NaN."""
    manifest, cases = load_split(tiny_processed, "test")
    out = tmp_path / "predictions"
    for case in cases:
        save_arrays(out / f"{case.case_id}.npz", samples=np.zeros((1, *case.label.shape[1:]), np.uint8))
    write_record(out / "meta.json", PredictionRecord(
        Status.OK, dataset=manifest.dataset.name, n_cases=len(cases), n_samples_requested=1, n_samples=1,
        nfe_per_sample=1, seconds_per_case=0.1, seconds_total=0.1, device="cpu", seed=0, uncertainty="test"))
    evaluate(tiny_processed, out, tmp_path / "r", EvalConfig(workers=1, one_empty_hd95="nan"), "m")
    for name in ("evaluation.json", "metrics.json"):
        text = (tmp_path / "r" / name).read_text()
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{name} holds {c}"))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["avg_hd95"] is None

"""The stage records (benchmark/records.py): one status type, one writer and one reader, not-run in one place."""
from __future__ import annotations

import json
import math
import re

import pytest

from benchmark.data.store import CaseFileError
from benchmark.records import (ComplexityRecord, EvaluationRecord, PredictionRecord, RunRecord, Status, read_record,
                               write_record)
from tests.conftest import ROOT
from tests.evidence_helpers import complexity, evaluation


def _run(**changes) -> RunRecord:
    fields = dict(status=Status.OK, method="unet", dataset="phantom-cardiac", steps=30, world_size=1, device="cpu",
                  seconds=1.5,
                  final_loss=0.25, model_params={"channels": [4, 8]}, train={"lr": 0.001}, predict={"n_samples": 1},
                  in_channels=1, num_classes=4, fingerprint="f", manifest_sha256="m", git_revision="g",
                  weights_sha256="w")
    return RunRecord(**{**fields, **changes})


def _prediction(**changes) -> PredictionRecord:
    fields = dict(dataset="phantom-cardiac", n_cases=3, n_samples_requested=2, n_samples=2, nfe_per_sample=10,
                  seconds_per_case=0.5, seconds_total=1.5, device="cpu", seed=0, uncertainty="u")
    return PredictionRecord(Status.OK, **{**fields, **changes})


@pytest.mark.parametrize("record", [_run(), _prediction(), evaluation(0.5), complexity()], ids=type)
def test_a_written_record_reads_back_equal(tmp_path, record):
    write_record(tmp_path / "r.json", record)
    assert read_record(tmp_path / "r.json", type(record)) == record


def test_keys_are_those_the_stages_wrote_before_the_records(tmp_path):
    """Byte-identical outputs: the keys, in the order of the dictionaries the stages used to write."""
    assert list(_run().to_json()) == [
        "status", "method", "dataset", "steps", "world_size", "device", "seconds", "final_loss", "model_params",
        "train", "predict", "in_channels", "num_classes", "fingerprint", "manifest_sha256", "git_revision",
        "weights_sha256"]
    assert list(_prediction().to_json()) == [
        "status", "dataset", "n_cases", "n_samples_requested", "n_samples", "nfe_per_sample", "seconds_per_case",
        "seconds_total", "device", "seed", "uncertainty"]
    nnunet = _prediction(nfe_definition="tiles", nnunet={"fold": 0}).to_json()   # a method's own fields, in place
    assert list(nnunet)[5:8] == ["nfe_per_sample", "nfe_definition", "seconds_per_case"] and nnunet["nnunet"] == {
        "fold": 0}
    assert list(evaluation(0.5).to_json()) == [
        "status", "dataset", "method", "phantom", "n_cases", "n_samples", "nfe_per_sample", "seconds_per_case",
        "average", "per_class", "set_metrics", "conventions"]
    write_record(tmp_path / "c.json", complexity())
    assert (tmp_path / "c.json").read_text() == json.dumps(complexity().to_json(), indent=1)
    assert _run(final_loss=None).to_json()["final_loss"] is None    # written as null, not left out


def test_status_is_one_enum_and_a_partial_run_is_complete():
    assert [s.value for s in Status] == ["ok", "partial", "not_run", "missing"]
    partial = _run(status=Status.PARTIAL)
    assert partial.status is Status.PARTIAL and not partial.ok and partial.to_json()["steps"] == 30
    assert RunRecord(status="ok", **{k: v for k, v in _run().to_json().items() if k != "status"}).status is Status.OK
    with pytest.raises(ValueError, match="needs weights_sha256"):
        _run(weights_sha256=None)


def test_not_run_holds_the_reason_and_what_did_not_run(tmp_path):
    assert RunRecord.not_run("no data").to_json() == {"status": "not_run", "reason": "no data"}
    assert PredictionRecord.not_run("no data").to_json() == {"status": "not_run", "reason": "no data"}
    assert list(EvaluationRecord.not_run("no data", method="m").to_json().items()) == [
        ("status", "not_run"), ("method", "m"), ("reason", "no data")]
    record = ComplexityRecord.not_run("no data", method="m")
    write_record(tmp_path / "c.json", record)
    assert read_record(tmp_path / "c.json", ComplexityRecord) == record and not record.ok


def test_not_run_is_built_in_records_alone():
    """No stage writes a not-run status of its own: each uses ``Record.not_run``."""
    literal = re.compile(r"""["']not_run["']""")
    offenders = [str(p.relative_to(ROOT)) for d in ("benchmark", "baselines") for p in (ROOT / d).rglob("*.py")
                 if p.name != "records.py" and literal.search(p.read_text())]
    assert offenders == []


def test_non_finite_numbers_are_written_as_null(tmp_path):
    write_record(tmp_path / "r.json", _run(final_loss=math.nan, train={"lr": math.inf, "list": [1.0, -math.inf]}))
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = read_record(tmp_path / "r.json", RunRecord)
    assert back.final_loss is None and back.train == {"lr": None, "list": [1.0, None]}


def test_an_absent_file_is_missing_or_an_error_naming_it(tmp_path):
    path = tmp_path / "model" / "meta.json"
    missing = read_record(path, RunRecord, missing_ok=True)
    assert missing.status is Status.MISSING and str(path) in missing.reason and not missing.ok
    with pytest.raises(CaseFileError, match=r"run record .* is missing \(run the train stage\)") as err:
        read_record(path, RunRecord)
    assert err.value.path == path


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('{"status": "done", "reason": ""}', "'status' must be ok, partial or not_run, got 'done'"),
    ('{"status": "missing", "reason": ""}', "'status' must be ok, partial or not_run, got 'missing'"),
    ('{"status": "not_run", "reason": "", "colour": 1}', r"unknown keys \['colour'\]"),
    ('{"status": "ok", "method": "m"}', "status 'ok' needs the keys"),
])
def test_a_malformed_record_is_one_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "complexity.json"
    path.write_text(text)
    with pytest.raises(CaseFileError, match=message) as err:
        read_record(path, ComplexityRecord)
    assert err.value.path == path and str(path) in str(err.value)

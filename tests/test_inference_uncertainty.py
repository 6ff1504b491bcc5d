"""The predict stage writes the samples' per-pixel disagreement beside them, and evaluate still reads the file;
it (and the NFE sweep) refuses a tampered case file or an empty test split, keeping the previous predictions."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import torch

from benchmark.cli import main
from benchmark.config import EvalConfig, load_config
from benchmark.data.manifest import ManifestError
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError
from benchmark.errors import USER_ERROR
from benchmark.evaluation import evaluate
from benchmark.inference import UNCERTAINTY, predict
from benchmark.metrics.fusion import sample_spread
from benchmark.nfe_sweep import nfe_sweep, sweep_settings
from benchmark.training.checkpoint import CheckpointError
from benchmark.training.trainer import train
from tests.conftest import write_params
from tests.data.tamper import copy_processed, empty_split, hidden, rewrite_label, snapshot


@pytest.fixture(scope="module")
def flow_model(tmp_path_factory, tiny_processed):
    """flowseg-plain trained for 10 steps on the tiny dataset: its samples agree in places, not everywhere."""
    root = tmp_path_factory.mktemp("flow")
    cfg = load_config(write_params(root / "params.yaml", methods=["flowseg-plain"]))
    mcfg = cfg.method_config("flowseg-plain")
    mcfg = dataclasses.replace(mcfg, train=dataclasses.replace(mcfg.train, steps=10, checkpoint_every=10))
    train("flowseg-plain", tiny_processed, root / "run", mcfg)
    return root / "run" / "model", mcfg.predict


@pytest.mark.parametrize("n", [3, 1])
def test_predict_writes_uncertainty_zero_where_samples_agree(flow_model, tiny_processed, tmp_path, n):
    model_dir, pcfg = flow_model
    out = tmp_path / "predictions"
    meta = predict(tiny_processed, model_dir, out, dataclasses.replace(pcfg, n_samples=n), threads=1)
    assert meta.uncertainty == UNCERTAINTY
    written = json.loads((out / "meta.json").read_text())
    assert written["uncertainty"] == UNCERTAINTY
    assert written["sampler"] == meta.sampler == "ODESolver(method='euler', steps=2, rtol=1e-05, atol=1e-05)"
    manifest, cases = load_split(tiny_processed, "test")
    agreement = []
    for case in cases:
        with np.load(out / f"{case.case_id}.npz") as z:
            samples, uncertainty = z["samples"], z["uncertainty"]
        assert samples.shape == (n, *case.label.shape[1:]) and uncertainty.shape == samples.shape[1:]
        assert uncertainty.dtype == np.float16
        agree = (samples == samples[0]).all(axis=0)
        assert not uncertainty[agree].any()
        assert (uncertainty[~agree] > 0).all()
        agreement.append(agree.mean())
        np.testing.assert_allclose(uncertainty, sample_spread(samples, manifest.dataset.num_classes), atol=1e-3)
    if n > 1:
        assert 0 < np.mean(agreement) < 1, "the check needs both agreeing and disagreeing pixels"

    metrics = evaluate(tiny_processed, out, tmp_path / "results", EvalConfig(fusion="staple"), "flowseg-plain")
    assert metrics.ok and metrics.conventions["fusion"] == "staple" and metrics.sampler == meta.sampler


# ---------------------------------------------------------------- nothing good replaced by nothing (issue 19)
@pytest.fixture
def previous(flow_model, tiny_processed, tmp_path):
    """Good predictions in ``tmp_path/predictions`` and a copy of the processed dataset to tamper with."""
    model_dir, pcfg = flow_model
    out = tmp_path / "predictions"
    predict(tiny_processed, model_dir, out, dataclasses.replace(pcfg, n_samples=1), threads=1)
    return copy_processed(tiny_processed, tmp_path / "processed"), out, snapshot(out)


def test_predict_refuses_a_rewritten_test_case_and_keeps_the_previous_predictions(flow_model, previous):
    (model_dir, pcfg), (processed, out, before) = flow_model, previous
    victim = rewrite_label(processed, "test")
    with pytest.raises(CaseFileError, match=re.escape(f"{victim}: content changed since the manifest was written")):
        predict(processed, model_dir, out, pcfg, threads=1)
    assert snapshot(out) == before and hidden(out.parent) == []


def test_predict_with_an_empty_test_split_names_it_and_keeps_the_previous_predictions(flow_model, previous):
    (model_dir, pcfg), (processed, out, before) = flow_model, previous
    manifest = empty_split(processed, "test")
    with pytest.raises(ManifestError, match=re.escape(f"{manifest}: the test split has no cases")):
        predict(processed, model_dir, out, pcfg, threads=1)
    assert snapshot(out) == before and hidden(out.parent) == []


def test_nfe_sweep_with_an_empty_test_split_names_it_and_writes_nothing(flow_model, previous, tmp_path):
    (model_dir, _), (processed, _, _) = flow_model, previous
    manifest = empty_split(processed, "test")
    with pytest.raises(ManifestError, match=re.escape(f"{manifest}: the test split has no cases")):
        nfe_sweep(processed, model_dir, tmp_path / "sweep", sweep_settings([1], dopri5=False), threads=1)
    assert not (tmp_path / "sweep").exists()


def test_cli_predict_with_an_empty_test_split_exits_with_one_line_and_keeps_the_predictions(flow_model, tiny_project,
                                                                                             monkeypatch, capsys):
    model_dir, _ = flow_model
    write_params(tiny_project / "params.yaml", methods=["flowseg-plain"])
    run = tiny_project / "runs" / "phantom-cardiac" / "flowseg-plain"
    shutil.copytree(model_dir, run / "model")
    monkeypatch.chdir(tiny_project)
    assert main(["predict", "phantom-cardiac", "flowseg-plain"]) == 0
    before = snapshot(run / "predictions")
    assert json.loads((run / "predictions" / "meta.json").read_text())["status"] == "ok"
    empty_split(tiny_project / "data" / "processed" / "phantom-cardiac", "test")
    capsys.readouterr()
    assert main(["predict", "phantom-cardiac", "flowseg-plain"]) == USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segbench predict: error: data/processed/phantom-cardiac/manifest.json: the test split has no cases"]
    assert snapshot(run / "predictions") == before and hidden(run) == []


class _Payload:
    """Unpickled, it creates ``marker``: what a planted model file would make run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_predict_refuses_a_planted_model_file_in_one_line_and_runs_nothing(flow_model, previous, tmp_path, capsys):
    (model_dir, pcfg), (processed, out, before) = flow_model, previous
    planted = tmp_path / "model"
    shutil.copytree(model_dir, planted)
    marker = tmp_path / "marker"
    torch.save({"state_dict": _Payload(marker)}, planted / "model.pt")
    with pytest.raises(CheckpointError, match=re.escape(str(planted / "model.pt"))) as err:
        predict(processed, planted, out, pcfg, threads=1)
    assert "\n" not in str(err.value) and not marker.exists()
    assert snapshot(out) == before and hidden(out.parent) == []

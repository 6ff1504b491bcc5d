"""The condition-head row: MedFlowSeg's auxiliary head scored alone, from the same trained weights."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from benchmark.config import ConfigError, load_config
from benchmark.data.preprocess import load_split
from benchmark.inference import load_trained, predict
from benchmark.methods import build_method
from benchmark.methods.interface import HasConditionHead
from benchmark.training.trainer import train
from tests.conftest import MEDFLOWSEG_TINY, write_params


def test_the_head_labels_are_the_argmax_of_the_auxiliary_logits():
    torch.manual_seed(0)
    model = build_method("medflowseg", 1, 3, MEDFLOWSEG_TINY).eval()
    assert isinstance(model, HasConditionHead) and not isinstance(build_method("unet", 1, 3, {}), HasConditionHead)
    images = torch.randn(2, 1, 32, 32)
    labels = model.condition_labels(images)
    logits = model.condition_net(images, True).aux_logits
    assert labels.shape == (2, 32, 32) and labels.dtype == torch.int64
    assert torch.equal(labels, logits.argmax(1)) and len(labels.unique()) > 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_processed):
    root = tmp_path_factory.mktemp("head")
    cfg = load_config(write_params(root / "params.yaml", methods=["unet", "medflowseg"]))
    for m in ("unet", "medflowseg"):
        mcfg = cfg.method_config(m)
        train(m, tiny_processed, root / m, dataclasses.replace(
            mcfg, train=dataclasses.replace(mcfg.train, steps=3, checkpoint_every=3)))
    return root, cfg


def test_predict_with_the_condition_head_writes_one_answer_per_case_from_the_same_weights(trained, tiny_processed,
                                                                                          tmp_path):
    root, cfg = trained
    meta = predict(tiny_processed, root / "medflowseg" / "model", tmp_path / "p", cfg.method_config("medflowseg").predict,
                   threads=1, condition_head=True)
    assert (meta.readout, meta.n_samples, meta.nfe_per_sample) == ("condition-head", 1, 1)
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["readout"] == "condition-head"
    model = load_trained(root / "medflowseg" / "model")
    _, cases = load_split(tiny_processed, "test")
    with np.load(tmp_path / "p" / f"{cases[0].case_id}.npz") as z:
        samples = z["samples"]
    expected = model.condition_labels(torch.from_numpy(cases[0].image)).numpy()
    assert samples.shape == (1, *expected.shape) and np.array_equal(samples[0], expected)


def test_a_method_without_a_condition_head_is_one_error_naming_the_model(trained, tiny_processed, tmp_path):
    root, cfg = trained
    with pytest.raises(ConfigError, match=r"unet/model: .* has no condition head of its own"):
        predict(tiny_processed, root / "unet" / "model", tmp_path / "p", cfg.method_config("unet").predict,
                threads=1, condition_head=True)
    assert not (tmp_path / "p").exists()


def test_the_head_row_follows_its_method_and_needs_it_trained(tmp_path):
    cfg = load_config(write_params(tmp_path / "params.yaml", methods=["unet", "medflowseg", "flowseg-plain"],
                                   condition_head={"datasets": ["phantom-cardiac"]}))
    assert cfg.compared_methods[:4] == ("unet", "medflowseg", "medflowseg-head", "flowseg-plain")
    assert ("phantom-cardiac", "medflowseg-head") in cfg.pairs() and cfg.trained_as("medflowseg-head") == "medflowseg"
    path = write_params(tmp_path / "p2.yaml", methods=["unet"], condition_head={"datasets": ["phantom-cardiac"]})
    with pytest.raises(ConfigError, match=r"condition_head.datasets \['phantom-cardiac'\]: medflowseg is not trained"):
        load_config(path)

"""A training length in epochs: the either/or check, the conversion with the training split's size, the record."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.config import DataConfig, load_config
from benchmark.data.preprocess import load_split, preprocess
from benchmark.data.sources import fetch
from benchmark.errors import USER_ERROR
from benchmark.training.data import SliceSet, epoch_steps
from tests.conftest import TINY_PARAMS, write_params


@pytest.mark.parametrize("epochs, slices, batch, steps", [
    (2, 30, 4, 15), (1.5, 7, 4, 3), (0.1, 30, 3, 1),     # 0.1 x 30 / 3 is 1 exactly, not the float above it
    (1000, 140, 6, 23334), (3, 8, 8, 3)])
def test_epochs_convert_to_steps(epochs, slices, batch, steps):
    assert epoch_steps(epochs, slices, batch) == steps


@pytest.fixture(scope="module")
def larger_processed(tmp_path_factory):
    """phantom-cardiac with 10 subjects instead of the tiny project's 6: a second training split size."""
    root = tmp_path_factory.mktemp("larger")
    cfg = DataConfig(**{**TINY_PARAMS["data"], "n_subjects": 10})
    fetch("phantom-cardiac", root / "fetched", cfg)
    preprocess("phantom-cardiac", root / "fetched", root / "processed", cfg)
    return root / "processed"


def _slices(processed) -> int:
    return len(SliceSet.from_cases(load_split(processed, "train")[1]))


def test_the_trainer_converts_epochs_with_the_split_size_and_records_both(tiny_project, larger_processed,
                                                                          monkeypatch):
    from benchmark.training.trainer import train

    monkeypatch.chdir(tiny_project)
    unet = {**TINY_PARAMS["method"]["unet"], "train": {"epochs": 1.5}}   # replaces the profile's steps: 30
    write_params(tiny_project / "params.yaml", method={**TINY_PARAMS["method"], "unet": unet})
    mcfg = load_config("params.yaml").method_config("unet")
    assert (mcfg.train.steps, mcfg.train.epochs, mcfg.train.batch_size) == (None, 1.5, 4)
    small = tiny_project / "data/processed/phantom-cardiac"
    seen = []
    for processed in (small, larger_processed):
        n = _slices(processed)
        out = tiny_project / "runs" / str(n)
        meta = train("unet", processed, out, mcfg)
        steps = math.ceil(1.5 * n / 4)
        assert (meta.status, meta.steps, meta.epochs, meta.slices_per_epoch, meta.batch_size) == \
               ("ok", steps, 1.5, n, 4)
        record = json.loads((out / "model/meta.json").read_text())
        assert (record["steps"], record["epochs"], record["slices_per_epoch"], record["batch_size"]) == \
               (steps, 1.5, n, 4)
        assert record["train"]["epochs"] == 1.5 and "steps" not in record["train"]
        assert len((out / "loss.csv").read_text().splitlines()) == steps + 1
        seen.append((n, steps))
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1], seen


def test_a_run_in_steps_records_no_epochs_and_keeps_its_fingerprint_keys(tiny_project, monkeypatch):
    from benchmark.training.trainer import train

    monkeypatch.chdir(tiny_project)
    mcfg = load_config("params.yaml").method_config("unet")
    meta = train("unet", tiny_project / "data/processed/phantom-cardiac", tiny_project / "a", mcfg, max_steps=2)
    record = meta.to_json()
    assert meta.steps == 2 and not {"epochs", "slices_per_epoch", "global_batch"} & set(record)
    assert (record["batch_size"], record["micro_batch_size"], record["accumulation"], record["world_size"],
            record["mixed_precision"]) == (4, 4, 1, 1, "no") and "notes" not in record
    assert "epochs" not in meta.train and meta.train["steps"] == 30   # the config hash of older checkpoints


def _profile(tmp_path, **sections):
    path = tmp_path / "params.yaml"
    raw = {"profile": "test", "datasets": ["phantom-cardiac"], "methods": ["unet"], "method": {"unet": {}}}
    path.write_text(yaml.safe_dump({**raw, **sections}, sort_keys=False))
    return path


@pytest.mark.parametrize("sections, key", [
    ({"train": {"steps": 5, "epochs": 2}}, "train.steps"),
    ({"method": {"unet": {"train": {"steps": 5, "epochs": 2}}}}, "method.unet.train.steps"),
    ({"train": {"steps": None}}, "train.steps")])
def test_steps_and_epochs_are_either_or(tmp_path, capsys, sections, key):
    path = _profile(tmp_path, **sections)
    given = {**sections.get("train", {}), **sections.get("method", {}).get("unet", {}).get("train", {})}
    got = f"(got steps={given.get('steps')!r}, epochs={given.get('epochs')!r})"
    assert main(["--params", str(path), "check-data", "--no-probe", "--out", str(tmp_path / "a.json")]) == USER_ERROR
    err = capsys.readouterr().err
    assert err == (f"segbench check-data: error: {path}: {key}: give the training length as steps or as epochs, "
                   f"exactly one of the two {got}\n")
    assert not (tmp_path / "a.json").exists()


def test_a_method_in_epochs_overrides_the_profile_in_steps_and_back(tmp_path):
    path = _profile(tmp_path, methods=["unet", "flowsdf"], train={"epochs": 3},
                    method={"unet": {"train": {"steps": 7}}, "flowsdf": {}})
    cfg = load_config(path)
    assert (cfg.method_config("unet").train.steps, cfg.method_config("unet").train.epochs) == (7, None)
    assert (cfg.method_config("flowsdf").train.steps, cfg.method_config("flowsdf").train.epochs) == (None, 3)
    for rule in ("epochs", -1), ("epochs", 0), ("epochs", "2"):
        path = _profile(tmp_path, train={rule[0]: rule[1]})
        with pytest.raises(Exception, match=rf"^{path}: train.epochs: must be a number > 0, "
                                            rf"got {rule[1]!r}$"):
            load_config(path)


def test_the_paper_profile_gives_atfm_the_papers_epochs():
    from tests.conftest import ROOT

    atfm = load_config(ROOT / "profiles/paper.yaml").method_config("atfm")
    # GTR 1000 epochs at batch 256, then the SFM's 200 at batch 6 counted in 256-slice steps (tests/baselines/
    # test_atfm_paper.py checks the stage lengths per dataset)
    assert (atfm.train.epochs, atfm.train.steps, atfm.model["gtr_epochs"]) == (9533.34, None, 1000)
    assert "gtr_steps" not in atfm.model


def test_atfm_converts_its_gtr_epochs_like_the_trainer():
    from baselines.atfm import ATFM
    from tests.baselines.test_atfm import TINY

    model = ATFM(1, 2, **{**TINY, "gtr_epochs": 2.5})
    assert model.gtr_steps is None
    with pytest.raises(RuntimeError, match="gtr_epochs"):
        model.train().loss(torch.zeros(2, 1, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long),
                           torch.Generator().manual_seed(0))
    model.set_epoch_length(lambda epochs: epoch_steps(epochs, 140, 6))
    assert model.gtr_steps == epoch_steps(2.5, 140, 6) == 59
    assert ATFM(1, 2, **{**TINY, "gtr_steps": 3}).gtr_steps == 3 and ATFM(1, 2, **TINY).gtr_steps == 1000
    with pytest.raises(ValueError, match="gtr_steps or gtr_epochs, not both"):
        ATFM(1, 2, **{**TINY, "gtr_steps": 3, "gtr_epochs": 1})

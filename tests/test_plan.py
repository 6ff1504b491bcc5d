"""segbench plan: steps from split sizes and epochs, measured against scaled estimates, totals, the step table."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import ConfigError, load_config
from benchmark.data.case import DatasetInfo
from benchmark.data.manifest import CaseEntry, Manifest
from benchmark.plan import batches, dataset_split, plan, render
from benchmark.records import Status
from benchmark.steptable import TABLE, load_step_table
from benchmark.training.data import epoch_steps

TINY_UNET = {"channels": [4, 8], "strides": [2]}
TINY_MFS = {"channels": [8, 16], "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "fa_depth": 1,
            "fa_dim": 16, "fa_heads": 2, "steps": 3}


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    """The plan's FLOPs cache (.segbench/, relative) goes to the test's folder, not the project's."""
    monkeypatch.chdir(tmp_path)


def profile(tmp_path: Path, datasets=("glas",), unet_train=None, **extra) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({
        "profile": "tiny", "datasets": list(datasets), "methods": ["unet", "medflowseg"],
        "data": {"size": 32, "split": {"train": 0.7, "val": 0.1, "test": 0.2}},
        "train": {"steps": 10, "batch_size": 2},
        "method": {"unet": {"model": TINY_UNET, **({"train": unet_train} if unet_train else {})},
                   "medflowseg": {"model": TINY_MFS}}, **extra}))
    return p


def table(tmp_path: Path, training=None) -> Path:
    base = yaml.safe_load(TABLE.read_text())
    base["training"] = training if training is not None else [
        {"method": "unet", "gpu": "h100", "precision": "fp32", "size": 32, "batch": 2, "step_s": 0.010,
         "peak_gib": 1.0, "source": "test"},
        {"method": "unet", "gpu": "h100", "precision": "fp32", "size": 32, "batch": 4, "step_s": 0.016,
         "peak_gib": 1.5, "source": "test"}]
    base["evaluation"], base["out_of_memory"] = [], []
    path = tmp_path / "step_times.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_steps_follow_from_the_split_and_epochs(tmp_path):
    cfg = load_config(profile(tmp_path, unet_train={"epochs": 3, "batch_size": 4}))
    split = dataset_split("glas", cfg)
    # GlaS's 85 published training images less the validation share 0.1 / (0.7 + 0.1) drawn from them
    assert split.train_slices == 85 - round(85 / 8) and split.test_cases == 80 and "about" in split.source
    rows = {r.method: r for r in plan(cfg, "h100", load_step_table(table(tmp_path)))}
    assert rows["unet"].steps == epoch_steps(3, split.train_slices, 4) == math.ceil(3 * 74 / 4)
    assert rows["unet"].global_batch == 4 and rows["medflowseg"].steps == 10


def test_a_manifest_here_gives_the_split(tmp_path):
    info = DatasetInfo(name="glas", modality="histology", channels=3, class_names=("background", "gland"),
                       n_annotators=1, stands_for="GlaS", phantom=False, note="")

    def case(i, split, n):
        return CaseEntry(f"c{i}", f"s{i}", split, f"c{i}.npz", "histology", 3, [1.0, 1.0, 1.0],
                         ["background", "gland"], 1, n, "0" * 64)

    Manifest(info, Status.OK, cases=[case(0, "train", 5), case(1, "train", 7), case(2, "val", 2),
                                     case(3, "test", 4)]).save(tmp_path)
    split = dataset_split("glas", load_config(profile(tmp_path)), processed=tmp_path)
    assert (split.train_slices, split.test_cases, split.test_slices) == (12, 1, 4)
    assert split.source.startswith("manifest ")


def test_measured_rows_are_measured_scaled_rows_are_marked_and_the_total_is_the_sum(tmp_path):
    cfg = load_config(profile(tmp_path))
    steps = load_step_table(table(tmp_path))
    rows = {r.method: r for r in plan(cfg, "h100", steps)}
    unet, mfs = rows["unet"], rows["medflowseg"]
    assert unet.estimate.startswith("measured (test)") and unet.memory_gib == 1.0
    assert unet.train_hours == pytest.approx(10 * 0.010 / 3600)
    # sampling: the 80 test images x 1 evaluation, a third of the training step per image
    assert unet.sample_hours == pytest.approx(80 * 0.010 / 2 / 3 / 3600)
    assert "scaled from FLOPs" in mfs.estimate and mfs.memory_gib is None
    ratio = float(re.search(r"scaled from FLOPs: ([0-9.]+) x unet", mfs.estimate).group(1))
    assert ratio > 1 and mfs.train_hours == pytest.approx(10 * 0.010 * ratio / 3600, rel=0.01)
    text = render(list(rows.values()), cfg, "h100", 2, steps)
    total = float(re.search(r"Total: ([0-9.,]+) GPU-hours", text).group(1))
    assert total == pytest.approx(round(unet.hours + mfs.hours, 1), abs=0.05)
    assert "training 0.0 over 2 of 2 rows, sampling 0.0 over 2 of 2 rows" in text


def test_each_extra_training_seed_is_a_row_of_its_own_and_counts_in_the_total(tmp_path):
    cfg = load_config(profile(tmp_path, seeds={"extra": [1, 2], "datasets": ["glas"], "methods": ["unet"]}))
    steps = load_step_table(table(tmp_path))
    rows = plan(cfg, "h100", steps)
    assert [(r.method, r.seed) for r in rows] == [("unet", None), ("medflowseg", None), ("unet", 1), ("unet", 2)]
    assert rows[2].train_hours == rows[3].train_hours == rows[0].train_hours
    text = render(rows, cfg, "h100", 1, steps)
    assert "| glas | unet (seed 2) |" in text and "over 4 of 4 rows" in text


def test_a_fit_between_measured_batches_and_a_batch_that_does_not_fit(tmp_path):
    cfg = load_config(profile(tmp_path, unet_train={"batch_size": 3}))
    rows = {r.method: r for r in plan(cfg, "h100", load_step_table(table(tmp_path)))}
    assert rows["unet"].estimate.startswith("fit to measured batches 2, 4")
    assert rows["unet"].train_hours == pytest.approx(10 * 0.013 / 3600)
    big = table(tmp_path, training=[{"method": "unet", "gpu": "h100", "precision": "fp32", "size": 32, "batch": 2,
                                     "step_s": 0.01, "peak_gib": 60.0, "source": "test"}])
    rows = {r.method: r for r in plan(cfg, "h100", load_step_table(big))}
    assert "90 GiB exceeds the 79.1 GiB card" in rows["unet"].estimate


def test_no_entry_for_the_gpu_or_an_unknown_size_leaves_the_hours_blank(tmp_path):
    cfg = load_config(profile(tmp_path, datasets=("acdc",), unet_train={"epochs": 2}))
    steps = load_step_table(table(tmp_path))
    rows = {r.method: r for r in plan(cfg, "h100", steps)}
    assert rows["unet"].split.train_slices is None and rows["unet"].steps is None
    assert rows["unet"].train_hours is None and "its epochs need the training slices" in rows["unet"].estimate
    assert rows["medflowseg"].train_hours is not None      # a length in steps needs no split size
    rows = plan(cfg, "v100", steps)
    assert all(r.train_hours is None and r.estimate == "no entry for GPU v100 in the step-time table" for r in rows)


def test_the_plan_splits_the_global_batch_as_the_trainer_does():
    from benchmark.config import TrainConfig
    assert batches(TrainConfig(batch_size=48, micro_batch_size=6), 4, "m") == (48, 6, 2)
    assert batches(TrainConfig(batch_size=8, micro_batch_size=24), 1, "m") == (8, 8, 1)    # a cap, not a size
    with pytest.raises(ConfigError, match="the global batch 6 does not divide among 4 processes"):
        batches(TrainConfig(batch_size=6), 4, "m")


def test_the_table_is_checked_on_load_and_cites_notes_lines(tmp_path):
    notes = (TABLE.parent / "NOTES.md").read_text().splitlines()
    steps = load_step_table()
    for e in steps.training + steps.evaluation:
        line = notes[int(e.source.split(":")[1]) - 1]
        value = e.step_s if e.step_s is not None else e.eval_s
        assert f"{round(1000 * value)}" in line, (e, line)
    for e in steps.out_of_memory:
        assert "out of memory" in notes[int(e.source.split(":")[1]) - 1]
    bad = yaml.safe_load(TABLE.read_text())
    bad["training"][0]["eval_s"] = 1.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"training\[0\]: .*must not have \['eval_s'\]"):
        load_step_table(path)
    bad["training"][0].pop("eval_s")
    bad["training"][0]["gpu"] = "v100"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"training\[0\]\.gpu: 'v100' is not under gpus"):
        load_step_table(path)


def test_segbench_plan_prints_the_rows_and_says_when_nothing_is_measured(tmp_path, capsys):
    assert main(["plan", "--params", str(profile(tmp_path)), "--gpu", "h200", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "| glas | unet | 74 |" in out and "| glas | medflowseg | 74 |" in out
    assert out.count("no step-time entry at h200, fp32, 32 px") == 2
    assert "training 0.0 over 0 of 2 rows, sampling 0.0 over 0 of 2 rows" in out


def test_flops_are_counted_once_per_configuration_and_then_read_from_the_cache(tmp_path, monkeypatch):
    import benchmark.plan as planning
    counted = []
    real = planning.training_flops_per_image
    monkeypatch.setattr(planning, "training_flops_per_image", lambda *a: counted.append(a) or real(*a))
    cfg, steps, cache = load_config(profile(tmp_path)), load_step_table(table(tmp_path)), tmp_path / "flops.json"
    first = plan(cfg, "h100", steps, cache)
    assert len(counted) == 2 and cache.is_file()                        # unet (the reference) and medflowseg
    assert [r.train_hours for r in plan(cfg, "h100", steps, cache)] == [r.train_hours for r in first]
    assert len(counted) == 2                                            # the second plan counted nothing
    other = {**TINY_UNET, "channels": [8, 16]}
    cfg2 = load_config(profile(tmp_path))
    cfg2.method["unet"].model.update(other)                             # another configuration: counted again
    plan(cfg2, "h100", steps, cache)
    assert len(counted) == 3


def test_nnunet_steps_count_every_fold(tmp_path):
    p = profile(tmp_path)
    raw = yaml.safe_load(p.read_text())
    raw["baselines"] = {"datasets": ["glas"], "methods": ["nnunet"]}
    raw["method"]["nnunet"] = {"model": {"folds": 5, "epochs": 2, "iterations_per_epoch": 3}}
    p.write_text(yaml.safe_dump(raw))
    rows = {r.method: r for r in plan(load_config(p), "h100", load_step_table(table(tmp_path)))}
    assert rows["nnunet"].steps == 5 * 2 * 3 and rows["nnunet"].train_hours is None
    assert "5 fold(s) x 2 epochs x 3 iterations" in rows["nnunet"].estimate

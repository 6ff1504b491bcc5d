"""Extra training seeds (profile ``seeds:``): the section's checks, the seed folders, ``--seed`` of the train,
predict and evaluate stages, and a multi-seed tiny profile through DVC to its tables and claims report."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import paths
from benchmark.cli import main
from benchmark.config import load_config
from tests.conftest import TINY_PARAMS, commit_all, config_error, copy_project, raw_params, write_params

DS = "phantom-cardiac"


def _params(tmp_path: Path, seeds: dict, **sections) -> Path:
    return raw_params(tmp_path, seeds=seeds, **sections)


_error = config_error


def test_the_seeds_section_defaults_to_no_extra_seed_and_lists_the_trained_pairs(tmp_path):
    assert load_config(_params(tmp_path, {})).seeds.pairs() == []
    cfg = load_config(_params(tmp_path, {"extra": [1, 2], "datasets": [DS], "methods": ["unet"]}))
    assert cfg.seeds.extra == (1, 2) and cfg.seeds_of(DS, "unet") == (1, 2) and cfg.seeds_of(DS, "other") == ()


@pytest.mark.parametrize("seeds, sections, message", [
    ({"extra": [1, 1]}, {}, "seeds.extra: must be a list of distinct integers >= 0, got (1, 1)"),
    ({"extra": [-1]}, {}, "seeds.extra: must be a list of distinct integers >= 0, got (-1,)"),
    ({"extras": [1]}, {}, "seeds: unknown key(s) ['extras'] (allowed: ['datasets', 'extra', 'methods'])"),
    ({"extra": [1], "datasets": [DS], "methods": ["flowsdf"]}, {},
     "seeds.methods: 'flowsdf' has no section method.flowsdf (sections: ['unet'])"),
    ({"extra": [1], "datasets": [DS], "methods": ["flowsdf"]}, {"method": {"unet": {}, "flowsdf": {}}},
     "seeds: ['phantom-cardiac/flowsdf'] are pairs the profile does not train (seeds.datasets x seeds.methods must "
     "lie in datasets x methods, baselines or ablations)"),
    ({"extra": [], "datasets": ["phantom-brain"], "methods": ["unet"]}, {},
     "seeds: ['phantom-brain/unet'] are pairs the profile does not train"),
    ({"extra": [3, 0], "datasets": [DS], "methods": ["unet"]}, {},
     "seeds.extra: 0 is already phantom-cardiac/unet's first training seed (method.unet train.seed); list only "
     "the seeds trained beyond it"),
])
def test_a_bad_seeds_section_is_one_error_naming_the_key(tmp_path, seeds, sections, message):
    path = _params(tmp_path, seeds, **sections)
    assert _error(path).startswith(f"{path}: {message}")


def test_the_condition_head_row_trains_nothing_so_takes_no_seed(tmp_path):
    path = _params(tmp_path, {"extra": [1], "datasets": [DS], "methods": ["medflowseg-head"]},
                   methods=["medflowseg"], method={"medflowseg": {}, "medflowseg-head": {}},
                   condition_head={"datasets": [DS], "method": "medflowseg"})
    assert "seeds: ['phantom-cardiac/medflowseg-head'] are pairs the profile does not train" in _error(path)


def test_seed_folders_sit_inside_the_pairs_folders():
    assert paths.run(DS, "unet") == Path("runs/phantom-cardiac/unet")
    assert paths.model(DS, "unet", 2) == Path("runs/phantom-cardiac/unet/seed-2/model")
    assert paths.predictions(DS, "unet", 0) == Path("runs/phantom-cardiac/unet/seed-0/predictions")
    assert paths.results(DS, "unet") == Path("results/phantom-cardiac/unet")
    assert paths.results(DS, "unet", 7) == Path("results/phantom-cardiac/unet/seed-7")


def test_train_predict_evaluate_with_a_seed_write_the_seed_folders(tiny_project, monkeypatch, capsys):
    monkeypatch.chdir(tiny_project)
    write_params(tiny_project / "params.yaml", train={"steps": 3, "batch_size": 4, "warmup_steps": 1,
                                                      "checkpoint_every": 3, "threads": 1})
    assert main(["train", DS, "unet"]) == 0
    for stage in ("train", "predict", "evaluate"):
        assert main([stage, DS, "unet", "--seed", "5"]) == 0
    assert "train phantom-cardiac/unet (seed 5): ok 3 steps" in capsys.readouterr().out
    main_meta = json.loads((paths.model(DS, "unet") / "meta.json").read_text())
    seed_meta = json.loads((paths.model(DS, "unet", 5) / "meta.json").read_text())
    assert (main_meta["train"]["seed"], seed_meta["train"]["seed"]) == (0, 5)
    assert main_meta["weights_sha256"] != seed_meta["weights_sha256"]
    first = torch.load(paths.model(DS, "unet") / "model.pt", weights_only=False)["state_dict"]
    other = torch.load(paths.model(DS, "unet", 5) / "model.pt", weights_only=False)["state_dict"]
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert (paths.predictions(DS, "unet", 5) / "meta.json").is_file()
    assert not paths.predictions(DS, "unet").exists()      # the main run's folders are untouched
    record = json.loads((paths.results(DS, "unet", 5) / "evaluation.json").read_text())
    assert record["status"] == "ok" and (paths.results(DS, "unet", 5) / "per_case.csv").is_file()
    assert not (paths.results(DS, "unet") / "evaluation.json").exists()


def test_nnunet_trains_and_predicts_a_seed_in_its_seed_folders(tiny_project, monkeypatch):
    """nnU-Net, which trains itself, gets the method section with train.seed = S (it seeds every fold from it) and
    the seed's folders."""
    from benchmark.methods import nnunet
    from benchmark.records import PredictionRecord, RunRecord

    monkeypatch.chdir(tiny_project)
    write_params(tiny_project / "params.yaml", method={**TINY_PARAMS["method"], "nnunet": {}})
    seen = []
    monkeypatch.setattr(nnunet, "train", lambda processed, out, mcfg, max_steps: seen.append(
        ("train", out, mcfg.train.seed)) or RunRecord.not_run("recorded", seconds=0.0))
    monkeypatch.setattr(nnunet, "predict", lambda processed, model, out, mcfg: seen.append(
        ("predict", model, out)) or PredictionRecord.not_run("recorded"))
    assert main(["train", DS, "nnunet", "--seed", "3"]) == 0 and main(["predict", DS, "nnunet", "--seed", "3"]) == 0
    assert seen == [("train", paths.run(DS, "nnunet", 3), 3),
                    ("predict", paths.model(DS, "nnunet", 3), paths.predictions(DS, "nnunet", 3))]


def test_a_negative_seed_is_refused(tiny_project, monkeypatch, capsys):
    monkeypatch.chdir(tiny_project)
    with pytest.raises(SystemExit) as stop:
        main(["train", DS, "unet", "--seed", "-1"])
    assert stop.value.code == 2 and "a training seed is an integer >= 0, got -1" in capsys.readouterr().err


def _per_seed_dice(folder: Path) -> float:
    """A run's Average Dice in %, from its per_case.csv: the mean over classes of each class's mean over cases."""
    rows = pd.read_csv(folder / "per_case.csv")
    rows = rows[~rows["class"].str.startswith("region:")]
    return 100 * float(rows.groupby("class")["dice"].mean().mean())


def test_a_multi_seed_tiny_profile_renders_the_mean_and_spread_over_its_seeds(tmp_path):
    proj = copy_project(tmp_path / "proj")
    write_params(proj / "params.yaml", methods=["unet"], ablations={"datasets": [], "methods": []},
                 table4={"datasets": [], "methods": []}, nfe_sweep={"datasets": [], "method": "medflowseg"},
                 seeds={"extra": [1, 2], "datasets": [DS], "methods": ["unet"]},
                 train={"steps": 10, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 10, "threads": 1})
    commit_all(proj)
    r = subprocess.run(["dvc", "repro"], cwd=proj, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in ("seed-train", "seed-predict", "seed-evaluate"):
        assert f"Running stage '{stage}@phantom-cardiac-unet-2'" in r.stdout

    per_seed = [_per_seed_dice(proj / paths.results(DS, "unet", seed)) for seed in (None, 1, 2)]
    assert len(set(per_seed)) == 3                        # three trainings, three results
    mean, spread = np.mean(per_seed), np.std(per_seed, ddof=1)
    table = pd.read_csv(proj / "paper/tables/table1_cardiac.csv").set_index("Method")
    cell = table.loc["UNet [ours: unet]", "Average Dice"]
    assert cell.startswith(f"{mean:.2f} ± {spread:.2f} ["), cell
    assert f"Δ {mean - 87.55:+.2f})" in cell
    md = (proj / "paper/tables/table1_cardiac.md").read_text()
    assert "ours is the mean over the seeds ± their standard deviation (ddof 1)" in md
    assert "training seeds per cell: 1, except phantom-cardiac/unet 3." in md

    report = (proj / "paper/claims_report.md").read_text()
    header = next(ln for ln in report.splitlines() if ln.startswith("| claim") and "seeds" in ln)
    line = next(ln for ln in report.splitlines() if "Table 1 / UNet / Average Dice" in ln)
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    assert cells["seeds"] == "3" and cells["ours"] == f"{mean:.4g} ± {spread:.4g}", cells
    headline = json.loads((proj / "paper/metrics.json").read_text())
    assert headline["dice_mean.unet"] == pytest.approx(mean)

"""Switching profiles: params.yaml written from a profile, left-out sections filled, DVC experiments of two."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmark import profiles
from benchmark.cli import main
from benchmark.config import ConfigError, load_config, read_params
from benchmark.plugins import registered
from tests.conftest import ROOT, TINY_PARAMS, commit_all, copy_project

# A profile as a new user writes it: only what it needs, no claims, table4, baselines, ... sections.
SMALL = {"profile": "small", "datasets": ["phantom-cardiac"], "methods": ["unet"],
         "data": TINY_PARAMS["data"], "train": TINY_PARAMS["train"], "predict": TINY_PARAMS["predict"],
         "method": {"unet": TINY_PARAMS["method"]["unet"]}}


def test_the_committed_params_yaml_is_the_default_profile_as_the_command_writes_it(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert (ROOT / "params.yaml").read_text() == profiles.render("default")


def test_a_profile_without_optional_sections_is_written_with_their_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "small.yaml").write_text("# my comment\n" + yaml.safe_dump(SMALL, sort_keys=False))
    assert main(["profile", "use", "small"]) == 0
    text = (tmp_path / "params.yaml").read_text()
    assert text.startswith("# Written by `segbench profile use small` from profiles/small.yaml") and "# my comment" in text
    raw = read_params(tmp_path / "params.yaml")
    assert set(profiles.OPTIONAL) <= set(raw)                        # every section a stage may read is there
    written, source = load_config(tmp_path / "params.yaml"), load_config(tmp_path / "profiles" / "small.yaml")
    assert {**written.__dict__, "source": ""} == {**source.__dict__, "source": ""}   # and means the same
    assert profiles.missing_sections(tmp_path / "params.yaml", ROOT / "dvc.yaml") == []


def test_a_bad_or_unknown_profile_is_one_error_and_params_yaml_stays(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text("profile: before\n")
    (tmp_path / "profiles" / "bad.yaml").write_text(yaml.safe_dump({**SMALL, "train": {"steps": 0}}))
    assert main(["profile", "use", "bad"]) == 2
    assert capsys.readouterr().err == ("segbench profile: error: profiles/bad.yaml: train.steps: must be an integer "
                                       ">= 1, got 0\n")
    assert main(["profile", "use", "nothere"]) == 2
    assert "profiles/nothere.yaml: no such profile (profiles here: ['bad'])" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_text() == "profile: before\n"


def test_check_data_stops_a_hand_written_params_yaml_that_lacks_a_section(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL))
    assert main(["check-data", "--no-probe", "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segbench check-data: error: params.yaml: no section ['ablations', 'baselines', 'claims', "
                          "'condition_head', 'evaluation', 'nfe_sweep', 'seeds', 'table4'], which later stages "
                          "read"), err
    assert not (tmp_path / "a.json").exists()


def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_two_profiles_run_as_dvc_experiments_and_exp_show_compares_them(tmp_path):
    proj = copy_project(tmp_path / "proj")
    (proj / "profiles").mkdir()
    other = {**SMALL, "profile": "small-wide",
             "method": {"unet": {"model": {**SMALL["method"]["unet"]["model"], "channels": [8, 16, 32]}}}}
    (proj / "profiles" / "small.yaml").write_text(yaml.safe_dump(SMALL, sort_keys=False))
    (proj / "profiles" / "wide.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    _run(["segbench", "profile", "use", "small"], proj)
    commit_all(proj)
    for name in ("small", "wide"):
        _run(["segbench", "profile", "use", name], proj)
        _run(["dvc", "exp", "run", "-n", name], proj)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], proj))
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in e["revs"]}
    assert set(exps) == {"small", "wide"}

    def params(e):
        return e["data"]["params"]["params.yaml"]["data"]

    assert {n: params(e)["profile"] for n, e in exps.items()} == {"small": "small", "wide": "small-wide"}
    assert params(exps["wide"])["method"]["unet"]["model"]["channels"] == [8, 16, 32]
    assert all(e["data"]["metrics"] for e in exps.values())          # each ran through to its metrics


# Methods that exist only at the paper's scale: medflowseg-111m is MedFlowSeg at the width that matches the paper's
# stated 111 M parameters, the same network as `medflowseg` at any CPU width.
PAPER_SCALE_ONLY = {"medflowseg-111m"}


def _shown(cfg) -> set[str]:
    """Every method some table of the profile shows: an evaluated pair or a Table 4 row."""
    return {m for _, m in cfg.pairs()} | set(cfg.table4.methods)


def test_every_registered_method_is_in_a_table_of_the_full_cpu_profile_and_the_default_is_within_it():
    default, full = load_config(ROOT / "profiles/default.yaml"), load_config(ROOT / "profiles/cpu-full.yaml")
    missing = set(registered("segbench.methods")) - PAPER_SCALE_ONLY - _shown(full)
    assert not missing, f"registered methods in no table of the full CPU profile: {sorted(missing)}"
    assert _shown(default) <= _shown(full)


def test_the_full_cpu_profile_runs_all_the_default_does_and_cpu_64_every_method_on_the_earlier_matrix():
    default, full = load_config(ROOT / "profiles/default.yaml"), load_config(ROOT / "profiles/cpu-full.yaml")
    earlier = load_config(ROOT / "profiles/cpu-64.yaml")
    assert set(default.pairs()) < set(full.pairs()) and full.data == default.data
    assert _shown(full) <= _shown(earlier)
    assert earlier.data.size == 64 and len(earlier.datasets) == 7      # the matrix the default ran until 2026-11-30
"""check-data: a profile naming real datasets that are not here stops at once with how to get each."""
from __future__ import annotations

import shutil
import subprocess

from benchmark.cli import main
from benchmark.data.real.availability import check
from benchmark.data.real.source import RealSource
from benchmark.data.registry import available_datasets, dataset_source
from tests.conftest import ROOT, commit_all, copy_project

REAL = {n: s.module for n in available_datasets() if isinstance(s := dataset_source(n), RealSource)}


def test_every_registered_dataset_declares_the_whole_contract():
    assert sorted(REAL) == ["acdc", "brats2021", "camus", "glas", "isic", "lidc", "monuseg", "refuge2"]
    for name, m in REAL.items():
        assert m.INFO.name == name and not m.INFO.phantom and m.FILES
        assert m.LICENCE.strip() and m.CITATION.strip() and m.HOMEPAGE.startswith("https://")
        assert callable(m.load) and callable(m.split)
        if any(f.gated for f in m.FILES):
            assert "data/raw/" + name in m.HOW_TO_GET, name     # says exactly where the files go


def test_downloadable_data_passes_and_unreachable_data_is_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record, message = check(["glas", "phantom-cardiac"], probe=False)
    assert message is None and record == {"glas": "available"}
    monkeypatch.setattr("benchmark.data.download.reachable", lambda url, timeout=5.0: False)
    _, message = check(["glas"])
    assert message.startswith("1 of the profile's datasets are not on this machine") and "glas (GlaS;" in message
    assert "place it in data/raw/glas/" in message and "never fills a real dataset's rows with other data" in message


def test_placed_files_make_a_gated_dataset_ready(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gated = [n for n, m in REAL.items() if all(f.gated for f in m.FILES)]
    assert gated, "no gated dataset to test with"
    name = gated[0]
    _, message = check([name], probe=False)
    assert f"{name} (" in message and "no automated download" in message
    for f in REAL[name].FILES:
        (tmp_path / "data/raw" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/raw" / name / f.name).write_bytes(b"x")
    assert check([name], probe=False) == ({name: "available"}, None)


def test_cli_paper_profile_lists_every_missing_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("benchmark.data.download.reachable", lambda url, timeout=5.0: False)
    assert main(["--params", str(ROOT / "profiles/paper.yaml"), "check-data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{len(REAL)} of the profile's datasets are not on this machine")
    for name in REAL:
        assert f"\n{name} (" in err
    assert not (tmp_path / "data").exists()


def test_dvc_repro_of_the_paper_profile_stops_before_any_fetch(tmp_path):
    """The real command on this machine: no dataset here, no download host reachable (or only some)."""
    proj = copy_project(tmp_path / "proj")
    shutil.copy(ROOT / "profiles/paper.yaml", proj / "params.yaml")
    commit_all(proj)
    r = subprocess.run(["dvc", "repro"], cwd=proj, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Running stage 'check-data'" in out
    for name in ("brats2021", "monuseg", "isic"):            # files placed by hand: missing wherever this runs
        assert f"{name} (" in out
    assert "Running stage 'fetch@" not in out and not (proj / "data" / "fetched").exists()

"""Subject-level splits, the leak check (subjects and identical slices across splits),
the refusal to write a leaking dataset, manifest I/O and the ``check-leaks`` CLI."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import (BLANK, SPLITS, CaseEntry, Manifest, ManifestError, assign_splits, check_leaks,
                                     load_manifest, slice_hashes)
from benchmark.data import registry
from benchmark.data.phantoms import PhantomSource
from benchmark.data.preprocess import preprocess
from benchmark.data.sources import fetch
from benchmark.errors import USER_ERROR
from benchmark.records import Status
from tests.data.tamper import copy_processed

INFO = DatasetInfo(name="phantom-unit", modality="MRI", channels=1, class_names=("background", "fg"))
FRACTIONS = {"train": 0.6, "val": 0.1, "test": 0.3}


def entry(case_id: str, subject_id: str, split: str, hashes: list[str] | None = None) -> CaseEntry:
    return CaseEntry(case_id=case_id, subject_id=subject_id, split=split, file=f"cases/{case_id}.npz",
                     modality="MRI", channels=1, spacing=[1.0, 1.0, 1.0], class_names=["background", "fg"],
                     n_annotators=1, n_slices=len(hashes or [f"h-{case_id}"]), sha256="0" * 64,
                     slice_hashes=list(hashes or [f"h-{case_id}"]))


def clean_manifest() -> Manifest:
    cases = []
    for i, split in enumerate(["train"] * 4 + ["val"] + ["test"] * 2):
        for z in range(2):
            cid = f"s{i}_{z}"
            cases.append(entry(cid, f"s{i}", split, [f"h{i}-{z}-0", f"h{i}-{z}-1"]))
    return Manifest(INFO, "ok", provenance={"seed": 0}, cases=cases)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


# ---------------------------------------------------------------- assign_splits
def test_assign_splits_deterministic_for_a_seed():
    subjects = [f"p{i:03d}" for i in range(40)]
    a = assign_splits(subjects, FRACTIONS, seed=7)
    assert a == assign_splits(subjects, FRACTIONS, seed=7)
    assert a == assign_splits(list(reversed(subjects)), FRACTIONS, seed=7), "input order must not matter"
    assert a != assign_splits(subjects, FRACTIONS, seed=8)


def test_assign_splits_partitions_subjects():
    subject_ids = [f"p{i % 25:03d}" for i in range(75)]  # three cases per subject
    out = assign_splits(subject_ids, FRACTIONS, seed=0)
    assert set(out) == set(subject_ids)
    assert set(out.values()) == set(SPLITS)


@pytest.mark.parametrize("n", [10, 40, 100])
def test_assign_splits_respects_fractions(n):
    out = assign_splits([f"p{i}" for i in range(n)], FRACTIONS, seed=1)
    counts = Counter(out.values())
    assert sum(counts.values()) == n
    for split, frac in FRACTIONS.items():
        assert abs(counts[split] - frac * n) <= max(1, 0.05 * n), (split, counts)


def test_assign_splits_zero_fraction_gets_nobody():
    out = assign_splits([f"p{i}" for i in range(10)], {"train": 0.7, "val": 0.0, "test": 0.3}, seed=0)
    assert set(out.values()) == {"train", "test"}


def test_assign_splits_too_few_subjects():
    with pytest.raises(ManifestError, match="2 subjects cannot fill"):
        assign_splits(["a", "b", "a"], FRACTIONS, seed=0)
    # enough subjects to give each split one, but then train would be left with none
    with pytest.raises(ManifestError, match="4 subjects cannot fill"):
        assign_splits(["a", "b", "c", "d"], {"train": 0.1, "val": 0.1, "test": 0.8}, seed=0)


# ---------------------------------------------------------------- check_leaks
def test_check_leaks_clean():
    report = check_leaks(clean_manifest())
    assert report.ok
    assert report.subjects_in_several_splits == {} and report.slices_in_several_splits == {}
    assert report.test_cases_leaked == [] and report.n_test_cases == 4
    assert report.summary().startswith("no leaks")


def test_check_leaks_subject_in_train_and_test():
    m = clean_manifest()
    m.cases.append(entry("s0_test", "s0", "test"))  # s0 already has two train cases
    report = check_leaks(m)
    assert not report.ok
    assert report.subjects_in_several_splits == {"s0": ["test", "train"]}
    assert report.slices_in_several_splits == {}
    assert report.test_cases_leaked == ["s0_test"]
    assert report.n_test_cases == 5
    summary = report.summary()
    assert summary.startswith("LEAK") and "subject s0: test, train" in summary and "1/5" in summary


def test_check_leaks_identical_slice_in_two_subjects():
    """Two different subjects in different splits share one identical slice (the ATFM-style slice leak)."""
    m = clean_manifest()
    shared = "h0-1-1"  # slice 1 of case s0_1 (subject s0, train)
    test_case = next(c for c in m.cases if c.case_id == "s5_0")
    assert test_case.split == "test" and test_case.subject_id != "s0"
    test_case.slice_hashes[0] = shared
    report = check_leaks(m)
    assert not report.ok
    assert report.subjects_in_several_splits == {}
    assert report.slices_in_several_splits == {shared: ["s0_1", "s5_0"]}
    assert report.test_cases_leaked == ["s5_0"]
    assert report.summary().startswith("LEAK: 0 subjects and 1 identical slices")


def test_identical_slice_within_one_split_is_not_a_leak():
    m = clean_manifest()
    m.cases[0].slice_hashes[0] = m.cases[2].slice_hashes[1]  # both train
    assert check_leaks(m).ok


def test_blank_slices_in_two_splits_are_not_a_leak():
    """Empty slices (one value everywhere) occur in every real volume; sharing them leaks nothing."""
    blank = np.full((3, 1, 8, 8), -0.5, np.float32)
    blank[1, 0, 2, 3] = 1.0   # the middle slice has content
    hashes = slice_hashes(blank)
    assert hashes[0] == hashes[2] == BLANK != hashes[1]
    m = clean_manifest()
    for c in (m.cases[0], next(c for c in m.cases if c.split == "test")):
        c.slice_hashes[0] = BLANK
    assert check_leaks(m).ok


def test_check_leaks_atfm_style_random_slice_split():
    """Slices of the same patients split 80/20 at random (not by patient), as in the ATFM leak."""
    rng = np.random.default_rng(0)
    cases = []
    for p in range(10):
        volume = rng.normal(size=(30, 1, 8, 8)).astype(np.float32)
        for z, h in enumerate(slice_hashes(volume)):
            cases.append(entry(f"p{p}_z{z:02d}", f"p{p}", "test" if rng.random() < 0.2 else "train", [h]))
    m = Manifest(INFO, "ok", cases=cases)
    report = check_leaks(m)
    assert not report.ok
    assert len(report.subjects_in_several_splits) == 10
    assert report.n_test_cases > 20
    frac = len(report.test_cases_leaked) / report.n_test_cases
    assert frac == 1.0
    assert "(100%) are affected" in report.summary()


# ---------------------------------------------------------------- preprocess refuses a slice leak
def _generate_with_duplicate(seed: int, n_subjects: int, size: int) -> list[Case]:
    """One single-slice case per subject; subject 1's image is an exact copy of subject 0's."""
    cases = []
    for i in range(n_subjects):
        rng = np.random.default_rng([seed, i])
        image = rng.normal(size=(1, 1, size, size)).astype(np.float32)
        label = rng.integers(0, 2, (1, 1, size, size)).astype(np.uint8)
        cases.append(Case(f"subj{i:04d}", f"subj{i:04d}", image, label))
    cases[1].image = cases[0].image.copy()
    return cases


class DupSource(PhantomSource):
    """Puts the two subjects with the identical image into train and test (or, with
    ``leak = False``, both into test, which is a valid subject-level split)."""

    leak = True

    def split(self, cases, cfg):
        out = {c.subject_id: "train" for c in cases}
        out["subj0001"] = out["subj0005"] = "test"
        out["subj0004"] = "val"
        if not self.leak:
            out["subj0000"] = "test"
        return out


@pytest.fixture
def dup_source(monkeypatch):
    def dataset_source(name):
        assert name == INFO.name
        return DupSource(INFO, _generate_with_duplicate)

    monkeypatch.setattr(registry, "dataset_source", dataset_source)


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-output", "previous-output"])
def test_preprocess_refuses_identical_slice_across_splits(tmp_path, dup_source, monkeypatch, previous):
    cfg = DataConfig(size=16, seed=0, n_subjects=6, split=FRACTIONS)
    fetch(INFO.name, tmp_path / "f", cfg)
    out = tmp_path / "processed"
    before = None
    if previous:  # a good earlier result: the two identical images in the same split
        monkeypatch.setattr(DupSource, "leak", False)
        assert preprocess(INFO.name, tmp_path / "f", out, cfg).status == "ok"
        before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        monkeypatch.setattr(DupSource, "leak", True)

    with pytest.raises(ManifestError) as exc:
        preprocess(INFO.name, tmp_path / "f", out, cfg)
    msg = str(exc.value)
    assert "refusing to write a leaking split" in msg and "LEAK" in msg and "1 identical slices" in msg
    if previous:
        assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    else:
        assert not out.exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- manifest I/O
def test_manifest_round_trip(tmp_path):
    m = clean_manifest()
    path = m.save(tmp_path)
    assert path == tmp_path / "manifest.json"
    assert load_manifest(tmp_path) == m
    assert load_manifest(path) == m
    assert leftovers(tmp_path) == []


def test_regions_round_trip_and_a_manifest_without_them_is_unchanged(tmp_path):
    """A dataset's evaluation regions are stored with it; a dataset without regions writes no ``regions`` key, so
    its manifest (and every manifest written before regions existed) reads and writes as before."""
    m = clean_manifest()
    assert "regions" not in json.loads(m.to_json())["dataset"]
    info = DatasetInfo(name="phantom-unit", modality="MRI", channels=1, class_names=("background", "a", "b"),
                       regions={"whole": (1, 2), "b": (2,)})
    m.dataset = info
    m.save(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["dataset"]["regions"] == {"whole": [1, 2], "b": [2]}
    assert load_manifest(tmp_path).dataset == info


@pytest.mark.parametrize("regions, why", [({"x": [0, 1]}, r"1\.\.2"), ({"x": [3]}, r"1\.\.2"), ({"x": []}, "distinct"),
                                          ({"x": [1, 1]}, "distinct"), ({"x": ["a"]}, "distinct"), (["x"], "dataset.regions must map")])
def test_a_manifest_with_bad_regions_names_the_file_and_the_region(tmp_path, regions, why):
    d = json.loads(clean_manifest().to_json())
    d["dataset"].update(class_names=["background", "a", "b"], regions=regions)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match=why) as exc:
        load_manifest(path)
    assert str(exc.value).startswith(f"{path}: not a valid manifest") and "'x'" in str(exc.value)


def test_cli_names_the_manifest_and_region_with_the_user_error_code(tmp_path, capsys):
    d = json.loads(clean_manifest().to_json())
    d["dataset"]["regions"] = {"whole": [1, 2]}     # the dataset has one foreground class
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    assert main(["check-leaks", str(tmp_path)]) == USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "manifest.json") in err[0] and "region 'whole'" in err[0]


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest is missing") as exc:
        load_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(exc.value)


@pytest.mark.parametrize("text", ['{"dataset": {"name": "x", "moda', "[1, 2, 3]", '{"dataset": {"name": "x"}}', ""],
                         ids=["truncated", "not-an-object", "incomplete-dataset", "empty"])
def test_corrupt_manifest_names_the_file(tmp_path, text):
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    assert str(path) in str(exc.value) and "not a valid manifest" in str(exc.value)


def test_manifest_without_status_names_the_file(tmp_path):
    d = json.loads(clean_manifest().to_json())
    del d["status"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    assert str(path) in str(exc.value)


def test_binary_garbage_manifest_names_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00garbage")
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    assert str(path) in str(exc.value)


# ---------------------------------------------------------------- check-leaks CLI
def test_cli_check_leaks(tmp_path, capsys):
    clean = tmp_path / "clean"
    leaky = tmp_path / "leaky"
    clean_manifest().save(clean)
    m = clean_manifest()
    m.cases.append(entry("s1_test", "s1", "test"))
    m.save(leaky)

    assert main(["check-leaks", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "no leaks" in out and "LEAK" not in out

    assert main(["check-leaks", str(leaky / "manifest.json")]) == 1
    out = capsys.readouterr().out
    assert "LEAK" in out and "subject s1" in out

    assert main(["check-leaks", str(clean), str(leaky)]) == 1
    assert capsys.readouterr().out.count("LEAK") == 1


def test_cli_check_leaks_corrupt_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{")
    assert main(["check-leaks", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segbench check-leaks: error:")
    assert str(tmp_path / "manifest.json") in err[0]


def test_cli_check_leaks_recomputes_slice_hashes_edited_to_hide_a_leak(tiny_processed, tmp_path, capsys):
    """A train case copied into the test split as another subject, its slice hashes in the manifest replaced by
    made-up ones: check-leaks computes them from the file and still reports the leak."""
    processed = copy_processed(tiny_processed, tmp_path / "processed")
    d = json.loads((processed / "manifest.json").read_text())
    train = next(c for c in d["cases"] if c["split"] == "train")
    shutil.copyfile(processed / train["file"], processed / "cases/planted.npz")
    d["cases"].append({**train, "case_id": "planted", "subject_id": "nobody", "split": "test",
                       "file": "cases/planted.npz", "slice_hashes": [f"{i:016x}" for i in range(train["n_slices"])]})
    (processed / "manifest.json").write_text(json.dumps(d, indent=1))
    trusting = load_manifest(processed)
    assert check_leaks(Manifest(trusting.dataset, Status.OK, cases=trusting.cases)).ok  # the manifest alone hides it

    assert main(["check-leaks", str(processed)]) == 1
    out = capsys.readouterr().out
    assert "LEAK: 0 subjects and" in out and "1/" in out and "test cases" in out
    assert f"slice hashes of {len(d['cases'])} cases computed from their files" in out
    assert "the manifest's hashes are not those of 1 of them (planted)" in out
    assert f"cases {', '.join(sorted([train['case_id'], 'planted']))}" in out


def test_check_leaks_names_a_case_file_it_cannot_read(tiny_processed, tmp_path, capsys):
    processed = copy_processed(tiny_processed, tmp_path / "processed")
    victim = sorted((processed / "cases").glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["check-leaks", str(processed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"segbench check-leaks: error: {victim}: unreadable or truncated")

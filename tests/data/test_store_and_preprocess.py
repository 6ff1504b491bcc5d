"""Case files and the preprocess stage: bad input gives one clear error naming the file and the
problem, and a failed preprocess leaves nothing half-written (no output, or the previous one intact).

The dataset is a tiny hand-built phantom (6 subjects x 2 cases, 3 channels, 2 slices, 32x32)
served through the real ``PhantomSource``; ``registry.dataset_source`` is patched so the tests do not depend
on the phantom generators.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.cli import main
from benchmark.config import DataConfig
from benchmark.data import registry
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import SPLITS, ManifestError, file_sha256, load_manifest
from benchmark.data.phantoms import PhantomSource
from benchmark.data.preprocess import original_intensities, preprocess
from benchmark.data.sources import fetch
from benchmark.data.store import CaseFileError, atomic_write, load_case, save_arrays, save_case
from benchmark.records import Status
from tests.data.tamper import hidden

NAME = "phantom-unit"
SIZE = 32
CFG = DataConfig(size=SIZE, seed=0, n_subjects=6, split={"train": 0.6, "val": 0.1, "test": 0.3})
INFO = DatasetInfo(name=NAME, modality="fundus", channels=3,
                   class_names=("background", "disc", "cup"), n_annotators=1, stands_for="test")


def _generate(seed: int, n_subjects: int, size: int) -> list[Case]:
    """Two cases per subject, (Z=2, C=3, size, size) images with per-channel offsets and scales."""
    cases = []
    for i in range(n_subjects):
        rng = np.random.default_rng([seed, i])
        for suffix in ("a", "b"):
            image = rng.normal(0.0, 1.0, (2, 3, size, size)) * np.array([1.0, 5.0, 0.2])[None, :, None, None]
            image += np.array([10.0, -3.0, 0.5])[None, :, None, None]
            label = rng.integers(0, 3, (1, 2, size, size))
            cases.append(Case(f"subj{i:04d}_{suffix}", f"subj{i:04d}", image.astype(np.float32),
                              label.astype(np.uint8), (2.0, 0.5, 0.5)))
    return cases


@pytest.fixture(autouse=True)
def fake_source(monkeypatch):
    """Route NAME to a PhantomSource over the hand-built generator, for fetch and preprocess."""
    def dataset_source(name):
        if name != NAME:
            raise KeyError(f"unknown dataset {name!r}")
        return PhantomSource(INFO, _generate)

    monkeypatch.setattr(registry, "dataset_source", dataset_source)


@pytest.fixture
def fetched(tmp_path) -> Path:
    dest = tmp_path / "fetched"
    status = fetch(NAME, dest, CFG)
    assert status["available"] is True
    assert (dest / "status.json").is_file() and (dest / "cases.json").is_file()
    return dest


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary files/folders (``.NAME.tmp`` or ``.NAME.XXXX.tmp``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def case_path(fetched: Path, case_id: str = "subj0002_a") -> Path:
    return fetched / f"{case_id}.npz"


def rewrite_case(fetched: Path, edit, case_id: str = "subj0002_a") -> Path:
    """Load a fetched case without validation, edit its arrays and save it back."""
    path = case_path(fetched, case_id)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    case = Case(case_id, case_id.split("_")[0], arrays["image"], arrays["label"], tuple(arrays["spacing"]))
    save_case(path, case)
    return path


# ---------------------------------------------------------------- corruptions of a fetched dataset
def _missing(fetched: Path) -> Path:
    path = case_path(fetched)
    path.unlink()
    return path


def _truncated(fetched: Path) -> Path:
    path = case_path(fetched)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_label(fetched: Path) -> Path:
    def edit(a):
        a["label"][0, 1, 5, 7] = 7
    return rewrite_case(fetched, edit)


def _shape_mismatch(fetched: Path) -> Path:
    def edit(a):
        a["label"] = a["label"][:, :, : SIZE // 2, :]
    return rewrite_case(fetched, edit)


def _nan(fetched: Path) -> Path:
    def edit(a):
        a["image"][1, 2, 3, 4] = np.nan
    return rewrite_case(fetched, edit)


CORRUPTIONS = {
    # name: (corrupt(fetched) -> offending file, words of which one must name the problem)
    "missing": (_missing, ("missing",)),
    "truncated": (_truncated, ("truncated",)),
    "label-outside-classes": (_bad_label, ("outside",)),
    "shape-mismatch": (_shape_mismatch, ("mismatch",)),
    "nan": (_nan, ("NaN", "non-finite")),
}


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-output", "previous-output"])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_preprocess_bad_case_file(tmp_path, fetched, corruption, previous):
    out = tmp_path / "processed"
    before = None
    if previous:
        preprocess(NAME, fetched, out, CFG)
        before = snapshot(out)
        assert "manifest.json" in before
    corrupt, words = CORRUPTIONS[corruption]
    bad = corrupt(fetched)

    with pytest.raises(CaseFileError) as exc:
        preprocess(NAME, fetched, out, CFG)
    msg = str(exc.value)
    assert str(bad) in msg, msg
    assert exc.value.path == bad
    assert any(w in msg for w in words), msg
    assert "\n" not in msg, "one clear error, on one line"

    if previous:
        assert snapshot(out) == before
    else:
        assert not out.exists()
    assert leftovers(tmp_path) == []
    assert leftovers(fetched) == []


def test_label_error_names_the_bad_values(tmp_path, fetched):
    _bad_label(fetched)
    with pytest.raises(CaseFileError, match=r"label values \[7\] outside the declared classes 0\.\.2"):
        preprocess(NAME, fetched, tmp_path / "processed", CFG)


def test_missing_case_index(tmp_path, fetched):
    (fetched / "cases.json").unlink()
    with pytest.raises(CaseFileError) as exc:
        preprocess(NAME, fetched, tmp_path / "processed", CFG)
    assert str(fetched / "cases.json") in str(exc.value) and "missing" in str(exc.value)
    assert not (tmp_path / "processed").exists() and leftovers(tmp_path) == []


def test_missing_fetch_status(tmp_path, fetched):
    (fetched / "status.json").unlink()
    with pytest.raises(CaseFileError) as exc:
        preprocess(NAME, fetched, tmp_path / "processed", CFG)
    assert str(fetched / "status.json") in str(exc.value) and "missing" in str(exc.value)
    assert not (tmp_path / "processed").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("index_file", ["cases.json", "status.json"])
def test_corrupt_json_index_names_the_file(tmp_path, fetched, index_file):
    path = fetched / index_file
    path.write_text(path.read_text()[:10])
    with pytest.raises(CaseFileError) as exc:
        preprocess(NAME, fetched, tmp_path / "processed", CFG)
    assert str(path) in str(exc.value)


def test_wrong_profile_size_names_the_case(tmp_path, fetched):
    """Fetched at 32x32 but preprocessed with a 48x48 profile: refused, naming the case."""
    out = tmp_path / "processed"
    with pytest.raises(CaseFileError) as exc:
        preprocess(NAME, fetched, out, DataConfig(size=48, seed=0, n_subjects=6, split=CFG.split))
    assert "subj0000_a" in str(exc.value) and "expects 48x48" in str(exc.value)
    assert not out.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- empty splits
@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-output", "previous-output"])
def test_too_few_subjects_for_the_fractions(tmp_path, previous):
    """2 subjects cannot fill train, val and test: assign_splits refuses."""
    out = tmp_path / "processed"
    before = None
    if previous:
        fetch(NAME, tmp_path / "good", CFG)
        preprocess(NAME, tmp_path / "good", out, CFG)
        before = snapshot(out)
    cfg = DataConfig(size=SIZE, seed=0, n_subjects=2, split=CFG.split)
    fetch(NAME, tmp_path / "few", cfg)
    with pytest.raises(ManifestError, match="2 subjects cannot fill the splits"):
        preprocess(NAME, tmp_path / "few", out, cfg)
    if previous:
        assert snapshot(out) == before
    else:
        assert not out.exists()
    assert leftovers(tmp_path) == []


def test_zero_test_fraction_is_an_empty_split(tmp_path):
    """fractions with test=0: splits are made (train/val only) but the empty test split is refused."""
    cfg = DataConfig(size=SIZE, seed=0, n_subjects=6, split={"train": 0.8, "val": 0.2, "test": 0.0})
    fetch(NAME, tmp_path / "f", cfg)
    out = tmp_path / "processed"
    with pytest.raises(ManifestError) as exc:
        preprocess(NAME, tmp_path / "f", out, cfg)
    assert "test split is empty" in str(exc.value) and NAME in str(exc.value)
    assert not out.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- store
def test_atomic_write_keeps_old_file_when_writer_raises(tmp_path):
    path = tmp_path / "sub" / "file.txt"
    atomic_write(path, lambda t: t.write_text("old content"))
    assert path.read_text() == "old content"

    def failing(tmp: Path):
        tmp.write_text("half of the new")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(path, failing)
    assert path.read_text() == "old content"
    assert leftovers(path.parent) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]

    new = tmp_path / "sub" / "never.txt"
    with pytest.raises(RuntimeError):
        atomic_write(new, failing)
    assert not new.exists() and leftovers(path.parent) == []


def test_load_case_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    case = Case("c1", "s1", rng.normal(size=(3, 2, 8, 10)).astype(np.float32),
                rng.integers(0, 4, (2, 3, 8, 10)).astype(np.uint8), (2.5, 0.7, 0.9))
    path = tmp_path / "c1.npz"
    save_case(path, case)
    back = load_case(path, "c1", "s1", num_classes=4, channels=2)
    assert (back.case_id, back.subject_id) == ("c1", "s1")
    assert back.image.dtype == np.float32 and back.label.dtype == np.uint8
    np.testing.assert_array_equal(back.image, case.image)
    np.testing.assert_array_equal(back.label, case.label)
    assert back.spacing == (2.5, 0.7, 0.9)
    assert leftovers(tmp_path) == []


def test_load_case_wrong_channel_count(tmp_path):
    case = Case("c1", "s1", np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 4, 4), np.uint8))
    save_case(tmp_path / "c1.npz", case)
    with pytest.raises(CaseFileError, match="1 channels, dataset declares 3") as exc:
        load_case(tmp_path / "c1.npz", "c1", "s1", num_classes=2, channels=3)
    assert str(tmp_path / "c1.npz") in str(exc.value)


# ---------------------------------------------------------------- a successful preprocess
def test_preprocess_normalises_and_writes_manifest(tmp_path, fetched):
    out = tmp_path / "processed"
    manifest = preprocess(NAME, fetched, out, CFG)
    assert manifest.status == "ok"
    assert leftovers(tmp_path) == []

    index = json.loads((fetched / "cases.json").read_text())
    disk = load_manifest(out)
    assert disk == manifest
    assert sorted(e.case_id for e in disk.cases) == sorted(index)

    raw = json.loads((out / "manifest.json").read_text())
    fields = {"case_id", "subject_id", "split", "modality", "channels", "spacing", "class_names", "n_annotators"}
    for row in raw["cases"]:
        assert fields <= set(row)
        assert row["subject_id"] == index[row["case_id"]]
        assert row["split"] in SPLITS
        assert row["modality"] == "fundus" and row["channels"] == 3 and row["n_annotators"] == 1
        assert row["class_names"] == ["background", "disc", "cup"]
        assert row["spacing"] == [2.0, 0.5, 0.5]
    assert raw["dataset"]["name"] == NAME
    assert raw["provenance"]["size"] == SIZE and raw["provenance"]["split_seed"] == 0

    # subject-level splits: each subject in exactly one split, train and test non-empty
    by_subject = {}
    for e in disk.cases:
        by_subject.setdefault(e.subject_id, set()).add(e.split)
    assert all(len(s) == 1 for s in by_subject.values())
    assert disk.split("train") and disk.split("test")

    # every case z-scored per channel, with the mean and std that undo it in the manifest; labels kept, file hash
    # recorded
    for e in disk.cases:
        path = out / e.file
        case = load_case(path, e.case_id, e.subject_id, 3, 3)
        assert case.image.dtype == np.float32 and case.image.shape == (2, 3, SIZE, SIZE)
        np.testing.assert_allclose(case.image.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
        np.testing.assert_allclose(case.image.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
        with np.load(fetched / f"{e.case_id}.npz") as z:
            np.testing.assert_array_equal(case.label, z["label"])
            source = z["image"]
        assert len(e.intensity_mean) == len(e.intensity_std) == 3 and min(e.intensity_std) > 0
        np.testing.assert_allclose(original_intensities(case.image, e), source, rtol=1e-5,
                                   atol=1e-5 * np.abs(source).max())
        with pytest.raises(ManifestError, match=f"case {e.case_id}: the manifest keeps no intensity mean and std"):
            original_intensities(case.image, dataclasses.replace(e, intensity_mean=[], intensity_std=[]))
        assert e.sha256 == file_sha256(path)
        assert e.n_slices == 2 and len(e.slice_hashes) == 2


def test_not_available_dataset_gives_not_run_manifest(tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    (src / "status.json").write_text(json.dumps({"dataset": NAME, "available": False, "reason": "no licence"}))
    m = preprocess(NAME, src, tmp_path / "processed", CFG)
    assert m.status == "not_run" and m.reason == "no licence"
    assert load_manifest(tmp_path / "processed").status == "not_run"
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- the CLI
def write_params(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "profile": "test", "datasets": [NAME], "methods": [],
        "data": {"size": SIZE, "seed": 0, "n_subjects": 6, "split": dict(CFG.split)}}))
    return path


def test_cli_preprocess_error_exit_code_and_message(tmp_path, fetched, capsys):
    params = write_params(tmp_path / "params.yaml")
    bad = _truncated(fetched)
    out = tmp_path / "processed"
    rc = main(["--params", str(params), "preprocess", NAME, "--src", str(fetched), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("segbench preprocess: error:")
    assert str(bad) in lines[0] and "truncated" in lines[0]
    assert not out.exists() and leftovers(tmp_path) == []


def test_cli_preprocess_success(tmp_path, fetched, capsys):
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "processed"
    rc = main(["--params", str(params), "preprocess", NAME, "--src", str(fetched), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"preprocess {NAME}: ok" in captured.out
    assert load_manifest(out).status == "ok"


def test_replace_folder_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    from benchmark.data.store import replace_folder
    dest, new = tmp_path / "d", tmp_path / "new"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    real_rename = Path.rename

    def failing(self, target):
        if self == new:
            raise OSError("disk went away")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk went away"):
        replace_folder(new, dest)
    assert (dest / "old.txt").read_text() == "old"          # put back
    monkeypatch.setattr(Path, "rename", real_rename)
    replace_folder(new, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and (dest / "new.txt").is_file()


# ---------------------------------------------------------------- build a folder, then swap it in
def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_staged_folder_swaps_in_only_a_complete_folder(tmp_path):
    from benchmark.data.store import staged_folder
    dest = tmp_path / "out"
    with staged_folder(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.") and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "a.txt").write_text("first")
        assert not dest.exists()                               # nothing in place until the block succeeds
    assert snapshot(dest) == {"a.txt": b"first"} and _hidden(tmp_path) == []
    (tmp_path / "plain").mkdir()
    assert dest.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777  # as mkdir() makes it, not 0700
    (tmp_path / "plain").rmdir()

    with staged_folder(dest) as tmp:
        (tmp / "b.txt").write_text("second")
        assert snapshot(dest) == {"a.txt": b"first"}           # the old folder stays until the swap
    assert snapshot(dest) == {"b.txt": b"second"} and _hidden(tmp_path) == []


def test_staged_folder_failure_keeps_the_old_folder_and_no_temporary_one(tmp_path):
    from benchmark.data.store import staged_folder
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(KeyError, match="boom"):
        with staged_folder(dest) as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyError("boom")
    assert snapshot(dest) == {"old.txt": b"old"} and _hidden(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):                     # an interruption cleans up as well
        with staged_folder(tmp_path / "new"):
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_concurrent_builders_of_one_folder_each_get_their_own_and_one_wins_whole(tmp_path):
    import threading

    from benchmark.data.store import staged_folder
    dest = tmp_path / "out"
    both_inside = threading.Barrier(2, timeout=30)
    seen: dict[str, Path] = {}
    errors: list[BaseException] = []

    def build(who: str) -> None:
        try:
            with staged_folder(dest) as tmp:
                seen[who] = tmp
                for k in range(50):
                    (tmp / f"{k}.txt").write_text(who)
                both_inside.wait()                             # both temporary folders exist at once
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for _ in range(20):                                        # the swaps race each time; none may fail
        seen.clear()
        threads = [threading.Thread(target=build, args=(who,)) for who in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert seen["A"] != seen["B"]
        contents = set(snapshot(dest).values())
        assert contents in ({b"A"}, {b"B"}) and len(snapshot(dest)) == 50   # one builder's whole folder
        assert _hidden(tmp_path) == []


# ---------------------------------------------------------------- no JSON with NaN (issue 19)
def test_write_json_writes_non_finite_numbers_as_null(tmp_path):
    from benchmark.data.store import write_json
    path = tmp_path / "x.json"
    write_json(path, {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": np.float64("nan"),
                      "e": (2.5, "s")})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, {"c": None}], "d": None, "e": [2.5, "s"]}
    assert hidden(tmp_path) == []


def test_manifest_json_never_holds_nan(tmp_path):
    from benchmark.data.manifest import Manifest
    info = DatasetInfo(name="x", modality="MRI", channels=1, class_names=("bg", "fg"))
    Manifest(info, Status.OK, provenance={"split_fractions": {"train": float("nan")}}).save(tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    assert "NaN" not in text and load_manifest(tmp_path).provenance == {"split_fractions": {"train": None}}


def test_an_infinite_spacing_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "c.npz"
    save_arrays(path, image=np.zeros((1, 1, 4, 4), np.float32), label=np.zeros((1, 1, 4, 4), np.uint8),
                spacing=np.array([1.0, np.inf, 1.0]))
    with pytest.raises(CaseFileError, match=re.escape(f"{path}: spacing must be 3 positive")):
        load_case(path, "c", "s")


# ---------------------------------------------------------------- an empty split, named with its manifest (issue 19)
def test_load_split_names_the_manifest_of_an_empty_train_or_test_split_and_allows_an_empty_val(tiny_processed,
                                                                                                 tmp_path):
    from benchmark.data.preprocess import load_split
    from tests.data.tamper import copy_processed, empty_split
    processed = copy_processed(tiny_processed, tmp_path / "p")
    manifest = empty_split(processed, "val", into="train")
    assert load_split(processed, "val")[1] == []
    for split in ("test", "train"):
        empty_split(processed, split, into="val")
        with pytest.raises(ManifestError, match=re.escape(f"{manifest}: the {split} split has no cases")):
            load_split(processed, split)


def test_cli_train_with_an_empty_train_split_exits_with_one_line_naming_the_manifest(tiny_project, monkeypatch,
                                                                                        capsys):
    from tests.data.tamper import empty_split
    empty_split(tiny_project / "data" / "processed" / "phantom-cardiac", "train")
    monkeypatch.chdir(tiny_project)
    assert main(["train", "phantom-cardiac", "unet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segbench train: error: data/processed/phantom-cardiac/manifest.json: the train split has no cases"]
    assert not (tiny_project / "runs").exists()


def test_json_text_sorts_keys_when_asked_and_never_writes_nan():
    from benchmark.data.store import json_text
    assert json_text({"b": float("nan"), "a": 1.0}, sort_keys=True) == '{\n "a": 1.0,\n "b": null\n}'

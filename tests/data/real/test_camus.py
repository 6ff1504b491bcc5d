"""CAMUS from fixtures in both native layouts: the NIfTI release (CAMUS_public/database_nifti + database_split,
zipped as the portal's folder download) and the older mhd/raw release (training.zip, placed by hand)."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmark.config import DataConfig
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split, preprocess
from benchmark.data.real import camus, splits
from benchmark.data.real.source import RealSource
from benchmark.data.sources import fetch
from tests.data.real.helpers import fetch_and_preprocess

SIZE = 16
VIEWS = [(v, p) for v in ("2CH", "4CH") for p in ("ED", "ES")]
# patient -> (official list, (H, W) multiples of SIZE, (x, y) spacing in mm)
PATIENTS = {
    "patient0001": ("training", (32, 16), (0.31, 0.154)),
    "patient0002": ("training", (48, 32), (0.2, 0.2)),
    "patient0003": ("training", (16, 32), (0.15, 0.3)),
    "patient0004": ("validation", (32, 32), (0.25, 0.18)),
    "patient0005": ("testing", (64, 48), (0.3, 0.15)),
}


def _gt(shape, k: int) -> np.ndarray:
    """Known blocks: 1 LV cavity, 2 myocardium, 3 left atrium; differ between images."""
    h, w = shape
    gt = np.zeros(shape, np.uint8)
    gt[: h // 2, w // 4: w // 2] = 1
    gt[: h // 2, w // 2: 3 * w // 4 + k % 2] = 2
    gt[3 * h // 4:, : w // 2] = 3
    return gt


def _write(arr: np.ndarray, spacing, path: Path, as_3d: bool = False) -> None:
    img = sitk.GetImageFromArray(arr[None] if as_3d else arr)
    img.SetSpacing(tuple(float(s) for s in spacing) + ((1.0,) if as_3d else ()))
    sitk.WriteImage(img, str(path))


def _info(view: str, k: int) -> str:
    return (f"ED: 1\nES: {12 + k}\nNbFrame: {14 + k}\nSex: F\nAge: 60\nImageQuality: "
            f"{('Good', 'Medium', 'Poor')[k % 3]}\nEF: 55.0\nFrameRate: 25.0\n")


def make_nifti_tree(top: Path, rng: np.random.Generator | None = None, patients=PATIENTS, lists=True) -> dict[str, np.ndarray]:
    """``CAMUS_public/``; returns each image's label map by case id."""
    rng = rng if rng is not None else np.random.default_rng(0)
    labels = {}
    for k, (pid, (part, shape, spacing)) in enumerate(patients.items()):
        d = top / "CAMUS_public" / "database_nifti" / pid
        d.mkdir(parents=True)
        for view in ("2CH", "4CH"):
            (d / f"Info_{view}.cfg").write_text(_info(view, k))
            seq = rng.integers(0, 255, (5, *shape)).astype(np.uint8)       # a sequence: never a case
            _write(seq, (*spacing, 1.0), d / f"{pid}_{view}_half_sequence.nii.gz")
            _write((seq > 128).astype(np.uint8), (*spacing, 1.0), d / f"{pid}_{view}_half_sequence_gt.nii.gz")
        for j, (view, phase) in enumerate(VIEWS):
            gt = _gt(shape, k + j)
            image = np.clip(rng.normal(60, 15, shape) + 60 * gt, 0, 255).astype(np.uint8)
            as_3d = pid == "patient0002"                 # one patient stored with a singleton third axis
            _write(image, spacing, d / f"{pid}_{view}_{phase}.nii.gz", as_3d)
            _write(gt, spacing, d / f"{pid}_{view}_{phase}_gt.nii.gz", as_3d)
            labels[f"camus-{pid}_{view}_{phase}"] = gt
    if lists:
        split_dir = top / "CAMUS_public" / "database_split"
        split_dir.mkdir(parents=True)
        for part in ("training", "validation", "testing"):
            names = [pid for pid, (p, _, _) in patients.items() if p == part]
            (split_dir / f"subgroup_{part}.txt").write_text("".join(f"{n}\n" for n in names))
    return labels


def make_mhd_tree(top: Path, rng: np.random.Generator | None = None, patients=PATIENTS, part="training") -> dict:
    """The older release: ``training/patientNNNN/`` with mhd/raw pairs (3D headers with one slice)."""
    rng = rng if rng is not None else np.random.default_rng(1)
    labels = {}
    for k, (pid, (_, shape, spacing)) in enumerate(patients.items()):
        d = top / part / pid
        d.mkdir(parents=True)
        for view in ("2CH", "4CH"):
            (d / f"Info_{view}.cfg").write_text(_info(view, k))
            _write(rng.integers(0, 255, (3, *shape)).astype(np.uint8), (*spacing, 1.0),
                   d / f"{pid}_{view}_sequence.mhd")
        for j, (view, phase) in enumerate(VIEWS):
            gt = _gt(shape, k + j + 1)
            image = np.clip(rng.normal(60, 15, shape) + 60 * gt, 0, 255).astype(np.uint8)
            _write(image, spacing, d / f"{pid}_{view}_{phase}.mhd", as_3d=True)
            if part == "training":
                _write(gt, spacing, d / f"{pid}_{view}_{phase}_gt.mhd", as_3d=True)
                labels[f"camus-{pid}_{view}_{phase}"] = gt
    return labels


def _zip(tree: Path, path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(tree.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(tree).as_posix())
    shutil.rmtree(tree)


def _expected_label(gt: np.ndarray) -> np.ndarray:
    fh, fw = gt.shape[0] // SIZE, gt.shape[1] // SIZE
    return gt[fh // 2::fh, fw // 2::fw]


def _check_cases(processed: Path, manifest, labels: dict) -> None:
    by_id = {c.case_id: c for c in manifest.cases}
    assert sorted(by_id) == sorted(labels)
    for cid in labels:
        _, shape, (sx, sy) = PATIENTS[cid.removeprefix("camus-").split("_")[0]]
        e = by_id[cid]
        assert e.channels == 1 and e.n_annotators == 1 and e.n_slices == 1
        assert e.spacing == pytest.approx([1.0, sy * shape[0] / SIZE, sx * shape[1] / SIZE])
    assert check_leaks(manifest).ok
    for split in ("train", "val", "test"):
        for c in load_split(processed, split)[1]:
            assert c.image.shape == (1, 1, SIZE, SIZE) and c.label.shape == (1, 1, SIZE, SIZE)
            np.testing.assert_array_equal(c.label[0, 0], _expected_label(labels[c.case_id]))
            img = c.image[0, 0]
            assert img[c.label[0, 0] == 3].mean() > img[c.label[0, 0] == 0].mean() + 1.0   # image follows label


def test_camus_nifti_release_with_official_lists(tmp_path, http_server):
    name = camus.FILES[0].name
    tree = tmp_path / "tree"
    labels = make_nifti_tree(tree)
    _zip(tree, tmp_path / name)
    # the seeded fractions would differ from the lists: the lists must win under "standard"
    cfg = DataConfig(size=SIZE, split={"train": 0.2, "val": 0.0, "test": 0.8})
    _, processed, manifest = fetch_and_preprocess(camus, {name: tmp_path / name}, http_server, tmp_path, cfg)
    assert manifest.status == "ok" and len(manifest.cases) == 4 * len(PATIENTS)   # sequences are not cases
    want = {"training": "train", "validation": "val", "testing": "test"}
    for c in manifest.cases:
        assert c.split == want[PATIENTS[c.subject_id.removeprefix("camus-")][0]]
    _check_cases(processed, manifest, labels)
    assert "Leclerc" in (tmp_path / "fetched" / "LICENCE.txt").read_text()


def test_camus_older_mhd_release_is_the_alternative(tmp_path, capsys):
    tree = tmp_path / "tree"
    labels = make_mhd_tree(tree)
    raw = tmp_path / "raw"
    raw.mkdir()
    _zip(tree, raw / "training.zip")
    source = RealSource(camus, raw=raw, downloads=tmp_path / "downloads")
    assert [f.name for f in source.files] == ["training.zip"]          # CAMUS_public.zip absent: the alternative
    cfg = DataConfig(size=SIZE, split={"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert fetch("camus", tmp_path / "fetched", cfg, source=source)["available"]
    manifest = preprocess("camus", tmp_path / "fetched", tmp_path / "processed", cfg, source=source)
    _check_cases(tmp_path / "processed", manifest, labels)
    # no split lists in that release: seeded by patient, all four images of a patient together
    got = {c.subject_id: c.split for c in manifest.cases}
    assert all(c.split == got[c.subject_id] for c in manifest.cases)
    assert got == splits.seeded(sorted(got), cfg)


def test_camus_reads_either_format_and_skips_unlabelled_patients(tmp_path):
    make_mhd_tree(tmp_path, patients={"patient0001": PATIENTS["patient0001"]})
    make_mhd_tree(tmp_path, patients={"patient0451": PATIENTS["patient0002"]}, part="testing")
    make_nifti_tree(tmp_path, patients={"patient0001": PATIENTS["patient0001"]}, lists=False)
    cases = list(camus.load(tmp_path, DataConfig(size=SIZE)))
    # patient0001 in both formats -> NIfTI read once; patient0451 (no _gt at all) skipped
    assert sorted(c.case_id for c in cases) == sorted(f"camus-patient0001_{v}_{p}" for v, p in VIEWS)
    assert {c.extra["format"] for c in cases} == {"nifti"}
    assert [c.extra["quality"] for c in cases][:1] == ["Good"]


def test_camus_bad_inputs_name_the_file(tmp_path):
    make_nifti_tree(tmp_path, patients={k: PATIENTS[k] for k in ("patient0001", "patient0005")})
    cfg = DataConfig(size=SIZE)
    d = tmp_path / "CAMUS_public" / "database_nifti" / "patient0001"
    gt = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "patient0001_4CH_ES_gt.nii.gz")))
    gt[0, 0] = 7
    _write(gt, PATIENTS["patient0001"][2], d / "patient0001_4CH_ES_gt.nii.gz")
    with pytest.raises(ValueError, match=r"patient0001_4CH_ES_gt\.nii\.gz: label values \[0, 1, 2, 3, 7\]"):
        list(camus.load(tmp_path, cfg))
    (d / "patient0001_4CH_ES_gt.nii.gz").unlink()              # one label map of a labelled patient missing
    with pytest.raises(FileNotFoundError, match=r"patient0001_4CH_ES_gt\.nii\.gz: the label map is missing"):
        list(camus.load(tmp_path, cfg))
    _write(np.zeros((8, 8), np.uint8), (0.2, 0.2), d / "patient0001_4CH_ES_gt.nii.gz")
    with pytest.raises(ValueError, match=r"patient0001_4CH_ES_gt\.nii\.gz: label map \(8, 8\) and image"):
        list(camus.load(tmp_path, cfg))
    (tmp_path / "CAMUS_public" / "database_split" / "subgroup_validation.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"subgroup_validation\.txt: missing"):
        list(camus.load(tmp_path, cfg))
    with pytest.raises(FileNotFoundError, match="not a CAMUS release"):
        list(camus.load(tmp_path / "CAMUS_public" / "database_split", cfg))


def test_camus_patient_missing_from_the_lists(tmp_path):
    make_nifti_tree(tmp_path, patients={k: PATIENTS[k] for k in ("patient0001", "patient0005")})
    (tmp_path / "CAMUS_public" / "database_split" / "subgroup_training.txt").write_text("patient0002\n")
    headers = [c.header() for c in camus.load(tmp_path, DataConfig(size=SIZE))]
    with pytest.raises(ValueError, match=r"in none of the split lists.*patient0001.*data.splits: seeded"):
        camus.split(headers, DataConfig(size=SIZE))
    got = camus.split(headers, DataConfig(size=SIZE, splits="seeded", split={"train": 0.5, "test": 0.5}))
    assert sorted(got.values()) == ["test", "train"]

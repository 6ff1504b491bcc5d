"""BraTS 2021 from a fixture in the release layout: BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz
inside BraTS2021_Training_Data.tar."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmark.config import DataConfig
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split
from benchmark.data.real import brats
from benchmark.data.real.splits import seeded
from tests.data.real.helpers import fetch_and_preprocess

SIZE = 16
FLIP_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)   # RAS-stored, as many NIfTI writers store BraTS
# case id -> (z, y, x) shape, (x, y, z) spacing, direction, the tumour's slices
CASES = {
    "BraTS2021_00000": ((10, 16, 16), (1.0, 1.0, 1.0), None, (3, 6)),
    "BraTS2021_00002": ((12, 20, 24), (1.0, 1.0, 1.5), None, (2, 9)),
    "BraTS2021_00003": ((9, 16, 16), (1.0, 1.0, 1.0), FLIP_XY, (4, 5)),
    "BraTS2021_00005": ((11, 18, 14), (0.9, 1.1, 1.0), None, (0, 11)),
    "BraTS2021_01666": ((8, 16, 20), (1.0, 1.0, 2.0), None, (5, 8)),
}


def _seg(shape, zs) -> np.ndarray:
    """Nested tumour on slices ``zs[0]..zs[1]-1``: ED (2) block, ET (4) inside, NCR (1) inside that."""
    seg = np.zeros(shape, np.uint8)
    z0, z1 = zs
    h, w = shape[1:]
    seg[z0:z1, 2:h - 2, 2:w - 2] = 2
    seg[z0:z1, 4:h - 4, 4:w - 4] = 4
    seg[z0:z1, 6:h - 6, 6:w - 6] = 1
    return seg


def _write(arr: np.ndarray, path: Path, spacing, direction) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-120.0, -120.0, -70.0))
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def write_case(folder: Path, native: str, shape, spacing, direction, zs, rng, overrides=None) -> dict:
    """One case folder; returns the arrays written. ``overrides``: sequence -> (array, spacing) written instead."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {m: (rng.normal(100 * (k + 1), 10, shape)).astype(np.float32) for k, m in enumerate(brats.SEQUENCES)}
    arrays["seg"] = _seg(shape, zs)
    for name, arr in arrays.items():
        arr_, sp = (overrides or {}).get(name, (arr, spacing))
        _write(arr_, folder / f"{native}_{name}.nii.gz", sp, direction)
    return arrays


def make_brats_tar(path: Path, tmp: Path, rng: np.random.Generator | None = None) -> dict[str, dict]:
    rng = rng if rng is not None else np.random.default_rng(0)
    written = {}
    with tarfile.open(path, "w") as t:
        for native, (shape, spacing, direction, zs) in CASES.items():
            written[native] = write_case(tmp / native, native, shape, spacing, direction, zs, rng)
            t.add(tmp / native, arcname=native)
    return written


def test_brats_fetch_and_convert(tmp_path, http_server):
    tar = tmp_path / brats.FILES[0].name
    make_brats_tar(tar, tmp_path / "src")
    cfg = DataConfig(size=SIZE, seed=3, split={"train": 0.6, "val": 0.2, "test": 0.2})
    source, processed, manifest = fetch_and_preprocess(brats, {tar.name: tar}, http_server, tmp_path, cfg)
    assert (tmp_path / "raw" / tar.name).is_file()          # gated: placed by hand, never downloaded
    assert manifest.status == "ok" and len(manifest.cases) == len(CASES)
    assert check_leaks(manifest).ok
    by_id = {c.case_id: c for c in manifest.cases}
    for native, (shape, spacing, _, (z0, z1)) in CASES.items():
        e = by_id[f"brats2021-{native}"]
        assert e.subject_id == e.case_id
        assert e.channels == 1 and e.n_annotators == 1 and e.n_slices == z1 - z0
        assert e.class_names == ["background", "NCR", "ED", "ET"]
        sx, sy, sz = spacing
        assert e.spacing == pytest.approx([sz, sy * shape[1] / SIZE, sx * shape[2] / SIZE])
    # no published split: seeded fractions over the case ids (= patients), even under data.splits: standard
    assert {c.subject_id: c.split for c in manifest.cases} == seeded([c.subject_id for c in manifest.cases], cfg)
    assert sorted({c.split for c in manifest.cases}) == ["test", "train", "val"]
    _, test_cases = load_split(processed, "test")
    for c in test_cases:
        assert c.image.shape[1:] == (1, SIZE, SIZE) and c.label.shape[0] == 1
        assert set(np.unique(c.label).tolist()) == {0, 1, 2, 3}


def test_brats_labels_orientation_and_slices(tmp_path):
    """Direct load at the fixture's own size: the label mapping and FLAIR slices are exact."""
    rng = np.random.default_rng(1)
    written = {}
    for native in ("BraTS2021_00000", "BraTS2021_00003"):
        shape, spacing, direction, zs = CASES[native]
        written[native] = write_case(tmp_path / "x" / native, native, shape, spacing, direction, zs, rng)
    cases = {c.case_id: c for c in brats.load(tmp_path, DataConfig(size=SIZE))}
    assert sorted(cases) == ["brats2021-BraTS2021_00000", "brats2021-BraTS2021_00003"]

    plain = cases["brats2021-BraTS2021_00000"]
    z0, z1 = CASES["BraTS2021_00000"][3]
    want = written["BraTS2021_00000"]
    lut = np.array([0, 1, 2, 0, 3])
    np.testing.assert_array_equal(plain.label[0], lut[want["seg"][z0:z1]])
    np.testing.assert_array_equal(plain.image[:, 0], want["flair"][z0:z1])      # FLAIR, not another sequence
    assert plain.extra["slices"] == [z0, z1] and plain.extra["source"].endswith("BraTS2021_00000_flair.nii.gz")
    # 3 slices of nested squares 12x12 (ED), 8x8 (ET), 4x4 (NCR) in 16x16
    assert np.bincount(plain.label.ravel(), minlength=4).tolist() == [3 * 112, 3 * 16, 3 * 80, 3 * 48]

    # stored with x and y flipped (RAS): reoriented to LPS, so the arrays come back flipped in y and x
    flipped = cases["brats2021-BraTS2021_00003"]
    z0, z1 = CASES["BraTS2021_00003"][3]
    want = written["BraTS2021_00003"]
    np.testing.assert_array_equal(flipped.image[:, 0], want["flair"][z0:z1, ::-1, ::-1])


def test_brats_tumour_extent_with_margin():
    label = np.zeros((20, 4, 4), np.uint8)
    label[7, 1, 1] = 2
    label[11, 2, 2] = 3           # a second focus: the slices between are kept too
    assert brats.tumour_slices(label, 0) == (7, 12)
    assert brats.tumour_slices(label, 2) == (5, 14)
    assert brats.tumour_slices(label, 10) == (0, 20)
    with pytest.raises(ValueError, match="no tumour"):
        brats.tumour_slices(np.zeros((5, 4, 4), np.uint8))


def test_brats_split_is_seeded_by_case():
    from benchmark.data.case import Case
    empty = np.zeros((0, 1, 4, 4), np.float32), np.zeros((1, 0, 4, 4), np.uint8)
    cases = [Case(f"brats2021-BraTS2021_{k:05d}", f"brats2021-BraTS2021_{k:05d}", *empty) for k in range(20)]
    cfg = DataConfig(seed=7, split={"train": 0.6, "val": 0.1, "test": 0.3})
    a, b = brats.split(cases, cfg), brats.split(cases, cfg)
    assert a == b and sorted(a) == sorted(c.subject_id for c in cases)
    assert sum(v == "test" for v in a.values()) == 6
    other = brats.split(cases, DataConfig(seed=8, split=cfg.split))
    assert other != a
    # no published split: "standard" falls back to the seeded fractions
    assert brats.split(cases, DataConfig(seed=7, split=cfg.split, splits="seeded")) == a


@pytest.mark.parametrize("fault, match", [
    ("grid", r"BraTS2021_00007_t2\.nii\.gz: not on the grid of BraTS2021_00007_seg\.nii\.gz: spacing"),
    ("missing", r"BraTS2021_00007_t1ce\.nii\.gz: missing"),
    ("label", r"BraTS2021_00007_seg\.nii\.gz: label values .* include \[3\], which are not among the release's values"),
    ("empty", r"BraTS2021_00007_seg\.nii\.gz: no tumour label"),
])
def test_brats_bad_input_names_the_file(tmp_path, fault, match):
    native, shape = "BraTS2021_00007", (6, 16, 16)
    overrides = {}
    if fault == "grid":
        overrides["t2"] = (np.zeros(shape, np.float32), (1.0, 1.0, 2.0))
    if fault == "label":
        bad = _seg(shape, (1, 3))
        bad[2, 8, 8] = 3
        overrides["seg"] = (bad, (1.0, 1.0, 1.0))
    if fault == "empty":
        overrides["seg"] = (np.zeros(shape, np.uint8), (1.0, 1.0, 1.0))
    write_case(tmp_path / native, native, shape, (1.0, 1.0, 1.0), None, (1, 3), np.random.default_rng(2), overrides)
    if fault == "missing":
        (tmp_path / native / f"{native}_t1ce.nii.gz").unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        list(brats.load(tmp_path, DataConfig(size=8)))


def test_brats_not_the_release(tmp_path):
    (tmp_path / "something.nii.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="BraTS2021_Training_Data.tar"):
        list(brats.load(tmp_path, DataConfig(size=8)))

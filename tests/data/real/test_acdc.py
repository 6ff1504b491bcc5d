"""ACDC from a fixture in the HumanHeart layout: database/{training,testing}/patientNNN/ with Info.cfg, the 4D
sequence, the ED/ES frames and their _gt label maps, zipped as the portal's folder download is."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmark.config import DataConfig
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split
from benchmark.data.real import acdc, splits
from tests.data.real.helpers import fetch_and_preprocess

SIZE = 16
# patient -> (part, (Z, H, W), (x, y, z) spacing in mm, ED frame, ES frame); H, W are multiples of SIZE
PATIENTS = {
    "patient001": ("training", (3, 32, 48), (1.25, 1.5, 10.0), 1, 12),
    "patient002": ("training", (4, 64, 32), (1.5, 1.5, 5.0), 1, 9),
    "patient003": ("training", (2, 48, 48), (1.0, 1.0, 10.0), 3, 14),
    "patient101": ("testing", (3, 32, 32), (1.4, 1.4, 6.5), 1, 11),
    "patient102": ("testing", (5, 16, 32), (1.7, 1.2, 10.0), 2, 10),
}


def _write(arr: np.ndarray, spacing, path: Path) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(img, str(path))


def _gt(shape, k: int) -> np.ndarray:
    """Three blocks of known labels that differ between volumes: 1 RV, 2 myocardium, 3 LV."""
    z, h, w = shape
    gt = np.zeros(shape, np.uint8)
    gt[:, : h // 4, : w // 2] = 1
    gt[:, h // 2:, w // 4: w // 2 + k % 3] = 2
    gt[:-1, h // 2:, 3 * w // 4:] = 3            # the last slice has no LV: an apical slice
    return gt


def make_acdc_tree(top: Path, rng: np.random.Generator | None = None, patients=PATIENTS) -> dict[str, np.ndarray]:
    """The ``database/`` folder; returns each frame's label volume by case id."""
    rng = rng if rng is not None else np.random.default_rng(0)
    labels = {}
    (top / "database").mkdir(parents=True, exist_ok=True)
    (top / "database" / "MANDATORY_CITATION.md").write_text("Cite Bernard et al. 2018.\n")
    for k, (pid, (part, shape, spacing, ed, es)) in enumerate(patients.items()):
        d = top / "database" / part / pid
        d.mkdir(parents=True)
        (d / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 20\nWeight: 80.0\n")
        (d / "MANDATORY_CITATION.md").write_text("Cite Bernard et al. 2018.\n")
        # the 4D sequence: 20 frames, never a case
        _write(rng.integers(0, 400, (20, *shape)).astype(np.int16), (*spacing, 1.0), d / f"{pid}_4d.nii.gz")
        for j, frame in enumerate((ed, es)):
            gt = _gt(shape, k + j)
            image = (rng.normal(100, 20, shape) + 50 * gt).astype(np.int16)
            _write(image, spacing, d / f"{pid}_frame{frame:02d}.nii.gz")
            _write(gt, spacing, d / f"{pid}_frame{frame:02d}_gt.nii.gz")
            labels[f"acdc-{pid}_frame{frame:02d}"] = gt
    return labels


def make_acdc_zip(path: Path, patients=PATIENTS) -> dict[str, np.ndarray]:
    tree = path.parent / "acdc_tree"
    labels = make_acdc_tree(tree, patients=patients)
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(tree.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(tree).as_posix())
    shutil.rmtree(tree)
    return labels


def _expected_label(gt: np.ndarray) -> np.ndarray:
    """Nearest-neighbour at an integer factor f keeps pixel f//2 of every f x f block."""
    fh, fw = gt.shape[1] // SIZE, gt.shape[2] // SIZE
    return gt[:, fh // 2::fh, fw // 2::fw]


def test_acdc_fetch_and_convert(tmp_path, http_server):
    name = acdc.FILES[0].name
    labels = make_acdc_zip(tmp_path / name)
    cfg = DataConfig(size=SIZE, split={"train": 0.6, "val": 0.2, "test": 0.2})
    _, processed, manifest = fetch_and_preprocess(acdc, {name: tmp_path / name}, http_server, tmp_path, cfg)
    assert manifest.status == "ok"
    # two cases per patient (ED, ES); the 4D sequence and MANDATORY_CITATION.md are not cases
    assert sorted(c.case_id for c in manifest.cases) == sorted(labels)
    assert (tmp_path / "fetched" / "LICENCE.txt").read_text().count("Bernard") == 1

    split_of = {c.case_id: c.split for c in manifest.cases}
    subject_splits = {}
    for c in manifest.cases:
        subject_splits.setdefault(c.subject_id, set()).add(c.split)
    assert all(len(s) == 1 for s in subject_splits.values())          # ED and ES of a patient together
    assert {s.pop() for sid, s in subject_splits.items() if sid in ("acdc-patient101", "acdc-patient102")} == {"test"}
    train_side = [split_of[cid] for cid in labels if "patient00" in cid]
    assert "test" not in train_side and "val" in train_side and "train" in train_side
    assert check_leaks(manifest).ok

    by_id = {c.case_id: c for c in manifest.cases}
    for cid, gt in labels.items():
        pid = cid.removeprefix("acdc-").split("_")[0]
        _, shape, (sx, sy, sz), _, _ = PATIENTS[pid]
        entry = by_id[cid]
        assert entry.channels == 1 and entry.n_annotators == 1 and entry.n_slices == shape[0]
        assert entry.spacing == pytest.approx([sz, sy * shape[1] / SIZE, sx * shape[2] / SIZE])
        assert entry.class_names == ["background", "RV", "Myo", "LV"]

    for split in ("train", "val", "test"):
        _, cases = load_split(processed, split)
        for c in cases:
            gt = labels[c.case_id]
            assert c.image.shape == (gt.shape[0], 1, SIZE, SIZE) and c.image.dtype == np.float32
            assert c.label.shape == (1, gt.shape[0], SIZE, SIZE) and c.label.dtype == np.uint8
            np.testing.assert_array_equal(c.label[0], _expected_label(gt))   # values 1/2/3 kept, axes in order
            # the image follows the label: the +50 offset of the LV block survives resize and z-scoring
            lv, bg = c.image[:, 0][c.label[0] == 3], c.image[:, 0][c.label[0] == 0]
            assert lv.mean() > bg.mean() + 1.0


def test_acdc_seeded_splits_all_150_style(tmp_path):
    make_acdc_tree(tmp_path)
    cfg = DataConfig(size=SIZE, splits="seeded", split={"train": 0.4, "val": 0.2, "test": 0.4}, seed=3)
    headers = [c.header() for c in acdc.load(tmp_path, cfg)]
    got = acdc.split(headers, cfg)
    subjects = sorted({c.subject_id for c in headers})
    assert len(subjects) == 5 and got == splits.seeded(subjects, cfg)
    # the published parts are ignored: a training patient may be tested and a testing patient trained on
    assert set(got.values()) == {"train", "val", "test"}


def test_acdc_bad_inputs_name_the_file(tmp_path):
    make_acdc_tree(tmp_path, patients={k: PATIENTS[k] for k in ("patient001", "patient101")})
    cfg = DataConfig(size=SIZE)
    gt_path = tmp_path / "database" / "training" / "patient001" / "patient001_frame12_gt.nii.gz"
    bad = sitk.GetArrayFromImage(sitk.ReadImage(str(gt_path)))
    bad[0, 0, 0] = 4
    _write(bad, PATIENTS["patient001"][2], gt_path)
    with pytest.raises(ValueError, match=r"patient001_frame12_gt\.nii\.gz: label values \[0, 1, 2, 3, 4\]"):
        list(acdc.load(tmp_path, cfg))
    gt_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"patient001_frame12_gt\.nii\.gz"):
        list(acdc.load(tmp_path, cfg))
    (tmp_path / "database" / "training" / "patient001" / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    with pytest.raises(ValueError, match=r"Info\.cfg: no integer 'ES: n'"):
        list(acdc.load(tmp_path, cfg))
    other = tmp_path / "other" / "patient001"          # an Info.cfg outside training/ or testing/
    other.mkdir(parents=True)
    (other / "Info.cfg").write_text("ED: 1\nES: 2\n")
    with pytest.raises(FileNotFoundError, match="not the ACDC release"):
        list(acdc.load(tmp_path / "other", cfg))


def test_acdc_partial_release_needs_seeded(tmp_path):
    make_acdc_tree(tmp_path, patients={k: PATIENTS[k] for k in ("patient001", "patient002")})
    headers = [c.header() for c in acdc.load(tmp_path, DataConfig(size=SIZE))]
    with pytest.raises(ValueError, match="acdc: only training cases were loaded.*data.splits: seeded"):
        acdc.split(headers, DataConfig(size=SIZE))
    got = acdc.split(headers, DataConfig(size=SIZE, splits="seeded", split={"train": 0.5, "test": 0.5}))
    assert sorted(got.values()) == ["test", "train"]

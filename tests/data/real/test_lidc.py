"""LIDC-IDRI from fixtures in both native releases: the DeepMind crop archives and the Prob. U-Net pickle."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.config import DataConfig
from benchmark.data.archive import extract
from benchmark.data.case import Case
from benchmark.data.imaging import resize_image
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split, preprocess
from benchmark.data.real import lidc
from benchmark.data.real.source import RealSource
from benchmark.data.safe_pickle import UnsafePickleError
from benchmark.data.sources import fetch
from tests.data.real.helpers import fetch_and_preprocess

# (split folder, patient, crop stem, (H, W)); the release's crops are 180 x 180, one here is smaller and
# not square to exercise the spacing; patient 0001 has two lesions on one slice (c0, c1) and a second slice.
CROPS = [("train", "LIDC-IDRI-0001", "z-105.0_c0", (180, 180)),
         ("train", "LIDC-IDRI-0001", "z-105.0_c1", (180, 180)),
         ("train", "LIDC-IDRI-0001", "z-107.5_c0", (180, 180)),
         ("train", "LIDC-IDRI-0002", "z--221.25_c0", (180, 180)),
         ("train", "LIDC-IDRI-0005", "z-12.0_c0", (180, 180)),
         ("val", "LIDC-IDRI-0003", "z-60.0_c0", (60, 45)),
         ("test", "LIDC-IDRI-0004", "z-88.0_c0", (180, 180)),
         ("test", "LIDC-IDRI-0004", "z-90.0_c0", (180, 180))]
SIZE = 36       # 180 / 36 = 5: the nearest-neighbour resize samples rows and columns 2, 7, 12, ...


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def rater_masks(k: int, shape: tuple[int, int]) -> np.ndarray:
    """Crop k's four masks (0/255): rater r marks a rectangle growing with r; rater 3 of every third crop
    marks nothing, and crop 6 is empty for everyone (a crop where no rater saw the lesion on this slice)."""
    h, w = shape
    m = np.zeros((4, h, w), np.uint8)
    if k == 6:
        return m
    for r in range(4):
        if r == 3 and k % 3 == 0:
            continue
        m[r, h // 4: h // 4 + h // 5 + 5 * r, w // 2: w // 2 + w // 6 + 3 * r + k] = 255
    return m


def make_crop_archives(folder: Path, rng: np.random.Generator | None = None, rater_ids=range(4)) -> dict:
    """train.tar.gz, val.tar.gz, test.tar.gz as in gs://hpunet-data/lidc_crops/; returns {case_id: (image, masks)}."""
    rng = rng if rng is not None else np.random.default_rng(0)
    truth = {}
    for part in lidc.PARTS:
        with tarfile.open(folder / f"{part}.tar.gz", "w:gz") as tar:
            for k, (p, patient, stem, shape) in enumerate(CROPS):
                if p != part:
                    continue
                image = rng.integers(0, 256, shape, dtype=np.uint8)
                masks = rater_masks(k, shape)
                _add(tar, f"{part}/images/{patient}/{stem}.png", _png(image))
                for r, rid in enumerate(rater_ids):
                    _add(tar, f"{part}/gt/{patient}/{stem}_l{rid}.png", _png(masks[r]))
                truth[f"lidc-{patient}_{stem}"] = (image, masks)
    return truth


def test_crops_fetch_and_convert(tmp_path, http_server):
    truth = make_crop_archives(tmp_path)
    cfg = DataConfig(size=SIZE, split={"train": 0.6, "val": 0.2, "test": 0.2})
    files = {f.name: tmp_path / f.name for f in lidc.FILES}
    source, processed, manifest = fetch_and_preprocess(lidc, files, http_server, tmp_path / "run", cfg)
    assert {name for name, _ in http_server.requests} >= {"train.tar.gz", "val.tar.gz", "test.tar.gz"}
    assert manifest.status == "ok" and len(manifest.cases) == len(CROPS)
    assert check_leaks(manifest).ok
    # the release's own folders are the split, by patient
    split_of = {c.case_id: c.split for c in manifest.cases}
    for part, patient, stem, _ in CROPS:
        assert split_of[f"lidc-{patient}_{stem}"] == part
    assert {c.subject_id for c in manifest.cases} == {p for _, p, _, _ in CROPS}
    seen = 0
    for part in lidc.PARTS:
        _, cases = load_split(processed, part)
        for c in cases:
            seen += 1
            image, masks = truth[c.case_id]
            h, w = image.shape
            assert c.image.shape == (1, 1, SIZE, SIZE) and c.label.shape == (4, 1, SIZE, SIZE)
            assert c.label.dtype == np.uint8 and set(np.unique(c.label)) <= {0, 1}
            e = next(e for e in manifest.cases if e.case_id == c.case_id)
            assert e.spacing == pytest.approx([lidc.SLICE_MM, 0.5 * h / SIZE, 0.5 * w / SIZE])
            assert e.n_annotators == 4 and e.channels == 1
            if (h, w) == (180, 180):
                # exact: rater r's label is its mask sampled at rows/columns 2, 7, 12, ... (255 -> 1, order kept)
                np.testing.assert_array_equal(c.label[:, 0], (masks[:, 2::5, 2::5] > 0).astype(np.uint8))
            else:
                assert [abs(c.label[r].mean() - (masks[r] > 0).mean()) < 0.05 for r in range(4)] == [True] * 4
    assert seen == len(CROPS)
    _, cases = load_split(processed, "train")
    empty_rater = next(c for c in cases if c.case_id == "lidc-LIDC-IDRI-0001_z-105.0_c0")  # crop 0: rater 3 empty
    assert [int(empty_rater.label[r].sum() > 0) for r in range(4)] == [1, 1, 1, 0]


def test_crops_load_keeps_intensities_and_accepts_raters_numbered_from_one(tmp_path):
    truth = make_crop_archives(tmp_path, rater_ids=range(1, 5))
    root = tmp_path / "x"
    for part in lidc.PARTS:
        extract(tmp_path / f"{part}.tar.gz", root)
    cases = list(lidc.load(root, DataConfig(size=SIZE)))
    assert [c.case_id for c in cases][:3] == ["lidc-LIDC-IDRI-0001_z-105.0_c0", "lidc-LIDC-IDRI-0001_z-105.0_c1",
                                              "lidc-LIDC-IDRI-0001_z-107.5_c0"]
    for c in cases:
        image, masks = truth[c.case_id]
        assert c.image.dtype == np.float32
        # raw grey values resized, not normalised (0..255 scale)
        np.testing.assert_allclose(c.image[0, 0], resize_image(image.astype(np.float32), SIZE), rtol=1e-6)
        assert c.image.max() > 100
        assert [int(c.label[r].any()) for r in range(4)] == [int(masks[r].any()) for r in range(4)]
        assert c.extra["part"] in lidc.PARTS and c.extra["source"].endswith(".png")
    c = next(c for c in cases if c.case_id == "lidc-LIDC-IDRI-0002_z--221.25_c0")
    assert c.extra["z_position"] == "-221.25" and c.extra["crop"] == 0


def test_crops_missing_rater_mask_is_named(tmp_path):
    make_crop_archives(tmp_path)
    root = tmp_path / "x"
    extract(tmp_path / "val.tar.gz", root)
    (root / "val/gt/LIDC-IDRI-0003/z-60.0_c0_l2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"z-60\.0_c0\.png.*rater ids \[0, 1, 3\]"):
        list(lidc.load(root, DataConfig(size=SIZE)))


def test_crops_without_a_split_folder_are_refused(tmp_path):
    (tmp_path / "lidc_crops" / "images" / "LIDC-IDRI-0001").mkdir(parents=True)
    (tmp_path / "lidc_crops" / "gt").mkdir()
    with pytest.raises(ValueError, match=r"lidc_crops/images: cannot tell which split"):
        list(lidc.load(tmp_path, DataConfig(size=SIZE)))


def test_non_binary_mask_is_refused(tmp_path):
    make_crop_archives(tmp_path)
    root = tmp_path / "x"
    extract(tmp_path / "test.tar.gz", root)
    bad = root / "test/gt/LIDC-IDRI-0004/z-88.0_c0_l1.png"
    Image.fromarray(np.full((180, 180), 128, np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"z-88\.0_c0_l1\.png: a rater mask should hold"):
        list(lidc.load(root, DataConfig(size=SIZE)))


def _headers(rows):
    empty = np.zeros((0, 1, 4, 4), np.float32), np.zeros((4, 0, 4, 4), np.uint8)
    return [Case(cid, sid, *empty, extra={"part": part}) for cid, sid, part in rows]


def test_patient_in_two_published_folders_is_refused():
    leaky = _headers([("a", "LIDC-IDRI-0001", "train"), ("b", "LIDC-IDRI-0001", "test"),
                      ("c", "LIDC-IDRI-0002", "train"), ("d", "LIDC-IDRI-0003", "val")])
    with pytest.raises(ValueError, match=r"LIDC-IDRI-0001 in test\+train.*data.splits: seeded"):
        lidc.split(leaky, DataConfig())
    seeded = lidc.split(leaky, DataConfig(splits="seeded", split={"train": 0.34, "val": 0.33, "test": 0.33}))
    assert sorted(seeded) == ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"]
    assert sorted(seeded.values()) == ["test", "train", "val"]


# ------------------------------------------------------------------------------------------ the pickle release
PICKLE_KEYS = [("LIDC-IDRI-0001_slice12", "1.3.6.1.4.1.14519.5.2.1.6279.6001.1"),
               ("LIDC-IDRI-0001_slice13", "1.3.6.1.4.1.14519.5.2.1.6279.6001.1"),
               ("LIDC-IDRI-0001_slice40", "1.3.6.1.4.1.14519.5.2.1.6279.6001.2"),   # second scan, same patient
               ("LIDC-IDRI-0002_slice7", "1.3.6.1.4.1.14519.5.2.1.6279.6001.3"),
               ("LIDC-IDRI-0003_slice1", "1.3.6.1.4.1.14519.5.2.1.6279.6001.4"),
               ("LIDC-IDRI-0004_slice2", "1.3.6.1.4.1.14519.5.2.1.6279.6001.5"),
               ("LIDC-IDRI-0006_slice9", "1.3.6.1.4.1.14519.5.2.1.6279.6001.6")]


def make_pickle(path: Path, rng: np.random.Generator | None = None) -> dict:
    rng = rng if rng is not None else np.random.default_rng(1)
    data = {}
    for k, (key, uid) in enumerate(PICKLE_KEYS):
        masks = [(m > 0).astype(np.uint8) for m in rater_masks(k, (128, 128))]
        data[key] = {"image": rng.random((128, 128)).astype(np.float32), "masks": masks, "series_uid": uid}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return data


def test_pickle_alternative_release(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    data = make_pickle(raw / lidc.PICKLE_NAME)
    source = RealSource(lidc, raw=raw, downloads=tmp_path / "downloads")
    assert [f.name for f in source.files] == [lidc.PICKLE_NAME]        # FILES absent, the pickle is whole
    cfg = DataConfig(size=32, split={"train": 0.5, "val": 0.25, "test": 0.25}, seed=3)
    assert fetch("lidc", tmp_path / "fetched", cfg, source=source)["available"]
    manifest = preprocess("lidc", tmp_path / "fetched", tmp_path / "processed", cfg, source=source)
    assert manifest.status == "ok" and len(manifest.cases) == len(PICKLE_KEYS)
    assert check_leaks(manifest).ok
    by_id = {c.case_id: c for c in manifest.cases}
    # the patient comes from the key: the two scans of LIDC-IDRI-0001 are one subject, in one split
    assert {by_id[f"lidc-{k}"].subject_id for k, _ in PICKLE_KEYS[:3]} == {"LIDC-IDRI-0001"}
    assert len({by_id[f"lidc-{k}"].split for k, _ in PICKLE_KEYS[:3]}) == 1
    assert {c.split for c in manifest.cases} == {"train", "val", "test"}
    for e in manifest.cases:
        assert e.spacing == pytest.approx([lidc.SLICE_MM, 0.5 * 128 / 32, 0.5 * 128 / 32])
    for part in lidc.PARTS:
        for c in load_split(tmp_path / "processed", part)[1]:
            masks = np.stack(data[c.case_id.removeprefix("lidc-")]["masks"])
            np.testing.assert_array_equal(c.label[:, 0], masks[:, 2::4, 2::4])   # 128 -> 32: rows 2, 6, 10, ...


def test_patient_of_pickle_key():
    assert lidc.patient_of("LIDC-IDRI-0042_slice3", "1.2") == "LIDC-IDRI-0042"
    assert lidc.patient_of("0042_slice3", "1.2") == "0042"
    assert lidc.patient_of("image17", "1.2.840") == "series-1.2.840"
    with pytest.raises(ValueError, match="image17"):
        lidc.patient_of("image17", None)


def test_pickle_that_runs_code_is_refused_and_named(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / lidc.PICKLE_NAME).write_bytes(pickle.dumps({"LIDC-IDRI-0001_s1": Evil()}))
    with pytest.raises(UnsafePickleError, match=rf"{lidc.PICKLE_NAME}: refused to load global (posix|os|nt)\.system"):
        list(lidc.load(tmp_path, DataConfig(size=32)))
    assert not marker.exists()


def test_no_release_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither the LIDC crops"):
        list(lidc.load(tmp_path, DataConfig(size=32)))

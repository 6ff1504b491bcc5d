"""REFUGE-2 seven-rater release from a fixture in its native layout: per-image folders of JPG + 14 PNG masks."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.config import DataConfig
from benchmark.data.archive import extract
from benchmark.data.imaging import resize_label
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split
from benchmark.data.real import refuge
from tests.data.real.helpers import fetch_and_preprocess

TOP = "REFUGE-Multirater"
# (part folder, image name, height, width): sizes vary, as the two REFUGE cameras do
IMAGES = [("Training-400", "0001", 40, 48), ("Training-400", "0002", 44, 44), ("Training-400", "0003", 36, 52),
          ("Training-400", "0004", 48, 40), ("Test-400", "0801", 40, 40), ("Test-400", "0802", 52, 44)]
SIZE = 32


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _masks(h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rater ``k``'s disc (cup included) and cup, 0/255; the disc grows with k so raters are told apart."""
    disc = np.zeros((h, w), np.uint8)
    cup = np.zeros((h, w), np.uint8)
    cy, cx = h // 2, w // 2
    r = 4 + k
    disc[cy - r:cy + r, cx - r:cx + r] = 255
    cup[cy - 3:cy + 3, cx - 3:cx + 3] = 255
    return disc, cup


def expected_label(h: int, w: int) -> np.ndarray:
    """``(7, 1, h, w)``: 1 rim (disc minus cup), 2 cup, as the converter must build it."""
    lab = np.zeros((7, 1, h, w), np.uint8)
    for k in range(1, 8):
        disc, cup = _masks(h, w, k)
        lab[k - 1, 0][disc > 0] = 1
        lab[k - 1, 0][cup > 0] = 2
    return lab


def make_refuge_zip(path: Path, rng: np.random.Generator | None = None, skip: str | None = None) -> None:
    """The release zip (with the Mac resource-fork tree it ships with); ``skip`` leaves one file out."""
    rng = rng if rng is not None else np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for part, name, h, w in IMAGES:
            folder = f"{TOP}/{part}/{name}"
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
            z.writestr(f"{folder}/{name}.jpg", buf.getvalue())
            z.writestr(f"__MACOSX/{folder}/._{name}.jpg", b"\x00\x05\x16\x07 not an image")
            for k in range(1, 8):
                disc, cup = _masks(h, w, k)
                for kind, arr in (("disc", disc), ("cup", cup)):
                    fname = f"{name}_seg_{kind}_{k}.png"
                    if fname != skip:
                        z.writestr(f"{folder}/{fname}", _png(arr))


def test_refuge_fetch_and_convert(tmp_path, http_server):
    zpath = tmp_path / refuge.FILES[0].name
    make_refuge_zip(zpath)
    cfg = DataConfig(size=SIZE, split={"train": 0.75, "val": 0.25, "test": 0.0})
    _, processed, manifest = fetch_and_preprocess(refuge, {zpath.name: zpath}, http_server, tmp_path, cfg)
    assert manifest.status == "ok" and len(manifest.cases) == len(IMAGES)
    assert check_leaks(manifest).ok
    split_of = {c.case_id: c.split for c in manifest.cases}
    assert {split_of["refuge2-test-0801"], split_of["refuge2-test-0802"]} == {"test"}
    assert {split_of[f"refuge2-training-000{i}"] for i in range(1, 5)} == {"train", "val"}
    assert all(c.subject_id == c.case_id for c in manifest.cases)   # one image per eye: its own subject

    sizes = {f"refuge2-{refuge.PARTS[p]}-{n}": (h, w) for p, n, h, w in IMAGES}
    for split in ("train", "val", "test"):
        for c in load_split(processed, split)[1]:
            h, w = sizes[c.case_id]
            assert c.image.shape == (1, 3, SIZE, SIZE)
            assert c.label.shape == (7, 1, SIZE, SIZE) and c.label.dtype == np.uint8
            np.testing.assert_array_equal(c.label, resize_label(expected_label(h, w), SIZE))
            assert c.spacing == pytest.approx((1.0, h / SIZE, w / SIZE))
            # rater order: rater k's disc grows with k, so the rim fraction increases down the rows
            rim = (c.label == 1).mean(axis=(1, 2, 3))
            assert np.all(np.diff(rim) >= 0) and rim[-1] > rim[0]
            # the cup is the same for every rater here and lies inside the disc
            assert len({int((c.label[k] == 2).sum()) for k in range(7)}) == 1


def test_refuge_missing_rater_mask_names_the_file(tmp_path):
    zpath = tmp_path / "REFUGE-Multirater.zip"
    make_refuge_zip(zpath, skip="0802_seg_cup_7.png")
    extract(zpath, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="0802_seg_cup_7.png"):
        list(refuge.load(tmp_path / "x", DataConfig(size=16)))


def test_refuge_refuses_inverted_masks_and_wrong_folders(tmp_path):
    folder = tmp_path / "x" / TOP / "Test-400" / "0900"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "0900.jpg")
    for k in range(1, 8):
        disc, cup = _masks(20, 20, 0)
        Image.fromarray(255 - disc).save(folder / f"0900_seg_disc_{k}.png")   # stored inverted
        Image.fromarray(cup).save(folder / f"0900_seg_cup_{k}.png")
    with pytest.raises(ValueError, match=r"0900_seg_disc_1\.png.*inverted"):
        list(refuge.load(tmp_path / "x", DataConfig(size=16)))
    with pytest.raises(FileNotFoundError, match="Training-400"):
        list(refuge.load(tmp_path / "x" / TOP / "Test-400" / "0900", DataConfig(size=16)))


def test_refuge_mapping_at_native_size_with_0_1_masks(tmp_path):
    """At native size (no resize): rim = disc minus cup, cup wins even outside the disc, 0/1 masks read too."""
    folder = tmp_path / "x" / TOP / "Training-400" / "0007"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(folder / "0007.jpg")
    disc = np.zeros((20, 24), np.uint8)
    disc[4:14, 4:14] = 1
    for k in range(1, 8):
        cup = np.zeros((20, 24), np.uint8)
        cup[8:12, 8 + k:12 + k] = 1                 # from rater 3 on, the cup pokes out of the disc
        Image.fromarray(disc).save(folder / f"0007_seg_disc_{k}.png")
        Image.fromarray(cup).save(folder / f"0007_seg_cup_{k}.png")
    (case,) = list(refuge.load(tmp_path / "x", DataConfig(size=20)))
    assert case.case_id == "refuge2-training-0007" and case.extra["part"] == "training"
    for k in range(1, 8):
        want = np.zeros((20, 24), np.uint8)
        want[4:14, 4:14] = 1
        want[8:12, 8 + k:12 + k] = 2
        np.testing.assert_array_equal(case.label[k - 1, 0], resize_label(want, 20))
    assert (case.label[6, 0] == 2).sum() == (case.label[0, 0] == 2).sum()   # the cup is never clipped to the disc

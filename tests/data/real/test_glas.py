"""GlaS from a fixture in the Warwick QU layout: BMP images, BMP instance maps, Grade.csv."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from benchmark.config import DataConfig
from benchmark.data.case import Case
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split
from benchmark.data.real import glas
from tests.data.real.helpers import fetch_and_preprocess

FOLDER = "Warwick QU Dataset (Released 2016_07_08)"
# (name, patient): patients 1-3 train, 4-5 testA, 6 testB, as the published split keeps them apart
IMAGES = [("train_1", 1), ("train_2", 1), ("train_3", 2), ("train_4", 3), ("train_5", 3),
          ("testA_1", 4), ("testA_2", 5), ("testB_1", 6)]


def make_glas_zip(path: Path) -> dict[str, np.ndarray]:
    """The release zip with small images of varying size; returns each image's gland mask."""
    rng = np.random.default_rng(0)
    masks = {}
    with zipfile.ZipFile(path, "w") as z:
        rows = ["Name,Patient ID,Grade (GlaS),Grade (Sirinukunwattana et al. 2015)"]
        for k, (name, patient) in enumerate(IMAGES):
            h, w = 40 + 4 * k, 52
            inst = np.zeros((h, w), np.uint8)
            inst[5:15, 5:20] = 1
            inst[20:30, 25:45] = 2 + k          # instance ids differ per image
            rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for arr, suffix, mode in ((rgb, "", "RGB"), (inst, "_anno", "L")):
                tmp = path.parent / f"{name}{suffix}.bmp"
                Image.fromarray(arr, mode).save(tmp)
                z.write(tmp, f"{FOLDER}/{name}{suffix}.bmp")
                tmp.unlink()
            rows.append(f"{name},{patient},benign,adenomatosis")
            masks[name] = inst > 0
        z.writestr(f"{FOLDER}/Grade.csv", "\n".join(rows) + "\n")
    return masks


def test_glas_fetch_and_convert(tmp_path, http_server):
    masks = make_glas_zip(tmp_path / glas.FILES[0].name)
    cfg = DataConfig(size=32, split={"train": 0.8, "val": 0.2, "test": 0.0})
    source, processed, manifest = fetch_and_preprocess(glas, {glas.FILES[0].name: tmp_path / glas.FILES[0].name},
                                                       http_server, tmp_path, cfg)
    assert manifest.status == "ok" and len(manifest.cases) == len(IMAGES)
    assert (tmp_path / "fetched" / "LICENCE.txt").read_text().count("Sirinukunwattana") == 1
    split_of = {c.case_id: c.split for c in manifest.cases}
    assert {split_of[f"glas-{n}"] for n, _ in IMAGES if n.startswith("test")} == {"test"}
    assert {split_of[f"glas-{n}"] for n, _ in IMAGES if n.startswith("train")} == {"train", "val"}
    assert check_leaks(manifest).ok
    _, cases = load_split(processed, "test")
    for c in cases:
        assert c.image.shape == (1, 3, 32, 32) and set(np.unique(c.label)) <= {0, 1}
        name = c.case_id.removeprefix("glas-")
        h, w = masks[name].shape
        assert c.spacing[1] == pytest.approx(glas.UM_PER_PIXEL / 1000 * h / 32)
        assert c.spacing[2] == pytest.approx(glas.UM_PER_PIXEL / 1000 * w / 32)
        # the label is the nearest-neighbour resize of the instance map's foreground
        assert abs(c.label.mean() - masks[name].mean()) < 0.05


def test_glas_refuses_a_patient_in_both_published_parts():
    empty = np.zeros((0, 3, 4, 4), np.float32), np.zeros((1, 0, 4, 4), np.uint8)
    leaky = [Case("a", "p1", *empty, extra={"part": "train"}), Case("b", "p1", *empty, extra={"part": "testA"}),
             Case("c", "p2", *empty, extra={"part": "train"})]
    with pytest.raises(ValueError, match="data.splits: seeded"):
        glas.split(leaky, DataConfig())
    by_patient = glas.split(leaky, DataConfig(splits="seeded", split={"train": 0.5, "test": 0.5}))
    assert sorted(by_patient.values()) == ["test", "train"]


def test_the_fixture_manifest_passes_the_leak_check_and_a_leaky_copy_fails(tmp_path, http_server, capsys):
    make_glas_zip(tmp_path / glas.FILES[0].name)
    cfg = DataConfig(size=16, split={"train": 0.8, "val": 0.2, "test": 0.0})
    _, processed, manifest = fetch_and_preprocess(glas, {glas.FILES[0].name: tmp_path / glas.FILES[0].name},
                                                  http_server, tmp_path, cfg)
    assert main(["check-leaks", str(processed)]) == 0
    # train_2 shares patient 1 with train_1: move it to test, as a split by image rather than patient would
    leaky = next(c for c in manifest.cases if c.case_id == "glas-train_2")
    leaky.split = "test"
    manifest.save(tmp_path / "leaky")
    assert main(["check-leaks", str(tmp_path / "leaky")]) == 1
    assert "subject glas-patient1: test, train" in capsys.readouterr().out

"""ISIC (3 raters) from a fixture in the IMA++ layout: segs.zip + metadata CSVs (Zenodo) and an ISIC images zip."""
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
from benchmark.data.real import isic
from tests.data.real.helpers import fetch_and_preprocess

SIZE = 16
# isic id -> (height, width, patient_id, lesion_id, annotators in the CSV's (unsorted) order)
IMAGES = {
    "ISIC_0000013": (40, 48, "IP_1", "IL_1", ["A04", "A02", "A03"]),
    "ISIC_0000015": (36, 36, "IP_1", "IL_2", ["A03", "A04", "A02"]),      # same patient as 0000013
    "ISIC_0000022": (44, 40, "", "IL_3", ["A06", "A02", "A04"]),           # lesion id only
    "ISIC_0000040": (32, 44, "", "", ["A04", "A03", "A02"]),               # neither: the image is the subject
    "ISIC_0000053": (40, 40, "IP_2", "IL_4", ["A02", "A02", "A04"]),       # one annotator twice
    "ISIC_0000056": (48, 36, "IP_3", "IL_5", ["A03", "A02", "A04"]),
    "ISIC_0000004": (40, 40, "IP_4", "IL_6", ["A04", "A06"]),               # 2 raters: dropped
    "ISIC_0000126": (40, 40, "IP_5", "IL_7", ["A06", "A03", "A04", "A02"]),  # 4 raters: dropped
}
KEPT = [i for i, v in IMAGES.items() if len(v[4]) == 3]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _mask(h: int, w: int, row: int) -> np.ndarray:
    """0/255 mask whose size grows with ``row`` (the row it must land in after sorting)."""
    m = np.zeros((h, w), np.uint8)
    r = 4 + 3 * row
    m[h // 2 - r:h // 2 + r, w // 2 - r:w // 2 + r] = 255
    return m


def _seg_name(iid: str, ann: str, j: int) -> str:
    return f"{iid}_{ann}_T1_S1_5{j:023x}.png"


def _rows_sorted(iid: str) -> list[tuple[str, str]]:
    anns = IMAGES[iid][4]
    return sorted((a, _seg_name(iid, a, j)) for j, a in enumerate(anns))


def make_ima_files(tmp: Path, rng: np.random.Generator | None = None, bad_size: str | None = None) -> dict[str, Path]:
    rng = rng if rng is not None else np.random.default_rng(0)
    seg_rows = ["ISIC_id,img_filename,seg_filename,annotator,tool,skill_level,mskObjectID,mask_md5"]
    img_rows = ["isic_id,attribution,copyright_license,lesion_id,patient_id,pixels_x,pixels_y"]
    segs, imgs = tmp / "segs.zip", tmp / isic.IMAGES_ZIP
    with zipfile.ZipFile(segs, "w") as zs, zipfile.ZipFile(imgs, "w") as zi:
        for iid, (h, w, pid, lid, anns) in IMAGES.items():
            order = {name: r for r, (_, name) in enumerate(_rows_sorted(iid))}
            for j, ann in enumerate(anns):
                name = _seg_name(iid, ann, j)
                mh = h + 2 if iid == bad_size else h
                zs.writestr(f"segs/{name}", _png(_mask(mh, w, order[name])))
                seg_rows.append(f"{iid},{iid}.JPG,{name},{ann},T1,S1,5{j:023x},0")
            for c in ("ST", "MV"):                       # consensus masks: never a rater
                name = f"{iid}_{c}_{c}_{c}_{c}.png"
                zs.writestr(f"segs/{name}", _png(np.full((h, w), 255, np.uint8)))
                seg_rows.append(f"{iid},{iid}.JPG,{name},{c},{c},{c},{c},0")
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
            zi.writestr(f"images/{iid}.jpg", buf.getvalue())
            img_rows.append(f"{iid},Anonymous,CC-0,{lid},{pid},{w},{h}")
    (tmp / "IMAplusplus_seg_metadata.csv").write_text("\n".join(seg_rows) + "\n")
    (tmp / "IMAplusplus_img_metadata.csv").write_text("\n".join(img_rows) + "\n")
    return {f.name: tmp / f.name for f in isic.FILES}


def test_isic_fetch_and_convert(tmp_path, http_server):
    src = tmp_path / "src"
    src.mkdir()
    files = make_ima_files(src)
    cfg = DataConfig(size=SIZE, split={"train": 0.5, "val": 0.25, "test": 0.25})
    source, processed, manifest = fetch_and_preprocess(isic, files, http_server, tmp_path, cfg)
    assert (tmp_path / "raw" / isic.IMAGES_ZIP).is_file()          # the gated images were placed by hand
    assert {r[0] for r in http_server.requests} >= {"segs.zip", "IMAplusplus_seg_metadata.csv"}
    assert manifest.status == "ok"
    assert sorted(c.case_id for c in manifest.cases) == sorted(f"isic-{i}" for i in KEPT)
    subject = {c.case_id: c.subject_id for c in manifest.cases}
    assert subject["isic-ISIC_0000013"] == subject["isic-ISIC_0000015"] == "isic-IP_1"
    assert subject["isic-ISIC_0000022"] == "isic-IL_3" and subject["isic-ISIC_0000040"] == "isic-ISIC_0000040"
    split_of = {c.case_id: c.split for c in manifest.cases}
    assert split_of["isic-ISIC_0000013"] == split_of["isic-ISIC_0000015"]
    assert len(set(split_of.values())) == 3 and check_leaks(manifest).ok

    seen = 0
    for part in ("train", "val", "test"):
        for c in load_split(processed, part)[1]:
            iid = c.case_id.removeprefix("isic-")
            h, w = IMAGES[iid][:2]
            assert c.image.shape == (1, 3, SIZE, SIZE) and c.label.shape == (3, 1, SIZE, SIZE)
            assert c.spacing == pytest.approx((1.0, h / SIZE, w / SIZE))
            want = np.stack([_mask(h, w, r) > 0 for r in range(3)])[:, None]
            np.testing.assert_array_equal(c.label, resize_label(want, SIZE))   # rows in annotator order
            seen += 1
    assert seen == len(KEPT)


def test_isic_rater_order_and_selection_in_load(tmp_path):
    make_ima_files(tmp_path)
    root = tmp_path / "x"
    for name in ("segs.zip", isic.IMAGES_ZIP):
        extract(tmp_path / name, root)
    for name in ("IMAplusplus_seg_metadata.csv", "IMAplusplus_img_metadata.csv"):
        (root / name).write_bytes((tmp_path / name).read_bytes())
    cases = {c.case_id: c for c in isic.load(root, DataConfig(size=SIZE))}
    assert sorted(cases) == sorted(f"isic-{i}" for i in KEPT)
    assert cases["isic-ISIC_0000013"].extra["annotators"] == ["A02", "A03", "A04"]
    assert cases["isic-ISIC_0000053"].extra["annotators"] == ["A02", "A02", "A04"]
    assert all(set(np.unique(c.label)) == {0, 1} for c in cases.values())


def test_isic_bad_inputs_name_the_file(tmp_path):
    make_ima_files(tmp_path, bad_size="ISIC_0000022")
    root = tmp_path / "x"
    extract(tmp_path / "segs.zip", root)
    for name in ("IMAplusplus_seg_metadata.csv", "IMAplusplus_img_metadata.csv"):
        (root / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"ISIC_0000013.*ISIC-images\.zip"):   # images not placed
        list(isic.load(root, DataConfig(size=SIZE)))
    extract(tmp_path / isic.IMAGES_ZIP, root)
    with pytest.raises(ValueError, match=r"ISIC_0000022_A02_T1_S1_\w+\.png: mask \(46, 40\)"):
        list(isic.load(root, DataConfig(size=SIZE)))
    (root / "IMAplusplus_seg_metadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match="segmentation metadata"):
        list(isic.load(root, DataConfig(size=SIZE)))

"""MoNuSeg from fixtures in the release layout: the training zip (Tissue Images/ + Annotations/, with macOS
resource forks) and the test zip (tif and xml side by side), ImageScope XML outlines."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.config import DataConfig
from benchmark.data.case import Case
from benchmark.data.manifest import check_leaks
from benchmark.data.preprocess import load_split
from benchmark.data.real import monuseg
from tests.data.real.helpers import fetch_and_preprocess

TRAIN_ZIP, TEST_ZIP = (f.name for f in monuseg.FILES)
TRAIN_DIR = "MoNuSeg 2018 Training Data"
SIZE = 24
# name -> (H, W); patient TCGA-A7-A13E has two tiles (the second one is made up for the test)
TRAIN = {"TCGA-A7-A13E-01Z-00-DX1": (24, 24), "TCGA-A7-A13E-01Z-00-DX2": (30, 26),
         "TCGA-21-5784-01Z-00-DX1": (28, 32), "TCGA-21-5786-01Z-00-DX1": (24, 24),
         "TCGA-G2-A2EK-01A-02-TSB": (26, 30)}
TEST = {"TCGA-2Z-A9J9-01A-01-TS1": (24, 24), "TCGA-44-2665-01B-06-BS6": (32, 28)}

# (vertices, the pixels they must cover as (row slice, col slice) boxes, or None for a triangle handled below)
RECT = [(2, 3), (7, 3), (7, 6), (2, 6)]                             # rows 3..6, cols 2..7, edges included
TRIANGLE = [(10, 10), (16, 10), (10, 16)]                           # row r: cols 10..26-r
FLOATS = [(16.5, 2.4), (21.49, 2.4), (21.49, 5.5), (16.5, 5.5)]     # rounds half up to (17,2)-(21,6)
LEFT = [(2, 18), (5, 18), (5, 21), (2, 21)]                         # two squares sharing the edge x = 5
RIGHT = [(5, 18), (8, 18), (8, 21), (5, 21)]
TWO_POINTS = [(20, 20), (22, 22)]                                   # no area: skipped


def expected_mask(shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[3:7, 2:8] = 1
    for r in range(10, 17):
        m[r, 10:27 - r] = 1
    m[2:7, 17:22] = 1
    m[18:22, 2:9] = 1
    return m


def imagescope_xml(regions) -> str:
    """An Aperio ImageScope annotation file as the MoNuSeg release has them."""
    body = []
    for k, verts in enumerate(regions, start=1):
        vs = "\n".join(f'          <Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in verts)
        body.append(f'      <Region Id="{k}" Type="0" Zoom="0.5" Selected="0" ImageLocation="" ImageFocus="-1" '
                    f'Length="40.0" Area="90.0" LengthMicrons="10.0" AreaMicrons="5.7" Text="" NegativeROA="0" '
                    f'InputRegionId="0" Analyze="1" DisplayId="{k}">\n        <Attributes/>\n        <Vertices>\n'
                    f'{vs}\n        </Vertices>\n      </Region>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.252000">\n'
            '  <Annotation Id="1" Name="" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" Incremental="0" '
            'Type="4" LineColor="65280" Visible="1" Selected="1" MarkupImagePath="" MacroName="">\n'
            '    <Attributes>\n      <Attribute Name="Description" Id="0" Value=""/>\n    </Attributes>\n'
            '    <Regions>\n      <RegionAttributeHeaders>\n'
            '        <AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>\n      </RegionAttributeHeaders>\n'
            + "\n".join(body) + '\n    </Regions>\n    <Plots/>\n  </Annotation>\n</Annotations>\n')


def tif_bytes(shape, rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8), "RGB").save(buf, format="TIFF")
    return buf.getvalue()


REGIONS = [RECT, TRIANGLE, FLOATS, LEFT, RIGHT, TWO_POINTS]


def make_zips(folder: Path, rng: np.random.Generator | None = None) -> dict[str, Path]:
    rng = rng if rng is not None else np.random.default_rng(0)
    xml = imagescope_xml(REGIONS)
    with zipfile.ZipFile(folder / TRAIN_ZIP, "w") as z:
        for name, shape in TRAIN.items():
            z.writestr(f"{TRAIN_DIR}/Tissue Images/{name}.tif", tif_bytes(shape, rng))
            z.writestr(f"{TRAIN_DIR}/Annotations/{name}.xml", xml)
            z.writestr(f"__MACOSX/{TRAIN_DIR}/Tissue Images/._{name}.tif", b"\x00\x05\x16\x07 resource fork")
    with zipfile.ZipFile(folder / TEST_ZIP, "w") as z:
        for name, shape in TEST.items():
            z.writestr(f"MoNuSegTestData/{name}.tif", tif_bytes(shape, rng))
            z.writestr(f"MoNuSegTestData/{name}.xml", xml)
    return {TRAIN_ZIP: folder / TRAIN_ZIP, TEST_ZIP: folder / TEST_ZIP}


def test_rasterise_is_pixel_exact(tmp_path):
    path = tmp_path / "TCGA-A7-A13E-01Z-00-DX1.xml"
    path.write_text(imagescope_xml(REGIONS))
    regions, facts = monuseg.read_regions(path)
    assert len(regions) == 6 and regions[2][0] == (16.5, 2.4) and facts == {"xml_microns_per_pixel": 0.252}
    mask, skipped = monuseg.rasterise(regions, (24, 30))
    assert skipped == 1
    np.testing.assert_array_equal(mask, expected_mask((24, 30)))


def test_monuseg_fetch_and_convert(tmp_path, http_server):
    files = make_zips(tmp_path)
    cfg = DataConfig(size=SIZE, seed=1, split={"train": 0.75, "val": 0.25, "test": 0.0})
    source, processed, manifest = fetch_and_preprocess(monuseg, files, http_server, tmp_path, cfg)
    assert all((tmp_path / "raw" / name).is_file() for name in files)     # gated: placed by hand
    assert manifest.status == "ok" and len(manifest.cases) == len(TRAIN) + len(TEST)
    assert check_leaks(manifest).ok
    by_id = {c.case_id.removeprefix("monuseg-"): c for c in manifest.cases}
    assert {by_id[n].split for n in TEST} == {"test"}
    assert {by_id[n].split for n in TRAIN} <= {"train", "val"} and len({by_id[n].split for n in TRAIN}) == 2
    # the subject is the TCGA patient: the two tiles of TCGA-A7-A13E share one subject and one split
    a, b = by_id["TCGA-A7-A13E-01Z-00-DX1"], by_id["TCGA-A7-A13E-01Z-00-DX2"]
    assert a.subject_id == b.subject_id == "monuseg-TCGA-A7-A13E" and a.split == b.split
    assert by_id["TCGA-G2-A2EK-01A-02-TSB"].subject_id == "monuseg-TCGA-G2-A2EK"
    for name, (h, w) in {**TRAIN, **TEST}.items():
        e = by_id[name]
        assert e.channels == 3 and e.n_annotators == 1 and e.n_slices == 1
        assert e.spacing == pytest.approx([1.0, 0.25e-3 * h / SIZE, 0.25e-3 * w / SIZE])
    _, cases = load_split(processed, "test")
    exact = {c.case_id: c for c in cases}["monuseg-TCGA-2Z-A9J9-01A-01-TS1"]   # 24x24: no resampling
    assert exact.image.shape == (1, 3, SIZE, SIZE) and exact.label.shape == (1, 1, SIZE, SIZE)
    np.testing.assert_array_equal(exact.label[0, 0], expected_mask((24, 24)))


def test_monuseg_reads_the_rgb_pixels(tmp_path):
    make_zips(tmp_path)
    for name in (TRAIN_ZIP, TEST_ZIP):
        with zipfile.ZipFile(tmp_path / name) as z:
            z.extractall(tmp_path / "x")
    case = next(c for c in monuseg.load(tmp_path / "x", DataConfig(size=SIZE))
                if c.case_id == "monuseg-TCGA-21-5786-01Z-00-DX1")
    tif = tmp_path / "x" / TRAIN_DIR / "Tissue Images" / "TCGA-21-5786-01Z-00-DX1.tif"
    np.testing.assert_array_equal(case.image[0], np.asarray(Image.open(tif), np.float32).transpose(2, 0, 1))
    assert case.extra["part"] == "train" and case.extra["skipped_regions"] == 1
    assert case.extra["annotation"].endswith("Annotations/TCGA-21-5786-01Z-00-DX1.xml")


@pytest.mark.parametrize("text, match", [
    (imagescope_xml([RECT])[:-40], "not a readable ImageScope XML"),
    (imagescope_xml([RECT]).replace('X="7"', 'X="seven"', 1), "Region 1 has a Vertex without numeric X and Y"),
    (imagescope_xml([RECT]).replace("Annotations", "Annotationz"), "expected <Annotations>"),
    (imagescope_xml([TWO_POINTS]), "no Region with at least 3 vertices"),
])
def test_monuseg_malformed_xml_names_the_file(tmp_path, text, match):
    folder = tmp_path / "MoNuSegTestData"
    folder.mkdir()
    (folder / "TCGA-2Z-A9J9-01A-01-TS1.tif").write_bytes(tif_bytes((16, 16), np.random.default_rng(0)))
    (folder / "TCGA-2Z-A9J9-01A-01-TS1.xml").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        list(monuseg.load(tmp_path, DataConfig(size=8)))
    assert "MoNuSegTestData/TCGA-2Z-A9J9-01A-01-TS1.xml" in str(err.value)


def test_monuseg_missing_outline_and_not_the_release(tmp_path):
    folder = tmp_path / TRAIN_DIR / "Tissue Images"
    folder.mkdir(parents=True)
    (folder / "TCGA-21-5784-01Z-00-DX1.tif").write_bytes(tif_bytes((16, 16), np.random.default_rng(0)))
    with pytest.raises(FileNotFoundError, match=r"Annotations/TCGA-21-5784-01Z-00-DX1\.xml is missing"):
        list(monuseg.load(tmp_path, DataConfig(size=8)))
    with pytest.raises(FileNotFoundError, match="MoNuSegTestData.zip"):
        list(monuseg.load(tmp_path / TRAIN_DIR / "Annotations", DataConfig(size=8)))


def test_monuseg_patient_and_published_split_guard():
    assert monuseg.patient_of("TCGA-44-2665-01B-06-BS6") == "TCGA-44-2665"
    with pytest.raises(ValueError, match="not a TCGA image name"):
        monuseg.patient_of("image01")
    empty = np.zeros((0, 3, 4, 4), np.float32), np.zeros((1, 0, 4, 4), np.uint8)
    leaky = [Case("a", "p1", *empty, extra={"part": "train"}), Case("b", "p1", *empty, extra={"part": "test"}),
             Case("c", "p2", *empty, extra={"part": "train"})]
    with pytest.raises(ValueError, match="data.splits: seeded"):
        monuseg.split(leaky, DataConfig())
    by_patient = monuseg.split(leaky, DataConfig(splits="seeded", split={"train": 0.5, "test": 0.5}))
    assert sorted(by_patient.values()) == ["test", "train"]

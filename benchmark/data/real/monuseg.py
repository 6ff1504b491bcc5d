"""MoNuSeg: nucleus segmentation in H&E tissue images of several organs (MICCAI 2018 challenge).

Native layout: two zips linked from the challenge's data page (on Google Drive, no stable direct URL):

- ``MoNuSeg 2018 Training Data.zip``: ``MoNuSeg 2018 Training Data/Tissue Images/TCGA-*.tif`` (1000 x 1000
  RGB tiles cut from TCGA whole-slide images scanned at 40x) and ``MoNuSeg 2018 Training Data/Annotations/
  TCGA-*.xml`` (Aperio ImageScope XML: ``Annotations/Annotation/Regions/Region/Vertices/Vertex`` with
  attributes ``X`` (column) and ``Y`` (row) in pixels, one ``Region`` per nucleus outline). The zip also
  carries macOS ``__MACOSX/`` resource-fork entries (``._TCGA-*.tif``), which are ignored. The challenge
  announced 30 training images; mirrors of the current zip list 37 (the converter takes what is there).
- ``MoNuSegTestData.zip``: ``MoNuSegTestData/TCGA-*.tif`` with each ``TCGA-*.xml`` beside it, 14 images.

An image is a training image when it sits in a ``Tissue Images`` folder (its outline file then is
``../Annotations/<name>.xml``), otherwise a test image (outline file beside it).

Label: nuclei (1) vs background (0), one rater. Rasterisation (:func:`rasterise`): each ``Region`` is one
polygon through its vertices, each coordinate rounded half up to the nearest pixel centre (``X`` -> column,
``Y`` -> row; integer coordinates are pixel centres); Pillow's ``ImageDraw.polygon`` fills it, boundary
pixels included. All polygons are drawn with the same value into one mask, so the result is their union:
a pixel on an edge shared by two touching nuclei, or inside two overlapping outlines, is nucleus. Regions
with fewer than 3 vertices enclose no area and are skipped (counted in ``extra["skipped_regions"]``); a
file that does not parse, a vertex without numeric ``X``/``Y``, or a file without any polygon is an error
naming the file. The image stays RGB (3 channels); image and mask are resized to the profile's size.

Spacing: 0.25 um per pixel, the nominal pixel size of the 40x Aperio scans the tiles were cut from
(MoNuSeg's data description: 40x TCGA images; TCGA's 40x slide headers give 0.24-0.26 um) -> mm,
rescaled by the resize. An XML's own ``MicronsPerPixel`` attribute, when present, is recorded in
``extra["xml_microns_per_pixel"]`` but not used (it describes the whole slide, not the tile).

Protocol gap (FlowSDF, section 4.1, the paper whose claims use MoNuSeg): it stain-normalises (Vahadane),
resizes tiles to 500 x 500, trains on random 128 x 128 crops and merges overlapping patches at inference.
The suite resizes whole tiles to ``data.size`` like every dataset and does neither, so nuclei are smaller
here (1000 -> 256 px) and its MoNuSeg numbers are not FlowSDF's protocol.

Subject: the TCGA patient, the first three dash-separated fields of the name (``TCGA-XX-XXXX``).
Split: ``standard`` keeps the published one, training zip vs test zip (``extra["part"]``), validation
drawn from the training patients; should a patient appear in both parts the split is refused and
``data.splits: seeded`` splits by patient instead.
"""
from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import resize_image, resize_label, resized_spacing
from benchmark.data.interface import DataFormatError, ReleaseFileMissing
from benchmark.data.real import splits
from benchmark.data.real.medical_io import is_os_debris, read_rgb
from benchmark.data.real.source import RealSource, RemoteFile

INFO = DatasetInfo(name="monuseg", modality="histology", channels=3, class_names=("background", "nucleus"),
                   n_annotators=1, stands_for="MoNuSeg", phantom=False,
                   note="MoNuSeg 2018: 1000x1000 H&E tiles from TCGA (40x), nuclei vs background; "
                        "published train/test split.")
# Both zips are Google Drive files linked from the challenge page; no checksum is published by the challenge.
FILES = (RemoteFile("MoNuSeg 2018 Training Data.zip", None, checksum=None, size_mb=110),
         RemoteFile("MoNuSegTestData.zip", None, checksum=None, size_mb=45))
HOMEPAGE = "https://monuseg.grand-challenge.org/Data/"
LICENCE = ("Released by the MoNuSeg organisers under Creative Commons BY-NC-SA 4.0 (as stated for the challenge "
           "data): attribution by citing the papers below, non-commercial use only, derivatives shared under the "
           "same licence. The tiles come from TCGA whole-slide images. Check the challenge page before use.")
CITATION = ("N. Kumar, R. Verma, S. Sharma, S. Bhargava, A. Vahadane, A. Sethi. A Dataset and a Technique for "
            "Generalized Nuclear Segmentation for Computational Pathology. IEEE Transactions on Medical Imaging "
            "36(7):1550-1560, 2017.\n"
            "N. Kumar, R. Verma, D. Anand et al. A Multi-Organ Nucleus Segmentation Challenge. IEEE Transactions on "
            "Medical Imaging 39(5):1380-1391, 2020.")
HOW_TO_GET = """\
1. Open the MoNuSeg challenge data page, https://monuseg.grand-challenge.org/Data/ .
2. Follow its "Training Data" link (Google Drive) and download "MoNuSeg 2018 Training Data.zip"
   (TCGA-*.tif tiles in "Tissue Images" and ImageScope XML outlines in "Annotations").
3. Follow its "Testing Data" link and download "MoNuSegTestData.zip" (14 TCGA-*.tif with their .xml).
4. Put both zips, unopened and with exactly those names (the first contains spaces), into data/raw/monuseg/
   and run the fetch again."""

UM_PER_PIXEL = 0.25
TRAIN_FOLDER = "Tissue Images"
_NAME = re.compile(r"^(TCGA-[A-Za-z0-9]+-[A-Za-z0-9]+)-[A-Za-z0-9-]+\.tif$")


def patient_of(stem_or_name: str) -> str:
    """``TCGA-XX-XXXX`` from a MoNuSeg image name such as ``TCGA-A7-A13E-01Z-00-DX1``."""
    parts = Path(stem_or_name).name.split("-")
    if len(parts) < 3 or parts[0] != "TCGA":
        raise DataFormatError(f"{stem_or_name}: not a TCGA image name (TCGA-XX-XXXX-...)")
    return "-".join(parts[:3])


def read_regions(xml_path: Path) -> tuple[list[list[tuple[float, float]]], dict]:
    """The ``(X, Y)`` vertex lists of every ``Region`` of an ImageScope XML, and facts about the file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataFormatError(f"{xml_path}: not a readable ImageScope XML ({e})") from e
    if root.tag != "Annotations":
        raise DataFormatError(f"{xml_path}: root element is <{root.tag}>, expected <Annotations> "
                              f"(Aperio ImageScope XML)")
    regions = []
    for k, region in enumerate(root.iter("Region")):
        verts = []
        for v in region.iter("Vertex"):
            try:
                x, y = float(v.attrib["X"]), float(v.attrib["Y"])
            except (KeyError, ValueError) as e:
                raise DataFormatError(f"{xml_path}: Region {region.get('Id', k + 1)} has a Vertex without numeric "
                                      f"X and Y ({dict(v.attrib)})") from e
            if not (math.isfinite(x) and math.isfinite(y)):
                raise DataFormatError(f"{xml_path}: Region {region.get('Id', k + 1)} has a non-finite vertex "
                                      f"({x}, {y})")
            verts.append((x, y))
        regions.append(verts)
    facts = {}
    mpp = root.get("MicronsPerPixel")
    if mpp:
        try:
            facts["xml_microns_per_pixel"] = float(mpp)
        except ValueError:
            pass
    return regions, facts


def _pixel(v: float) -> int:
    return int(math.floor(v + 0.5))


def rasterise(regions: list[list[tuple[float, float]]], shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Union of the filled polygons on an ``(H, W)`` grid (see the module docstring); returns (mask, skipped)."""
    h, w = shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    skipped = 0
    for verts in regions:
        if len(verts) < 3:
            skipped += 1
            continue
        draw.polygon([(_pixel(x), _pixel(y)) for x, y in verts], fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8), skipped


def _images(root: Path) -> list[tuple[Path, Path, str]]:
    """``(tif, xml, part)`` for every MoNuSeg image under ``root``, macOS resource forks left out."""
    out = []
    for tif in sorted(root.rglob("TCGA-*.tif")):
        if is_os_debris(tif):
            continue
        if not _NAME.match(tif.name):
            raise DataFormatError(f"{tif}: not a MoNuSeg image name (TCGA-XX-XXXX-....tif)")
        if tif.parent.name == TRAIN_FOLDER:
            out.append((tif, tif.parent.parent / "Annotations" / f"{tif.stem}.xml", "train"))
        else:
            out.append((tif, tif.with_suffix(".xml"), "test"))
    if not out:
        raise ReleaseFileMissing(f"{root}: no TCGA-*.tif images; not the MoNuSeg release "
                                 f"({', '.join(f.name for f in FILES)})")
    return out


def load(root: Path, cfg: DataConfig):
    """Yield one case per tile: ``image`` ``(1, 3, S, S)``, ``label`` ``(1, 1, S, S)`` in {0, 1}."""
    for tif, xml, part in _images(Path(root)):
        if not xml.is_file():
            raise ReleaseFileMissing(f"{tif}: its outline file {xml} is missing")
        rgb = read_rgb(tif)
        regions, facts = read_regions(xml)
        mask, skipped = rasterise(regions, rgb.shape[1:])
        if len(regions) == skipped:
            raise DataFormatError(f"{xml}: no Region with at least 3 vertices; no nucleus outline to rasterise")
        mm = UM_PER_PIXEL / 1000
        yield Case(case_id=f"monuseg-{tif.stem}", subject_id=f"monuseg-{patient_of(tif.stem)}",
                   image=resize_image(rgb, cfg.size)[None], label=resize_label(mask[None, None], cfg.size),
                   spacing=resized_spacing((1.0, mm, mm), mask.shape, cfg.size),
                   extra={"source": str(tif), "annotation": str(xml), "part": part, "regions": len(regions),
                          "skipped_regions": skipped, **facts})


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    return splits.by_part("monuseg", cases, ("train",), cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

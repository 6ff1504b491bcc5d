"""GlaS: gland segmentation in colon histology (MICCAI 2015 challenge; Warwick QU release).

Native layout (one zip): ``Warwick QU Dataset (Released 2016_07_08)/`` holding ``{split}_{n}.bmp``
(RGB H&E image, 20x objective) and ``{split}_{n}_anno.bmp`` (instance map: 0 background, 1..k one
id per gland), with ``split`` one of ``train`` (85), ``testA`` (60), ``testB`` (20), and
``Grade.csv`` (``name, patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)``).

Conversion: instances -> gland (1) vs background (0), as MedFlowSeg and FlowSDF score GlaS; the
image stays RGB (3 channels), both resized to the profile's size. Spacing: 0.620 um per pixel at
20x (the challenge paper) -> mm, rescaled by the resize.

Split: ``standard`` keeps the published one, ``train`` vs ``testA`` + ``testB`` (both scored as test;
``extra["part"]`` keeps which), validation drawn from the training images. The subject is the
patient ID of ``Grade.csv``; should a patient ever appear in both published parts, the split stage
refuses it (a leak) and ``data.splits: seeded`` is the way out.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import resize_image, resize_label, resized_spacing
from benchmark.data.interface import DataFormatError, ReleaseFileMissing
from benchmark.data.real import splits
from benchmark.data.real.medical_io import csv_header, read_csv, read_image, read_rgb
from benchmark.data.real.source import PublishedSplit, RealSource, RemoteFile

INFO = DatasetInfo(name="glas", modality="histology", channels=3, class_names=("background", "gland"),
                   n_annotators=1, stands_for="GlaS", phantom=False,
                   note="GlaS (Warwick QU release): 165 H&E images, glands vs background.")
FILES = (RemoteFile("warwick_qu_dataset_released_2016_07_08.zip",
                    "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/download/"
                    "warwick_qu_dataset_released_2016_07_08.zip", checksum=None, size_mb=173),)
HOMEPAGE = "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/"
PUBLISHED_SPLIT = PublishedSplit(train_slices=85, test_cases=80, test_slices=80, val_from_train=True,
                                 slice_subjects=False,
                                 source="the Warwick QU release: train 85, testA 60 + testB 20 images "
                                        "(Sirinukunwattana et al. 2017; this module's docstring)")
LICENCE = ("Released by the Tissue Image Analytics Centre, University of Warwick, for research use in connection "
           "with the GlaS challenge; read the terms on the homepage before use. No redistribution.")
CITATION = ("K. Sirinukunwattana, J. P. W. Pluim, H. Chen et al. Gland segmentation in colon histology images: "
            "The GlaS challenge contest. Medical Image Analysis 35:489-502, 2017.")
HOW_TO_GET = ""
UM_PER_PIXEL = 0.620
_NAME = re.compile(r"^(train|testA|testB)_(\d+)\.bmp$")


def _release_dir(root: Path) -> Path:
    hits = sorted(root.rglob("Grade.csv"))
    if not hits:
        raise ReleaseFileMissing(f"{root}: no Grade.csv; not the Warwick QU GlaS release")
    return hits[0].parent


def _patients(folder: Path) -> dict[str, str]:
    rows = read_csv(folder / "Grade.csv", "grade table")
    header = csv_header(folder / "Grade.csv", "grade table")
    column = {h.lower(): h for h in header}
    if "name" not in column or "patient id" not in column:
        raise DataFormatError(f"{folder / 'Grade.csv'}: expected columns 'name' and 'patient ID', got {header}")
    return {r[column["name"]].strip(): r[column["patient id"]].strip() for r in rows}


def load(root: Path, cfg: DataConfig):
    """Yield one case per image: ``image`` ``(1, 3, S, S)``, ``label`` ``(1, 1, S, S)`` in {0, 1}."""
    folder = _release_dir(root)
    patients = _patients(folder)
    names = sorted((p for p in folder.iterdir() if _NAME.match(p.name)),
                   key=lambda p: (_NAME.match(p.name)[1], int(_NAME.match(p.name)[2])))
    if not names:
        raise ReleaseFileMissing(f"{folder}: no train_/testA_/testB_ images")
    for path in names:
        part, stem = _NAME.match(path.name)[1], path.stem
        anno = path.with_name(f"{stem}_anno.bmp")
        if not anno.is_file():
            raise ReleaseFileMissing(f"{path}: its annotation {anno.name} is missing")
        if stem not in patients:
            raise DataFormatError(f"{folder / 'Grade.csv'}: no row for {stem}")
        rgb = read_rgb(path)
        inst = read_image(anno, "annotation")
        if inst.ndim == 3:       # some readers give the 8-bit map as RGB: the instance id is in every channel
            inst = inst[..., 0]
        if inst.shape != rgb.shape[1:]:
            raise DataFormatError(f"{anno}: annotation {inst.shape} and image {rgb.shape[1:]} differ in size")
        mm = UM_PER_PIXEL / 1000
        yield Case(case_id=f"glas-{stem}", subject_id=f"glas-patient{patients[stem]}",
                   image=resize_image(rgb, cfg.size)[None], label=resize_label((inst > 0)[None, None], cfg.size),
                   spacing=resized_spacing((1.0, mm, mm), inst.shape, cfg.size),
                   extra={"source": str(path), "part": part})


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    return splits.by_part("glas", cases, ("train",), cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

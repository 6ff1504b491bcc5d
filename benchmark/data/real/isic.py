"""ISIC with three raters: dermoscopic skin-lesion masks of IMA++ (ISIC MultiAnnot++) on ISIC Archive images.

Sources. IMA++ (Abhishek, Kawahara, Hamarneh; Zenodo DOI 10.5281/zenodo.14201692; code and metadata at
github.com/sfu-mial/IMAplusplus) holds the masks and their metadata, not the images:

- ``segs.zip``: one PNG per segmentation, named ``<ISIC_id>_<annotator>_<tool>_<skill>_<mskObjectID>.png``
  (e.g. ``ISIC_0000013_A03_T1_S1_57be07fe9fc3c1434763a313.png``), plus the consensus masks
  ``<ISIC_id>_ST_ST_ST_ST.png`` (STAPLE) and ``<ISIC_id>_MV_MV_MV_MV.png`` (majority vote);
- ``IMAplusplus_seg_metadata.csv``: one row per mask, columns ``ISIC_id, img_filename, seg_filename,
  annotator (A00..A15, or ST/MV), tool (T1..T3), skill_level (S1/S2), mskObjectID, mask_md5``;
- ``IMAplusplus_img_metadata.csv``: the ISIC Archive metadata per image (``isic_id``, ``lesion_id``,
  ``patient_id``, ``pixels_x``, ``pixels_y``, diagnosis, ...).

UNVERIFIED: the Zenodo record's file list could not be read from here. ``segs.zip`` is named in the
IMA++ README (and a Hugging Face mirror, 162,307,938 bytes); the two CSV names are those the IMA++ code
writes (``output/metadata/``), which the README describes as the record's ``*_metadata.csv`` files.
Whether ``segs.zip`` keeps its masks at the top or in a folder is not known: the loader finds each
mask by name anywhere under the extracted tree, and finds the two CSVs by their columns, not their names.
No md5 is recorded: none could be read from the record.

Images: not in IMA++; they come from the ISIC Archive (CC-0 / CC-BY / CC-BY-NC per image) by ISIC id,
which no single challenge zip covers. They are a hand-made archive ``ISIC-images.zip`` (see
``HOW_TO_GET``) holding ``ISIC_<id>.jpg`` (``.JPG``, ``.jpeg`` and ``.png`` are accepted) at any depth.

Selection: the images with exactly three rater masks (consensus masks ST/MV not counted). IMA++
gives 2-5 masks per image from 16 annotators, so the three rows are not the same three people on every
image; rater row ``r`` is the ``r``-th mask after sorting by annotator id, then mask file name (an
annotator who segmented an image twice fills two rows). ``extra["annotators"]`` keeps who each row is.

Label mapping: a mask pixel above 0 is lesion (1), else background (0), as IMA++'s own mask loader
reads them (the PNGs are 0/255; an RGB mask is averaged over channels first). Label ``(3, 1, S, S)``.

Conversion: RGB image (3 channels) resized antialiased, masks nearest-neighbour, to the profile's
size (:mod:`benchmark.data.imaging`); intensities are not normalised. Each mask must match its image's
size. Spacing: dermoscopic JPEGs carry no pixel size, and the archive mixes many dermatoscopes; the
spacing is in native pixels, ``(1, 1, 1)`` rescaled by the resize (``extra["spacing_unit"]``).

Subject: ``patient_id`` from the image metadata where the archive has one, else ``lesion_id``, else the
ISIC id (IMA++ reports patient ids for about a third of its multi-annotator images). Two images of one
patient therefore always share a split.

Split: seeded by subject with ``data.split`` (the issue asks for 70/10/20). IMA++'s paper describes its
own 70:10:20 partition of the multi-annotator subset, but it is stratified, not grouped by patient or
lesion (test images share patients with training images), and its file is not among those read here;
it is not used.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import resize_image, resize_label, resized_spacing
from benchmark.data.interface import DataFormatError, ReleaseFileMissing
from benchmark.data.real import splits
from benchmark.data.real.medical_io import csv_header, is_os_debris, read_csv, read_image, read_rgb
from benchmark.data.real.source import RealSource, RemoteFile

INFO = DatasetInfo(name="isic", modality="dermoscopy", channels=3, class_names=("background", "lesion"),
                   n_annotators=3, stands_for="ISIC (3 raters)", phantom=False,
                   note="IMA++ masks on ISIC Archive images: the images with exactly 3 rater masks, raters "
                        "sorted by annotator id; HD95 in native pixels.")
_ZENODO = "https://zenodo.org/records/14201692/files/{}?download=1"
IMAGES_ZIP = "ISIC-images.zip"
FILES = (
    # names: IMA++ README and code (see the module docstring); no checksum could be read from the record
    RemoteFile("segs.zip", _ZENODO.format("segs.zip"), checksum=None, size_mb=155),
    RemoteFile("IMAplusplus_seg_metadata.csv", _ZENODO.format("IMAplusplus_seg_metadata.csv"), checksum=None,
               size_mb=3),
    RemoteFile("IMAplusplus_img_metadata.csv", _ZENODO.format("IMAplusplus_img_metadata.csv"), checksum=None,
               size_mb=3),
    RemoteFile(IMAGES_ZIP, None, checksum=None, size_mb=1500),
)
HOMEPAGE = "https://doi.org/10.5281/zenodo.14201692"
LICENCE = ("IMA++ masks and metadata: the licence stated on the Zenodo record (the IMA++ repository points to "
           "CC BY-NC 4.0: non-commercial use with attribution). Images: ISIC Archive, each under its own "
           "licence (CC-0, CC-BY or CC-BY-NC, listed per image in the archive metadata), with attribution to "
           "the contributing institution. Use for non-commercial research, keep the attributions, do not "
           "redistribute the images.")
CITATION = ("K. Abhishek, J. Kawahara, G. Hamarneh. IMA++: ISIC Archive multi-annotator dermoscopic skin lesion "
            "segmentation dataset. arXiv:2512.21472, 2025; data: Zenodo, doi:10.5281/zenodo.14201692.\n"
            "K. Abhishek, J. Kawahara, G. Hamarneh. What can we learn from inter-annotator variability in skin "
            "lesion segmentation? MICCAI ISIC Skin Image Analysis Workshop, LNCS 16149:23-33, 2025.")
HOW_TO_GET = """\
The masks and metadata download from Zenodo (segbench fetch isic). The images must be collected from the
ISIC Archive (https://www.isic-archive.com/) and placed as one zip:
  1. download IMAplusplus_seg_metadata.csv from https://zenodo.org/records/14201692 and list the ISIC_id
     values with exactly 3 rows whose annotator is not ST or MV (the consensus masks);
  2. download those images by ISIC id, full resolution: with the ISIC API image downloader the IMA++ authors
     point to (https://github.com/kakumarabhishek/ISIC-API-Image-Downloader), or with the official isic-cli
     (pip install isic-cli; isic image download --search 'isic_id:ISIC_0000013 OR isic_id:...' images/);
     downloading every multi-annotator image is fine, the converter keeps the 3-rater ones;
  3. zip the image files (ISIC_<id>.jpg, any folder depth) as ISIC-images.zip and put it in data/raw/isic/."""
_CONSENSUS = {"ST", "MV"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_IMAGE_NAME = re.compile(r"^ISIC_\d+\.(jpe?g|png)$", re.IGNORECASE)   # masks have more name parts


def _find_csv(root: Path, preferred: str, needs: set[str], what: str) -> Path:
    """The CSV named ``preferred``, else any CSV under ``root`` whose header has the columns ``needs``; a
    ``preferred`` file without them is an error naming it."""
    hits = sorted(p for p in root.rglob("*.csv") if not is_os_debris(p))
    hits.sort(key=lambda p: p.name != preferred)
    for p in hits:
        header = set(csv_header(p, what))
        if needs <= header:
            return p
        if p.name == preferred:
            raise DataFormatError(f"{p}: the {what} CSV lacks the columns {sorted(needs - header)} "
                                  f"(its first line: {sorted(header)[:10]})")
    raise ReleaseFileMissing(f"{root}: no {what} CSV ({preferred}, or any CSV with columns {sorted(needs)})")


def _file_index(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in root.rglob("*"):
        if p.suffix.lower() in suffixes and p.is_file() and not is_os_debris(p):
            out.setdefault(p.name, p)
    return out


def _subjects(root: Path) -> dict[str, str]:
    path = _find_csv(root, "IMAplusplus_img_metadata.csv", {"isic_id", "patient_id", "lesion_id"}, "image metadata")
    out = {}
    for row in read_csv(path, "image metadata"):
        iid = row["isic_id"].strip()
        out[iid] = (row.get("patient_id") or "").strip() or (row.get("lesion_id") or "").strip() or iid
    return out


def _three_rater_images(root: Path) -> tuple[Path, dict[str, list[dict[str, str]]]]:
    path = _find_csv(root, "IMAplusplus_seg_metadata.csv", {"ISIC_id", "seg_filename", "annotator"},
                     "segmentation metadata")
    by_image: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(path, "segmentation metadata"):
        if row["annotator"].strip() in _CONSENSUS:
            continue
        by_image[row["ISIC_id"].strip()].append(row)
    chosen = {iid: sorted(rows, key=lambda r: (r["annotator"].strip(), r["seg_filename"].strip()))
              for iid, rows in sorted(by_image.items()) if len(rows) == 3}
    return path, chosen


def _mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    arr = read_image(path, "rater mask")
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2)
    if arr.shape != shape:
        raise DataFormatError(f"{path}: mask {arr.shape} and its image {shape} differ in size")
    return arr > 0


def load(root: Path, cfg: DataConfig):
    """Yield one case per 3-rater image: ``image`` ``(1, 3, S, S)``, ``label`` ``(3, 1, S, S)`` in {0, 1}."""
    root = Path(root)
    seg_csv, chosen = _three_rater_images(root)
    if not chosen:
        raise DataFormatError(f"{seg_csv}: no image has exactly 3 rater masks")
    subjects = _subjects(root)
    masks = _file_index(root, (".png",))
    images = {Path(n).stem: p for n, p in _file_index(root, _IMAGE_SUFFIXES).items() if _IMAGE_NAME.match(n)}
    for iid, rows in chosen.items():
        img_path = images.get(iid)
        if img_path is None:
            raise ReleaseFileMissing(f"{root}: image {iid} (.jpg) not found; put it in {IMAGES_ZIP} "
                                     f"(data/raw/isic/), see HOW_TO_GET")
        rgb = read_rgb(img_path)
        shape = rgb.shape[1:]
        label = np.zeros((3, 1, *shape), np.uint8)
        for r, row in enumerate(rows):
            name = row["seg_filename"].strip()
            if name not in masks:
                raise ReleaseFileMissing(f"{root}: mask {name} (listed in {seg_csv.name}) is not in segs.zip")
            label[r, 0] = _mask(masks[name], shape)
        yield Case(case_id=f"isic-{iid}", subject_id=f"isic-{subjects.get(iid, iid)}",
                   image=resize_image(rgb, cfg.size)[None], label=resize_label(label, cfg.size),
                   spacing=resized_spacing((1.0, 1.0, 1.0), shape, cfg.size),
                   extra={"source": str(img_path), "annotators": [r["annotator"].strip() for r in rows],
                          "masks": [r["seg_filename"].strip() for r in rows], "spacing_unit": "native pixel"})


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    return splits.choose(None, [c.subject_id for c in cases], cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

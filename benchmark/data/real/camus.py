"""CAMUS: Cardiac Acquisitions for Multi-structure Ultrasound Segmentation, 2D apical echocardiography of
500 patients (two- and four-chamber views, end-diastole and end-systole).

Native layouts (the converter reads whichever it finds; SimpleITK reads both formats):

- the NIfTI release on the HumanHeart portal (Girder folder ``63fde55f73e9f004868fb7ac``, downloaded as one
  zip named after the folder, ``CAMUS_public``)::

      CAMUS_public/database_nifti/patientNNNN/
          patientNNNN_{2CH,4CH}_{ED,ES}.nii.gz        one B-mode frame
          patientNNNN_{2CH,4CH}_{ED,ES}_gt.nii.gz     its manual label map
          patientNNNN_{2CH,4CH}_half_sequence[_gt].nii.gz, Info_{2CH,4CH}.cfg   (sequences: not used)
      CAMUS_public/database_split/subgroup_{training,validation,testing}.txt   one patient per line

- the older challenge release (``training.zip``: ``training/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.mhd``
  + ``.raw`` and ``_gt.mhd`` + ``.raw``, ``Info_{2CH,4CH}.cfg``, ``..._sequence.mhd``), listed in
  ``ALTERNATIVE_FILES``. Its ``testing.zip`` held the 50 challenge test patients without label maps; a
  patient with no ``_gt`` file at all is skipped as unlabelled, a single missing ``_gt`` is an error.

Labels (kept as they are): 0 background, 1 left-ventricle cavity (inside the endocardium), 2 myocardium
(between endocardium and epicardium), 3 left atrium.

Conversion: one case per (patient, view, phase) image, four per patient; the subject is the patient. Each
image is one slice, resized to the profile's size (image antialiased, labels nearest neighbour), intensity
as stored. The in-plane spacing is the file header's (x, y) in mm, reordered to (y, x) and rescaled by the
resize; z is a nominal 1.0 mm (one 2D frame). When both formats of the same image are present, the NIfTI
one is read.

Split (by patient): ``standard`` keeps the release's own patient lists when they are present --
``database_split/subgroup_{training,validation,testing}.txt`` of the NIfTI release (one train/val/test
partition of the paper's 10-fold scheme: 400/50/50 patients), else the 10-fold lists
``subGroup1_{training,validation,testing}.txt`` (fold 1) where someone kept them -- used as published,
validation included, so ``data.split`` fractions do not apply. A loaded patient missing from the lists is an
error. Without lists (the older release as downloaded) the split is seeded by patient (``data.split``).
The older challenge's own split (450 labelled training vs 50 unlabelled test patients) cannot be used for
scoring and is not reproduced.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import resize_image, resize_label, resized_spacing
from benchmark.data.interface import DataFormatError, ReleaseFileMissing
from benchmark.data.real import splits
from benchmark.data.real.medical_io import map_labels, read_scalar
from benchmark.data.real.source import PublishedSplit, RealSource, RemoteFile

INFO = DatasetInfo(name="camus", modality="ultrasound", channels=1, class_names=("background", "LV", "Myo", "LA"),
                   n_annotators=1, stands_for="CAMUS", phantom=False,
                   note="CAMUS: 500 patients x 2CH/4CH x ED/ES echocardiograms; LV cavity, myocardium, left atrium.")
FILES = (RemoteFile("CAMUS_public.zip",
                    "https://humanheart-project.creatis.insa-lyon.fr/database/api/v1/folder/"
                    "63fde55f73e9f004868fb7ac/download", checksum=None, size_mb=1500),)
# the older challenge release (mhd/raw); placed by hand in data/raw/camus/
ALTERNATIVE_FILES = ((RemoteFile("training.zip", None, checksum=None, size_mb=1000),),)
HOMEPAGE = "https://www.creatis.insa-lyon.fr/Challenge/camus/"
PUBLISHED_SPLIT = PublishedSplit(train_slices=1600, test_cases=200, test_slices=200, val_from_train=False,
                                 slice_subjects=False,
                                 source="CAMUS_public/database_split: 400 / 50 / 50 patients x 4 images "
                                        "(2CH, 4CH x ED, ES; this module's docstring)")
LICENCE = ("Released by CREATIS (Universite de Lyon) with NTNU and partners for non-commercial scientific "
           "research; every use must cite the CAMUS paper. Read the terms on the HumanHeart portal before use "
           "and do not redistribute the images.")
CITATION = ("S. Leclerc, E. Smistad, J. Pedrosa, A. Ostvik et al. Deep learning for segmentation using an open "
            "large-scale dataset in 2D echocardiography. IEEE Transactions on Medical Imaging 38(9):2198-2210, "
            "2019. doi:10.1109/TMI.2019.2900516")
HOW_TO_GET = ("The NIfTI release downloads by itself (CAMUS_public.zip). For the older release instead: open\n"
              "https://humanheart-project.creatis.insa-lyon.fr/database/ (CAMUS collection), download training.zip\n"
              "(mhd/raw) and place it, unrenamed, in data/raw/camus/.")
SPLITS = {"training": "train", "validation": "val", "testing": "test"}
_IMAGE = re.compile(r"^patient(\d{4})_(2CH|4CH)_(ED|ES)\.(nii\.gz|mhd)$")
_LIST_NAMES = ("subgroup_{}.txt", "subGroup1_{}.txt")   # NIfTI release; the 10-fold lists, fold 1


def _images(root: Path) -> dict[tuple[str, str, str], Path]:
    """``(patientNNNN, view, phase) -> image file``, NIfTI preferred over mhd."""
    found: dict[tuple[str, str, str], Path] = {}
    for path in sorted(Path(root).rglob("patient*_*CH_E*")):
        m = _IMAGE.match(path.name)
        if not m or not path.is_file():
            continue
        key = (f"patient{m[1]}", m[2], m[3])
        if key not in found or (m[4] == "nii.gz" and not found[key].name.endswith(".nii.gz")):
            found[key] = path
    if not found:
        raise ReleaseFileMissing(f"{root}: no patientNNNN_{{2CH,4CH}}_{{ED,ES}}.nii.gz or .mhd images; not a CAMUS "
                                 f"release (database_nifti/ of CAMUS_public.zip, or training/ of training.zip)")
    return found


def _gt_path(image: Path) -> Path:
    suffix = ".nii.gz" if image.name.endswith(".nii.gz") else ".mhd"
    return image.with_name(image.name[: -len(suffix)] + "_gt" + suffix)


def _patient_id(line: str, path: Path) -> str:
    m = re.search(r"(\d+)", line)
    if not m:
        raise DataFormatError(f"{path}: line {line!r} names no patient")
    return f"patient{int(m[1]):04d}"


def read_split_lists(root: Path) -> tuple[Path, dict[str, str]] | None:
    """The release's patient lists: ``(folder, {patientNNNN: "train" | "val" | "test"})``, None if absent."""
    for pattern in _LIST_NAMES:
        hits = sorted(Path(root).rglob(pattern.format("training")))
        if not hits:
            continue
        folder, out = hits[0].parent, {}
        for part, split in SPLITS.items():
            path = folder / pattern.format(part)
            if not path.is_file():
                raise ReleaseFileMissing(f"{path}: missing beside {hits[0].name}; the split lists come as three")
            for line in path.read_text().splitlines():
                if line.strip():
                    pid = _patient_id(line.strip(), path)
                    if out.get(pid, split) != split:
                        raise DataFormatError(f"{path}: {pid} is also in the {out[pid]} list")
                    out[pid] = split
        return folder, out
    return None


def _read(path: Path, what: str) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2D frame (a 3D file with one slice is accepted) and its (y, x) spacing."""
    arr, spacing = read_scalar(path, what)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr, spacing = arr[0], spacing[1:]
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected one 2D grey-level frame, got array shape {arr.shape}")
    return arr, (spacing[0], spacing[1])


def _label(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    arr, _ = _read(path, "label map")
    if arr.shape != shape:
        raise DataFormatError(f"{path}: label map {arr.shape} and image {shape} differ in shape")
    return map_labels(arr, path, {0: 0, 1: 1, 2: 2, 3: 3},
                      "0 background, 1 LV cavity, 2 myocardium, 3 left atrium")


def _quality(image: Path, view: str) -> str:
    cfg = image.parent / f"Info_{view}.cfg"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "ImageQuality":
                return value.strip()
    return ""


def load(root: Path, cfg: DataConfig):
    """Yield one case per labelled image: ``image`` ``(1, 1, S, S)``, ``label`` ``(1, 1, S, S)`` in {0..3}."""
    images = _images(root)
    lists = read_split_lists(root)
    labelled = {key[0] for key, path in images.items() if _gt_path(path).is_file()}
    for (pid, view, phase), path in sorted(images.items()):
        if pid not in labelled:          # no label map for any of its images: an unlabelled test patient
            continue
        image, (sy, sx) = _read(path, "image")
        label = _label(_gt_path(path), image.shape)
        yield Case(case_id=f"camus-{pid}_{view}_{phase}", subject_id=f"camus-{pid}",
                   image=resize_image(image.astype(np.float32), cfg.size)[None, None],
                   label=resize_label(label, cfg.size)[None, None],
                   spacing=resized_spacing((1.0, sy, sx), image.shape, cfg.size),
                   extra={"source": str(path), "view": view, "phase": phase,
                          "format": "nifti" if path.name.endswith(".nii.gz") else "mhd",
                          "quality": _quality(path, view),
                          "split_lists": str(lists[0]) if lists else "",
                          "listed_split": lists[1].get(pid, "") if lists else ""})


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    subjects = sorted({c.subject_id for c in cases})
    lists = sorted({c.extra.get("split_lists", "") for c in cases} - {""})
    if cfg.splits == "standard" and lists:
        listed = {c.subject_id: c.extra.get("listed_split", "") for c in cases}
        missing = sorted(s for s, v in listed.items() if not v)
        if missing:
            raise DataFormatError(f"camus: {len(missing)} loaded patients are in none of the split lists in {lists[0]} "
                                  f"(e.g. {missing[:3]}); set data.splits: seeded to split by patient instead")
        return listed
    return splits.choose(None, subjects, cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

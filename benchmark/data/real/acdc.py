"""ACDC: the Automated Cardiac Diagnosis Challenge (MICCAI 2017), cine-MRI short-axis stacks of 150 patients.

Native layout (the HumanHeart portal's Girder folder, downloaded as one zip; Girder names a folder download
``<folder name>.zip`` and roots its entries at the folder's name, which for this folder is ``database``)::

    database/MANDATORY_CITATION.md
    database/training/patient001/ ... patient100/      (100 patients)
    database/testing/patient101/ ... patient150/       (50 patients)
        Info.cfg                          "ED: 1", "ES: 12", "Group: DCM", "Height: ...", "NbFrame: 30", "Weight: ..."
        patientNNN_4d.nii.gz              the whole cine sequence (X, Y, Z, T); not used
        patientNNN_frameXX.nii.gz         the end-diastolic / end-systolic 3D volume (XX = the frame in Info.cfg)
        patientNNN_frameXX_gt.nii.gz      its manual label map

Labels (challenge evaluation page): 0 background, 1 right-ventricle cavity, 2 left-ventricle myocardium,
3 left-ventricle cavity; kept as they are (class names ``background, RV, Myo, LV``). Since the 2023 re-release
on the HumanHeart portal the 50 testing patients carry their label maps too.

Conversion: one case per (patient, phase) volume, so two per patient (ED and ES), found through the
``ED``/``ES`` frame numbers of ``Info.cfg`` (zero-padded to two digits in the file names). The 4D file and any
other frame are never read. Every short-axis slice is resized to the profile's size (image antialiased,
labels nearest neighbour); no reorientation, cropping or resampling along z. The array is the NIfTI voxel
grid as SimpleITK returns it, (z, y, x), and the spacing is the header's, reordered to (z, y, x) and rescaled
in-plane by the resize. Intensities stay as stored (the preprocess stage normalises).

Split (by patient; both phases of a patient always share a split): ``standard`` keeps the challenge's
100 ``training`` vs 50 ``testing`` patients, validation patients drawn from the training part
(``splits.choose``). ``seeded`` splits all 150 patients by the ``data.split`` fractions. Note: the
70/10/20 ACDC split popularised by TransUNet (and reused by many 2D papers) draws all three parts from the
100 training patients only; neither variant here reproduces its exact patient lists.

Choices the papers leave open: ED and ES are separate cases of the same subject (papers train on both
phases); slices are kept in their native order and count (5-18 per volume), including apical/basal slices
with no foreground.
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
from benchmark.data.real.source import RealSource, RemoteFile

INFO = DatasetInfo(name="acdc", modality="MRI", channels=1, class_names=("background", "RV", "Myo", "LV"),
                   n_annotators=1, stands_for="ACDC", phantom=False,
                   note="ACDC (HumanHeart release): 150 patients x ED/ES cine-MRI volumes; RV, myocardium, LV.")
FILES = (RemoteFile("database.zip",
                    "https://humanheart-project.creatis.insa-lyon.fr/database/api/v1/folder/"
                    "637218e573e9f0047faa00fc/download", checksum=None, size_mb=2300),)
HOMEPAGE = "https://www.creatis.insa-lyon.fr/Challenge/acdc/"
LICENCE = ("Released by CREATIS (Universite de Lyon) and the University Hospital of Dijon for non-commercial "
           "scientific research; every use must cite the ACDC paper (MANDATORY_CITATION.md in the release). "
           "Mirrors label it CC BY-NC-SA 4.0; read the terms on the HumanHeart portal before use and do not "
           "redistribute the images.")
CITATION = ("O. Bernard, A. Lalande, C. Zotti, F. Cervenansky et al. Deep learning techniques for automatic MRI "
            "cardiac multi-structures segmentation and diagnosis: is the problem solved? IEEE Transactions on "
            "Medical Imaging 37(11):2514-2525, 2018. doi:10.1109/TMI.2018.2837502")
HOW_TO_GET = ""
PARTS = ("training", "testing")
_PATIENT = re.compile(r"^patient(\d{3})$")


def _release_dirs(root: Path) -> dict[str, Path]:
    """``{"training": folder, "testing": folder}`` (either may be missing, not both)."""
    found: dict[str, Path] = {}
    for cfg in sorted(Path(root).rglob("Info.cfg")):
        patient_dir = cfg.parent
        part = patient_dir.parent.name
        if _PATIENT.match(patient_dir.name) and part in PARTS:
            found.setdefault(part, patient_dir.parent)
    if not found:
        raise ReleaseFileMissing(f"{root}: no training/patientNNN/Info.cfg or testing/patientNNN/Info.cfg; "
                                 f"not the ACDC release (database/ folder of the HumanHeart zip)")
    return found


def read_info(path: Path) -> dict[str, str]:
    """``Info.cfg`` as ``{key: value}``; ``ED`` and ``ES`` must be present and integers."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    for key in ("ED", "ES"):
        if not re.fullmatch(r"\d+", out.get(key, "")):
            raise DataFormatError(f"{path}: no integer '{key}: n' line (got {out.get(key)!r})")
    return out


def _read(path: Path, what: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A ``(z, y, x)`` volume and its spacing."""
    arr, spacing = read_scalar(path, what)
    if arr.ndim != 3:
        raise DataFormatError(f"{path}: expected a 3D volume, got array shape {arr.shape}")
    return arr, spacing


def _label(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    arr, _ = _read(path, "label map")
    if arr.shape != shape:
        raise DataFormatError(f"{path}: label volume {arr.shape} and image volume {shape} differ in shape")
    return map_labels(arr, path, {0: 0, 1: 1, 2: 2, 3: 3}, "0 background, 1 RV, 2 myocardium, 3 LV")


def load(root: Path, cfg: DataConfig):
    """Yield one case per ED/ES volume: ``image`` ``(Z, 1, S, S)``, ``label`` ``(1, Z, S, S)`` in {0..3}."""
    for part, folder in sorted(_release_dirs(root).items(), key=lambda kv: PARTS.index(kv[0])):
        for patient_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _PATIENT.match(p.name)):
            pid = patient_dir.name
            info_path = patient_dir / "Info.cfg"
            if not info_path.is_file():
                raise ReleaseFileMissing(f"{info_path}: missing; it names the ED and ES frames")
            info = read_info(info_path)
            for phase in ("ED", "ES"):
                frame = int(info[phase])
                stem = f"{pid}_frame{frame:02d}"
                image_path = patient_dir / f"{stem}.nii.gz"
                image, spacing = _read(image_path, f"{phase} image")
                label = _label(patient_dir / f"{stem}_gt.nii.gz", image.shape)
                yield Case(case_id=f"acdc-{stem}", subject_id=f"acdc-{pid}",
                           image=resize_image(image.astype(np.float32), cfg.size)[:, None],
                           label=resize_label(label, cfg.size)[None],
                           spacing=resized_spacing(spacing, image.shape[1:], cfg.size),
                           extra={"source": str(image_path), "part": part, "phase": phase, "frame": frame,
                                  "group": info.get("Group", "")})


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    return splits.by_part("acdc", cases, ("training",), cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

"""BraTS 2021: glioma sub-region segmentation in multi-parametric brain MRI (RSNA-ASNR-MICCAI, task 1).

Native layout: one tar, ``BraTS2021_Training_Data.tar`` (Synapse syn25829067, registration required),
holding 1251 case folders ``BraTS2021_NNNNN/`` with five NIfTI files each,
``BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz``: four co-registered, skull-stripped sequences resampled by the
organisers to 1 mm isotropic voxels on a 240 x 240 x 155 grid (SRI24 space), and the expert label map.
The case folders are found by their ``*_seg.nii.gz`` files anywhere under the extracted folder, so an extra
top-level folder does not matter.

Label mapping: BraTS ``0`` background, ``1`` necrotic tumour core (NCR), ``2`` peritumoral oedema (ED),
``4`` GD-enhancing tumour (ET) -> classes ``0, 1, 2, 3`` = ``("background", "NCR", "ED", "ET")``, the
classes of the suite's ``phantom-brain`` in the same order, so real and phantom cases are scored alike:
the evaluation scores each class (NCR, ED, ET) on its own, and the challenge's nested regions, declared
as unions of these disjoint labels: whole tumour WT = {1, 2, 3}, tumour core TC = {1, 3}, enhancing
tumour ET = {3}. Any other value in a label map (e.g. BraTS 2023's ET label 3) is an error.

Conversion, one case at a time:

- one input channel, :data:`MODALITY` (FLAIR). The paper feeds MRI as a single channel without saying
  which. FLAIR is chosen because it shows the whole tumour: oedema and infiltrated tissue are bright
  and the core stands out against it; it is also what the phantom imitates. The cost: the ET ring and
  the necrotic core are best seen on T1ce, so ET and NCR scores will trail those of four-channel methods.
  All four sequences and the label map must lie on one grid (size, spacing, origin, direction);
  otherwise the case is refused with an error naming the file that differs. Only the headers of the
  three unused sequences are read.
- orientation: every volume is reoriented to LPS before slicing, so array rows run anterior -> posterior
  and columns patient right -> left (the radiological view), whatever the file's direction matrix.
- axial slices: the tumour's axial extent, i.e. the contiguous run of slices from the lowest to the
  highest slice that carries any tumour label, widened by :data:`SLICE_MARGIN` slices on each side
  (clipped to the volume). Slices inside that run without tumour (multifocal tumours) are kept, so a case
  stays a contiguous sub-volume and 3-D surface distances remain meaningful. A label map without tumour
  is an error (every BraTS 2021 training case has one).
- resize: each slice, 240 x 240 -> ``size x size`` (image antialiased, label nearest), the in-plane
  spacing rescaled by :func:`~benchmark.data.imaging.resized_spacing`; the slice spacing is read from
  the header (1 mm). Intensities are left as stored (the preprocess stage z-scores every case).

Disk: the processed case files are uncompressed, ``size**2 * 5`` bytes per slice (float32 image plus uint8
label): 320 KiB at 256, 80 KiB at 128, 20 KiB at 64. Assuming tumours span about 65 axial slices on
average (an estimate, not a measured figure; whole tumours are typically 4-9 cm long), the 1251 cases
take about 27 GB at 256, 6.7 GB at 128 and 1.7 GB at 64. Keeping all 155 slices would be about 64 GB at
256, which is why only the tumour's extent is kept.

Subjects and split: BraTS 2021 has one pre-operative study per patient, so the subject is the case id.
There is no published split of the 1251 labelled cases (the validation and test labels were never
released): the cases are split by ``data.split`` fractions with seed ``data.seed``, which the manifest
records, whatever ``data.splits`` says.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import resize_image, resize_label, resized_spacing
from benchmark.data.interface import DataFormatError, ReleaseFileMissing
from benchmark.data.real import splits
from benchmark.data.real.medical_io import map_labels, read_scalar
from benchmark.data.real.source import RealSource, RemoteFile

INFO = DatasetInfo(name="brats2021", modality="MRI", channels=1, class_names=("background", "NCR", "ED", "ET"),
                   n_annotators=1, stands_for="BraTS 2021", phantom=False,
                   note="BraTS 2021 training set: 1251 glioma MRI cases, FLAIR only, axial slices spanning the "
                        "tumour; NCR, ED, ET scored as classes, and the regions WT, TC, ET.",
                   regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)})
FILES = (RemoteFile("BraTS2021_Training_Data.tar", None, checksum=None, size_mb=12500),)
HOMEPAGE = "https://www.synapse.org/#!Synapse:syn25829067"
LICENCE = ("Distributed through Synapse to registered users who accept the BraTS 2021 data-use terms: use for "
           "research, cite the BraTS papers below in any publication, and do not redistribute the data. Read the "
           "terms shown on Synapse before use; they, not this summary, bind you.")
CITATION = ("U. Baid, S. Ghodasara, S. Mohan et al. The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor "
            "Segmentation and Radiogenomic Classification. arXiv:2107.02314, 2021.\n"
            "B. H. Menze, A. Jakab, S. Bauer et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS). "
            "IEEE Transactions on Medical Imaging 34(10):1993-2024, 2015.\n"
            "S. Bakas, H. Akbari, A. Sotiras et al. Advancing The Cancer Genome Atlas glioma MRI collections with "
            "expert segmentation labels and radiomic features. Scientific Data 4:170117, 2017.")
HOW_TO_GET = """\
1. Create a Synapse account (https://www.synapse.org) and open the BraTS 2021 project,
   https://www.synapse.org/#!Synapse:syn25829067 (RSNA-ASNR-MICCAI BraTS 2021 challenge).
2. Register for the challenge / request data access there and accept the data-use terms.
3. From the task 1 (segmentation) training data, download BraTS2021_Training_Data.tar (about 12 GB;
   1251 case folders BraTS2021_NNNNN with flair, t1, t1ce, t2 and seg NIfTI files).
4. Put the tar, unopened and with that exact name, into data/raw/brats2021/ and run the fetch again."""

MODALITY = "flair"                              # the single input channel (see the module docstring)
SEQUENCES = ("flair", "t1", "t1ce", "t2")       # all must exist, on the label map's grid
SLICE_MARGIN = 0                                # slices kept beyond the tumour's axial extent, each side
LABEL_MAP = {0: 0, 1: 1, 2: 2, 4: 3}            # BraTS value -> class index
GRID_TOLERANCE = 1e-3                           # mm (spacing, origin) and direction cosines
_CASE = re.compile(r"^(BraTS2021_\d{5})_seg\.nii\.gz$")


def _case_folders(root: Path) -> list[tuple[str, Path]]:
    hits = sorted((m[1], p.parent) for p in root.rglob("BraTS2021_*_seg.nii.gz") if (m := _CASE.match(p.name)))
    if not hits:
        raise ReleaseFileMissing(f"{root}: no BraTS2021_NNNNN_seg.nii.gz files; not the BraTS 2021 training data "
                                 f"(BraTS2021_Training_Data.tar)")
    return hits


def _header(path: Path) -> sitk.ImageFileReader:
    if not path.is_file():
        raise ReleaseFileMissing(f"{path}: missing (every BraTS 2021 case has {', '.join(SEQUENCES)} and seg)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataFormatError(f"{path}: unreadable NIfTI header ({str(e).strip().splitlines()[-1]})") from e
    return reader


def _grid(r) -> dict[str, tuple]:
    return {"size": tuple(r.GetSize()), "spacing": tuple(r.GetSpacing()), "origin": tuple(r.GetOrigin()),
            "direction": tuple(r.GetDirection())}


def check_same_grid(paths: dict[str, Path], reference: str = "seg") -> None:
    """All ``paths`` (name -> NIfTI file) on the grid of ``paths[reference]``; ValueError naming the odd file."""
    ref = _grid(_header(paths[reference]))
    for name, path in paths.items():
        if name == reference:
            continue
        grid = _grid(_header(path))
        for what, want in ref.items():
            got = grid[what]
            same = got == want if what == "size" else (len(got) == len(want)
                                                      and np.allclose(got, want, atol=GRID_TOLERANCE))
            if not same:
                raise DataFormatError(f"{path}: not on the grid of {paths[reference].name}: {what} {got} vs {want}; "
                                      f"the case's sequences must be co-registered on one grid")


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(z, y, x)`` array in LPS order and its ``(z, y, x)`` spacing in mm."""
    arr, spacing = read_scalar(path, "NIfTI volume", orient="LPS")
    if arr.ndim != 3:
        raise DataFormatError(f"{path}: expected a scalar 3-D volume, got array shape {arr.shape}")
    return arr, spacing


def map_brats_labels(seg: np.ndarray, path: Path) -> np.ndarray:
    """BraTS values {0, 1, 2, 4} -> classes {0, 1, 2, 3}; ValueError naming ``path`` on any other value."""
    return map_labels(seg, path, LABEL_MAP, "BraTS 2021: 0 background, 1 NCR, 2 ED, 4 ET")


def tumour_slices(label: np.ndarray, margin: int = SLICE_MARGIN) -> tuple[int, int]:
    """``(first, stop)`` axial slice range: the tumour's extent widened by ``margin``, clipped to the volume."""
    z = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    if z.size == 0:
        raise DataFormatError("no tumour label in the volume")
    return max(0, int(z[0]) - margin), min(label.shape[0], int(z[-1]) + 1 + margin)


def load(root: Path, cfg: DataConfig):
    """Yield one case per BraTS case: ``image`` ``(Z, 1, S, S)`` FLAIR, ``label`` ``(1, Z, S, S)`` in 0..3."""
    for native, folder in _case_folders(Path(root)):
        paths = {m: folder / f"{native}_{m}.nii.gz" for m in (*SEQUENCES, "seg")}
        check_same_grid(paths)
        seg, spacing = _read(paths["seg"])
        raw = np.asarray(seg)
        if raw.dtype.kind == "f":
            if not np.all(raw == np.round(raw)):
                raise DataFormatError(f"{paths['seg']}: non-integer label values")
        label = map_brats_labels(raw, paths["seg"])
        try:
            z0, z1 = tumour_slices(label)
        except ValueError as e:
            raise DataFormatError(f"{paths['seg']}: {e}; every BraTS 2021 training case has a tumour") from e
        image, _ = _read(paths[MODALITY])
        image = image[z0:z1].astype(np.float32)
        label = label[z0:z1]
        yield Case(case_id=f"brats2021-{native}", subject_id=f"brats2021-{native}",
                   image=resize_image(image[:, None], cfg.size), label=resize_label(label[None], cfg.size),
                   spacing=resized_spacing(spacing, label.shape[1:], cfg.size),
                   extra={"source": str(paths[MODALITY]), "label_source": str(paths["seg"]),
                          "modality": MODALITY, "slices": [z0, z1]})


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    """No published split of the labelled cases: seeded fractions over patients (= cases)."""
    return splits.choose(None, [c.subject_id for c in cases], cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

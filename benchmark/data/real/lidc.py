"""LIDC-IDRI 2D lesion crops with four raters, from either of the two public preprocessed releases.

Release (a), ``FILES``, the default: the "LIDC 2D crops" DeepMind published with the Hierarchical
Probabilistic U-Net (Kohl et al. 2019), three archives in the public Google Cloud Storage folder
``gs://hpunet-data/lidc_crops/`` (``train.tar.gz``, ``val.tar.gz``, ``test.tar.gz``; fetched over
HTTPS from ``storage.googleapis.com``). Layout once extracted::

    <split>/images/LIDC-IDRI-NNNN/z-<z position>_c<crop>.png           CT crop, 180 x 180, 8-bit grey
    <split>/gt/LIDC-IDRI-NNNN/z-<z position>_c<crop>_l<rater>.png      binary mask of one rater (0 / 255)

with ``<split>`` one of ``train``, ``val``, ``test``, one folder per patient, ``<crop>`` numbering the
lesions cut from one slice and ``<rater>`` 0-3 (the release's README says 1-4, its own Colab and
every loader we found read ``_l0`` .. ``_l3``; both are accepted, the four masks sorted by id).
The release's README: CT resampled to 0.5 mm x 0.5 mm in plane, 180 x 180 crops centred on a lesion
that at least one reader outlined; 8843 / 1993 / 1980 crops from 530 / 111 / 103 patients.

Release (b), ``ALTERNATIVE_FILES``: ``data_lidc.pickle`` from Stefan Knegt's Probabilistic U-Net
PyTorch repository (Google Drive folder, no automated download): one dict, key = crop name, value
``{"image": float array 128 x 128 in [0, 1], "masks": list of 4 binary 128 x 128 arrays,
"series_uid": DICOM SeriesInstanceUID}``. Read with :func:`benchmark.data.safe_pickle.load_plain_pickle`
(numpy arrays only, never the plain unpickler); the whole dict is in memory while its cases are
yielded (the pickle format cannot be read piecewise).

Conversion: one case per crop, a stack of one slice. Image ``(1, 1, S, S)``: the PNG grey values
(release a) or the pickle's [0, 1] values (release b), resized, not rescaled (the preprocess stage
z-scores every case). Label ``(4, 1, S, S)``: rater k's mask, any non-zero pixel -> 1 (lesion),
0 background (mask values other than {0, 1} or {0, 255} are refused), nearest-neighbour resized.

Subject = patient. Release (a): the patient folder name (``LIDC-IDRI-NNNN``). Release (b): the
``LIDC-IDRI-NNNN`` inside the key when there is one, else the key's part before the first ``_``
(how published split scripts for this pickle read it), else ``series-<series_uid>`` (a scan, not
a patient: the few LIDC patients with two scans would then count twice; the key has been enough
in every use we found).

Split: ``data.splits: standard`` keeps release (a)'s own ``train`` / ``val`` / ``test`` folders as
they are (the README counts them by patient; a patient found in two folders is refused, and
``data.splits: seeded`` is the way out). Release (b) has no published split: seeded by patient
with ``data.split`` fractions (also what ``seeded`` does for release a).

Spacing: in-plane 0.5 mm per pixel, the resampling the crops' README states, rescaled by the resize
(180 px -> S px gives 0.5 * 180 / S mm). Release (b)'s preprocessing is undocumented; its 128 x 128
crops are taken to be the same 0.5 mm data cropped (the 180 x 180 crops trimmed by 26 px each side,
as Kohl et al. train on 128 x 128 windows of them). Slice thickness: neither release records it
(LIDC scans range 0.6-5 mm); a nominal ``SLICE_MM`` = 2.5 mm is written. It has no effect on 2D
metrics (each case is one slice).
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
from benchmark.data.real.medical_io import read_image
from benchmark.data.real.source import PublishedSplit, RealSource, RemoteFile
from benchmark.data.safe_pickle import load_plain_pickle

INFO = DatasetInfo(name="lidc", modality="CT", channels=1, class_names=("background", "lesion"),
                   n_annotators=4, stands_for="LIDC-IDRI", phantom=False,
                   note="LIDC-IDRI 2D lesion crops (Kohl et al. release), one CT slice per crop, four raters' masks.")
_BUCKET = "https://storage.googleapis.com/hpunet-data/lidc_crops/"
# No checksums are published for these archives; sizes are estimates (8843 / 1993 / 1980 PNG crops
# of about 25 kB plus four small masks each).
FILES = (RemoteFile("train.tar.gz", _BUCKET + "train.tar.gz", checksum=None, size_mb=230),
         RemoteFile("val.tar.gz", _BUCKET + "val.tar.gz", checksum=None, size_mb=52),
         RemoteFile("test.tar.gz", _BUCKET + "test.tar.gz", checksum=None, size_mb=52))
# Google Drive, no published checksum; size estimated from ~15k crops of 128 x 128 (image + 4 masks).
ALTERNATIVE_FILES = ((RemoteFile("data_lidc.pickle", None, checksum=None, size_mb=2000),),)
HOMEPAGE = "https://github.com/google-deepmind/deepmind-research/tree/master/hierarchical_probabilistic_unet"
PUBLISHED_SPLIT = PublishedSplit(train_slices=8843, test_cases=1980, test_slices=1980, val_from_train=False,
                                 slice_subjects=True,
                                 source="the lidc_crops README (Kohl et al. 2019): 8843 / 1993 / 1980 crops "
                                        "in train / val / test (this module's docstring)")
LICENCE = ("LIDC-IDRI (The Cancer Imaging Archive) is released under Creative Commons Attribution 3.0; the "
           "2D crops derived from it by DeepMind are released under the same CC BY 3.0 licence. Use, share and "
           "adapt with attribution: cite the LIDC-IDRI papers and the TCIA data DOI below. The Probabilistic "
           "U-Net pickle (alternative release) is a third-party derivative with no licence of its own beyond "
           "LIDC-IDRI's.")
CITATION = ("S. G. Armato III, G. McLennan, L. Bidaut et al. The Lung Image Database Consortium (LIDC) and Image "
            "Database Resource Initiative (IDRI): a completed reference database of lung nodules on CT scans. "
            "Medical Physics 38(2):915-931, 2011.\n"
            "S. G. Armato III et al. Data from LIDC-IDRI. The Cancer Imaging Archive, 2015. "
            "doi:10.7937/K9/TCIA.2015.LO9QL9SX\n"
            "S. A. A. Kohl, B. Romera-Paredes, K. H. Maier-Hein et al. A Hierarchical Probabilistic U-Net for "
            "Modeling Multi-Scale Ambiguities. arXiv:1905.13077, 2019 (the 2D crops).\n"
            "S. A. A. Kohl, B. Romera-Paredes, C. Meyer et al. A Probabilistic U-Net for Segmentation of "
            "Ambiguous Images. NeurIPS 2018.")
HOW_TO_GET = """\
The crops download by themselves (segbench fetch lidc). Where storage.googleapis.com cannot be reached,
on a machine with the Google Cloud SDK:
    gsutil cp gs://hpunet-data/lidc_crops/train.tar.gz gs://hpunet-data/lidc_crops/val.tar.gz \\
              gs://hpunet-data/lidc_crops/test.tar.gz .
and copy the three files, unopened, into data/raw/lidc/.
Alternative release (used only when the three archives are absent): download data_lidc.pickle from the
Google Drive folder linked in https://github.com/stefanknegt/Probabilistic-Unet-Pytorch (README, "Train
on LIDC Dataset") and place it in data/raw/lidc/data_lidc.pickle.
"""
PICKLE_NAME = "data_lidc.pickle"
MM_PER_PIXEL = 0.5       # in-plane, both releases (see the module docstring)
SLICE_MM = 2.5           # nominal: the crops record no slice thickness
PARTS = ("train", "val", "test")
_IMAGE = re.compile(r"^z-(?P<z>.+)_c(?P<crop>\d+)\.png$")
_PATIENT = re.compile(r"LIDC-IDRI-\d{4}")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------------- helpers
def _binary(mask: np.ndarray, where: str) -> np.ndarray:
    values = np.unique(mask)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        raise DataFormatError(f"{where}: a rater mask should hold 0/1 or 0/255, found values {values[:8].tolist()}")
    return mask > 0


def _grey(path: Path) -> np.ndarray:
    """A PNG as a 2D array of its grey values (a grey image stored as RGB/RGBA gives its first channel)."""
    arr = read_image(path, "PNG")
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                      and np.array_equal(arr[..., 0], arr[..., 2])):
            raise DataFormatError(f"{path}: a colour image; the crops are grey CT slices")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected a 2D grey image, got shape {arr.shape}")
    return arr


def _case(case_id: str, subject: str, image: np.ndarray, masks: list[np.ndarray], cfg: DataConfig,
          extra: dict) -> Case:
    label = np.stack(masks)[:, None]                                    # (4, 1, H, W)
    return Case(case_id=case_id, subject_id=subject,
                image=resize_image(image.astype(np.float32)[None, None], cfg.size),
                label=resize_label(label, cfg.size),
                spacing=resized_spacing((SLICE_MM, MM_PER_PIXEL, MM_PER_PIXEL), image.shape, cfg.size),
                extra=extra)


# ---------------------------------------------------------------------------------------------- release (a)
def _crop_parts(root: Path) -> list[tuple[str, Path, Path]]:
    """``(part, images folder, gt folder)`` for each extracted split of the crops release."""
    out = []
    for images in sorted(p for p in root.rglob("images") if p.is_dir() and (p.parent / "gt").is_dir()):
        part = images.parent.name
        if part not in PARTS:
            raise DataFormatError(f"{images}: cannot tell which split this is; the crops release keeps images/ and gt/ "
                                  f"in a folder named {' / '.join(PARTS)}, this one is in {images.parent.name!r}")
        out.append((part, images, images.parent / "gt"))
    return sorted(out, key=lambda t: (PARTS.index(t[0]), str(t[1])))


def _rater_masks(gt_patient: Path, stem: str, image_path: Path) -> list[Path]:
    pat = re.compile(rf"^{re.escape(stem)}_l(\d+)\.png$")
    found = sorted(((int(m[1]), p) for p in gt_patient.glob(f"{stem}_l*.png") if (m := pat.match(p.name))),
                   key=lambda t: t[0]) if gt_patient.is_dir() else []
    ids = [i for i, _ in found]
    if ids not in ([0, 1, 2, 3], [1, 2, 3, 4]):
        raise ReleaseFileMissing(f"{image_path}: expected four rater masks {gt_patient / (stem + '_l0.png')} .. "
                                 f"_l3.png (or _l1 .. _l4), found rater ids {ids}")
    return [p for _, p in found]


def _load_crops(parts: list[tuple[str, Path, Path]], cfg: DataConfig):
    for part, images, gt in parts:
        for patient_dir in sorted(p for p in images.iterdir() if p.is_dir()):
            patient = patient_dir.name
            for path in sorted(p for p in patient_dir.iterdir() if p.suffix.lower() == ".png"
                               and not p.name.startswith(".")):
                m = _IMAGE.match(path.name)
                if not m:
                    raise DataFormatError(f"{path}: not a crop name of the form z-<position>_c<crop>.png")
                image = _grey(path)
                masks = []
                for mpath in _rater_masks(gt / patient, path.stem, path):
                    mask = _grey(mpath)
                    if mask.shape != image.shape:
                        raise DataFormatError(f"{mpath}: mask {mask.shape} and image {image.shape} differ in size")
                    masks.append(_binary(mask, str(mpath)))
                yield _case(f"lidc-{patient}_{path.stem}", patient, image, masks, cfg,
                            {"source": str(path), "part": part, "release": "hpunet-crops",
                             "z_position": m["z"], "crop": int(m["crop"])})


# ---------------------------------------------------------------------------------------------- release (b)
def patient_of(key: str, series_uid) -> str:
    """The patient of one pickle entry: ``LIDC-IDRI-NNNN`` in the key, else the key's part before ``_``,
    else ``series-<series_uid>``."""
    m = _PATIENT.search(key)
    if m:
        return m[0]
    head = key.split("_")[0]
    if "_" in key and head:
        return head
    if series_uid is None or str(series_uid) == "":
        raise DataFormatError(f"pickle entry {key!r}: neither the key nor a series_uid names its patient")
    return f"series-{series_uid}"


def _load_pickle(path: Path, cfg: DataConfig):
    data = load_plain_pickle(path)
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{path}: expected a non-empty dict of crops, got {type(data).__name__}")
    for key in sorted(data, key=str):
        entry = data.pop(key)      # free each crop once converted: the dict is the largest thing in memory
        where = f"{path} [{key!r}]"
        if not isinstance(entry, dict) or "image" not in entry or "masks" not in entry:
            raise DataFormatError(f"{where}: expected a dict with 'image', 'masks' and 'series_uid'")
        image = np.asarray(entry["image"])
        masks = [np.asarray(m) for m in entry["masks"]]
        if image.ndim != 2:
            raise DataFormatError(f"{where}: image has shape {image.shape}, expected 2D")
        if len(masks) != INFO.n_annotators or any(m.shape != image.shape for m in masks):
            raise DataFormatError(f"{where}: expected {INFO.n_annotators} masks of shape {image.shape}, got "
                                  f"{[m.shape for m in masks]}")
        patient = patient_of(str(key), entry.get("series_uid"))
        yield _case(f"lidc-{_SAFE.sub('_', str(key))}", patient, image, [_binary(m, where) for m in masks], cfg,
                    {"source": f"{path}#{key}", "part": None, "release": "prob-unet-pickle",
                     "series_uid": str(entry.get("series_uid", ""))})


# ---------------------------------------------------------------------------------------------- contract
def load(root: Path, cfg: DataConfig):
    """Yield one case per crop: ``image`` ``(1, 1, S, S)`` float32, ``label`` ``(4, 1, S, S)`` in {0, 1}."""
    root = Path(root)
    parts = _crop_parts(root)
    if parts:
        yield from _load_crops(parts, cfg)
        return
    pickles = sorted(root.rglob(PICKLE_NAME))
    if pickles:
        yield from _load_pickle(pickles[0], cfg)
        return
    raise ReleaseFileMissing(f"{root}: neither the LIDC crops (train/ val/ test/ folders holding images/ and gt/) "
                             f"nor {PICKLE_NAME}")


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    parts: dict[str, set[str]] = {}
    for c in cases:
        parts.setdefault(c.subject_id, set()).add(c.extra.get("part"))
    subjects = sorted(parts)
    published = all(p <= set(PARTS) for p in parts.values())
    if not published or cfg.splits != "standard":
        return splits.choose(None, subjects, cfg)
    twice = {s: sorted(p) for s, p in parts.items() if len(p) > 1}
    if twice:
        shown = ", ".join(f"{s} in {'+'.join(p)}" for s, p in sorted(twice.items())[:5])
        raise DataFormatError(f"lidc: patients in more than one published folder ({shown}); the release's split "
                              f"would leak; set data.splits: seeded to split by patient instead")
    return {s: next(iter(p)) for s, p in parts.items()}


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

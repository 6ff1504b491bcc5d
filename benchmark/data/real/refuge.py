"""REFUGE-2 with seven raters: optic disc and cup in colour fundus photographs (the MedSegDiff release).

Native layout (one zip, ``REFUGE-Multirater.zip`` on the Hugging Face dataset
``realslimman/REFUGE-MultiRater``, the copy MedSegDiff's download script fetches): a folder
``REFUGE-Multirater/`` holding ``Training-400/`` and ``Test-400/``, one sub-folder per image named
``NAME`` with ``NAME.jpg`` (RGB fundus photograph), ``NAME_seg_cup_{1..7}.png`` and
``NAME_seg_disc_{1..7}.png`` (one binary mask per rater and structure). The zip was packed on a Mac:
a ``__MACOSX/`` tree of ``._*`` resource forks sits beside the data and is ignored here. A
``Validation-400/`` folder is read as well should a copy carry one (MedSegDiff reads only Training and Test).

Mask values: 8-bit PNGs with the structure at 255 and background at 0 (MedSegDiff's loader keeps
``ToTensor(mask) > 0.5``, i.e. values above 127, as the structure); masks stored as 0/1 are accepted
too. The disc mask covers the whole disc, cup included (MedSegDiff's own "disc * 0.5 + cup" overlay
relies on that). A mask whose foreground covers more than half the image is refused as inverted (the
original REFUGE ground truth is stored inverted, 0 = structure; the disc is a few percent of a fundus
photograph).

Label mapping, per rater: 0 background; 1 optic disc RIM (the disc mask minus the cup mask); 2 optic
cup (the cup mask; the cup wins where a rater's cup strays outside their disc). This is the class
layout of ``phantom-fundus``. The evaluation regions are REFUGE's: ``disc`` = classes 1 + 2 (the whole
disc, cup included, what REFUGE and the papers score as "disc") and ``cup`` = class 2;
:mod:`benchmark.reproduction` scores "REFUGE2-Disc" on region disc and "REFUGE2-Cup" on region cup. Rater ``k`` (1..7) is label row ``k - 1``: label ``(7, 1, S, S)`` uint8.

Conversion: the image stays RGB (3 channels), resized antialiased to the profile's size; each rater's
label is resized nearest-neighbour (:mod:`benchmark.data.imaging`). Intensities are not normalised.

Spacing: the JPEGs carry no pixel size and REFUGE mixes two cameras (Zeiss Visucam 500 for the
training part, Canon CR-2 for validation and test) at different resolutions, so no single physical
value is defensible. The spacing is in units of one native pixel, ``(1, 1, 1)`` before the resize,
rescaled by it: HD95 on this dataset is in native pixels, not mm (``extra["spacing_unit"]``).

Subjects: REFUGE gives one image per eye and its names carry no patient identifier, so each image is
its own subject, ``refuge2-<part>-<NAME>`` (the part keeps equal names in two parts apart). Case ids
are the same string.

Split: ``standard`` keeps the published one, ``Training-400`` (and a ``Validation-400`` if present)
vs ``Test-400``, validation drawn from the training images; ``seeded`` splits all images by
``data.split``.

The official single-consensus REFUGE / REFUGE-2 release (grand-challenge, AI Studio) is registration
gated and stores one fused mask per image; this converter reads only the seven-rater release.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import resize_image, resize_label, resized_spacing
from benchmark.data.interface import DataFormatError, ReleaseFileMissing
from benchmark.data.real import splits
from benchmark.data.real.medical_io import is_os_debris, read_image, read_rgb
from benchmark.data.real.source import PublishedSplit, RealSource, RemoteFile

INFO = DatasetInfo(name="refuge2", modality="fundus", channels=3,
                   class_names=("background", "optic disc", "optic cup"), n_annotators=7,
                   stands_for="REFUGE-2", phantom=False,
                   note="REFUGE seven-rater release (MedSegDiff's copy); classes rim (disc minus cup) and cup, "
                        "regions disc (rim + cup, the whole disc) and cup; HD95 in native pixels.",
                   regions={"disc": (1, 2), "cup": (2,)})
FILES = (RemoteFile("REFUGE-Multirater.zip",
                    "https://huggingface.co/datasets/realslimman/REFUGE-MultiRater/resolve/main/REFUGE-Multirater.zip",
                    checksum=None, size_mb=800),)
HOMEPAGE = "https://huggingface.co/datasets/realslimman/REFUGE-MultiRater"
PUBLISHED_SPLIT = PublishedSplit(train_slices=400, test_cases=400, test_slices=400, val_from_train=True,
                                 slice_subjects=True,
                                 source="Training-400 and Test-400 of REFUGE-Multirater.zip (this module's docstring)")
LICENCE = ("Images from the REFUGE challenge (Retinal Fundus Glaucoma Challenge, MICCAI 2018; REFUGE-2 2020), "
           "released for non-commercial research by the organisers after registration. The seven-rater masks are "
           "a third-party copy on Hugging Face with no licence we could confirm (a dataset catalogue lists CC "
           "BY-NC-SA). Treat it as non-commercial research use only, do not redistribute the data, and cite the "
           "REFUGE papers.")
CITATION = ("J. I. Orlando, H. Fu, J. Barbosa Breda et al. REFUGE Challenge: A unified framework for evaluating "
            "automated methods for glaucoma assessment from fundus photographs. Medical Image Analysis 59:101570, "
            "2020.\nH. Fang, F. Li, J. Wu et al. REFUGE2 Challenge: A treasure trove for multi-dimension analysis "
            "and evaluation in glaucoma screening. arXiv:2202.08994, 2022.")
HOW_TO_GET = """\
Nothing to register for: `segbench fetch refuge2` downloads REFUGE-Multirater.zip (seven raters per image)
from Hugging Face into data/downloads/refuge2/. Where that host cannot be reached, download
https://huggingface.co/datasets/realslimman/REFUGE-MultiRater/resolve/main/REFUGE-Multirater.zip elsewhere
and place it, unchanged, in data/raw/refuge2/.
Not used here: the official single-consensus REFUGE-2 release (one fused mask per image) is on
https://refuge.grand-challenge.org/ (grand-challenge account, join the challenge) and on Baidu AI Studio
(account); this converter reads only the seven-rater release."""
N_RATERS = 7
PARTS = {"Training-400": "training", "Validation-400": "validation", "Test-400": "test"}
TRAIN_PARTS = ("training", "validation")


def _part_dirs(root: Path) -> list[tuple[str, Path]]:
    found = sorted((PARTS[p.name], p) for p in root.rglob("*-400") if p.is_dir() and p.name in PARTS
                   and not is_os_debris(p.relative_to(root)))
    if not found:
        raise ReleaseFileMissing(f"{root}: no Training-400/ or Test-400/ folder; not the REFUGE-Multirater release")
    seen: dict[str, Path] = {}
    for part, folder in found:
        if part in seen:
            raise DataFormatError(f"{root}: two {folder.name}/ folders ({seen[part]} and {folder}); "
                                  f"extract one copy only")
        seen[part] = folder
    return found


def _mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """One rater's binary mask: 255 (or 1) is the structure."""
    if not path.is_file():
        raise ReleaseFileMissing(f"{path}: rater mask missing (each image needs {N_RATERS} cup and "
                                 f"{N_RATERS} disc masks)")
    arr = read_image(path, "rater mask", "L")
    if arr.shape != shape:
        raise DataFormatError(f"{path}: mask {arr.shape} and image {shape} differ in size")
    fg = arr > (127 if arr.max() > 1 else 0)
    if fg.mean() > 0.5:
        raise DataFormatError(f"{path}: the structure covers {fg.mean():.0%} of the image; the mask looks inverted "
                              f"(expected the disc/cup at 255 on a 0 background)")
    return fg


def load(root: Path, cfg: DataConfig):
    """Yield one case per image: ``image`` ``(1, 3, S, S)``, ``label`` ``(7, 1, S, S)`` in {0, 1, 2}."""
    root = Path(root)
    n = 0
    for part, folder in _part_dirs(root):
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not is_os_debris(p)):
            name = sub.name
            img_path = sub / f"{name}.jpg"
            if not img_path.is_file():
                raise ReleaseFileMissing(f"{img_path}: image missing from its folder")
            rgb = read_rgb(img_path)
            shape = rgb.shape[1:]
            label = np.zeros((N_RATERS, 1, *shape), np.uint8)
            for k in range(1, N_RATERS + 1):
                disc = _mask(sub / f"{name}_seg_disc_{k}.png", shape)
                cup = _mask(sub / f"{name}_seg_cup_{k}.png", shape)
                label[k - 1, 0][disc] = 1
                label[k - 1, 0][cup] = 2
            cid = f"refuge2-{part}-{name}"
            n += 1
            yield Case(case_id=cid, subject_id=cid, image=resize_image(rgb, cfg.size)[None],
                       label=resize_label(label, cfg.size),
                       spacing=resized_spacing((1.0, 1.0, 1.0), shape, cfg.size),
                       extra={"source": str(img_path), "part": part, "spacing_unit": "native pixel"})
    if n == 0:
        raise ReleaseFileMissing(f"{root}: the REFUGE part folders hold no image folders")


def split(cases: list[Case], cfg: DataConfig) -> dict[str, str]:
    return splits.by_part("refuge2", cases, TRAIN_PARTS, cfg)


def source() -> RealSource:
    """This dataset (the ``segbench.datasets`` entry point names this function)."""
    return RealSource(sys.modules[__name__])

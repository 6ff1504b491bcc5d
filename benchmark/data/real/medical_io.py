"""Reading the real datasets' image files (NIfTI, MetaImage, and RGB photographs) and checking label values.

One place for the errors every converter owes its user: a missing file, an unreadable one, a
multi-component image where a scalar is expected, and label values the release does not define, each
naming the file. Also what every converter skips while walking a release: macOS archive debris.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from benchmark.data.interface import DataFormatError


def read_scalar(path: Path, what: str, orient: str | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """The array of a scalar image (numpy axis order: ``(z, y, x)`` or ``(y, x)``) and its spacing in mm in
    the same order. ``orient``: reorient a 3D image first (e.g. ``"LPS"``), so axes mean the same in every file.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says it is the ``what``).
        ValueError: unreadable, or more than one component per pixel.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {what} is missing")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise DataFormatError(f"{path}: unreadable {what} ({str(e).strip().splitlines()[-1]})") from e
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataFormatError(f"{path}: the {what} has {img.GetNumberOfComponentsPerPixel()} components per pixel, "
                              f"expected one")
    if orient and img.GetDimension() == 3:
        img = sitk.DICOMOrient(img, orient)
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in reversed(img.GetSpacing()))


def map_labels(label: np.ndarray, path: Path, mapping: dict[int, int], meaning: str) -> np.ndarray:
    """Release label values -> class indices (uint8) by ``mapping``; ValueError naming ``path`` for any value
    outside it. ``meaning`` lists the release's values for the message, e.g. ``"0 background, 1 RV"``."""
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in mapping]
    if bad:
        raise DataFormatError(f"{path}: label values {values.tolist()[:12]} include {bad[:10]}, which are not among "
                              f"the release's values ({meaning})")
    lut = np.zeros(max(mapping) + 1, np.uint8)
    for value, cls in mapping.items():
        lut[value] = cls
    return lut[label.astype(np.int64)]


def read_rgb(path: Path) -> np.ndarray:
    """An RGB image (JPG, PNG, BMP, TIFF; grey or palette images are expanded) as float32 ``(3, H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the image is missing")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    except OSError as e:
        raise DataFormatError(f"{path}: unreadable image ({e})") from e


def is_os_debris(path: Path) -> bool:
    """macOS archive leftovers (``__MACOSX/`` folders, ``._*`` resource forks), never part of a release."""
    path = Path(path)
    return "__MACOSX" in path.parts or path.name.startswith("._")

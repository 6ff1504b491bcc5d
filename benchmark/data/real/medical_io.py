"""Reading the real datasets' files (NIfTI, MetaImage, PNG/JPEG/BMP/TIFF images, CSV tables) and checking
label values.

One place for the errors every converter owes its user: a missing file, an unreadable, truncated or malformed
one, a multi-component image where a scalar is expected, and label values the release does not define, each
one :class:`~benchmark.data.interface.DataFormatError` (or
:class:`~benchmark.data.interface.ReleaseFileMissing`) naming the file, never a library's own exception. Also
what every converter skips while walking a release: macOS archive debris.
"""
from __future__ import annotations

import csv
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from benchmark.data.interface import DataFormatError, ReleaseFileMissing

# What Pillow raises for a truncated, corrupt or hostile image besides OSError (its UnidentifiedImageError and
# "image file is truncated" are OSErrors): decoders' struct and zlib errors, SyntaxError from some plugins,
# a decompression bomb.
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error,
               Image.DecompressionBombError)


def read_scalar(path: Path, what: str, orient: str | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """The array of a scalar image (numpy axis order: ``(z, y, x)`` or ``(y, x)``) and its spacing in mm in
    the same order. ``orient``: reorient a 3D image first (e.g. ``"LPS"``), so axes mean the same in every file.

    Raises:
        ReleaseFileMissing: ``path`` does not exist (the message says it is the ``what``).
        DataFormatError: unreadable or truncated (a ``.gz`` is read to its end first: ITK pads a truncated
            one with zeros), a MetaImage whose data file is unreadable (named too), or more than one
            component per pixel.
    """
    path = Path(path)
    if not path.is_file():
        raise ReleaseFileMissing(f"{path}: the {what} is missing")
    if path.name.lower().endswith(".gz"):
        _check_gzip(path, what)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        data = _metaimage_data_file(path)
        of = f"; its data file is {data}" if data is not None else ""
        raise DataFormatError(f"{path}: unreadable {what} ({str(e).strip().splitlines()[-1]}){of}") from e
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataFormatError(f"{path}: the {what} has {img.GetNumberOfComponentsPerPixel()} components per pixel, "
                              f"expected one")
    if orient and img.GetDimension() == 3:
        img = sitk.DICOMOrient(img, orient)
    arr = sitk.GetArrayFromImage(img)
    data = _metaimage_data_file(path, raw_only=True)
    if data is not None and data.stat().st_size != arr.nbytes:
        raise DataFormatError(f"{path}: its data file {data} holds {data.stat().st_size} bytes, the header "
                              f"describes {arr.nbytes} (a truncated or wrong data file)")
    return arr, tuple(float(s) for s in reversed(img.GetSpacing()))


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


def _check_gzip(path: Path, what: str) -> None:
    """Decompress ``path`` to its end, refusing a truncated or corrupt stream."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path}: truncated or corrupt gzip {what} ({e or type(e).__name__})") from e


def _metaimage_data_file(path: Path, raw_only: bool = False) -> Path | None:
    """The data file a MetaImage header (``.mhd``) names, or None (another format, data in the header).
    ``raw_only``: None also when the data is compressed or starts after a header, so that the file's size must
    be the pixels' bytes."""
    if path.suffix.lower() != ".mhd":
        return None
    try:
        fields = dict(line.partition("=")[::2] for line in path.read_text(errors="replace").splitlines())
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("ElementDataFile", "")
    if name in ("", "LOCAL", "LIST"):
        return None
    compressed = fields.get("CompressedData", "False").lower() == "true" or fields.get("HeaderSize", "0") != "0"
    if raw_only and (compressed or not (path.parent / name).is_file()):
        return None
    return path.parent / name


def read_image(path: Path, what: str = "image", mode: str | None = None) -> np.ndarray:
    """The pixels of a PNG, JPEG, BMP or TIFF file as an array (converted to Pillow ``mode`` when given).

    Raises:
        ReleaseFileMissing: ``path`` does not exist.
        DataFormatError: not an image, truncated or corrupt, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ReleaseFileMissing(f"{path}: the {what} is missing")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except _PIL_ERRORS as e:
        raise DataFormatError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from e


def read_rgb(path: Path) -> np.ndarray:
    """An RGB image (JPG, PNG, BMP, TIFF; grey or palette images are expanded) as float32 ``(3, H, W)``."""
    return read_image(path, "image", "RGB").astype(np.float32).transpose(2, 0, 1)


def read_csv(path: Path, what: str = "table") -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts keyed by the stripped column names.

    Raises:
        ReleaseFileMissing: ``path`` does not exist.
        DataFormatError: not UTF-8 text, malformed, empty, or a row with fewer fields than the header (a
            cut-off file) or more that are not empty, naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ReleaseFileMissing(f"{path}: the {what} is missing")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataFormatError(f"{path}: not a readable CSV {what} ({type(e).__name__}: {e})") from e
    if not rows or not any(h.strip() for h in rows[0]):
        raise DataFormatError(f"{path}: the CSV {what} is empty (no header line)")
    header = [h.strip() for h in rows[0]]
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < len(header) or any(v.strip() for v in row[len(header):]):
            raise DataFormatError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)} "
                                  f"(a cut-off or malformed file?)")
        out.append(dict(zip(header, row)))
    return out


def csv_header(path: Path, what: str = "table") -> list[str]:
    """The stripped column names of a CSV file (its first line); errors as :func:`read_csv`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataFormatError(f"{path}: not a readable CSV {what} ({type(e).__name__}: {e})") from e


def is_os_debris(path: Path) -> bool:
    """macOS archive leftovers (``__MACOSX/`` folders, ``._*`` resource forks), never part of a release."""
    path = Path(path)
    return "__MACOSX" in path.parts or path.name.startswith("._")

"""The slice store: a split's slices in two uncompressed ``.npy`` files, read through a memory map.

A training split can be larger than memory (BraTS at 256 px: about 14 GB), so the trainer does not concatenate
its cases in RAM. The store is written once, case by case (never more than one case in memory), into
``<processed>.slices/<split>/`` beside the processed dataset (not inside it: ``data/processed/NAME`` is a DVC
output, and a folder added to it would make DVC see the dataset changed):

- ``images.npy``: float32 ``(N, C, H, W)``;
- ``labels.npy``: uint8 ``(N, R, H, W)``, R raters;
- ``key.json``: the sha256 of the manifest the store was built from, the split, the shapes and the cases.

A store made from another manifest (the dataset was preprocessed again) is rebuilt. The folder is built aside
and swapped in whole (:func:`benchmark.data.store.staged_folder`), under a lock (:func:`benchmark.lock.exclusive`),
so concurrent openers (the ranks of one run, two runs on one dataset) build it once and never see half of it. The
arrays are opened with ``np.load(mmap_mode="r")``; a mapping keeps the files it was opened on, so a store rebuilt
while a run reads it changes nothing for that run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.data.manifest import Manifest, ManifestError, file_sha256, load_manifest
from benchmark.data.store import CaseFileError, load_case, staged_folder, write_json
from benchmark.lock import exclusive

KEY = "key.json"
FORMAT = 1


def store_folder(processed: Path, split: str) -> Path:
    """Where the store of ``split`` of the processed dataset ``processed`` lives by default."""
    processed = Path(processed)
    return processed.parent / f"{processed.name}.slices" / split


def open_store(processed: Path, split: str = "train", folder: Path | None = None) -> tuple[np.memmap, np.memmap]:
    """Images float32 ``(N, C, H, W)`` and labels uint8 ``(N, R, H, W)`` of ``split``, memory-mapped read-only
    from the store in ``folder`` (default :func:`store_folder`), which is built first when it is missing, was made
    from another manifest, or is unreadable.

    Raises:
        ManifestError: the manifest is missing or invalid, or the split has no cases.
        CaseFileError: a case file is missing, not the file the manifest hashed, invalid, or its raters or slice
            shape differ from the other cases'.
    """
    processed = Path(processed)
    folder = Path(folder) if folder is not None else store_folder(processed, split)
    manifest = load_manifest(processed)
    manifest_sha = file_sha256(manifest.path)
    with exclusive(folder.parent, "train", wait=True):
        arrays = _open(folder, manifest_sha, split)
        if arrays is None:
            _build(processed, manifest, split, folder, manifest_sha)
            arrays = _open(folder, manifest_sha, split)
    if arrays is None:
        raise RuntimeError(f"{folder}: the slice store just built does not open")
    return arrays


def _open(folder: Path, manifest_sha: str, split: str) -> tuple[np.memmap, np.memmap] | None:
    """The store's arrays, or None when it is missing, of another manifest or split, or not what its key says."""
    try:
        key = json.loads((folder / KEY).read_text())
        if (key.get("format"), key.get("manifest_sha256"), key.get("split")) != (FORMAT, manifest_sha, split):
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy", mmap_mode="r")
    except (OSError, ValueError):  # missing, truncated or not JSON / not .npy
        return None
    if (list(images.shape), list(labels.shape)) != (key["images"], key["labels"]) or \
            (images.dtype, labels.dtype) != (np.float32, np.uint8):
        return None
    return images, labels


def _build(processed: Path, manifest: Manifest, split: str, folder: Path, manifest_sha: str) -> None:
    info = manifest.dataset
    entries = manifest.split(split)
    if not entries:
        raise ManifestError(f"{manifest.path}: the {split} split has no cases")
    n = sum(e.n_slices for e in entries)
    with staged_folder(folder) as tmp, open(tmp / "images.npy", "wb") as fi, open(tmp / "labels.npy", "wb") as fl:
        first: tuple[int, ...] | None = None
        for e in entries:
            path = processed / e.file
            case = load_case(path, e.case_id, e.subject_id, info.num_classes, info.channels, e.sha256)
            z, c, h, w = case.image.shape
            raters = case.label.shape[0]
            if raters != info.n_annotators:
                raise CaseFileError(path, f"{raters} raters, the dataset declares {info.n_annotators} (every case "
                                          f"of a dataset must have the same raters)")
            if z != e.n_slices:
                raise CaseFileError(path, f"{z} slices, the manifest records {e.n_slices}")
            if first is None:
                first = (c, h, w)
                _header(fi, np.float32, (n, c, h, w))
                _header(fl, np.uint8, (n, raters, h, w))
            elif (c, h, w) != first:
                raise CaseFileError(path, f"slices of {(c, h, w)} (C, H, W), the split's first case has {first}")
            fi.write(np.ascontiguousarray(case.image, dtype=np.float32))
            fl.write(np.ascontiguousarray(case.label.transpose(1, 0, 2, 3), dtype=np.uint8))
            del case  # before the next one is read: one case in memory at a time
        write_json(tmp / KEY, {"format": FORMAT, "manifest_sha256": manifest_sha, "split": split,
                               "images": [n, *first], "labels": [n, info.n_annotators, *first[1:]],
                               "cases": [[e.case_id, e.n_slices] for e in entries]})


def _header(f, dtype, shape: tuple[int, ...]) -> None:
    """The ``.npy`` header of a C-ordered array of ``shape``, so the rows can follow one case at a time."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})

"""The preprocess stage: raw cases -> normalised case files, subject splits and a manifest.

The output folder is built beside its final place and renamed into it only when
everything succeeded, so a failure leaves the previous result (or nothing), never
half a dataset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.config import DataConfig
from benchmark.data import registry
from benchmark.data.case import Case
from benchmark.data.manifest import (SPLITS, CaseEntry, Manifest, ManifestError, check_leaks, file_sha256,
                                     load_manifest, slice_hashes)
from benchmark.data.sources import STATUS
from benchmark.data.store import CaseFileError, load_case, read_json, save_case, staged_folder, validate_case
from benchmark.records import Status

NORMALISATION = "z-score per case and channel over all slices (std floored at 1e-6)"


def normalise(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Z, C, H, W)`` -> the image with zero mean and unit std per channel over the case (same shape), and the
    mean and (floored) std ``(C,)`` that undo it (:func:`original_intensities`)."""
    mean = image.mean(axis=(0, 2, 3), keepdims=True)
    std = np.maximum(image.std(axis=(0, 2, 3), keepdims=True), 1e-6)
    return ((image - mean) / std).astype(np.float32), mean.ravel(), std.ravel()


def original_intensities(image: np.ndarray, entry: CaseEntry) -> np.ndarray:
    """A processed ``(Z, C, H, W)`` image back in the intensities its source gave (float32; exact up to float32
    rounding), from the case's ``intensity_mean`` and ``intensity_std`` in the manifest. For a method that
    normalises by itself (nnU-Net)."""
    if len(entry.intensity_mean) != image.shape[1] or len(entry.intensity_std) != image.shape[1]:
        raise ManifestError(f"case {entry.case_id}: the manifest keeps no intensity mean and std for its "
                            f"{image.shape[1]} channel(s) (written before they were kept: run the preprocess stage "
                            f"again)")
    mean = np.asarray(entry.intensity_mean)[:, None, None]
    std = np.asarray(entry.intensity_std)[:, None, None]
    return (image * std + mean).astype(np.float32)


def preprocess(name: str, fetched: Path, out: Path, cfg: DataConfig, source=None) -> Manifest:
    """Convert the fetched dataset ``name`` into ``out``: case files, splits, manifest (``source``: tests)."""
    source = source or registry.dataset_source(name)
    info = source.info
    fetched, out = Path(fetched), Path(out)
    status = read_json(fetched / STATUS, "fetch status (run the fetch stage first)")

    with staged_folder(out) as tmp:
        (tmp / "cases").mkdir()
        if not status.get("available", False):
            manifest = Manifest(info, Status.NOT_RUN, reason=status.get("reason", "not fetched"))
        else:
            manifest = _build(source, fetched, tmp, cfg, status.get("provenance", {}))
        manifest.save(tmp)
    return manifest


def _build(source, fetched: Path, tmp: Path, cfg: DataConfig, provenance: dict) -> Manifest:
    """One case at a time (a real dataset does not fit in memory): validate, normalise, write; then split."""
    info = source.info
    entries, headers = [], []
    for case in source.load(fetched, cfg):
        raw_file = fetched / f"{case.case_id}.npz"
        where = case.extra.get("source") or (raw_file if raw_file.is_file() else f"{fetched} (case {case.case_id})")
        validate_case(case, where, info.num_classes, info.channels)
        if case.image.shape[-2:] != (cfg.size, cfg.size):
            raise CaseFileError(where, f"slices are {case.image.shape[-2:]}, the profile expects {cfg.size}x{cfg.size}")
        if case.label.shape[0] != info.n_annotators:
            raise CaseFileError(where, f"{case.label.shape[0]} raters, dataset declares {info.n_annotators}")
        case.image, mean, std = normalise(case.image)
        rel = f"cases/{case.case_id}.npz"
        if (tmp / rel).exists():
            raise CaseFileError(where, f"case id {case.case_id!r} occurs twice")
        save_case(tmp / rel, case)
        entries.append(CaseEntry(
            case_id=case.case_id, subject_id=case.subject_id, split="", file=rel,
            modality=info.modality, channels=info.channels, spacing=list(case.spacing),
            class_names=list(info.class_names), n_annotators=info.n_annotators, n_slices=case.image.shape[0],
            sha256=file_sha256(tmp / rel), slice_hashes=slice_hashes(case.image),
            intensity_mean=mean.tolist(), intensity_std=std.tolist()))
        headers.append(case.header())
    if not entries:
        raise ManifestError(f"{info.name}: {fetched} holds no cases")
    subject_split = source.split(headers, cfg)
    for e in entries:
        e.split = subject_split[e.subject_id]
    manifest = Manifest(info, Status.OK, provenance={**provenance, "size": cfg.size, "split_seed": cfg.seed,
                                                 "split_fractions": cfg.split, "splits": cfg.splits,
                                                 "normalisation": NORMALISATION},
                        cases=entries)
    report = check_leaks(manifest)
    if not report.ok:
        raise ManifestError(f"{info.name}: refusing to write a leaking split\n{report.summary()}")
    for split in ("train", "test"):
        if not manifest.split(split):
            raise ManifestError(f"{info.name}: the {split} split is empty "
                                f"({len(set(subject_split))} subjects, fractions {cfg.split})")
    return manifest


def load_split(processed: Path, split: str) -> tuple[Manifest, list[Case]]:
    """Read and validate every case of one split of a processed dataset, each file checked against the hash
    the manifest records.

    Raises:
        ManifestError: the manifest is missing or invalid, or the train or test split has no cases (the val
            split may be empty).
        CaseFileError: a case file is missing, unreadable, not the file the manifest hashed, or invalid.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} not in {SPLITS}")
    manifest = load_manifest(processed)
    info = manifest.dataset
    entries = manifest.split(split)
    if not entries and split in ("train", "test"):
        raise ManifestError(f"{manifest.path}: the {split} split has no cases")
    cases = [load_case(Path(processed) / e.file, e.case_id, e.subject_id, info.num_classes, info.channels, e.sha256)
             for e in entries]
    return manifest, cases
